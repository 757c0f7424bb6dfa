"""User-activity slices: is content worth more to users the model knows little about?

A user's activity is their number of training interactions (stage 1's
``interactions.parquet``, ``split == "train"``). ``analysis.activity_buckets`` gives the
lower edges of the buckets: ``[1, 2, 5]`` makes ``1``, ``2-4`` and ``5+``. Test users with
no training interaction are not evaluated by stage 4, so they appear in no bucket.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmrepr.data.schema import data_dir


def bucket_labels(edges: list[int]) -> list[str]:
    """``[1, 2, 5]`` -> ``["1", "2-4", "5+"]``."""
    edges = [int(e) for e in edges]
    if not edges or edges[0] < 1 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"analysis.activity_buckets: {edges} must be strictly increasing integers >= 1")
    out = []
    for lo, hi in zip(edges, edges[1:] + [None]):
        if hi is None:
            out.append(f"{lo}+")
        elif hi - lo == 1:
            out.append(str(lo))
        else:
            out.append(f"{lo}-{hi - 1}")
    return out


def assign_buckets(counts: pd.Series, edges: list[int]) -> pd.Series:
    """The bucket label of each count (ordered categorical); counts below the first edge get NaN."""
    labels = bucket_labels(edges)
    bins = [*map(float, edges), np.inf]
    return pd.cut(counts.astype(float), bins=bins, right=False, labels=labels)


def user_activity(run_dir: Path) -> pd.Series:
    """Training interactions per user id (str), from stage 1's output."""
    path = data_dir(run_dir) / "interactions.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; the activity slices need stage 1's interactions")
    inter = pd.read_parquet(path, columns=["user", "split"])
    train = inter[inter["split"] == "train"]
    counts = train.groupby(train["user"].astype(str)).size()
    counts.index.name = "user"
    return counts.rename("n_train")


def with_buckets(per_user: pd.DataFrame, activity: pd.Series, edges: list[int],
                 problems: list[str] | None = None) -> pd.DataFrame:
    """``per_user`` with a ``bucket`` column; users with no known activity are counted in
    ``problems`` and left out."""
    b = assign_buckets(activity, edges)
    out = per_user.assign(bucket=per_user["user"].astype(str).map(b.astype(object)))
    unknown = out["bucket"].isna()
    if unknown.any() and problems is not None:
        problems.append(f"activity slices: {out.loc[unknown, 'user'].nunique()} evaluated users have no training "
                        "interaction in data/interactions.parquet (left out of the buckets)")
    return out[~unknown]


def bucket_sizes(per_user: pd.DataFrame) -> pd.DataFrame:
    """Users per dataset and bucket."""
    return (per_user.groupby(["dataset", "bucket"], observed=True)["user"].nunique().rename("n_users").reset_index())
