"""Batched, exact full-ranking evaluation that reproduces ``cornac.eval_methods.ranking_eval``.

What Cornac 3.0.1 does (``cornac/eval_methods/base_method.py::ranking_eval``), and we match:

- Users evaluated: those in the target split with at least one item rated >= threshold.
- Candidates: every item known at training time, minus the user's *positive* (rating >=
  threshold) training items and, for the test split, positive validation items; a target
  positive is always a candidate (even if it was also a training positive). Training items
  rated below the threshold stay candidates (they count as non-relevant). ``mask="all"``
  masks every training interaction instead (Elliot's convention); then Cornac is not the
  reference any more.
- Ranking: ``Recommender.rank`` takes the candidates' scores in ascending item order, does
  ``np.argpartition(scores, -k)``, sorts the top k ascending with ``np.argsort`` and reverses.
  The order among tied scores is whatever those two calls give.
- Metrics: Recall = hits / #relevant; NDCG with binary gains, IDCG over min(k, #relevant);
  HitRatio = any hit. We add graded nDCG (gain 2^(r - threshold + 1) - 1, log2 discount).

How we are fast and still exact: scores come in user chunks (one matrix product instead of
one call per user), masked items are set to -inf, the top k is taken with a 2-D
``argpartition`` + sort. A user's metrics can only depend on how ties are broken if one
of their relevant items, scored at or above the k-th score, shares its score with another
candidate. Those users (none for continuous-score models, some for MostPop/kNN) are
re-ranked exactly as Cornac does, one at a time, on the model's own score dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

METRICS = ("Recall", "nDCG", "HR", "nDCG_graded")

ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvalSplit:
    """Everything needed to evaluate one split, in the model's index space."""

    name: str
    n_items: int
    users: np.ndarray  # evaluated user indices, ascending
    relevant: sp.csr_matrix  # (n_users_total, n_items): rating of relevant target items, 0 elsewhere
    mask: sp.csr_matrix  # (n_users_total, n_items) bool: items removed from the candidates
    threshold: float
    n_skipped_no_relevant: int = 0
    info: dict = field(default_factory=dict)


def _fit_shape(m: sp.spmatrix, n_users: int, n_items: int) -> sp.csr_matrix:
    """Cut or pad a Cornac Dataset matrix to (n_users, n_items) (unknown items dropped)."""
    m = sp.csr_matrix(m)
    m = m[: min(m.shape[0], n_users), : min(m.shape[1], n_items)]
    if m.shape != (n_users, n_items):
        m = sp.csr_matrix((m.data, m.indices, np.r_[m.indptr, np.full(n_users - m.shape[0], m.indptr[-1])]),
                          shape=(n_users, n_items))
    m.sum_duplicates()
    return m


def build_split(
    name: str,
    train: sp.spmatrix,
    target: sp.spmatrix,
    exclude: Sequence[sp.spmatrix] = (),
    threshold: float = 4.0,
    n_items: int | None = None,
    mask: str = "positives",
) -> EvalSplit:
    """An :class:`EvalSplit` from rating matrices (users x items, in the model's indices).

    ``train``: the training ratings; ``target``: the split to evaluate; ``exclude``: other
    splits whose positives are masked too (validation when evaluating test).
    ``n_items`` defaults to the training matrix's width (Cornac's ``exclude_unknowns``).
    """
    if mask not in ("positives", "all"):
        raise ValueError(f"mask must be 'positives' (Cornac) or 'all', got {mask!r}")
    n_items = int(train.shape[1] if n_items is None else n_items)
    n_users = int(max([train.shape[0], target.shape[0], *[e.shape[0] for e in exclude]]))
    train = _fit_shape(train, n_users, n_items)
    target = _fit_shape(target, n_users, n_items)

    pos_target = target.copy()
    pos_target.data = np.where(pos_target.data >= threshold, pos_target.data, 0.0)
    pos_target.eliminate_zeros()

    def positives(m: sp.csr_matrix) -> sp.csr_matrix:
        b = m.copy()
        b.data = (b.data >= threshold).astype(np.float64)
        b.eliminate_zeros()
        return b

    if mask == "all":
        masked = train.copy()
        masked.data = np.ones_like(masked.data, dtype=np.float64)
    else:
        masked = positives(train)
    for e in exclude:
        masked = masked + positives(_fit_shape(e, n_users, n_items))
    masked = (masked > 0).astype(np.float64)
    # A target positive stays a candidate even if it is also a train/val positive.
    masked = masked - masked.multiply(pos_target > 0)
    masked.eliminate_zeros()
    masked = (masked > 0).tocsr()

    target_users = np.unique(target.nonzero()[0])
    n_rel = np.diff(pos_target.indptr)
    users = np.flatnonzero(n_rel > 0).astype(np.int64)
    return EvalSplit(
        name=name,
        n_items=n_items,
        users=users,
        relevant=pos_target.tocsr(),
        mask=masked,
        threshold=float(threshold),
        n_skipped_no_relevant=int(len(target_users) - len(users)),
        info={"target_users": int(len(target_users)), "mask": mask},
    )


def split_from_cornac(name: str, train_set, target_set, exclude_sets=(), threshold: float = 4.0,
                      mask: str = "positives") -> EvalSplit:
    """Same as :func:`build_split`, reading Cornac ``Dataset`` objects (indices already shared)."""
    return build_split(
        name,
        train_set.csr_matrix,
        target_set.csr_matrix,
        [s.csr_matrix for s in exclude_sets if s is not None],
        threshold=threshold,
        n_items=train_set.num_items,
        mask=mask,
    )


@dataclass
class EvalResult:
    split: str
    cutoffs: tuple[int, ...]
    users: np.ndarray
    values: dict[tuple[str, int], np.ndarray]  # (metric, k) -> per-user values, aligned with users
    n_tie_fallback: int = 0

    def mean(self, metric: str, k: int) -> float:
        v = self.values[(metric, k)]
        return float(v.mean()) if len(v) else float("nan")

    def summary(self) -> dict[str, float]:
        return {f"{m}@{k}": self.mean(m, k) for (m, k) in self.values}

    def per_user_frame(self) -> pd.DataFrame:
        frames = [
            pd.DataFrame({"user": self.users, "metric": m, "k": k, "value": v}) for (m, k), v in self.values.items()
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["user", "metric", "k", "value"])


def cornac_rank(row_scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Top-k item indices exactly as ``cornac.models.Recommender.rank`` orders them."""
    item_scores = row_scores[candidates]
    part = np.argpartition(item_scores, -k)
    top = part[-k:]
    top = top[np.argsort(item_scores[top])]
    return candidates[top[::-1]]


def _graded_gain(r: np.ndarray, threshold: float) -> np.ndarray:
    return np.where(r >= threshold, np.power(2.0, r - threshold + 1.0) - 1.0, 0.0)


def evaluate(
    score_fn: ScoreFn,
    split: EvalSplit,
    cutoffs: Sequence[int] = (20,),
    chunk_size: int = 1024,
    progress: bool = False,
) -> EvalResult:
    """Full-ranking metrics of ``score_fn`` on ``split``.

    ``score_fn(user_indices) -> (len(users), n_items)`` scores (a shorter second axis is
    padded with each row's minimum, as Cornac does for items the model does not know).
    """
    cutoffs = tuple(sorted({int(k) for k in cutoffs}))
    if not cutoffs or cutoffs[0] < 1:
        raise ValueError(f"cut-offs must be positive integers, got {cutoffs}")
    K = cutoffs[-1]
    users = split.users
    n_items = split.n_items
    out = {(m, k): np.zeros(len(users)) for m in METRICS for k in cutoffs}
    discounts = 1.0 / np.log2(np.arange(K) + 2.0)
    cum_disc = np.cumsum(discounts)
    n_fallback = 0

    starts = range(0, len(users), chunk_size)
    for start in tqdm(starts, desc=f"eval {split.name}", disable=not progress, leave=False):
        u = users[start : start + chunk_size]
        b = len(u)
        S = np.asarray(score_fn(u))
        if S.ndim != 2 or S.shape[0] != b:
            raise ValueError(f"score_fn returned shape {S.shape}, expected ({b}, {n_items})")
        if S.shape[1] < n_items:  # Cornac: unknown items get the row's minimum score
            pad = np.repeat(S.min(axis=1, keepdims=True), n_items - S.shape[1], axis=1)
            S = np.concatenate([S, pad.astype(S.dtype)], axis=1)
        elif S.shape[1] > n_items:
            S = S[:, :n_items]
        # Work copy in the model's float dtype (ints -> float64): orders and ties unchanged.
        if np.issubdtype(S.dtype, np.floating):
            wdt = S.dtype
        else:  # integer scores (MostPop counts): float32 is exact below 2^24
            wdt = np.float32 if S.size == 0 or np.abs(S).max() < 2**24 else np.float64
        F = S.astype(wdt, copy=True)
        if np.isnan(F).any():
            bad = int(u[np.isnan(F).any(axis=1)][0])
            raise ValueError(f"score_fn returned NaN scores (first user index {bad})")
        M = split.mask[u]
        mr, mc = M.nonzero()
        F[mr, mc] = -np.inf
        n_cand = n_items - np.diff(M.indptr)

        R = split.relevant[u].tocoo()  # ratings of relevant items
        rr, rc, rv = R.row, R.col, R.data
        n_rel = np.bincount(rr, minlength=b)
        kk = min(K, n_items)
        # torch.topk: unlike np.argpartition it stays fast on rows full of ties (MostPop);
        # the order among ties is irrelevant here (tie-sensitive users are re-ranked below).
        vals_t, idx_t = torch.from_numpy(F).topk(kk, dim=1, largest=True, sorted=True)
        ranked = np.full((b, K), -1, dtype=np.int64)
        ranked[:, :kk] = idx_t.numpy()
        s_sorted = vals_t.numpy()
        s_k = s_sorted[:, -1]

        # Users whose metrics may depend on tie-breaking (see module docstring).
        rel_scores = F[rr, rc]
        near = rel_scores >= s_k[rr]
        sensitive = n_cand < K
        if near.any():
            rows, vals = rr[near], rel_scores[near]
            for lo in range(0, len(rows), 256):  # bounded memory
                eq = (F[rows[lo : lo + 256]] == vals[lo : lo + 256, None]).sum(axis=1)
                sensitive[rows[lo : lo + 256][eq > 1]] = True
        for j in np.flatnonzero(sensitive):
            keep = np.ones(n_items, dtype=bool)
            keep[M.indices[M.indptr[j] : M.indptr[j + 1]]] = False
            cand = np.flatnonzero(keep)
            kj = min(K, len(cand))
            ranked[j, :kj] = cornac_rank(S[j], cand, kj)
            ranked[j, kj:] = -1
            n_fallback += 1

        # Gains of the ranked items.
        # Look the ranked (user, item) pairs up among the relevant ones (sorted keys).
        rel_keys = rr.astype(np.int64) * (n_items + 1) + rc
        srt = np.argsort(rel_keys, kind="stable")
        rel_keys, rel_vals = rel_keys[srt], rv[srt].astype(np.float64)
        q = np.arange(b)[:, None] * (n_items + 1) + np.where(ranked < 0, n_items, ranked)
        pos = np.minimum(np.searchsorted(rel_keys, q), max(len(rel_keys) - 1, 0))
        grades = np.where(rel_keys[pos] == q, rel_vals[pos], 0.0) if len(rel_keys) else np.zeros(q.shape)
        hits = grades > 0
        graded = _graded_gain(grades, split.threshold)
        # Ideal graded DCG: each user's relevant gains, sorted descending, first K.
        g = _graded_gain(rv, split.threshold)
        o = np.lexsort((-g, rr))
        first = np.r_[0, np.cumsum(n_rel)][:-1]
        pos = np.arange(len(o)) - first[rr[o]]
        keep_k = pos < K
        ideal_graded = np.zeros((b, K))
        ideal_graded[rr[o][keep_k], pos[keep_k]] = g[o][keep_k]
        cum_hits = np.cumsum(hits, axis=1)
        cum_dcg = np.cumsum(hits * discounts, axis=1)
        cum_gdcg = np.cumsum(graded * discounts, axis=1)
        cum_igdcg = np.cumsum(ideal_graded * discounts, axis=1)
        sl = slice(start, start + b)
        for k in cutoffs:
            kk = min(k, K)
            out[("Recall", k)][sl] = cum_hits[:, kk - 1] / n_rel
            out[("HR", k)][sl] = (cum_hits[:, kk - 1] > 0).astype(float)
            out[("nDCG", k)][sl] = cum_dcg[:, kk - 1] / cum_disc[np.minimum(n_rel, kk) - 1]
            out[("nDCG_graded", k)][sl] = cum_gdcg[:, kk - 1] / cum_igdcg[:, kk - 1]
    return EvalResult(split.name, cutoffs, users, out, n_tie_fallback=n_fallback)


def evaluate_model(model, split: EvalSplit, cutoffs: Sequence[int] = (20,), chunk_size: int = 1024,
                   progress: bool = False) -> EvalResult:
    """:func:`evaluate` with the model's batched scorer (see ``mmrepr.models.adapters``)."""
    from mmrepr.models.adapters import score_users

    return evaluate(lambda u: score_users(model, u), split, cutoffs, chunk_size, progress)
