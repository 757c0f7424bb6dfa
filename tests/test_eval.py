"""The fast evaluator against Cornac's own ranking evaluation, and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from cornac.eval_methods import BaseMethod
from cornac.models import BPR, ItemKNN, MostPop, Recommender

from mmrepr.evaluation.cornac_ref import cornac_ranking_eval, per_user_array
from mmrepr.evaluation.ranking import build_split, evaluate, split_from_cornac
from mmrepr.models.adapters import score_users


class TieModel(Recommender):
    """Scores on a coarse grid (0.0, 0.5, 1.0 ...): many ties, including at the cut-off."""

    def __init__(self, levels: int = 3, seed: int = 0):
        super().__init__(name="TieModel", verbose=False)
        self.levels, self.seed = levels, seed

    def fit(self, train_set, val_set=None):
        Recommender.fit(self, train_set, val_set)
        rng = np.random.default_rng(self.seed)
        self.table = rng.integers(0, self.levels, size=(self.num_users, self.num_items)) / 2.0
        return self

    def score(self, user_idx, item_idx=None):
        row = self.table[user_idx]
        return row if item_idx is None else row[item_idx]


def _triples(rng, n, n_users=150, n_items=90):
    return [(f"u{rng.integers(n_users)}", f"i{rng.integers(n_items)}", float(rng.integers(1, 6))) for _ in range(n)]


@pytest.fixture(scope="module")
def method():
    rng = np.random.default_rng(3)
    tr, va, te = _triples(rng, 2500), _triples(rng, 500), _triples(rng, 600)
    te += [("cold_user", "i1", 5.0), ("u1", "cold_item", 5.0)]  # unknowns: excluded by Cornac
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BaseMethod.from_splits(tr, te, va, rating_threshold=4.0, exclude_unknowns=True, seed=1)


@pytest.mark.parametrize("make", [lambda: MostPop(), lambda: BPR(k=6, max_iter=3, seed=2, verbose=False),
                                  lambda: TieModel(3), lambda: TieModel(2, seed=5),
                                  lambda: ItemKNN(k=3, similarity="cosine", seed=1, verbose=False),
                                  lambda: ItemKNN(k=200, similarity="pearson", weighting="bm25", seed=1, verbose=False)])
@pytest.mark.parametrize("which", ["val", "test"])
def test_equals_cornac_ranking_eval(method, make, which):
    model = make().fit(method.train_set)
    target, exclude = (method.val_set, None) if which == "val" else (method.test_set, method.val_set)
    split = split_from_cornac(which, method.train_set, target, [exclude] if exclude is not None else [], 4.0)
    ours = evaluate(lambda u: score_users(model, u), split, cutoffs=(1, 5, 20), chunk_size=37)
    avg, per_user = cornac_ranking_eval(model, method.train_set, target, exclude, 4.0, (1, 5, 20))
    for key, mean in avg.items():
        assert set(per_user[key]) == set(ours.users.tolist()), "same users evaluated"
        np.testing.assert_allclose(ours.values[key], per_user_array(per_user[key], ours.users), rtol=0, atol=1e-9)
        assert ours.mean(*key) == pytest.approx(mean, abs=1e-9)
    if isinstance(model, TieModel):
        assert ours.n_tie_fallback > 0  # the exact tie path was exercised


def test_users_without_relevant_items_and_masking():
    # users x items ratings; threshold 4.
    train = sp.csr_matrix(np.array([[5, 0, 0, 2, 0], [0, 4, 0, 0, 0], [0, 0, 0, 0, 0.0]]))
    val = sp.csr_matrix(np.array([[0, 5, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0.0]]))
    test = sp.csr_matrix(np.array([[0, 0, 4, 0, 0], [0, 0, 3, 0, 0], [0, 0, 0, 0, 5.0]]))
    split = build_split("test", train, test, [val], threshold=4.0)
    assert split.users.tolist() == [0, 2]  # user 1's only test item is rated 3: not evaluated
    assert split.n_skipped_no_relevant == 1
    # User 0: train positive item 0 and val positive item 1 masked; the 2-star item 3 is not.
    assert sorted(split.mask[0].indices.tolist()) == [0, 1]
    scores = np.array([[9.0, 8.0, 1.0, 7.0, 0.0], [0, 0, 0, 0, 0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    r = evaluate(lambda u: scores[u], split, cutoffs=(1, 2))
    # User 0 candidates ranked: 3 (7.0), 2 (1.0), 4 -> relevant item 2 at rank 2.
    assert r.values[("HR", 1)].tolist() == [0.0, 0.0]
    assert r.values[("Recall", 2)][0] == 1.0
    assert r.values[("nDCG", 2)][0] == pytest.approx(1 / np.log2(3))
    all_mask = build_split("test", train, test, [val], threshold=4.0, mask="all")
    assert sorted(all_mask.mask[0].indices.tolist()) == [0, 1, 3]


def test_graded_ndcg_hand_computed():
    # One user; test ratings: item0=5 (gain 3), item1=4 (gain 1), item2=3 (not relevant).
    train = sp.csr_matrix((1, 6))
    test = sp.csr_matrix(np.array([[5.0, 4.0, 3.0, 0, 0, 0]]))
    split = build_split("test", train, test, threshold=4.0)
    scores = np.array([[0.1, 0.9, 0.8, 0.7, 0.6, 0.5]])  # ranking: 1, 2, 3, 4, 5, 0
    r = evaluate(lambda u: scores[u], split, cutoffs=(3, 6))
    d = lambda i: 1 / np.log2(i + 1)  # noqa: E731  (rank i, 1-based)
    ideal = 3 * d(1) + 1 * d(2)
    assert r.values[("nDCG_graded", 3)][0] == pytest.approx(1 * d(1) / ideal, abs=1e-12)
    assert r.values[("nDCG_graded", 6)][0] == pytest.approx((1 * d(1) + 3 * d(6)) / ideal, abs=1e-12)
    # Binary nDCG@6 (Cornac's): gains 1 at ranks 1 and 6.
    assert r.values[("nDCG", 6)][0] == pytest.approx((d(1) + d(6)) / (d(1) + d(2)), abs=1e-12)
    assert r.values[("Recall", 3)][0] == 0.5


def test_bad_scores_are_errors():
    split = build_split("test", sp.csr_matrix((1, 4)), sp.csr_matrix(np.array([[5.0, 0, 0, 0]])))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(lambda u: np.array([[np.nan, 1, 2, 3]]), split)
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda u: np.zeros(4), split)


@pytest.mark.parametrize("n,k", [(7506, 50), (1000, 20), (203, 10), (90, 20), (60, 50)])
def test_topk_values_equals_full_topk(n, k):
    """The two-level top-k returns exactly the values of torch.topk, ties and -inf included."""
    import torch

    from mmrepr.evaluation.ranking import topk_values

    rng = np.random.default_rng(n + k)
    rows = [
        rng.standard_normal(n),  # continuous
        rng.integers(0, 3, n) / 2.0,  # coarse grid: ties everywhere, also at the k-th value
        np.zeros(n),  # one value
        np.where(rng.random(n) < 0.97, -np.inf, rng.standard_normal(n)),  # fewer than k finite values
        np.sort(rng.standard_normal(n)),  # the large values all at the end (leftover columns)
        np.sort(rng.standard_normal(n))[::-1],  # ... all at the start
    ]
    F = torch.from_numpy(np.ascontiguousarray(np.stack(rows * 3).astype(np.float32)))
    got = topk_values(F, k).sort(dim=1).values
    want = F.topk(k, dim=1).values.sort(dim=1).values
    assert torch.equal(got, want)
    F[0, n // 2] = float("nan")
    assert torch.isnan(topk_values(F, k)[0]).any() and not torch.isnan(topk_values(F, k)[1:]).any()


def _coarse_split(n_users=60, n_items=400, seed=0):
    rng = np.random.default_rng(seed)
    train = sp.random(n_users, n_items, density=0.05, random_state=seed, data_rvs=lambda s: rng.integers(1, 6, s))
    test = sp.random(n_users, n_items, density=0.02, random_state=seed + 1, data_rvs=lambda s: rng.integers(3, 6, s))
    return build_split("test", train.tocsr(), test.tocsr(), threshold=4.0)


def test_shared_row_path_equals_dense_path():
    """A non-personalised score row broadcast to all users (MostPop's fast path) gives exactly
    the values of the same scores passed as a dense matrix."""
    split = _coarse_split()
    row = np.random.default_rng(1).integers(0, 6, split.n_items).astype(np.float64)  # many ties
    shared = evaluate(lambda u: np.broadcast_to(row, (len(u), len(row))), split, cutoffs=(1, 5, 50), chunk_size=16)
    dense = evaluate(lambda u: np.tile(row, (len(u), 1)), split, cutoffs=(1, 5, 50), chunk_size=16)
    assert shared.n_tie_fallback > 0
    for key in dense.values:
        np.testing.assert_array_equal(shared.values[key], dense.values[key])


def test_scores_used_in_place_are_restored_and_masked_nan_is_ignored():
    split = _coarse_split()
    table = np.random.default_rng(2).standard_normal((split.mask.shape[0], split.n_items))
    before = table.copy()
    evaluate(lambda u: table[u[0] : u[-1] + 1] if np.all(np.diff(u) == 1) else table[u], split, chunk_size=7)
    np.testing.assert_array_equal(table, before)  # masked entries were set to -inf, then restored
    # A NaN on a masked (training) item is never ranked: not an error. On a candidate it is.
    u0 = int(split.users[0])
    masked_item = int(split.mask[u0].indices[0])
    table[u0, masked_item] = np.nan
    r = evaluate(lambda u: table[u], split)
    np.testing.assert_array_equal(r.values[("Recall", 20)], evaluate(lambda u: before[u], split).values[("Recall", 20)])
    candidate = int(np.setdiff1d(np.arange(split.n_items), split.mask[u0].indices)[0])
    table[u0, candidate] = np.nan
    with pytest.raises(ValueError, match=f"NaN.*first user index {u0}"):
        evaluate(lambda u: table[u], split)
    snapshot = table.copy()
    with pytest.raises(ValueError, match="NaN"):  # scores used in place: restored on the error too
        evaluate(lambda u: table[u[0] : u[-1] + 1] if np.all(np.diff(u) == 1) else table[u], split, chunk_size=7)
    np.testing.assert_array_equal(table, snapshot)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(lambda u: np.broadcast_to(table[u0], (len(u), split.n_items)), split)


def test_batched_scores_equal_cornac_score():
    """The block scorer (torch matrix products) equals each Cornac model's own ``score``."""
    import warnings

    from cornac.data import ImageModality
    from cornac.models import VBPR

    rng = np.random.default_rng(4)
    tr, va, te = _triples(rng, 1500, 60, 40), _triples(rng, 200, 60, 40), _triples(rng, 200, 60, 40)
    items = sorted({i for _, i, _ in tr + va + te})
    image = ImageModality(features=rng.standard_normal((len(items), 6)).astype(np.float32), ids=items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = BaseMethod.from_splits(tr, te, va, rating_threshold=4.0, exclude_unknowns=True, seed=1, item_image=image)
    users = np.array([0, 5, 3, m.train_set.num_users - 1])
    for model in (BPR(k=5, max_iter=3, seed=2, verbose=False), MostPop(),
                  VBPR(k=3, k2=3, n_epochs=2, batch_size=64, seed=2, use_gpu=False, verbose=False)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(m.train_set)
        got = score_users(model, users)
        want = np.stack([np.asarray(model.score(int(u))) for u in users])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=model.name)
