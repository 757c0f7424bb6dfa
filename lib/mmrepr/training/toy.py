"""A tiny run folder (interactions + feature sets) for the stage-4 tests and for development.

Items belong to clusters; users prefer a few clusters; the ``real`` feature set carries the
cluster (visual: one-hot + noise, textual: a random projection of it), ``noise`` does not.
Ratings span 1..5 so the threshold matters; val/test contain some unknown users and one cold
item (no training interaction; every feature set has its row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmrepr.features.store import FeatureSet, save_feature_set
from mmrepr.io import write_parquet


def make_toy_run(run_dir: Path, n_users: int = 80, n_items: int = 60, per_user: int = 12, n_clusters: int = 6,
                 seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    run_dir = Path(run_dir)
    items = [f"i{j:04d}" for j in range(n_items)]
    cluster = rng.integers(0, n_clusters, size=n_items)
    rows = []
    for u in range(n_users):
        liked = rng.choice(n_clusters, size=2, replace=False)
        p = np.where(np.isin(cluster, liked), 8.0, 1.0)
        chosen = rng.choice(n_items, size=per_user, replace=False, p=p / p.sum())
        for j in chosen:
            r = float(rng.integers(4, 6) if cluster[j] in liked else rng.integers(1, 6))
            rows.append((f"u{u:04d}", items[j], r))
    df = pd.DataFrame(rows, columns=["user", "item", "rating"])
    df["timestamp"] = np.arange(len(df), dtype=np.int64)
    split = np.array(["train"] * len(df), dtype=object)
    for _, idx in df.groupby("user").indices.items():
        idx = rng.permutation(idx)
        split[idx[0]] = "val"
        split[idx[1:3]] = "test"
    df["split"] = split
    # A few cold users and one cold item in val/test (excluded by Cornac, counted by us).
    extra = pd.DataFrame([
        ("cold_u1", items[0], 5.0, 0, "test"), ("cold_u2", items[1], 4.0, 0, "val"),
        (df["user"].iloc[0], "cold_item", 5.0, 0, "test"),
    ], columns=["user", "item", "rating", "timestamp", "split"])
    df = pd.concat([df, extra], ignore_index=True)
    df["rating"] = df["rating"].astype(np.float32)
    all_items = sorted(set(items) | {"cold_item"})
    write_parquet(df.sort_values(["split", "user", "item"]).reset_index(drop=True), run_dir / "data" / "interactions.parquet")
    write_parquet(pd.DataFrame({"item": all_items, "title": "", "description": "", "image_path": ""}),
                  run_dir / "data" / "items.parquet")

    onehot = np.eye(n_clusters, dtype=np.float32)[cluster]
    vis = onehot + 0.05 * rng.standard_normal((n_items, n_clusters)).astype(np.float32)
    txt = onehot @ rng.standard_normal((n_clusters, 8)).astype(np.float32)
    cold = rng.standard_normal((1, n_clusters)).astype(np.float32)
    save_feature_set(run_dir, FeatureSet("real", items + ["cold_item"],
                                         {"visual": np.vstack([vis, cold]),
                                          "textual": np.vstack([txt, np.zeros((1, 8), np.float32)])},
                                         {"kind": "real"}))
    save_feature_set(run_dir, FeatureSet("noise_gaussian_real", items + ["cold_item"],
                                         {"visual": rng.standard_normal((n_items + 1, n_clusters)).astype(np.float32),
                                          "textual": rng.standard_normal((n_items + 1, 8)).astype(np.float32)},
                                         {"kind": "noise_gaussian", "reference": "real"}))
    # every set has a row for the cold item too (models are built over all items)
    save_feature_set(run_dir, FeatureSet("text_only", items + ["cold_item"],
                                         {"textual": np.vstack([txt, np.zeros((1, 8), np.float32)])}, {"kind": "real"}))
    save_feature_set(run_dir, FeatureSet("attrs", items + ["cold_item"],
                                         {"attributes": np.vstack([onehot, np.eye(n_clusters, dtype=np.float32)[:1]])},
                                         {"kind": "real"}))
    return run_dir
