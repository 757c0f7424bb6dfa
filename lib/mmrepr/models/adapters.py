"""Batched scoring and epoch-wise training for any Cornac ``Recommender``.

Our own models (``mmrepr.models.*``) provide ``score_users`` and call ``epoch_callback``
after every epoch, with ``get_state``/``set_state`` for the best-epoch snapshot.
Cornac's own models do not, so:

- **Scoring**: BPR, VBPR, MostPop and ItemKNN (see ``_itemknn_scores``) are scored for a block of users with one matrix
  product from their learned parameters (the same formula as their ``score``); any other
  model falls back to stacking ``model.score(u)`` per user.
- **Epochs**: BPR and VBPR are trained in ``eval_every``-epoch increments with warm start
  (Cornac keeps the learned arrays on the object and ``fit`` only initialises the ones that
  are None). For BPR this is the same SGD as one long run (it has no optimiser state;
  only its sampler is reseeded from the model's own seeded RNG at each increment). VBPR's
  Adam moments restart at each increment: a documented deviation, small at
  ``eval_every`` = 10. The snapshot is a copy of the learned arrays.
- Models without epochs (MostPop, ItemKNN, ...) are fitted once and evaluated at epoch 0.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

# Learned arrays that make up a Cornac model's state, by class name.
CORNAC_STATE = {
    "BPR": ("u_factors", "i_factors", "i_biases"),
    "VBPR": ("beta_item", "gamma_user", "gamma_item", "theta_user", "emb_matrix", "beta_prime",
             "theta_item", "visual_bias"),
}
# Our models that call epoch_callback once at the end of fit (nothing to select).
NON_ITERATIVE = {"Random", "AttributeItemKNN"}
# The attribute that sets how many epochs one ``fit`` call runs.
CORNAC_EPOCH_ATTR = {"BPR": "max_iter", "VBPR": "n_epochs"}


def _cls(model) -> str:
    return type(model).__name__


def score_users(model, users: np.ndarray) -> np.ndarray:
    """Scores of all known items for each user in ``users``: shape (len(users), n_items)."""
    users = np.asarray(users, dtype=np.int64)
    own = getattr(model, "score_users", None)
    if callable(own):
        return np.asarray(own(users))
    name = _cls(model)
    if name == "BPR" and getattr(model, "u_factors", None) is not None:
        return _bias_plus_products(model.i_biases, [(model.u_factors[users], model.i_factors)])
    if name == "VBPR" and getattr(model, "gamma_user", None) is not None:
        return _bias_plus_products(model.beta_item + model.visual_bias,
                                   [(model.gamma_user[users], model.gamma_item),
                                    (model.theta_user[users], model.theta_item)])
    if name == "MostPop":
        return np.broadcast_to(model.item_pop, (len(users), len(model.item_pop)))
    if name == "ItemKNN" and getattr(model, "sim_mat", None) is not None:
        return _itemknn_scores(model, users)
    return np.stack([np.asarray(model.score(int(u))) for u in users])


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


def _knn_prepare(model) -> None:
    if getattr(model, "_mm_knn_simT", None) is None:
        sim = model.sim_mat.tocsr()
        model._mm_knn_simT = sim.T.tocsr()
        model._mm_knn_absT = abs(sim).T.tocsr()
        present = sim.copy()
        present.data = np.ones_like(present.data)
        model._mm_knn_presT = present.T.tocsr()


def _itemknn_scores(model, users: np.ndarray) -> np.ndarray:
    """Cornac's ItemKNN score for a block of users, vectorised.

    Cornac (``similarity.pyx::compute_score``): for item i, among the stored neighbours of
    row i of ``sim_mat`` that the user rated, keep the k most similar and return
    ``mean_u + sum(sim * r) / (sum(|sim|) + 1e-8)`` (r: mean-centred ratings; a rated
    entry is never 0, Cornac stores EPS). A user with at most k rated items keeps all of
    them: two sparse products, equal to Cornac's loop up to float summation order. For a
    user with more than k rated items Cornac's own ``score`` is used (its top-k heap breaks
    similarity ties by insertion order and rating, which we do not emulate).
    """
    _knn_prepare(model)
    R = model.ui_mat[users]
    B = R.copy()
    B.data = np.ones_like(B.data)
    num = np.asarray((R @ model._mm_knn_simT).todense())
    den = np.asarray((B @ model._mm_knn_absT).todense())
    out = model.mean_arr[users][:, None] + num / (den + 1e-8)
    # More rated items than k: Cornac's heap selection breaks similarity ties by insertion
    # order and rating; rather than emulate it, ask Cornac itself for those users.
    for j in np.flatnonzero(np.diff(R.indptr) > int(model.k)):
        out[j] = model.score(int(users[j]))
    return out


def is_epochwise(model) -> bool:
    return hasattr(model, "epoch_callback") or _cls(model) in CORNAC_EPOCH_ATTR


def get_state(model):
    if hasattr(model, "get_state"):
        return copy.deepcopy(model.get_state())
    attrs = CORNAC_STATE.get(_cls(model))
    if attrs is None:
        return None
    return {a: np.array(getattr(model, a), copy=True) for a in attrs}


def set_state(model, state) -> None:
    if state is None:
        return
    if hasattr(model, "set_state"):
        model.set_state(state)
        return
    for a, v in state.items():
        setattr(model, a, v)


@dataclass
class EpochLog:
    """What epoch-wise training recorded."""

    evaluations: list[tuple[int, dict]] = field(default_factory=list)  # (epoch, eval output)
    best_epoch: int = 0
    best_value: float = -np.inf
    stopped_early: bool = False


def train_epochwise(
    model,
    train_set,
    val_set,
    evaluate: Callable[[object], tuple[float, object]],
    n_epochs: int,
    eval_every: int,
    patience: int | None = None,
) -> EpochLog:
    """Fit ``model``, evaluating every ``eval_every`` epochs; leave it at its best epoch.

    ``evaluate(model) -> (selection value, anything)``; the value decides the best epoch
    (higher is better, first best kept). ``patience``: stop after that many evaluations
    without improvement. Models without epochs are fitted once and evaluated at epoch 0.
    """
    log = EpochLog()
    state = {"best": None, "since": 0}

    def record(epoch: int) -> bool:
        value, payload = evaluate(model)
        log.evaluations.append((epoch, payload))
        if value > log.best_value:
            log.best_value, log.best_epoch = value, epoch
            state["best"], state["since"] = get_state(model), 0
        else:
            state["since"] += 1
        if patience is not None and state["since"] >= patience:
            log.stopped_early = True
            return True
        return False

    quiet = contextlib.redirect_stdout(io.StringIO())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Model is already fitted")
        if hasattr(model, "epoch_callback"):
            iterative = _cls(model) not in NON_ITERATIVE

            def callback(m, epoch: int) -> bool:
                if iterative and (epoch % eval_every == 0 or epoch == n_epochs):
                    return record(epoch)
                return False

            model.n_epochs = n_epochs
            model.epoch_callback = callback
            model.fit(train_set, val_set)
            model.epoch_callback = None
            if not log.evaluations:  # non-iterative model (kNN, Random): no epochs to select
                record(0)
        elif _cls(model) in CORNAC_EPOCH_ATTR:
            attr = CORNAC_EPOCH_ATTR[_cls(model)]
            done = 0
            while done < n_epochs:
                step = min(eval_every, n_epochs - done)
                setattr(model, attr, step)
                with quiet:
                    model.fit(train_set, val_set)
                done += step
                if record(done):
                    break
        else:
            with quiet:
                model.fit(train_set, val_set)
            record(0)
    if state["best"] is not None and log.evaluations and log.evaluations[-1][0] != log.best_epoch:
        set_state(model, state["best"])
    return log
