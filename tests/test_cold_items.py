"""Cold items (no training interaction): what each model may use to score them, warm-only
negatives, and the test slices (test = warm, test_cold, test_all) on a hand-sized case."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mmrepr.evaluation.ranking import _fit_width, evaluate
from mmrepr.models import adapters, registry
from mmrepr.models.base import BPRSampler, EmbeddingRecommender
from mmrepr.training.cells import build_test_slices, slice_report
from mmrepr.training.data import AlignedFeatures, SplitTriples, attach_features, build_method, full_catalogue
from tests.fixtures.tiny_interactions import TRIPLES

torch.set_num_threads(1)

# The ring of tiny_interactions (items a..f warm) plus cold items g, h, i (validation/test only)
# and a user unknown to training (ux).
VAL = [("u0", "d", 5.0), ("u1", "g", 5.0), ("u2", "a", 5.0)]
TEST = [("u0", "c", 5.0), ("u0", "g", 5.0), ("u1", "h", 4.0), ("u2", "e", 5.0), ("u3", "h", 5.0),
        ("u3", "i", 5.0), ("u4", "a", 5.0), ("u5", "b", 5.0), ("ux", "g", 5.0)]
COLD = ["g", "h", "i"]


def _setup(visual: np.ndarray, textual: np.ndarray, attributes: np.ndarray | None = None, concat: bool = False):
    triples = SplitTriples([(u, i, float(r)) for u, i, r in TRIPLES], VAL, TEST)
    method = build_method(triples, 4.0, seed=1)
    cat = full_catalogue(method, triples)
    assert cat.cold_ids == COLD and cat.n_warm == 6
    if attributes is not None:
        attach_features(method, None, attributes=AlignedFeatures("attr", {"attributes": attributes}), catalogue=cat)
    else:
        attach_features(method, AlignedFeatures("fs", {"visual": visual, "textual": textual}),
                        concat_for_single_matrix=concat, catalogue=cat)
    return method, cat


def _features(seed: int = 0, cold_seed: int | None = None):
    """Item features in catalogue order (6 warm, then 3 cold); ``cold_seed`` redraws the cold rows."""
    rng = np.random.default_rng(seed)
    v, t = rng.normal(size=(9, 6)).astype(np.float32), rng.normal(size=(9, 5)).astype(np.float32)
    if cold_seed is not None:
        rc = np.random.default_rng(cold_seed)
        v[6:], t[6:] = rc.normal(size=(3, 6)) * 3, rc.normal(size=(3, 5)) * 3
    return v, t


HP = dict(lr=0.01, factors=8, reg=0.01)
EXTRA = {"LATTICE": dict(top_k=2), "FREEDOM": dict(top_k=2)}
CONTENT_MODELS = ["VBPR", "LATTICE", "FREEDOM", "BM3", "VBPR_Cornac"]


def _trained(name: str, v, t):
    spec = registry.get_spec(name)
    method, cat = _setup(v, t, concat=spec.concat_modalities)
    model = registry.build_model(name, HP, seed=3, n_epochs=3, batch_size=4, extra=EXTRA.get(name))
    train_set = method.train_set if spec.item_scope == "warm" else cat.train_set
    adapters.train_epochwise(model, train_set, None, lambda m: (0.0, None), 3, 3, spec=spec)
    return model, spec, cat


def _scores(model, spec, cat) -> np.ndarray:
    users = np.arange(6)
    return _fit_width(np.array(adapters.score_users(model, users, spec), dtype=np.float64), cat.n_items)


@pytest.mark.parametrize("name", CONTENT_MODELS)
def test_cold_scores_come_from_content_not_from_their_id_parameters(name):
    v, t = _features()
    model, spec, cat = _trained(name, v, t)
    base = _scores(model, spec, cat)
    cold = slice(cat.n_warm, cat.n_items)
    assert np.ptp(base[:, cold], axis=1).max() > 1e-6  # cold items are ranked, not tied
    if isinstance(model, EmbeddingRecommender):
        # random values in the cold items' ID rows: no score moves
        with torch.no_grad():
            model.net.item[cat.n_warm:] = torch.randn(len(cat.cold_ids), model.net.item.shape[1]) * 10
        model._U = model._V = None
        np.testing.assert_allclose(_scores(model, spec, cat), base, rtol=1e-5, atol=1e-6)
    else:  # VBPR_Cornac is trained on the warm items: a cold item has no ID parameter at all
        assert model.gamma_item.shape[0] == model.beta_item.shape[0] == cat.n_warm
    # other content rows for the cold items (same seed): their scores change, the warm ones do not
    v2, t2 = _features(cold_seed=7)
    other, _, _ = _trained(name, v2, t2)
    s2 = _scores(other, spec, cat)
    np.testing.assert_allclose(s2[:, : cat.n_warm], base[:, : cat.n_warm], rtol=1e-4, atol=1e-5)
    assert not np.allclose(s2[:, cold], base[:, cold], atol=1e-4)


@pytest.mark.parametrize("name", ["BPR", "LightGCN", "MostPop", "ItemKNN", "ElliotItemKNN"])
def test_id_only_models_give_cold_items_one_constant_below_every_warm_item(name):
    v, t = _features()
    model, spec, cat = _trained(name, v, t)
    s = _scores(model, spec, cat)
    cold = s[:, cat.n_warm:]
    assert (cold == cold[:, :1]).all()
    np.testing.assert_array_equal(cold[:, 0], s[:, : cat.n_warm].min(axis=1))
    if isinstance(model, EmbeddingRecommender):
        with torch.no_grad():
            model.net.item[cat.n_warm:] = torch.randn(len(cat.cold_ids), model.net.item.shape[1]) * 10
        model._U = model._V = None
        np.testing.assert_allclose(_scores(model, spec, cat), s, rtol=1e-5, atol=1e-6)


def test_attribute_knn_ranks_cold_items_by_their_attributes():
    rng = np.random.default_rng(0)
    attrs = (rng.random((9, 7)) < 0.4).astype(np.float32)
    attrs[:, 0] = 1.0  # every item shares an attribute: every similarity is positive
    spec = registry.get_spec("AttributeItemKNN")

    def scores(a):
        method, cat = _setup(None, None, attributes=a)
        m = registry.build_model("AttributeItemKNN", dict(neighbours=3, similarity="cosine", weighting="tfidf"), seed=1)
        m.fit(cat.train_set)
        return _scores(m, spec, cat), m

    s, m = scores(attrs)
    assert np.ptp(s[:, 6:], axis=1).max() > 0  # cold items ranked
    assert not m.W[6:].nnz  # a cold item is nobody's neighbour
    a2 = attrs.copy()
    a2[6:] = 1.0 - a2[6:]
    a2[6:, 0] = 1.0
    s2, _ = scores(a2)
    np.testing.assert_allclose(s2[:, :6], s[:, :6])  # warm items: weighting statistics from warm items only
    assert not np.allclose(s2[:, 6:], s[:, 6:])


def test_negatives_are_never_cold_items():
    # items 1 and 4 have no training interaction (cold, in the middle of the index space)
    rows = np.array([0, 0, 1, 1, 2, 3])
    cols = np.array([0, 2, 3, 5, 0, 6])
    csr = sp.csr_matrix((np.ones(6, np.float32), (rows, cols)), shape=(4, 7))
    sampler = BPRSampler(csr, seed=0)
    negs = np.concatenate([sampler.epoch_arrays()[2] for _ in range(300)])
    assert set(negs.tolist()) == {0, 2, 3, 5, 6}


def test_slices_on_a_hand_sized_case():
    """Warm w0 w1 w2 (indices 0-2), cold c0 c1 (3-4); known ranks give known Recall/nDCG."""
    train = [("u0", "w0", 5.0), ("u1", "w1", 5.0), ("u1", "w2", 1.0)]  # w2: an interaction, not a positive
    val = [("u0", "c1", 5.0), ("u1", "w1", 5.0)]  # masked from the users' test candidates
    test = [("u0", "w2", 5.0), ("u0", "c0", 5.0), ("u1", "c1", 5.0), ("u1", "w0", 2.0), ("ux", "c0", 5.0)]
    triples = SplitTriples(train, val, test)
    method = build_method(triples, 4.0, seed=1)
    cat = full_catalogue(method, triples)
    assert cat.item_ids == ["w0", "w1", "w2", "c0", "c1"]
    slices = build_test_slices(method, cat, 4.0, "positives")
    assert list(slices) == ["test", "test_cold", "test_all"]
    u = method.train_set.uid_map
    table = np.zeros((2, 5))
    table[u["u0"]] = [0.9, 0.1, 0.5, 0.3, 0.8]
    table[u["u1"]] = [0.2, 0.9, 0.1, 0.7, 0.4]

    def score(users):
        return table[users].copy()

    got = {name: evaluate(score, s, cutoffs=(1, 2)) for name, s in slices.items()}
    r = 1 / np.log2(3)  # nDCG of one relevant item at rank 2
    by_user = {name: dict(zip(res.users.tolist(), zip(res.values[("Recall", 1)], res.values[("Recall", 2)],
                                                      res.values[("nDCG", 2)])))
               for name, res in got.items()}
    i0, i1 = u["u0"], u["u1"]
    # warm: u0 ranks w2 first among {w1, w2}; u1 has no relevant warm item (w0 rated 2)
    assert by_user["test"] == {i0: (1.0, 1.0, 1.0)}
    # cold: u0 has c0 alone (c1 is a validation item); u1's c1 is second behind c0
    assert by_user["test_cold"][i0] == (1.0, 1.0, 1.0)
    assert by_user["test_cold"][i1] == pytest.approx((0.0, 1.0, r))
    # all: u0: w2 (0.5) then c0 (0.3) -> recall@1 = 1/2, both in the top 2; u1: c0, then c1
    assert by_user["test_all"][i0] == pytest.approx((0.5, 1.0, 1.0))
    assert by_user["test_all"][i1] == pytest.approx((0.0, 1.0, r))
    rep = slice_report(slices).set_index("split")
    assert rep.loc["test", ["candidates", "users", "relevant"]].tolist() == [3, 1, 1]
    assert rep.loc["test_cold", ["candidates", "users", "relevant"]].tolist() == [2, 2, 2]
    assert rep.loc["test_all", ["candidates", "users", "relevant"]].tolist() == [5, 2, 3]
    assert "ux" not in u  # the unknown user is in no slice


def test_a_cold_item_without_a_feature_row_follows_the_missing_policy():
    from mmrepr.features.store import FeatureSet, FeatureSetError
    from mmrepr.training.data import align_feature_set

    v, t = _features()
    ids = ["a", "b", "c", "d", "e", "f", "g", "h"]  # cold item i has no row
    fs = FeatureSet("fs", ids, {"visual": v[:8], "textual": t[:8]}, {})
    triples = SplitTriples([(u, i, float(r)) for u, i, r in TRIPLES], VAL, TEST)
    cat = full_catalogue(build_method(triples, 4.0, seed=1), triples)
    with pytest.raises(FeatureSetError, match="'fs'.*1 of 9 items have no row.*'i'"):
        align_feature_set(fs, cat.item_ids)
    fs.meta["missing_policy"] = "drop"
    al = align_feature_set(fs, cat.item_ids)
    assert al.n_missing_zeroed == 1 and not al.matrices["visual"][8].any()


def test_data_cold_items_move_the_training_rows_of_a_seeded_fraction_of_items_to_test():
    import pandas as pd

    from mmrepr.data.prepare import make_cold_items

    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{j:02d}", 5.0, 0, s) for u in range(30) for j, s in
            zip(rng.choice(40, 6, replace=False), ["train"] * 4 + ["val", "test"])]
    split = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp", "split"])
    out, quality, cold = make_cold_items(split, 0.1, seed=3)
    n_items = split["item"].nunique()
    assert len(cold) == round(0.1 * n_items)
    again = make_cold_items(split, 0.1, seed=3)
    assert again[2] == cold and make_cold_items(split, 0.1, seed=4)[2] != cold  # seeded
    is_cold = out["item"].isin(cold)
    assert not (is_cold & (out["split"] == "train")).any()  # no training row left
    was_train = is_cold & (split["split"] == "train")
    assert (out.loc[was_train, "split"] == "test").all() and was_train.sum() > 0
    pd.testing.assert_series_equal(out.loc[~was_train, "split"], split.loc[~was_train, "split"])  # val kept
    assert quality[0]["step"] == "cold items" and f"{int(was_train.sum())} training rows moved" in quality[0]["reason"]
    with pytest.raises(ValueError, match="all .* items cold"):
        make_cold_items(split.head(2), 0.9, seed=0)
