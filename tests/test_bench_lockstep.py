"""``bench lockstep``: same weights, same batches, step by step. Checked against a VBPR written
here from MMRec's formula (``models/vbpr.py``: ``[e_i ; W [f_t ; f_v] + b]``, user vectors of
size 2k, ``BPRLoss`` + ``reg_weight * EmbLoss``): it must agree with ours to float rounding,
and a changed formula must show at the first step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from mmrepr.bench import fidelity as F
from mmrepr.bench import lockstep as L
from mmrepr.models.base import BPRSampler
from mmrepr.training.data import AlignedFeatures, attach_features

from conftest import tiny_split

K, BATCH = 4, 16


class MMRecStyleVBPR(nn.Module):
    def __init__(self, n_users, n_items, feats_t, feats_v, reg_weight):
        super().__init__()
        self.u_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, 2 * K)))
        self.i_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, K)))
        self.raw = torch.cat([torch.from_numpy(feats_t), torch.from_numpy(feats_v)], 1)
        self.item_linear = nn.Linear(self.raw.shape[1], K)
        self.reg_weight = reg_weight

    def forward(self):
        return self.u_embedding, torch.cat([self.i_embedding, self.item_linear(self.raw)], 1)

    def calculate_loss(self, interaction):
        u, i, j = interaction
        ue, ie = self.forward()
        eu, ep, en = ue[u], ie[i], ie[j]
        mf = -torch.log(1e-10 + torch.sigmoid((eu * ep).sum(1) - (eu * en).sum(1))).mean()
        reg = (torch.norm(eu) + torch.norm(ep) + torch.norm(en)) / en.shape[0]
        return mf + self.reg_weight * reg

    def full_sort_predict(self, interaction):
        ue, ie = self.forward()
        return ue[interaction[0]] @ ie.T


@pytest.fixture()
def setup():
    rng = np.random.default_rng(0)
    protocol = F.Protocol(tiny_split(40, 25, 6))
    n = protocol.train_set.num_items
    ft, fv = (rng.standard_normal((n, 6)).astype(np.float32) for _ in range(2))
    attach_features(protocol.method, AlignedFeatures("t", {"visual": fv, "textual": ft}))
    return protocol, ft, fv


def vbpr_pair(setup, reg_weight, *, epochs=2, batch=BATCH, lr=1e-3):
    """The MMRec-formula VBPR and ours from its weights, MMRec-style batches from our
    sampler, the reference's Adam and constant schedule: (ours, ref, batches, opt, sched)."""
    protocol, ft, fv = setup
    ts = protocol.train_set
    torch.manual_seed(3)
    ref = MMRecStyleVBPR(ts.num_users, ts.num_items, ft, fv, reg_weight)
    ours = F.build_ours("VBPR", seed=1, n_epochs=epochs, k=K, batch_size=batch, lr=lr)
    ours.prepare(ts)
    L.copy_weights(ours, ref, L.PARAMETERS["VBPR"])
    sampler = BPRSampler(ours._train_csr, 0)

    def batches():
        u, i, j = (torch.from_numpy(a) for a in sampler.epoch_arrays())
        return [(u[s:s + batch], i[s:s + batch], j[s:s + batch]) for s in range(0, len(u), batch)]

    opt = torch.optim.Adam(ref.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    return ours, ref, batches, opt, sched


def run(setup, reg_weight):
    ours, ref, batches, opt, sched = vbpr_pair(setup, reg_weight)
    users = np.arange(setup[0].train_set.num_users, dtype=np.int64)
    df = L.run_lockstep(ours, ref, opt, sched, batches, L.PARAMETERS["VBPR"], epochs=2,
                        ref_scores=lambda us: ref.full_sort_predict((torch.from_numpy(us),)), users=users)
    return df, L.summary(df)


def test_the_same_model_agrees_to_float_rounding_step_by_step(setup):
    df, table = run(setup, reg_weight=0.01)
    steps = df[df["step"] > 0]
    assert len(steps) == 2 * -(-setup[0].train_set.csr_matrix.nnz // BATCH)
    assert steps["loss_diff"].max() < 1e-6
    assert steps["grad_rel_diff"].max() < 1e-4
    assert (steps["one_sided"] == "").all()
    assert table["score rel diff"].max() < 1e-4
    assert table["param max diff"].max() < 1e-5


def test_a_formula_difference_shows_at_the_first_step(setup):
    # the reference regularises twice as hard: the first step's loss and gradients differ
    df, table = run(setup, reg_weight=0.02)
    assert table.loc[0, "loss diff, step 1"] > 1e-4
    assert table.loc[0, "grad rel diff, step 1"] > 1e-3


def test_unmapped_parameters_are_a_clear_error(setup):
    protocol, ft, fv = setup
    ours = F.build_ours("VBPR", seed=1, n_epochs=1, k=K)
    ours.prepare(protocol.train_set)
    ref = MMRecStyleVBPR(protocol.train_set.num_users, protocol.train_set.num_items, ft, fv, 0.01)
    mapping = dict(L.PARAMETERS["VBPR"])
    del mapping["item_linear.bias"]
    with pytest.raises(ValueError, match="update lockstep.PARAMETERS"):
        L.copy_weights(ours, ref, mapping)


# ---- dropout compared in expectation -------------------------------------------------------

def _stochastic_loss(table, index, w, p, *, per_row_masks, rescale=True):
    """``mean_b softplus(w . drop(T)[idx_b])``: the mask drawn on the whole table and rows
    selected after (MMRec's BM3), or drawn on the selected rows (ours); ``rescale=False``
    drops the inverted-dropout factor, a different expectation."""
    scale = 1.0 / (1.0 - p) if rescale else 1.0

    def draw():
        w.grad = None
        x = table[index] if per_row_masks else table
        x = x * (torch.rand_like(x) >= p) * scale
        if not per_row_masks:
            x = x[index]
        loss = torch.nn.functional.softplus(x @ w).mean()
        loss.backward()
        return float(loss.detach()), {"w": w.grad.clone()}

    return draw


@pytest.fixture()
def toy():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(12, 5, generator=g)
    index = torch.tensor([0, 3, 3, 3, 7, 7, 11, 2, 2, 5])  # repeated rows: shared vs independent masks
    w = torch.randn(5, generator=g).requires_grad_()
    return table, index, w


def test_dropout_placed_alike_has_the_same_expectation(toy):
    torch.manual_seed(1)
    table, index, w = toy
    ex = L.dropout_expectation(_stochastic_loss(table, index, w, 0.3, per_row_masks=True),
                               _stochastic_loss(table, index, w, 0.3, per_row_masks=False), draws=400)
    assert list(ex["parameter"]) == ["loss", "w"]
    assert (ex["noise_ratio"] < 3.5).all(), ex
    assert (ex["relative"] < 0.1).all(), ex


def test_a_differently_scaled_dropout_is_detected(toy):
    torch.manual_seed(1)
    table, index, w = toy
    ex = L.dropout_expectation(_stochastic_loss(table, index, w, 0.3, per_row_masks=True),
                               _stochastic_loss(table, index, w, 0.3, per_row_masks=False, rescale=False), draws=400)
    assert (ex["noise_ratio"] > 5).all(), ex


def test_dropout_expectation_needs_the_same_parameters_on_both_sides(toy):
    table, index, w = toy
    a = _stochastic_loss(table, index, w, 0.3, per_row_masks=True)
    with pytest.raises(ValueError, match="gradients of"):
        L.dropout_expectation(a, lambda: (0.0, {"v": torch.zeros(5)}), draws=3)


# ---- FREEDOM's edge pruning: what each side samples from ----------------------------------

def test_freedom_edge_sampling_matches_edges_by_pair_not_by_order(setup):
    from types import SimpleNamespace

    protocol, _, _ = setup
    ours = F.build_ours("FREEDOM", seed=1, n_epochs=1, k=K, batch_size=BATCH)
    ours.prepare(protocol.train_set)
    order = torch.randperm(len(ours.edge_values), generator=torch.Generator().manual_seed(0))
    ref = SimpleNamespace(edge_indices=torch.stack([ours.edge_users, ours.edge_items])[:, order],
                          edge_values=ours.edge_values[order].clone(), dropout=ours.dropout)
    same = L.freedom_edge_sampling(ours, ref)
    assert same["weight_max_rel_diff"] == 0 and same["kept_ours"] == same["kept_ref"] > 0
    ref.edge_values[3] *= 1.01  # one edge weighted differently
    assert L.freedom_edge_sampling(ours, ref)["weight_max_rel_diff"] == pytest.approx(0.01 / 1.01, rel=1e-4)
    ref.dropout = 0.5
    moved = L.freedom_edge_sampling(ours, ref)
    assert moved["kept_ours"] != moved["kept_ref"]
    ref.edge_indices = ref.edge_indices[:, 1:]
    ref.edge_values = ref.edge_values[1:]
    with pytest.raises(ValueError, match="1 training edges on one side only"):
        L.freedom_edge_sampling(ours, ref)
