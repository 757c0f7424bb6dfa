"""Cornac's own ranking evaluation, the reference our evaluator is checked against."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from cornac.eval_methods import ranking_eval
from cornac.metrics import NDCG, HitRatio, Recall

# Our metric names -> Cornac metric classes.
CORNAC_METRICS = {"Recall": Recall, "nDCG": NDCG, "HR": HitRatio}


def cornac_ranking_eval(model, train_set, target_set, exclude_set=None, threshold: float = 4.0,
                        cutoffs: Sequence[int] = (20,), verbose: bool = False):
    """``ranking_eval`` on one split; returns ``({(metric, k): mean}, {(metric, k): {user: value}})``.

    For the test split pass the validation set as ``exclude_set`` (Cornac masks its positives),
    exactly as ``BaseMethod.evaluate`` does; for validation pass None.
    """
    keys, metrics = [], []
    for name, cls in CORNAC_METRICS.items():
        for k in sorted(set(cutoffs)):
            keys.append((name, int(k)))
            metrics.append(cls(k=int(k)))
    avg, per_user = ranking_eval(
        model=model,
        metrics=metrics,
        train_set=train_set,
        test_set=target_set,
        val_set=exclude_set,
        rating_threshold=threshold,
        exclude_unknowns=True,
        verbose=verbose,
    )
    return dict(zip(keys, map(float, avg))), dict(zip(keys, per_user))


def per_user_array(per_user: dict, users: np.ndarray) -> np.ndarray:
    """Cornac's {user: value} dict as an array aligned with ``users``."""
    return np.array([per_user[int(u)] for u in users], dtype=np.float64)
