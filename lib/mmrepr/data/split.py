"""The per-user random split of STUDY.md (MMRec style, seeded).

Decision (STUDY.md): per user, rows are shuffled with a seeded generator, then
- n >= 10: floor(20% of n) rows are held out; floor(half) of them go to validation and
  the rest to test; the others are training;
- 3 <= n < 10: one validation row, one test row, the rest training;
- n == 2: one training and one test row; n == 1: training only (a user is never left
  without training data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def holdout_sizes(n: int) -> tuple[int, int]:
    """(validation, test) row counts for a user with ``n`` interactions."""
    if n >= 10:
        hold = int(np.floor(0.2 * n))
        n_val = hold // 2
        return n_val, hold - n_val
    if n >= 3:
        return 1, 1
    if n == 2:
        return 0, 1
    return 0, 0


def split_per_user(df: pd.DataFrame, seed: int, user_col: str = "user", item_col: str = "item") -> pd.DataFrame:
    """Add a ``split`` column (train/val/test); rows come back sorted by split, user, item."""
    if df.empty:
        out = df.copy()
        out["split"] = pd.Series(dtype=str)
        return out
    # Sort first so the result does not depend on the input row order.
    base = df.sort_values([user_col, item_col], kind="mergesort").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    key = rng.random(len(base))
    order = np.lexsort((key, base[user_col].to_numpy()))
    shuffled = base.iloc[order].reset_index(drop=True)
    rank = shuffled.groupby(user_col, sort=False).cumcount().to_numpy()
    n = shuffled.groupby(user_col, sort=False)[user_col].transform("size").to_numpy()
    sizes = np.array([holdout_sizes(int(v)) for v in range(int(n.max()) + 1)], dtype=np.int64)
    n_val, n_test = sizes[n, 0], sizes[n, 1]
    split = np.where(rank < n_val, "val", np.where(rank < n_val + n_test, "test", "train"))
    shuffled["split"] = split
    order_split = {"train": 0, "val": 1, "test": 2}
    shuffled["_s"] = shuffled["split"].map(order_split)
    out = shuffled.sort_values(["_s", user_col, item_col], kind="mergesort").drop(columns="_s")
    return out.reset_index(drop=True)
