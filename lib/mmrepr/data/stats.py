"""Dataset statistics: users, items, interactions and density, overall and per split."""

from __future__ import annotations

import pandas as pd


def dataset_statistics(inter: pd.DataFrame, n_catalogue_items: int | None = None) -> pd.DataFrame:
    rows = []
    train_users = set(inter.loc[inter["split"] == "train", "user"])
    train_items = set(inter.loc[inter["split"] == "train", "item"])
    for name, df in [("all", inter)] + [(s, inter[inter["split"] == s]) for s in ("train", "val", "test")]:
        users = df["user"].nunique()
        items = df["item"].nunique() if name != "all" or n_catalogue_items is None else n_catalogue_items
        n = len(df)
        rows.append({
            "split": name,
            "users": users,
            "items": items,
            "interactions": n,
            "density": n / (users * items) if users and items else 0.0,
            "relevant (rating>=4)": int((df["rating"] >= 4).sum()),
            "users without training data": 0 if name in ("all", "train") else int((~df["user"].drop_duplicates().isin(train_users)).sum()),
            # cold items: no training interaction (stage 4's test_cold slice ranks them)
            "items without training data": int((~df["item"].drop_duplicates().isin(train_items)).sum()),
            "rows of items without training data": int((~df["item"].isin(train_items)).sum()),
        })
    return pd.DataFrame(rows)
