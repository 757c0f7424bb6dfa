"""Attribute Item-kNN: item-item similarity from item attributes (the LVLM's one-hot
keywords), scored as in Elliot's ``AttributeItemKNN`` / MyMediaLite: a user's score for item
j is the sum, over the user's training items i among j's ``k`` nearest neighbours, of
sim(i, j).

Attributes come from Cornac's ``item_feature`` modality (``train_set.item_feature``, a
``FeatureModality`` given to ``BaseMethod(item_feature=...)``), rows aligned like the other
modalities (see ``mmrepr.models.base.item_modality_matrix``).

Similarities and weighting follow Ferrari Dacrema's ``Compute_Similarity`` and
``IR_feature_weighting`` (the code Elliot's ItemKNN uses), computed column by column on
the items x attributes matrix X:
  cosine      x_i.x_j / (|x_i| |x_j| + shrink + 1e-6)
  dot         x_i.x_j (/ shrink when shrink > 0)
  asymmetric  x_i.x_j / (|x_j|^(2a) |x_i|^(2(1-a)) + shrink + 1e-6), a = asymmetric_alpha
  jaccard     on binarised X: c / (n_i + n_j - c + shrink + 1e-6), c = common attributes
  tversky     on binarised X: c / (c + ta (n_j - c) + tb (n_i - c) + shrink + 1e-6)
Self-similarity is 0; for every target item j only the k largest non-zero sim(i, j) are
kept. Weighting of X (rows = items): ``tfidf`` x -> sqrt(x) * log(N / (1 + df)),
``bm25`` x -> x (K1+1) / (K1 ((1-B) + B len/avg_len) + x) * log(N / (1 + df)).

Cold items (no training interaction): the neighbours i are warm items only (a user has no
cold training item, so a cold neighbour could only take a slot), and the weighting's
statistics (N, df, average length) come from the warm items; every item, cold ones
included, is a target j. So Attribute Item-kNN ranks cold items by their attributes'
similarity to the user's training items, and the warm items' similarities are those of a
model built on the warm items alone. ElliotItemKNN's item vectors are interactions: a cold
item has none, so it cannot rank cold items (lowest warm score, as every ID-only model).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from mmrepr.progress import tqdm

from mmrepr.models.base import ATTRIBUTES_ATTR, MMReprRecommender, ModalityError, item_modality_matrix
from mmrepr.models.spec import ModelSpec, knn_build

SIMILARITIES = ("cosine", "jaccard", "dot", "asymmetric", "tversky")
WEIGHTINGS = ("none", "tfidf", "bm25")

_BLOCK_ELEMENTS = 1 << 25


def _idf(x: sp.csr_matrix, ref: np.ndarray | None) -> np.ndarray:
    """log(N / (1 + df)) over the reference rows (all rows when ``ref`` is None)."""
    r = x if ref is None else x[np.flatnonzero(ref)]
    r = sp.coo_matrix(r)
    return np.log(r.shape[0] / (1.0 + np.bincount(r.col, minlength=x.shape[1])))


def tf_idf(x: sp.csr_matrix, ref: np.ndarray | None = None) -> sp.csr_matrix:
    x = sp.csr_matrix(x, dtype=np.float64)
    idf = _idf(x, ref)
    x = x.tocoo()
    x.data = np.sqrt(x.data) * idf[x.col]
    return x.tocsr()


def bm25(x: sp.csr_matrix, k1: float = 1.2, b: float = 0.75, ref: np.ndarray | None = None) -> sp.csr_matrix:
    if not (0 < b < 1 and k1 > 0):
        raise ValueError(f"bm25: need 0 < B < 1 and K1 > 0, got B={b}, K1={k1}")
    x = sp.csr_matrix(x, dtype=np.float64)
    idf = _idf(x, ref)
    row_sums = np.ravel(x.sum(axis=1))
    avg = row_sums.mean() if ref is None else row_sums[np.asarray(ref, dtype=bool)].mean()
    x = x.tocoo()
    length_norm = (1.0 - b) + b * row_sums / avg
    x.data = x.data * (k1 + 1.0) / (k1 * length_norm[x.row] + x.data) * idf[x.col]
    return x.tocsr()


def weight_attributes(x, weighting: str | None, k1: float = 1.2, b: float = 0.75,
                      ref: np.ndarray | None = None) -> sp.csr_matrix:
    """``ref``: bool per row, the rows whose statistics (N, df, average length) are used
    (the warm items; None: all rows)."""
    w = "none" if weighting is None else str(weighting).lower().replace("-", "")
    x = sp.csr_matrix(x, dtype=np.float64)
    if w == "none":
        return x
    if w == "tfidf":
        return tf_idf(x, ref)
    if w == "bm25":
        return bm25(x, k1, b, ref)
    raise ValueError(f"unknown weighting {weighting!r}; allowed {WEIGHTINGS}")


def item_similarity(
    x,
    k: int,
    similarity: str = "cosine",
    shrink: float = 0.0,
    asymmetric_alpha: float = 0.5,
    tversky_alpha: float = 1.0,
    tversky_beta: float = 1.0,
    verbose: bool = False,
    candidates: np.ndarray | None = None,
) -> sp.csr_matrix:
    """W (items x items), W[i, j] = sim(i, j) for the k nearest neighbours i of target j.

    ``candidates``: bool per item, the items that may be a neighbour i (None: all)."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; allowed {SIMILARITIES}")
    x = sp.csr_matrix(x, dtype=np.float64)
    if similarity in ("jaccard", "tversky"):
        x = x.copy()
        x.data[:] = 1.0
    n = x.shape[0]
    cand = np.arange(n) if candidates is None else np.flatnonzero(np.asarray(candidates, dtype=bool))
    pos = np.full(n, -1)
    pos[cand] = np.arange(len(cand))  # item -> its row among the candidates
    k = min(int(k), len(cand))
    if k < 1:
        raise ValueError(f"k (neighbours) must be >= 1, got {k}")
    sq_all = np.ravel(x.multiply(x).sum(axis=1))  # sum of squares per item
    norm_all = np.sqrt(sq_all)
    sq, norm = sq_all[cand], norm_all[cand]  # the neighbours' (rows of each block)
    xc = x[cand] if candidates is not None else x
    xt = x.T.tocsc()
    block = max(1, _BLOCK_ELEMENTS // max(len(cand), 1))
    rows, cols, vals = [], [], []
    for start in tqdm(range(0, n, block), desc="item similarity", disable=not verbose, leave=False):
        stop = min(n, start + block)
        dots = np.asarray((xc @ xt[:, start:stop]).todense())  # (n_cand, block): column j = target
        tgt = np.arange(start, stop)
        if similarity == "cosine":
            s = dots / (norm[:, None] * norm_all[None, tgt] + shrink + 1e-6)
        elif similarity == "asymmetric":
            a = asymmetric_alpha
            s = dots / (np.power(norm_all[None, tgt], 2 * a) * np.power(norm[:, None], 2 * (1 - a)) + shrink + 1e-6)
        elif similarity == "jaccard":
            s = dots / (sq_all[None, tgt] + sq[:, None] - dots + shrink + 1e-6)
        elif similarity == "tversky":
            s = dots / (
                dots + (sq_all[None, tgt] - dots) * tversky_alpha + (sq[:, None] - dots) * tversky_beta
                + shrink + 1e-6
            )
        else:  # dot
            s = dots / shrink if shrink else dots
        own = pos[tgt] >= 0
        s[pos[tgt][own], np.flatnonzero(own)] = 0.0  # no self-similarity
        top = np.argpartition(-s, k - 1, axis=0)[:k]  # (k, block)
        tv = np.take_along_axis(s, top, axis=0)
        keep = tv != 0
        rows.append(cand[top[keep]])
        cols.append(np.broadcast_to(tgt[None, :], top.shape)[keep])
        vals.append(tv[keep])
    w = sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, n),
    )
    return w


class AttributeItemKNN(MMReprRecommender):
    """``k`` is the number of neighbours (as in Cornac's ItemKNN)."""

    scores_cold_items = True  # by attribute similarity to the user's (warm) training items

    def __init__(
        self,
        name: str = "AttributeItemKNN",
        k: int = 50,
        learning_rate: float = 0.0,
        lambda_reg: float = 0.0,
        n_epochs: int = 1,
        batch_size: int = 1024,
        seed: int = 123,
        verbose: bool = False,
        device: str = "auto",
        similarity: str = "cosine",
        weighting: str | None = "none",
        shrink: float = 0.0,
        asymmetric_alpha: float = 0.5,
        tversky_alpha: float = 1.0,
        tversky_beta: float = 1.0,
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
        trainable: bool = True,
    ):
        super().__init__(name, k, learning_rate, lambda_reg, n_epochs, batch_size, seed, verbose, device, trainable)
        if similarity not in SIMILARITIES:
            raise ValueError(f"{name}: unknown similarity {similarity!r}; allowed {SIMILARITIES}")
        self.similarity = similarity
        self.weighting = weighting
        self.shrink = float(shrink)
        self.asymmetric_alpha = float(asymmetric_alpha)
        self.tversky_alpha = float(tversky_alpha)
        self.tversky_beta = float(tversky_beta)
        self.bm25_k1 = float(bm25_k1)
        self.bm25_b = float(bm25_b)

    def _item_vectors(self, train_set) -> sp.csr_matrix:
        """Items x attributes: the one-hot keyword matrix of ``item_feature``."""
        x = item_modality_matrix(train_set, ATTRIBUTES_ATTR, dense=False)
        if x is None:
            raise ModalityError(
                f"{self.name} needs item attributes: give the Cornac BaseMethod an item_feature "
                "(FeatureModality) whose features are the one-hot attribute matrix; train_set has none"
            )
        return x

    def _fit(self, train_set, val_set):
        x = weight_attributes(self._item_vectors(train_set), self.weighting, self.bm25_k1, self.bm25_b,
                              ref=self.warm_items)
        self.W = item_similarity(
            x,
            self.k,
            self.similarity,
            self.shrink,
            self.asymmetric_alpha,
            self.tversky_alpha,
            self.tversky_beta,
            verbose=self.verbose,
            candidates=self.warm_items,  # neighbours: warm items only (module docstring)
        )
        self._after_epoch(1)

    def _score_block(self, users):
        return np.asarray((self._train_csr[users] @ self.W).todense(), dtype=np.float32)

    def _state(self):
        return {"epoch": self.epochs_run, "W": self.W}

    def _set_state(self, state):
        self.W = state["W"]
        self.epochs_run = state["epoch"]


class ElliotItemKNN(AttributeItemKNN):
    """Item-kNN on interactions, scored exactly like :class:`AttributeItemKNN` (Elliot's
    ItemKNN): an item's vector is its column of the binary training user-item matrix, with
    the same five similarities and the same sum-of-neighbour-similarities score.

    Cornac's ``ItemKNN`` stays the study's Item-kNN baseline, but it offers only cosine and
    Pearson and scores by a mean-centred weighted average (rating prediction). Against this
    model, Attribute Item-kNN differs in one thing only, where the item vectors come from,
    which is the comparison the keyword question needs. No feature weighting (STUDY.md
    gives it to Attribute Item-kNN only).
    """

    scores_cold_items = False  # a cold item has no interaction vector

    def __init__(
        self,
        name: str = "ElliotItemKNN",
        k: int = 50,
        learning_rate: float = 0.0,
        lambda_reg: float = 0.0,
        n_epochs: int = 1,
        batch_size: int = 1024,
        seed: int = 123,
        verbose: bool = False,
        device: str = "auto",
        similarity: str = "cosine",
        shrink: float = 0.0,
        asymmetric_alpha: float = 0.5,
        tversky_alpha: float = 1.0,
        tversky_beta: float = 1.0,
        trainable: bool = True,
    ):
        super().__init__(name, k, learning_rate, lambda_reg, n_epochs, batch_size, seed, verbose, device,
                         similarity, "none", shrink, asymmetric_alpha, tversky_alpha, tversky_beta,
                         trainable=trainable)

    def _item_vectors(self, train_set) -> sp.csr_matrix:
        """Items x users: the binary training interactions (every interaction a positive)."""
        return self._train_csr.T.tocsr()


_NEIGHBOURS = ("int", 5, 1000, True)

SPECS = [
    ModelSpec("AttributeItemKNN", "baseline", knn_build(AttributeItemKNN), needs="attributes", epochwise=False,
              space={"neighbours": _NEIGHBOURS, "similarity": ("cat", list(SIMILARITIES)),
                     "weighting": ("cat", list(WEIGHTINGS))},
              label="Attribute Item-kNN"),
    # The same similarities, no feature weighting (STUDY.md gives it to Attribute Item-kNN only).
    ModelSpec("ElliotItemKNN", "baseline", knn_build(ElliotItemKNN), epochwise=False,
              space={"neighbours": _NEIGHBOURS, "similarity": ("cat", list(SIMILARITIES))},
              label="Item-kNN on interactions", keyword_reference=1),
]
