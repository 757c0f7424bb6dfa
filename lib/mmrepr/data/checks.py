"""Checks of params against the data once it is known (stage 1's output).

``check_rating_threshold(threshold, ratings, source)`` is called where the ratings are at
hand (``mmrepr check`` when stage 1 has run; stage 4 before training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class RatingThresholdError(ValueError):
    pass


def check_rating_threshold(threshold: float, ratings, source: str, key: str = "train.rating_threshold") -> None:
    """Refuse a threshold above every rating of the data: no interaction would be relevant.

    ``ratings``: the interactions' ratings (array-like); ``source``: the file they came from.
    """
    r = np.asarray(ratings, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        raise RatingThresholdError(f"{source}: no finite rating to check key '{key}' = {threshold!r} against")
    lo, hi = float(r.min()), float(r.max())
    if not 0 < threshold <= hi:
        raise RatingThresholdError(
            f"key '{key}' = {threshold!r} is outside the ratings of {source} ({lo:g} to {hi:g}): "
            f"no interaction would count as relevant; allowed: a threshold in (0, {hi:g}]"
        )


def check_run_data(P) -> list[str]:
    """The params checks that need stage 1's output; [] when it is not there yet."""
    path = Path(P.run_dir) / "data" / "interactions.parquet"
    if not path.is_file():
        return []
    import pyarrow.parquet as pq

    try:
        ratings = pq.read_table(path, columns=["rating"]).column("rating").to_numpy()
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported with its name
        return [f"{path}: cannot read the ratings: {type(exc).__name__}: {exc}"]
    try:
        check_rating_threshold(P.train.rating_threshold, ratings, str(path))
    except RatingThresholdError as exc:
        return [str(exc)]
    return []
