"""Deliberate behaviours of the study's models, pinned on hand-sized inputs (issue #11):
VBPR's scoring formula and loss, BM3's losses (with dropout), FREEDOM's frozen item graph,
LATTICE's rebuild schedule."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cornac.data import ImageModality
from cornac.eval_methods import BaseMethod

from mmrepr.models.base import BPRSampler, target_dropout
from mmrepr.models.bm3 import BM3
from mmrepr.models.freedom import FREEDOM
from mmrepr.models.lattice import LATTICE
from mmrepr.models.vbpr import VBPR

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from tiny_interactions import ITEMS, tiny_method  # noqa: E402

RNG = np.random.default_rng(1)
VIS = RNG.normal(size=(6, 4)).astype(np.float32)
TXT = RNG.normal(size=(6, 3)).astype(np.float32)


def tiny(visual=True, textual=True):
    return tiny_method(VIS if visual else None, TXT if textual else None)


def rows(ts, mat):
    return mat[[ITEMS.index(i) for i in ts.iid_map]]


# ---- VBPR ------------------------------------------------------------------------------------
def test_vbpr_scores_are_user_dot_id_embedding_and_projected_text_then_visual_features():
    m = tiny()
    ts = m.train_set
    model = VBPR(k=3, n_epochs=2, batch_size=4, seed=0, device="cpu", learning_rate=0.05).fit(ts)
    net = model.net
    P = net.user.detach().numpy()
    E = net.item.detach().numpy()
    W, b = net.item_linear.weight.detach().numpy(), net.item_linear.bias.detach().numpy()
    assert P.shape == (ts.num_users, 6) and E.shape == (ts.num_items, 3) and W.shape == (3, 7)
    f = np.concatenate([rows(ts, TXT), rows(ts, VIS)], axis=1)  # textual first, as MMRec
    want = P @ np.concatenate([E, f @ W.T + b], axis=1).T
    np.testing.assert_allclose(model.score_users(np.arange(ts.num_users)), want, rtol=1e-5, atol=1e-6)
    # the projection was trained, the features were not
    assert not np.allclose(b, 0)
    np.testing.assert_array_equal(model.features.numpy(), f)


def test_vbpr_loss_is_mmrec_bpr_plus_frobenius_emb_loss():
    m = tiny(textual=False)
    model = VBPR(k=2, n_epochs=1, batch_size=4, seed=0, device="cpu", lambda_reg=0.5).fit(m.train_set)
    u, i, j = torch.tensor([0, 1, 3]), torch.tensor([1, 2, 4]), torch.tensor([5, 0, 0])
    with torch.no_grad():
        got = float(model._batch_loss((u, i, j)))
        P = model.net.user
        Q = torch.cat([model.net.item, model.net.item_linear(model.features)], 1)
        pu, qi, qj = P[u], Q[i], Q[j]
        bpr = -torch.log(1e-10 + torch.sigmoid((pu * qi).sum(1) - (pu * qj).sum(1))).mean()
        # Frobenius norms (not squared) of the three batch matrices, divided by the batch
        reg = (pu.norm() + qi.norm() + qj.norm()) / 3
    assert got == pytest.approx(float(bpr + 0.5 * reg), rel=1e-6)


def test_vbpr_same_matrix_as_both_modalities_projects_once_with_the_same_values_and_gradients():
    # fast path: W [x; x] = (W_t + W_v) x; scores, loss and W's gradient as the concatenation's
    same = RNG.normal(size=(6, 4)).astype(np.float32)
    ts = tiny_method(same, same.copy()).train_set
    model = VBPR(k=3, n_epochs=2, batch_size=4, seed=0, device="cpu", learning_rate=0.05).fit(ts)
    assert model.shared_modalities and model.features.shape == (ts.num_items, 4)
    net = model.net
    W, b = net.item_linear.weight, net.item_linear.bias
    assert W.shape == (3, 8)  # the parameters are MMRec's: one weight over the concatenation
    f = torch.from_numpy(np.concatenate([rows(ts, same), rows(ts, same)], axis=1))
    with torch.no_grad():
        want = net.user @ torch.cat([net.item, f @ W.T + b], 1).T
    np.testing.assert_allclose(model.score_users(np.arange(ts.num_users)), want.numpy(), rtol=1e-5, atol=1e-6)
    u, i, j = torch.tensor([0, 1, 3]), torch.tensor([1, 2, 4]), torch.tensor([5, 0, 0])
    W.grad = None  # the last training step's
    model._batch_loss((u, i, j)).backward()
    got = W.grad.clone()
    W.grad = None
    Q = torch.cat([net.item, f @ W.T + b], 1)
    pu, qi, qj = net.user[u], Q[i], Q[j]
    ref = -torch.log(1e-10 + torch.sigmoid((pu * qi).sum(1) - (pu * qj).sum(1))).mean()
    (ref + model.lambda_reg * (pu.norm() + qi.norm() + qj.norm()) / 3).backward()
    torch.testing.assert_close(got, W.grad, rtol=1e-5, atol=1e-7)
    # different matrices: the concatenation, as before
    assert not VBPR(k=3, n_epochs=1, batch_size=4, seed=0, device="cpu").fit(tiny().train_set).shared_modalities


def test_vbpr_initialisation_follows_mmrec():
    m = tiny()
    model = VBPR(k=4, n_epochs=1, batch_size=100, seed=0, device="cpu", learning_rate=1e-12).fit(m.train_set)
    # xavier_uniform bounds for the user (n_users x 2k) and item (n_items x k) matrices
    bu = np.sqrt(6 / (6 + 8))
    bi = np.sqrt(6 / (6 + 4))
    assert np.abs(model.net.user.detach().numpy()).max() <= bu + 1e-6
    assert np.abs(model.net.item.detach().numpy()).max() <= bi + 1e-6
    np.testing.assert_allclose(model.net.item_linear.bias.detach().numpy(), 0, atol=1e-9)


# ---- BM3 -------------------------------------------------------------------------------------
def test_bm3_targets_are_detached_dropped_out_online_embeddings():
    m = tiny()
    model = BM3(k=4, n_epochs=1, batch_size=4, seed=0, device="cpu", dropout=0.5, cl_weight=2.0,
                lambda_reg=0.1).fit(m.train_set)
    users, items = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 4])
    torch.manual_seed(5)
    got = model._batch_loss((users, items))
    # replay the same dropout masks: u, i targets first, then per modality (v, t) its feature target
    torch.manual_seed(5)
    with torch.no_grad():
        u, i = model._forward()
        p = model.net.predictor
        ut = target_dropout(u[users], 0.5)
        it = target_dropout(i[items], 0.5)
        cos = lambda a, b: 1 - F.cosine_similarity(a, b, dim=-1).mean()
        cl = 0.0
        for key in ("v", "t"):
            f = getattr(model.net, f"{key}_trs")(getattr(model.net, f"{key}_feat"))[items]
            ft = target_dropout(f, 0.5)
            cl = cl + cos(p(f), it) + cos(p(f), ft)
        want = cos(p(u[users]), it) + cos(p(i[items]), ut) + 0.1 * (u.norm() + i.norm()) / i.shape[0] + 2.0 * cl
    assert float(got.detach()) == pytest.approx(float(want), rel=1e-5)
    # no gradient reaches the embeddings through the targets: only through the online side
    model.net.zero_grad(set_to_none=True)
    got.backward()
    assert model.net.predictor.weight.grad is not None
    assert model.net.v_feat.grad is not None  # features are trained (from_pretrained(freeze=False))


def test_target_dropout_is_inverted_dropout():
    torch.manual_seed(0)
    x = torch.rand(400, 50) + 0.5
    y = target_dropout(x, 0.3)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.7)  # survivors scaled by 1/(1-p)
    assert abs(float(kept.float().mean()) - 0.7) < 0.01  # 20,000 draws: sd 0.003
    assert torch.equal(target_dropout(x, 0.0), x) and not target_dropout(x, 1.0).any()


def test_bm3_scores_use_the_predictor_on_both_sides():
    m = tiny()
    model = BM3(k=4, n_epochs=1, batch_size=4, seed=0, device="cpu").fit(m.train_set)
    with torch.no_grad():
        u, i = model._forward()
        want = (model.net.predictor(u) @ model.net.predictor(i).T).numpy()
    np.testing.assert_allclose(model.score_users(np.arange(6)), want, rtol=1e-5, atol=1e-6)


# ---- FREEDOM ---------------------------------------------------------------------------------
def test_freedom_item_graph_is_frozen_from_the_raw_features_while_features_train():
    m = tiny()
    model = FREEDOM(k=4, n_epochs=1, batch_size=4, seed=0, device="cpu", top_k=2, learning_rate=0.1)
    model.fit(m.train_set)
    before = model.mm_adj.to_dense().clone()
    feats_before = model.net.v_feat.detach().clone()
    model.n_epochs = 5
    model.fit(m.train_set)  # a fresh fit rebuilds from the raw features: same graph
    np.testing.assert_array_equal(model.mm_adj.to_dense().numpy(), before.numpy())
    # features moved during training, the graph did not follow them
    assert not torch.allclose(model.net.v_feat.detach(), feats_before)
    np.testing.assert_array_equal(model.mm_adj.to_dense().numpy(), before.numpy())
    # and no gradient reaches the graph
    assert not any(t.requires_grad for t in (model.mm_adj.a, model.mm_adj.at))


def test_freedom_edge_pruning_prefers_low_degree_edges():
    """Degree-sensitive pruning: keep probability ∝ 1/sqrt(d_u d_i); a hub edge survives less."""
    # user 0 and item 0 are hubs; user 1 - item 5 is a degree-1 edge pair
    triples = [(f"u{u}", f"i{i}", 5) for u, i in [(0, 0), (0, 1), (0, 2), (0, 3), (2, 0), (3, 0), (4, 0), (1, 5)]]
    mm = BaseMethod.from_splits(train_data=triples, test_data=[("u0", "i5", 5)], exclude_unknowns=True, seed=0,
                                item_image=ImageModality(features=np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 4]],
                                                         ids=["i0", "i1", "i2", "i3", "i5"]))
    ts = mm.train_set
    model = FREEDOM(k=2, n_epochs=1, batch_size=8, seed=0, device="cpu", top_k=1, dropout=0.5).fit(ts)
    hub = (ts.uid_map["u0"], ts.iid_map["i0"])
    leaf = (ts.uid_map["u1"], ts.iid_map["i5"])
    kept = {hub: 0, leaf: 0}
    nu = ts.num_users
    for _ in range(300):
        model._pre_epoch()
        d = model.masked_adj.to_dense().numpy()
        for (u, i) in kept:
            kept[(u, i)] += d[u, nu + i] > 0
    assert kept[leaf] > kept[hub] + 60


# ---- LATTICE ---------------------------------------------------------------------------------
def _lattice_builds(every, epochs):
    m = tiny()
    model = LATTICE(k=4, n_epochs=epochs, batch_size=4, seed=0, device="cpu", top_k=2, graph_rebuild_every=every)
    calls = []
    orig = model.item_graph

    def counting():
        calls.append(model._epochs_started)
        return orig()

    model.item_graph = counting
    model.fit(m.train_set)
    return model, calls


def test_lattice_rebuilds_the_learned_graph_once_per_epoch_by_default():
    model, calls = _lattice_builds(1, 4)
    # 12 interactions / batch 4 = 3 batches per epoch; one build at the first batch of each epoch
    assert calls == [1, 2, 3, 4] and model.graph_builds == 4


def test_lattice_rebuild_every_n_epochs():
    model, calls = _lattice_builds(3, 7)
    assert calls == [1, 4, 7] and model.graph_builds == 3
    with pytest.raises(ValueError, match="graph_rebuild_every"):
        LATTICE(graph_rebuild_every=0)


def test_lattice_projects_content_to_64_whatever_the_id_size():
    # MMRec's feat_embed_dim and the authors' Elliot factors_multimod: 64, not tied to k
    m = tiny()
    for k in (4, 128):
        model = LATTICE(k=k, n_epochs=1, batch_size=4, seed=0, device="cpu", top_k=2)
        model.fit(m.train_set)
        assert model.net.t_trs.out_features == 64 and model.net.user.shape[1] == k
    assert LATTICE(feat_embed_dim=8).feat_embed_dim == 8


def test_lattice_scoring_builds_a_fresh_graph_from_current_weights():
    model, _ = _lattice_builds(5, 2)  # the training graph is from epoch 1
    with torch.no_grad():
        fresh = model._propagate(model.item_graph())
        stale = model._propagate(model._item_adj)
    s = model.score_users(np.arange(6))
    np.testing.assert_allclose(s, (fresh[0] @ fresh[1].T).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(s, (stale[0] @ stale[1].T).numpy())


def test_epoch_arrays_move_once_and_match_batching():
    import scipy.sparse as sp

    csr = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=np.float32))
    a = BPRSampler(csr, 3).epoch_arrays()
    b = np.concatenate([np.stack(x) for x in BPRSampler(csr, 3).epoch(2)], axis=1)
    np.testing.assert_array_equal(np.stack(a), b)
    assert not csr[a[0], a[2]].any()  # negatives are never training items
