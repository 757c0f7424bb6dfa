"""Cornac's own models in the study (VBPR_Cornac, BPR, MostPop, ItemKNN): their declarations, the
batched scorers and the best-epoch state the study needs around them.

- **Build**: VBPR takes ``k = k2 = factors`` (Elliot's ``factors`` and ``factors_d``) and
  ``lambda_w = lambda_b = lambda_e = reg``. Cornac's ItemKNN offers cosine/pearson
  similarity (not Elliot's jaccard, dot, asymmetric, tversky) and idf/bm25 weighting: we
  search what Cornac has (``ElliotItemKNN`` has the five similarities).
- **Scoring**: BPR, VBPR, MostPop and ItemKNN are scored for a block of users with one
  matrix product from their learned parameters (the same formula as their ``score``).
- **Epochs**: BPR and VBPR are trained in ``eval_every``-epoch increments with warm start
  (Cornac keeps the learned arrays on the object and ``fit`` only initialises the ones that
  are None). For BPR this is the same SGD as one long run (it has no optimiser state;
  only its sampler is reseeded from the model's own seeded RNG at each increment). VBPR's
  Adam moments restart at each increment: a documented deviation, small at
  ``eval_every`` = 10. The snapshot is a copy of the learned arrays.
- MostPop and ItemKNN are fitted once and evaluated at epoch 0.
- **Cold items** (no training interaction): Cornac's samplers draw negatives from every
  item of their training ``Dataset``, so these models are trained on the warm items only
  (``item_scope="warm"``) and score ``n_warm`` items; the evaluator gives the items beyond
  (the cold ones, appended after the warm) the user's lowest score, Cornac's own rule for
  unknown items (``ranking._fit_width``). VBPR_Cornac extends itself instead: a cold item's
  ID part (``beta_item``, ``gamma_item``) is zero and its content part is computed from its
  feature row, ``theta_u . (E^T f_i) + beta'^T f_i`` (the modality holds every item's row,
  warm first, and Cornac's ``fit`` reads only the first ``n_warm``).
"""

from __future__ import annotations

import numpy as np
import torch

from mmrepr.models.spec import BPR_SPACE, ModelSpec


def _arrays_state(attrs: tuple[str, ...]):
    def get(model):
        return {a: np.array(getattr(model, a), copy=True) for a in attrs}

    def set_(model, state):
        for a, v in state.items():
            setattr(model, a, v)

    return get, set_


def _bias_plus_products(bias: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``bias[None, :] + sum(U @ I.T)``, in the arrays' common dtype, computed in torch: the
    evaluator's top-k runs on torch's thread pool right after, and OpenBLAS's spinning
    threads (numpy's ``@``) would compete with it for the cores."""
    dt = np.result_type(bias, *[a for p in pairs for a in p])
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=dt))  # noqa: E731
    (U, I), rest = pairs[0], pairs[1:]
    S = torch.addmm(t(np.asarray(bias).reshape(1, -1)), t(U), t(I).T)  # the bias broadcasts
    for U, I in rest:
        S.addmm_(t(U), t(I).T)
    return S.numpy()


def _per_user(model, users):
    return np.stack([np.asarray(model.score(int(u))) for u in users])


# ---- VBPR ---------------------------------------------------------------------------------
_VBPR_STATE = ("beta_item", "gamma_user", "gamma_item", "theta_user", "emb_matrix", "beta_prime", "theta_item",
               "visual_bias")


def _vbpr_build(hp, common):
    from cornac.models import VBPR

    f, reg = int(hp["factors"]), float(hp["reg"])
    return VBPR(name=common["name"], k=f, k2=f, n_epochs=common["n_epochs"], batch_size=common["batch_size"],
                learning_rate=float(hp["lr"]), lambda_w=reg, lambda_b=reg, lambda_e=reg, use_gpu=False,
                verbose=common["verbose"], seed=common["seed"], **(common.get("extra") or {}))


def _vbpr_cold_part(model) -> tuple[np.ndarray, np.ndarray]:
    """(theta_item, visual_bias) of the cold items: the rows of the modality beyond the
    ``n_warm`` training items, through the learned E and beta'. Cached per snapshot."""
    cache = getattr(model, "_mm_cold_cache", None)
    if cache is not None and cache[0] is model.emb_matrix and cache[1] is model.beta_prime:
        return cache[2], cache[3]
    feats = getattr(getattr(getattr(model, "train_set", None), "item_image", None), "features", None)
    cold = np.zeros((0, model.emb_matrix.shape[0]), np.float32) if feats is None \
        else np.asarray(feats[model.gamma_item.shape[0]:], dtype=np.float32)
    theta, vbias = cold @ model.emb_matrix, (cold @ model.beta_prime).ravel()
    model._mm_cold_cache = (model.emb_matrix, model.beta_prime, theta, vbias)
    return theta, vbias


def _vbpr_score(model, users):
    if getattr(model, "gamma_user", None) is None:
        return _per_user(model, users)
    theta_c, vbias_c = _vbpr_cold_part(model)
    n_cold = theta_c.shape[0]
    # cold items: zero ID part (beta_item, gamma_item), their content part only
    beta = np.concatenate([model.beta_item, np.zeros(n_cold, model.beta_item.dtype)])
    gamma_item = np.concatenate([model.gamma_item, np.zeros((n_cold, model.gamma_item.shape[1]),
                                                             model.gamma_item.dtype)])
    return _bias_plus_products(beta + np.concatenate([model.visual_bias, vbias_c]),
                               [(model.gamma_user[users], gamma_item),
                                (model.theta_user[users], np.concatenate([model.theta_item, theta_c]))])


# ---- BPR ----------------------------------------------------------------------------------
def _bpr_build(hp, common):
    from cornac.models import BPR

    return BPR(name=common["name"], k=int(hp["factors"]), max_iter=common["n_epochs"], learning_rate=float(hp["lr"]),
               lambda_reg=float(hp["reg"]), verbose=common["verbose"], seed=common["seed"],
               **(common.get("extra") or {}))


def _bpr_score(model, users):
    if getattr(model, "u_factors", None) is None:
        return _per_user(model, users)
    return _bias_plus_products(model.i_biases, [(model.u_factors[users], model.i_factors)])


# ---- MostPop ------------------------------------------------------------------------------
def _mostpop_build(hp, common):
    from cornac.models import MostPop

    return MostPop(name=common["name"])


def _mostpop_score(model, users):
    return np.broadcast_to(model.item_pop, (len(users), len(model.item_pop)))


# ---- ItemKNN ------------------------------------------------------------------------------
def _itemknn_build(hp, common):
    from cornac.models import ItemKNN

    w = hp.get("weighting", "none")
    return ItemKNN(name=common["name"], k=int(hp.get("neighbours", 20)), similarity=hp.get("similarity", "cosine"),
                   weighting=None if w in (None, "none") else w, verbose=common["verbose"], seed=common["seed"],
                   **(common.get("extra") or {}))


def _knn_prepare(model) -> None:
    if getattr(model, "_mm_knn_simT", None) is None:
        sim = model.sim_mat.tocsr()
        model._mm_knn_simT = sim.T.tocsr()
        model._mm_knn_absT = abs(sim).T.tocsr()
        present = sim.copy()
        present.data = np.ones_like(present.data)
        model._mm_knn_presT = present.T.tocsr()


def _itemknn_score(model, users: np.ndarray) -> np.ndarray:
    """Cornac's ItemKNN score for a block of users, vectorised.

    Cornac (``similarity.pyx::compute_score``): for item i, among the stored neighbours of
    row i of ``sim_mat`` that the user rated, keep the k most similar and return
    ``mean_u + sum(sim * r) / (sum(|sim|) + 1e-8)`` (r: mean-centred ratings; a rated
    entry is never 0, Cornac stores EPS). A user with at most k rated items keeps all of
    them: two sparse products, equal to Cornac's loop up to float summation order. For a
    user with more than k rated items Cornac's own ``score`` is used (its top-k heap breaks
    similarity ties by insertion order and rating, which we do not emulate).
    """
    if getattr(model, "sim_mat", None) is None:
        return _per_user(model, users)
    _knn_prepare(model)
    R = model.ui_mat[users]
    B = R.copy()
    B.data = np.ones_like(B.data)
    num = np.asarray((R @ model._mm_knn_simT).todense())
    den = np.asarray((B @ model._mm_knn_absT).todense())
    out = model.mean_arr[users][:, None] + num / (den + 1e-8)
    for j in np.flatnonzero(np.diff(R.indptr) > int(model.k)):
        out[j] = model.score(int(users[j]))
    return out


_KNN_SPACE = {
    "neighbours": ("int", 5, 1000, True),
    "similarity": ("cat", ["cosine", "pearson"]),
    "weighting": ("cat", ["none", "idf", "bm25"]),
}

_vbpr_get, _vbpr_set = _arrays_state(_VBPR_STATE)
_bpr_get, _bpr_set = _arrays_state(("u_factors", "i_factors", "i_biases"))

SPECS = [
    # He & McAuley's VBPR as Cornac has it; the study's VBPR is mmrepr.models.vbpr (docs/models.md)
    ModelSpec("VBPR_Cornac", "multimodal", _vbpr_build, needs="features", concat_modalities=True, score=_vbpr_score,
              get_state=_vbpr_get, set_state=_vbpr_set, epoch_attr="n_epochs", label="VBPR (Cornac, He & McAuley)",
              item_scope="warm"),
    ModelSpec("BPR", "baseline", _bpr_build, space=BPR_SPACE, score=_bpr_score, get_state=_bpr_get,
              set_state=_bpr_set, epoch_attr="max_iter", item_scope="warm"),
    ModelSpec("MostPop", "baseline", _mostpop_build, epochwise=False, score=_mostpop_score, item_scope="warm"),
    ModelSpec("ItemKNN", "baseline", _itemknn_build, epochwise=False, space=_KNN_SPACE, score=_itemknn_score,
              label="Cornac's Item-kNN", keyword_reference=2, item_scope="warm"),
]
