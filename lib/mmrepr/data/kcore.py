"""Iterative k-core filtering of an interaction table."""

from __future__ import annotations

import pandas as pd


def k_core(df: pd.DataFrame, k: int, user_col: str = "user", item_col: str = "item") -> tuple[pd.DataFrame, int]:
    """Keep only users and items with at least ``k`` interactions each, repeated to a fixed point.

    Returns the filtered frame (original order, index reset) and the number of passes.
    ``k <= 1`` keeps everything (every present user/item already has one interaction).
    """
    if k <= 1:
        return df.reset_index(drop=True), 0
    passes = 0
    cur = df
    while True:
        passes += 1
        u_counts = cur[user_col].map(cur[user_col].value_counts())
        i_counts = cur[item_col].map(cur[item_col].value_counts())
        keep = (u_counts >= k) & (i_counts >= k)
        if keep.all():
            return cur.reset_index(drop=True), passes
        cur = cur[keep]
        if cur.empty:
            return cur.reset_index(drop=True), passes
