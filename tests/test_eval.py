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
