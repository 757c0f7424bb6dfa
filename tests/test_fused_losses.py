"""The hand-written backward passes (models/fused.py, the models' fused steps, the rows
operator) give autograd's values and gradients on hand-sized inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from mmrepr.models import FREEDOM, VBPR
from mmrepr.models.fused import bpr_rows
from mmrepr.models.graphs import (
    FixedSparse,
    RowsOperator,
    propagate_mean_rows,
    rows_operator_product,
    scipy_to_torch,
    spmm_rows,
    sym_norm_adjacency,
)

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from tiny_interactions import tiny_method  # noqa: E402

RNG = np.random.default_rng(7)
VIS = RNG.normal(size=(6, 4)).astype(np.float32)
TXT = RNG.normal(size=(6, 5)).astype(np.float32)
TOL = dict(rtol=1e-5, atol=1e-7)


def _tiny(same_matrix: bool = False):
    return tiny_method(VIS, VIS.copy() if same_matrix else TXT)


@pytest.mark.parametrize("kind", ["logsigmoid", "log_gamma"])
@pytest.mark.parametrize("reg", ["none", "half_squared", "frobenius"])
def test_bpr_rows_gives_the_autograd_formula_and_its_gradients(kind, reg):
    g = torch.Generator().manual_seed(1)
    ue0, ie0 = torch.randn(5, 3, generator=g), torch.randn(7, 3, generator=g)
    ui, pi, ni = torch.tensor([0, 2, 2, 4]), torch.tensor([1, 1, 3, 6]), torch.tensor([0, 5, 1, 2])
    ua, ia = ue0.clone().requires_grad_(), ie0.clone().requires_grad_()
    ub, ib = ue0.clone().requires_grad_(), ie0.clone().requires_grad_()
    got = bpr_rows(ua, ia, ui, pi, ni, kind=kind, reg=reg, lam=0.3)
    u, p, n = ub[ui], ib[pi], ib[ni]
    x = (u * p).sum(1) - (u * n).sum(1)
    want = -F.logsigmoid(x).mean() if kind == "logsigmoid" else -torch.log(1e-10 + torch.sigmoid(x)).mean()
    if reg == "half_squared":
        want = want + 0.3 * 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / 4
    elif reg == "frobenius":
        want = want + 0.3 * (u.norm() + p.norm() + n.norm()) / 4
    (2.0 * got).backward()  # an upstream gradient other than 1
    (2.0 * want).backward()
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(ua.grad, ub.grad, **TOL)
    torch.testing.assert_close(ia.grad, ib.grad, **TOL)


def test_bpr_rows_refuses_unknown_kinds():
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="kind"):
        bpr_rows(x, x, torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), kind="hinge")


def _grads(model):
    return {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.net.named_parameters()}


def _zero(model):
    for p in model.net.parameters():
        p.grad = None
    for t in model._row_grad_tables:
        t.reset()


@pytest.mark.parametrize("same_matrix", [False, True])
def test_vbpr_fused_step_gives_the_autograd_loss_and_gradients(same_matrix):
    m = _tiny(same_matrix)
    model = VBPR(k=3, n_epochs=2, batch_size=4, seed=0, device="cpu", learning_rate=0.05, lambda_reg=0.2)
    model.fit(m.train_set)
    assert model.shared_modalities == same_matrix
    batch = (torch.tensor([0, 1, 3, 1]), torch.tensor([1, 2, 4, 2]), torch.tensor([5, 0, 0, 3]))
    _zero(model)
    fused = model._batch_loss(batch)
    fused.backward()
    got = _grads(model)
    _zero(model)
    ref = model._batch_loss_autograd(batch)
    ref.backward()
    want = _grads(model)
    torch.testing.assert_close(fused, ref, **TOL)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], **TOL, msg=name)


def test_freedom_modality_bpr_through_feature_differences_equals_the_projected_items_loss():
    # u.(W f_i + b) - u.(W f_j + b) = u.W (f_i - f_j): the same loss; every gradient but the
    # bias's (exactly zero in the reference too) equal
    m = _tiny()
    model = FREEDOM(k=3, top_k=2, dropout=0.0, lambda_reg=0.7, n_epochs=2, batch_size=4, seed=0, device="cpu",
                    learning_rate=0.05)
    model.fit(m.train_set)
    batch = (torch.tensor([0, 2, 1, 2]), torch.tensor([1, 3, 2, 3]), torch.tensor([4, 5, 0, 1]))
    _zero(model)
    model._batch_loss(batch).backward()
    got = _grads(model)
    _zero(model)
    u, i, j = batch
    net = model.net
    ue, ie = model._forward(model.masked_adj)
    bpr = lambda a, p, n: -F.logsigmoid((a * p).sum(1) - (a * n).sum(1)).mean()
    loss = bpr(ue[u], ie[i], ie[j])
    for key in ("v", "t"):
        proj = getattr(net, f"{key}_trs")(getattr(net, f"{key}_feat"))
        loss = loss + 0.7 * bpr(ue[u], proj[i], proj[j])
    loss.backward()
    want = _grads(model)
    for name, g in want.items():
        if name.endswith("_trs.bias"):
            assert got[name] is None and float(g.abs().max()) < 1e-6, name
            continue
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6, msg=name)


def _bipartite(n_users=9, n_items=7, density=0.3, seed=3):
    r = sp.random(n_users, n_items, density=density, random_state=seed, format="csr", dtype=np.float32)
    return FixedSparse(scipy_to_torch(sym_norm_adjacency(r), "cpu"), symmetric=True)


@pytest.mark.parametrize("n_layers", [0, 1, 2])
@pytest.mark.parametrize("n_mm", [0, 1, 2])
def test_rows_operator_equals_the_layer_mean_plus_the_item_graph(n_layers, n_mm):
    adj = _bipartite()
    mm = FixedSparse(scipy_to_torch(sp.random(7, 7, density=0.4, random_state=5, dtype=np.float32), "cpu"))
    power = sp.identity(7, dtype=np.float32, format="csr")
    for _ in range(n_mm):
        power = mm.sa @ power
    op = RowsOperator(adj.sa, n_layers, 9, power)
    g = torch.Generator().manual_seed(4)
    u0, i0 = torch.randn(9, 3, generator=g), torch.randn(7, 3, generator=g)
    ur, ir = torch.tensor([0, 4, 8]), torch.tensor([1, 2, 6])
    ua, ia = u0.clone().requires_grad_(), i0.clone().requires_grad_()
    ub, ib = u0.clone().requires_grad_(), i0.clone().requires_grad_()
    fu, fi = rows_operator_product(op, ua, ia, ur, ir)
    ru, ri = propagate_mean_rows(adj, ub, ib, n_layers, ur, ir)
    h = ib
    for layer in range(n_mm):
        h = spmm_rows(mm, h, ir) if layer == n_mm - 1 else torch.sparse.mm(mm.a.to_sparse_coo(), h)
    ri = ri + (h if n_mm else ib[ir])
    wu, wi = torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g)
    ((fu * wu).sum() + (fi * wi).sum()).backward()
    ((ru * wu).sum() + (ri * wi).sum()).backward()
    torch.testing.assert_close(fu, ru, **TOL)
    torch.testing.assert_close(fi, ri, **TOL)
    torch.testing.assert_close(ua.grad, ub.grad, **TOL)
    torch.testing.assert_close(ia.grad, ib.grad, **TOL)


def test_rows_operator_is_used_only_while_it_stays_sparse():
    # a graph whose 3-hop neighbourhoods cover most nodes: Q fills up while A stays sparse
    mixing = _bipartite(n_users=200, n_items=150, density=0.05)
    assert not RowsOperator(mixing.sa, 3, 200).worthwhile()
    assert RowsOperator(mixing.sa, 0, 200).worthwhile()  # Q = I
    assert RowsOperator(_bipartite(density=0.05).sa, 2, 9).worthwhile()


def test_freedom_steps_through_the_rows_operator_with_pruned_edges():
    m = _tiny()
    model = FREEDOM(k=3, top_k=2, dropout=0.5, n_epochs=1, batch_size=4, seed=0, device="cpu")
    model.fit(m.train_set)
    model._pre_epoch()
    assert model._rows_op is not None
    batch = (torch.tensor([0, 2, 1]), torch.tensor([1, 3, 2]), torch.tensor([4, 5, 0]))
    _zero(model)
    fast = model._batch_loss(batch)
    fast.backward()
    got = _grads(model)
    _zero(model)
    model._rows_op = None  # the layer-by-layer path, same pruned graph
    slow = model._batch_loss(batch)
    slow.backward()
    want = _grads(model)
    torch.testing.assert_close(fast, slow, **TOL)
    for name, g in want.items():
        if g is None:
            assert got[name] is None
            continue
        torch.testing.assert_close(got[name], g, **TOL, msg=name)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("modalities", ["both", "visual"])
def test_bm3_fused_loss_gives_the_autograd_loss_and_gradients(dropout, modalities):
    from mmrepr.models import BM3

    m = _tiny() if modalities == "both" else tiny_method(VIS)
    model = BM3(k=3, n_epochs=2, batch_size=4, seed=0, device="cpu", learning_rate=0.05, dropout=dropout,
                lambda_reg=0.3, cl_weight=1.5)
    model.fit(m.train_set)
    batch = (torch.tensor([0, 1, 3, 1]), torch.tensor([1, 2, 4, 2]))
    _zero(model)
    torch.manual_seed(5)  # the same target-dropout draws on both paths
    fused = model._batch_loss(batch)
    fused.backward()
    got = _grads(model)
    _zero(model)
    torch.manual_seed(5)
    ref = model._batch_loss_autograd(batch)
    ref.backward()
    want = _grads(model)
    torch.testing.assert_close(fused, ref, **TOL)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)
