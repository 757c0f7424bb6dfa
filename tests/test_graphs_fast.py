"""The CPU fast paths of models/graphs.py give the generic torch path's values and gradients."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from mmrepr.models.graphs import FixedSparse, propagate_mean, scipy_to_torch, spmm, sym_norm_adjacency


def _graph(symmetric: bool):
    rng = np.random.default_rng(0)
    r = sp.random(30, 20, density=0.2, random_state=1, format="csr", dtype=np.float32)
    if symmetric:
        return scipy_to_torch(sym_norm_adjacency(r), "cpu"), True
    a = sp.random(25, 25, density=0.15, random_state=2, format="coo", dtype=np.float32)
    a.data = rng.random(a.nnz).astype(np.float32)
    return scipy_to_torch(a, "cpu"), False


def _generic(coo, x, n_layers):
    out, h = x, x
    for _ in range(n_layers):
        h = torch.sparse.mm(coo, h)
        out = out + h
    return out / (n_layers + 1)


def test_propagate_mean_fast_path_matches_the_layer_by_layer_sum_and_its_gradient():
    for symmetric in (True, False):
        coo, sym = _graph(symmetric)
        fixed = FixedSparse(coo, symmetric=sym)
        assert fixed.sa is not None  # the SciPy path is the one under test
        x0 = torch.randn(coo.shape[0], 8, generator=torch.Generator().manual_seed(3))
        w = torch.randn(coo.shape[0], 8, generator=torch.Generator().manual_seed(4))
        xa, xb = x0.clone().requires_grad_(), x0.clone().requires_grad_()
        fast, ref = propagate_mean(fixed, xa, 3), _generic(coo, xb, 3)
        (fast * w).sum().backward()
        (ref * w).sum().backward()  # a non-uniform upstream gradient: A^T must be used, not A
        torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)


def test_spmm_fast_path_matches_torch_sparse_mm_and_its_gradient():
    coo, _ = _graph(False)
    fixed = FixedSparse(coo)
    x0 = torch.randn(coo.shape[0], 4, generator=torch.Generator().manual_seed(5))
    w = torch.randn(coo.shape[0], 4, generator=torch.Generator().manual_seed(6))
    xa, xb = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    fast, ref = spmm(fixed, xa), torch.sparse.mm(coo, xb)
    (fast * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)


def test_propagate_mean_split_matches_the_concatenated_propagation_and_its_gradients():
    from mmrepr.models.graphs import propagate_mean_split

    coo, _ = _graph(True)  # 50 nodes: 30 users + 20 items
    fixed = FixedSparse(coo, symmetric=True)
    g = torch.Generator().manual_seed(7)
    u0, i0 = torch.randn(30, 4, generator=g), torch.randn(20, 4, generator=g)
    wu, wi = torch.randn(30, 4, generator=g), torch.randn(20, 4, generator=g)
    ua, ia = u0.clone().requires_grad_(), i0.clone().requires_grad_()
    ub, ib = u0.clone().requires_grad_(), i0.clone().requires_grad_()
    fu, fi = propagate_mean_split(fixed, ua, ia, 2)
    ref = _generic(coo, torch.cat([ub, ib]), 2)
    ((fu * wu).sum() + (fi * wi).sum()).backward()
    ((ref[:30] * wu).sum() + (ref[30:] * wi).sum()).backward()
    torch.testing.assert_close(torch.cat([fu, fi]), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ua.grad, ub.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ia.grad, ib.grad, rtol=1e-5, atol=1e-6)
    # only the item block used (BM3/FREEDOM score items through other paths too)
    ua.grad = ia.grad = None
    ub.grad = ib.grad = None
    propagate_mean_split(fixed, ua, ia, 2)[1].sum().backward()
    _generic(coo, torch.cat([ub, ib]), 2)[30:].sum().backward()
    torch.testing.assert_close(ua.grad, ub.grad, rtol=1e-5, atol=1e-6)


def test_accelerator_paths_give_the_same_products():
    # the torch paths (taken off CPU, e.g. CUDA) forced on CPU: FixedSparse without SciPy
    from mmrepr.models.graphs import propagate_mean_split

    coo, _ = _graph(False)
    fixed = FixedSparse(coo)
    fixed.sa = fixed.sat = None
    x = torch.randn(coo.shape[0], 4, generator=torch.Generator().manual_seed(8))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    spmm(fixed, xa).square().sum().backward()
    torch.sparse.mm(coo, xb).square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)
    fu, fi = propagate_mean_split(fixed, x[:10], x[10:], 2)
    torch.testing.assert_close(torch.cat([fu, fi]), _generic(coo, x, 2), rtol=1e-5, atol=1e-6)


def test_edge_graph_product_gives_torch_sparse_gradients_for_values_and_input():
    from mmrepr.models.graphs import EdgeGraph

    g = torch.Generator().manual_seed(9)
    rows = torch.tensor([0, 0, 1, 2, 3, 3, 0])  # (0, 1) twice: duplicates add up
    cols = torch.tensor([1, 2, 0, 3, 1, 3, 1])
    v0, x0 = torch.rand(7, generator=g), torch.randn(4, 3, generator=g)
    w = torch.randn(4, 3, generator=g)
    va, xa = v0.clone().requires_grad_(), x0.clone().requires_grad_()
    vb, xb = v0.clone().requires_grad_(), x0.clone().requires_grad_()
    fast = spmm(EdgeGraph(rows, cols, va, 4), xa)
    ref = torch.sparse.mm(torch.sparse_coo_tensor(torch.stack([rows, cols]), vb, (4, 4)), xb)
    (fast * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(va.grad, vb.grad)
    torch.testing.assert_close(xa.grad, xb.grad)


def test_propagate_mean_rows_gives_the_full_propagations_rows_and_gradients():
    # LightGCN/FREEDOM propagate only the batch's rows in the last layer
    from mmrepr.models.graphs import propagate_mean_rows

    coo, _ = _graph(True)  # 30 users + 20 items
    fixed = FixedSparse(coo, symmetric=True)
    g = torch.Generator().manual_seed(10)
    u0, i0 = torch.randn(30, 4, generator=g), torch.randn(20, 4, generator=g)
    ur, ir = torch.tensor([0, 3, 7, 29]), torch.tensor([1, 2, 19])
    for n_layers in (0, 1, 2, 3):
        ua, ia = u0.clone().requires_grad_(), i0.clone().requires_grad_()
        ub, ib = u0.clone().requires_grad_(), i0.clone().requires_grad_()
        fu, fi = propagate_mean_rows(fixed, ua, ia, n_layers, ur, ir)
        ref = _generic(coo, torch.cat([ub, ib]), n_layers)
        wu, wi = torch.randn(4, 4, generator=g), torch.randn(3, 4, generator=g)
        ((fu * wu).sum() + (fi * wi).sum()).backward()
        ((ref[ur] * wu).sum() + (ref[30 + ir] * wi).sum()).backward()
        torch.testing.assert_close(fu, ref[ur], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fi, ref[30 + ir], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ua.grad, ub.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ia.grad, ib.grad, rtol=1e-5, atol=1e-6)


def test_spmm_rows_gives_the_products_rows_and_gradient():
    from mmrepr.models.graphs import spmm_rows

    coo, _ = _graph(False)
    fixed = FixedSparse(coo)
    g = torch.Generator().manual_seed(11)
    x0, rows = torch.randn(25, 3, generator=g), torch.tensor([2, 5, 11, 24])
    w = torch.randn(4, 3, generator=g)
    xa, xb = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    fast, ref = spmm_rows(fixed, xa, rows), torch.sparse.mm(coo, xb)[rows]
    (fast * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)


def test_reused_product_buffers_never_leak_into_returned_values():
    # intermediate layers reuse FixedSparse's scratch arrays; outputs and gradients must not
    from mmrepr.models.graphs import propagate_mean_split

    coo, _ = _graph(True)
    fixed = FixedSparse(coo, symmetric=True)
    g = torch.Generator().manual_seed(12)
    u1, i1 = torch.randn(30, 4, generator=g), torch.randn(20, 4, generator=g)
    first = [t.clone() for t in propagate_mean_split(fixed, u1, i1, 3)]
    kept = propagate_mean_split(fixed, u1, i1, 3)
    propagate_mean_split(fixed, torch.randn(30, 4, generator=g), torch.randn(20, 4, generator=g), 3)
    torch.testing.assert_close(kept[0], first[0], rtol=0, atol=0)
    torch.testing.assert_close(kept[1], first[1], rtol=0, atol=0)


def test_row_grad_table_trains_exactly_like_index_select_with_adam():
    # RowGradTable's in-place gradient must give Adam the same tensor as index_select's
    # backward, step after step (rows without gradient still decay m and v)
    from mmrepr.models.base import RowGradTable

    g = torch.Generator().manual_seed(13)
    w0, proj = torch.randn(40, 6, generator=g), torch.randn(6, 3, generator=g)
    a, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    table = RowGradTable(a)
    opt_a = torch.optim.Adam([a], lr=1e-2, fused=True)
    opt_b = torch.optim.Adam([b], lr=1e-2, fused=True)
    for step in range(4):
        idx = torch.randint(0, 40 if step % 2 else 10, (25,), generator=g)  # duplicates; rows 10.. idle on even steps
        opt_a.zero_grad(set_to_none=True)
        table.reset()
        opt_b.zero_grad(set_to_none=True)
        (table.rows(idx) @ proj).square().sum().backward()
        (b.index_select(0, idx) @ proj).square().sum().backward()
        assert torch.equal(a.grad, b.grad)
        opt_a.step()
        opt_b.step()
    assert torch.equal(a, b)
    with torch.no_grad():  # scoring path: plain rows, no gradient bookkeeping
        assert torch.equal(table.rows(torch.tensor([1, 2])), a[[1, 2]])
    # a step that reads no row: no gradient, as index_select's (Adam then skips the table);
    # the next write starts from zeros, not from the last step's rows
    table.reset()
    assert a.grad is None
    table.reset()
    table.rows(torch.tensor([3])).sum().backward()
    want = torch.zeros_like(a)
    want[3] = 1.0
    assert torch.equal(a.grad, want)


def test_pair_dots_in_chunks_equals_the_gathered_product():
    from mmrepr.models.graphs import pair_dots

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(9, 5, generator=g)
    rows, cols = torch.randint(0, 7, (20,), generator=g), torch.randint(0, 9, (20,), generator=g)
    want = (a[rows] * b[cols]).sum(1)
    for chunk in (3, 20, 1024):  # several chunks, a last partial one, one chunk
        torch.testing.assert_close(pair_dots(a, b, rows, cols, chunk=chunk), want)
