"""Batched scoring, epoch-wise training and best-epoch snapshots for any Cornac ``Recommender``.

Generic: what differs between models comes from their declaration
(:class:`~mmrepr.models.spec.ModelSpec`, found by the model's ``name`` in the registry):

- **Scoring**: a class's own ``score_users`` (our models), else the spec's ``score``
  (Cornac's models, see :mod:`mmrepr.models.cornac_models`), else ``model.score(u)`` per user.
- **Epochs**: a class with ``epoch_callback`` calls it after every epoch; a Cornac model
  with ``spec.epoch_attr`` is trained in ``eval_every``-epoch warm-started increments;
  ``spec.epochwise = False`` (or anything else) is fitted once and evaluated at epoch 0.
- **Snapshots**: the class's ``get_state``/``set_state``, else the spec's.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mmrepr.models.spec import ModelSpec


def _spec(model, spec: ModelSpec | None) -> ModelSpec | None:
    if spec is not None:
        return spec
    from mmrepr.models.registry import spec_of

    return spec_of(model)


def score_users(model, users: np.ndarray, spec: ModelSpec | None = None) -> np.ndarray:
    """Scores of all known items for each user in ``users``: shape (len(users), n_items)."""
    users = np.asarray(users, dtype=np.int64)
    own = getattr(model, "score_users", None)
    if callable(own):
        return np.asarray(own(users))
    spec = _spec(model, spec)
    if spec is not None and spec.score is not None:
        return np.asarray(spec.score(model, users))
    return np.stack([np.asarray(model.score(int(u))) for u in users])


def is_epochwise(model, spec: ModelSpec | None = None) -> bool:
    spec = _spec(model, spec)
    if spec is not None:
        return spec.epochwise
    return hasattr(model, "epoch_callback")


def get_state(model, spec: ModelSpec | None = None):
    if hasattr(model, "get_state"):
        return copy.deepcopy(model.get_state())
    spec = _spec(model, spec)
    if spec is None or spec.get_state is None:
        return None
    return spec.get_state(model)


def set_state(model, state, spec: ModelSpec | None = None) -> None:
    if state is None:
        return
    if hasattr(model, "set_state"):
        model.set_state(state)
        return
    spec = _spec(model, spec)
    if spec is None or spec.set_state is None:
        raise TypeError(f"{type(model).__name__}: a state was saved but there is no set_state to restore it")
    spec.set_state(model, state)


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
    spec: ModelSpec | None = None,
) -> EpochLog:
    """Fit ``model``, evaluating every ``eval_every`` epochs; leave it at its best epoch.

    ``evaluate(model) -> (selection value, anything)``; the value decides the best epoch
    (higher is better, first best kept). ``patience``: stop after that many evaluations
    without improvement. Models without epochs are fitted once and evaluated at epoch 0.
    """
    spec = _spec(model, spec)
    log = EpochLog()
    state = {"best": None, "since": 0}

    def record(epoch: int) -> bool:
        value, payload = evaluate(model)
        log.evaluations.append((epoch, payload))
        if value > log.best_value:
            log.best_value, log.best_epoch = value, epoch
            state["best"], state["since"] = get_state(model, spec), 0
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
            iterative = spec.epochwise if spec is not None else True

            def callback(m, epoch: int) -> bool:
                if iterative and (epoch % eval_every == 0 or epoch == n_epochs):
                    return record(epoch)
                return False

            model.n_epochs = n_epochs
            model.epoch_callback = callback
            model.fit(train_set, val_set)
            model.epoch_callback = None
            if not log.evaluations:  # declared epochwise=False: no epochs to select
                record(0)
        elif spec is not None and spec.epochwise and spec.epoch_attr:
            attr = spec.epoch_attr
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
        set_state(model, state["best"], spec)
    return log
