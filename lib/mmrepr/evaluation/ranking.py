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
one call per user) and masked items are set to -inf. The metrics only need the rank of
each relevant item within the top K, so we take each row's K largest *values*
(:func:`topk_values`, two-level) and rank a relevant item scored at or above the K-th
value as 1 + the number of those values above it. That is its position in Cornac's list
unless it shares its score with another candidate; users with such a tie (none for
continuous-score models, some for MostPop/kNN) or with fewer than K candidates are
re-ranked exactly as Cornac does, one at a time, on the model's own score dtype.
Non-personalised scores (one row broadcast to all users) skip the top-k: the items are
sorted once and each user walks that order past their masked items.

Test slices (docs/protocol.md, "Cold items"): an :class:`EvalSplit` ranks a window of
item indices ``[offset, offset + n_items)``. Stage 4 appends the cold items (no training
interaction) after the warm ones, so ``test`` (warm) is the window ``[0, n_warm)``,
``test_cold`` is ``[n_warm, n_all)`` and ``test_all`` is everything; the relevant items
and the mask of each slice live in its window's coordinates (:func:`build_split`, ``offset``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from mmrepr.progress import tqdm

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
    # Target-split users with no training interaction (cold: unknown to the model). They stay
    # in the evaluation when they have a relevant item; counted so a report can say so.
    n_cold_users: int = 0
    n_cold_evaluated: int = 0
    # The candidates are the model's items offset .. offset + n_items - 1 (a score column j
    # of this split is the model's item offset + j).
    offset: int = 0


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
    offset: int = 0,
) -> EvalSplit:
    """An :class:`EvalSplit` from rating matrices (users x items, in the model's indices).

    ``train``: the training ratings; ``target``: the split to evaluate; ``exclude``: other
    splits whose positives are masked too (validation when evaluating test).
    ``n_items`` defaults to the training matrix's width (Cornac's ``exclude_unknowns``);
    ``offset``: the candidates are the items ``offset .. offset + n_items - 1`` (a slice).
    """
    if mask not in ("positives", "all"):
        raise ValueError(f"mask must be 'positives' (Cornac) or 'all', got {mask!r}")
    offset = int(offset)
    n_items = int(train.shape[1] - offset if n_items is None else n_items)
    n_users = int(max([train.shape[0], target.shape[0], *[e.shape[0] for e in exclude]]))
    # users with no training interaction at all (on any item, inside the window or not)
    cold = np.diff(_fit_shape(train, n_users, max(train.shape[1], 1)).indptr) == 0
    end = offset + n_items

    def window(m):
        return _fit_shape(m, n_users, end)[:, offset:].tocsr()

    train = window(train)
    target = window(target)

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
        masked = masked + positives(window(e))
    masked = (masked > 0).astype(np.float64)
    # A target positive stays a candidate even if it is also a train/val positive.
    masked = masked - masked.multiply(pos_target > 0)
    masked.eliminate_zeros()
    masked = (masked > 0).tocsr()

    target_users = np.unique(target.nonzero()[0])
    n_rel = np.diff(pos_target.indptr)
    users = np.flatnonzero(n_rel > 0).astype(np.int64)
    n_cold = int(cold[target_users].sum())
    n_cold_eval = int(cold[users].sum())
    return EvalSplit(
        name=name,
        n_items=n_items,
        users=users,
        relevant=pos_target.tocsr(),
        mask=masked,
        threshold=float(threshold),
        n_skipped_no_relevant=int(len(target_users) - len(users)),
        info={"target_users": int(len(target_users)), "mask": mask, "cold_users": n_cold,
              "cold_users_evaluated": n_cold_eval},
        n_cold_users=n_cold,
        n_cold_evaluated=n_cold_eval,
        offset=offset,
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


def _work_dtype(a: np.ndarray) -> np.dtype:
    """The model's float dtype; integer scores (MostPop counts) -> float32 when exact (< 2^24)."""
    if np.issubdtype(a.dtype, np.floating):
        return a.dtype
    return np.dtype(np.float32 if a.size == 0 or np.abs(a).max() < 2**24 else np.float64)


def _fit_width(a: np.ndarray, n_items: int, offset: int = 0) -> np.ndarray:
    """The columns ``offset .. offset + n_items - 1`` of ``a``. Cornac: items the model does
    not know (beyond its width) get the row's minimum score; extra columns are cut."""
    end = offset + n_items
    if a.shape[-1] < end:
        pad = np.repeat(a.min(axis=-1, keepdims=True), end - a.shape[-1], axis=-1)
        a = np.concatenate([a, pad.astype(a.dtype)], axis=-1)
    return a[..., offset:end]


def topk_values(F: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's ``k`` largest values (in no particular order) of a C-contiguous 2-D tensor.

    Two levels, about twice as fast as one ``torch.topk`` over wide rows. The first
    ``g * B`` columns are cut into ``g = n // B`` groups of ``B`` (group j = columns
    j, j + g, j + 2g, ...: a strided view, no copy). The k largest values can only lie in
    the k groups with the largest maxima or in the ``n - g * B`` leftover columns: a group
    holding a value above the k-th largest is always among those k groups, and they hold
    at least k values >= the k-th largest. So the last ``topk`` reads ``k * B`` values
    instead of ``n`` and returns exactly the values of a full ``topk``, ties included.
    NaN (largest for ``torch.topk``) propagates through the maxima.
    """
    b, n = F.shape
    B = max(2, int(round(np.sqrt(n / max(k, 1)))))  # balances the two topk widths, n/B and k*B
    g = n // B
    if g < 2 * k or b == 0:
        return F.topk(k, dim=1, largest=True, sorted=False).values
    F3 = F.as_strided((b, B, g), (F.stride(0), g, 1))
    _, grp = F3.amax(dim=1).topk(k, dim=1, largest=True, sorted=False)
    V = F3.gather(2, grp[:, None, :].expand(b, B, k)).reshape(b, B * k)
    if g * B < n:
        V = torch.cat([V, F[:, g * B :]], dim=1)
    return V.topk(k, dim=1, largest=True, sorted=False).values


@dataclass
class _ChunkTop:
    """What the metrics need from one chunk's scores: each row's top-K values (unsorted;
    -inf pads rows with fewer candidates), the relevant items' scores, how many items
    share each of those scores (an upper bound is enough: it only decides who is re-ranked
    exactly) and a user's score row for that re-ranking."""

    top_values: np.ndarray  # (b, K)
    rel_scores: np.ndarray  # (n_pairs,)
    n_equal: np.ndarray  # (n_pairs,)
    row_scores: Callable[[int], np.ndarray]


def _nan_error(users: np.ndarray, rows: np.ndarray) -> ValueError:
    return ValueError(f"score_fn returned NaN scores for candidate items (first user index {int(users[rows][0])})")


def _mask_scores(S: np.ndarray, M: sp.csr_matrix) -> tuple[np.ndarray, Callable[[], None]]:
    """Scores with the masked items at -inf, and a callable that undoes it. A writable float
    ``S`` is changed in place (the callable restores it); anything else is copied."""
    mr, mc = M.nonzero()
    if S.flags.writeable and S.flags.c_contiguous and np.issubdtype(S.dtype, np.floating):
        F, saved = S, S[mr, mc].copy()

        def restore():
            F[mr, mc] = saved
    else:
        F = np.array(S, dtype=_work_dtype(S), order="C")

        def restore():
            return None
    F[mr, mc] = -np.inf
    return F, restore


def _top_dense(F: np.ndarray, S: np.ndarray, rr, rc, K: int, users: np.ndarray) -> _ChunkTop:
    """One score row per user; ``F`` is ``S`` with the masked items at -inf."""
    b, n_items = F.shape
    top = np.full((b, K), -np.inf, dtype=F.dtype)
    kk = min(K, n_items)
    if kk:
        top[:, :kk] = topk_values(torch.from_numpy(F), kk).numpy()
    bad = np.isnan(top).any(axis=1)
    if bad.any():
        raise _nan_error(users, bad)
    rel_scores = F[rr, rc]
    n_equal = np.zeros(len(rr), dtype=np.int64)
    near = np.flatnonzero(rel_scores >= top.min(axis=1)[rr])
    for lo in range(0, len(near), 256):  # bounded memory
        sel = near[lo : lo + 256]
        n_equal[sel] = (F[rr[sel]] == rel_scores[sel, None]).sum(axis=1)
    # Exact re-ranking reads the model's own dtype (masked -inf entries are never candidates).
    return _ChunkTop(top, rel_scores, n_equal, lambda j: S[j])


def _top_shared(row: np.ndarray, M: sp.csr_matrix, rr, rc, K: int, users: np.ndarray) -> _ChunkTop:
    """The same scores for every user (MostPop, any non-personalised model): sort the items
    once and give each user the first K items of that order that are not masked for them."""
    b, n_items = M.shape
    own_row, row = row, row.astype(_work_dtype(row), copy=False)
    nan_items = np.flatnonzero(np.isnan(row))
    if len(nan_items):  # an error only if some user has a NaN-scored candidate
        bad = np.asarray(M[:, nan_items].sum(axis=1)).ravel() < len(nan_items)
        if bad.any():
            raise _nan_error(users, bad)
    order = np.argsort(-row, kind="stable")
    pos_of = np.empty(n_items, dtype=np.int64)
    pos_of[order] = np.arange(n_items)
    mr, mc = M.nonzero()
    L = int(min(n_items, K + (np.diff(M.indptr).max() if b else 0)))
    blocked = np.zeros((b, L), dtype=bool)
    p = pos_of[mc]
    blocked[mr[p < L], p[p < L]] = True
    keep = ~blocked
    cum = np.cumsum(keep, axis=1)
    r_, c_ = np.nonzero(keep & (cum <= K))
    top = np.full((b, K), -np.inf, dtype=row.dtype)
    top[r_, cum[r_, c_] - 1] = row[order[c_]]
    rel_scores = row[rc]
    uniq, counts = np.unique(row, return_counts=True)  # masked items counted too: an upper bound
    n_equal = counts[np.searchsorted(uniq, rel_scores)]
    return _ChunkTop(top, rel_scores, n_equal, lambda j: own_row)


def _relevant_ranks(S: np.ndarray, M: sp.csr_matrix, R: sp.csr_matrix, rr: np.ndarray, K: int,
                    users: np.ndarray, n_items: int, offset: int = 0) -> tuple[np.ndarray, int]:
    """Rank of each relevant (user, item) pair of ``R`` (1-based; 0 = not in the top K), and
    how many users were re-ranked exactly.

    An item scored at or above the K-th score ranks 1 + the number of top-K scores above its
    own, unless it shares its score with another item: then the order among ties decides,
    and the user is re-ranked exactly as Cornac does (so are users with fewer than K
    candidates).
    """
    b = M.shape[0]
    rc = R.indices
    restore = None
    try:
        if b > 1 and S.strides[0] == 0:  # one row broadcast to every user
            top = _top_shared(_fit_width(S[0], n_items, offset), M, rr, rc, K, users)
        else:
            S = _fit_width(S, n_items, offset)
            F, restore = _mask_scores(S, M)  # the last thing it does is the masking
            top = _top_dense(F, S, rr, rc, K, users)
        s_k = top.top_values.min(axis=1)
        v = top.rel_scores
        inside = np.flatnonzero(v >= s_k[rr])
        rank = np.zeros(len(rr), dtype=np.int64)
        rank[inside] = 1 + (top.top_values[rr[inside]] > v[inside, None]).sum(axis=1)
        sensitive = n_items - np.diff(M.indptr) < K
        sensitive[rr[inside[top.n_equal[inside] > 1]]] = True
        for j in np.flatnonzero(sensitive):
            keep = np.ones(n_items, dtype=bool)
            keep[M.indices[M.indptr[j] : M.indptr[j + 1]]] = False
            cand = np.flatnonzero(keep)
            ranked = cornac_rank(top.row_scores(j), cand, min(K, len(cand)))
            pj = slice(R.indptr[j], R.indptr[j + 1])
            at, where = np.nonzero(rc[pj][:, None] == ranked[None, :])
            rank[pj] = 0
            rank[pj][at] = where + 1
    finally:  # the caller's score array gets its masked entries back, whatever happened
        if restore is not None:
            restore()
    return rank, int(sensitive.sum())


def evaluate(
    score_fn: ScoreFn,
    split: EvalSplit,
    cutoffs: Sequence[int] = (20,),
    chunk_size: int = 1024,
    progress: bool = False,
) -> EvalResult:
    """Full-ranking metrics of ``score_fn`` on ``split``.

    ``score_fn(user_indices) -> (len(users), n_items)`` scores (a shorter second axis is
    padded with each row's minimum, as Cornac does for items the model does not know). A
    writable float array it returns is used in place (masked entries set to -inf, then
    restored); a read-only broadcast of one row (``np.broadcast_to``) takes the
    non-personalised fast path.
    """
    cutoffs = tuple(sorted({int(k) for k in cutoffs}))
    if not cutoffs or cutoffs[0] < 1:
        raise ValueError(f"cut-offs must be positive integers, got {cutoffs}")
    K = cutoffs[-1]
    users = split.users
    n_items = split.n_items
    out = {(m, k): np.zeros(len(users)) for m in METRICS for k in cutoffs}
    discounts = 1.0 / np.log2(np.arange(K) + 2.0)  # rank r (1-based) -> discounts[r - 1]
    cum_disc = np.cumsum(discounts)
    n_fallback = 0

    starts = range(0, len(users), chunk_size)
    for start in tqdm(starts, desc=f"eval {split.name}", disable=not progress, leave=False):
        u = users[start : start + chunk_size]
        b = len(u)
        S = np.asarray(score_fn(u))
        if S.ndim != 2 or S.shape[0] != b:
            raise ValueError(f"score_fn returned shape {S.shape}, expected ({b}, {n_items})")
        M = split.mask[u]
        R = split.relevant[u]  # csr: ratings of relevant items; pairs ordered by user
        rc, rv = R.indices, R.data
        n_rel = np.diff(R.indptr)
        rr = np.repeat(np.arange(b), n_rel)
        rank, n_reranked = _relevant_ranks(S, M, R, rr, K, u, n_items, split.offset)
        n_fallback += n_reranked

        # Metrics from the ranks: sums over each user's relevant items.
        disc = np.where(rank > 0, discounts[np.maximum(rank, 1) - 1], 0.0)
        gain = _graded_gain(rv.astype(np.float64), split.threshold)
        # Ideal graded DCG: each user's gains in descending order at ranks 1, 2, ...
        o = np.lexsort((-gain, rr))
        ideal_rank = np.arange(len(o)) - np.repeat(R.indptr[:-1], n_rel)  # 0-based, per user
        ideal_disc = np.where(ideal_rank < K, discounts[np.minimum(ideal_rank, K - 1)], 0.0)
        sl = slice(start, start + b)

        def per_user(w):
            return np.bincount(rr, weights=w, minlength=b)

        for k in cutoffs:
            hit = (rank > 0) & (rank <= k)
            hits = per_user(hit.astype(np.float64))
            out[("Recall", k)][sl] = hits / n_rel
            out[("HR", k)][sl] = (hits > 0).astype(float)
            out[("nDCG", k)][sl] = per_user(hit * disc) / cum_disc[np.minimum(n_rel, k) - 1]
            ideal = np.bincount(rr[o], weights=gain[o] * ideal_disc * (ideal_rank < k), minlength=b)
            out[("nDCG_graded", k)][sl] = per_user(hit * gain * disc) / ideal
    return EvalResult(split.name, cutoffs, users, out, n_tie_fallback=n_fallback)
