"""Stage 1 end to end: read a source, filter, split, and write the common schema.

``prepare(P)`` is what ``notebooks/01_data_prep.ipynb`` calls. Sources:
- ``synthetic``: the generated catalogue, written in the Amazon 2023 format and read back
  by the same parser as the real data;
- ``amazon2023``: the McAuley Lab files (downloaded and cached), main images fetched;
- ``allrecipes``: the authors' fixed split from the mirror folder (or downloaded).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmrepr.config import Params
from mmrepr.data.kcore import k_core
from mmrepr.data.schema import Dataset, data_dir, validate_interactions, validate_items
from mmrepr.data.split import split_per_user
from mmrepr.data.stats import dataset_statistics
from mmrepr.io import write_csv, write_json, write_parquet

SYNTHETIC_CATEGORY = "Synthetic_Products"


@dataclass
class Prepared:
    dataset: Dataset
    quality: pd.DataFrame
    stats: pd.DataFrame


def _step(step: str, rows_in: int, rows_out: int, reason: str) -> dict:
    return {"step": step, "rows_in": int(rows_in), "rows_out": int(rows_out), "dropped": int(rows_in - rows_out), "reason": reason}


def load_source(P: Params) -> tuple[pd.DataFrame, pd.DataFrame, list[dict], Path | None]:
    """(items, interactions, quality rows, ground-truth folder or None) from the configured source."""
    d = P.data
    if d.source == "allrecipes":
        from mmrepr.data.allrecipes import load_allrecipes

        inter, items, quality = load_allrecipes(P.mirror_dir, P.cache_dir, d.release_base_url)
        return items, inter, quality, None

    from mmrepr.data.amazon import load_category

    if d.source == "synthetic":
        from mmrepr.data.synthetic import generate_catalogue

        out = P.run_dir / "raw_synthetic"
        generate_catalogue(d.synthetic, out, P.seed, category=SYNTHETIC_CATEGORY)
        items, inter, quality = load_category(
            out / "raw", SYNTHETIC_CATEGORY, image_dir=out / "images", download_images=True, workers=d.image_workers
        )
        return items, inter, quality, out / "ground_truth"

    root = P.cache_dir / "amazon2023"
    items, inter, quality = load_category(
        root / "raw", d.category, image_dir=root / "images" / d.category,
        download_images=d.download_images, workers=d.image_workers,
        max_reviews=d.max_reviews, base_url=d.amazon_base_url,
    )
    return items, inter, quality, None


def filter_and_split(inter: pd.DataFrame, k: int, seed: int) -> tuple[pd.DataFrame, list[dict]]:
    quality = []
    n0 = len(inter)
    core, passes = k_core(inter[["user", "item", "rating", "timestamp"]], k)
    if k > 1:
        quality.append(_step(f"{k}-core ({passes} passes)", n0, len(core),
                             f"users or items with fewer than {k} interactions, removed iteratively"))
    if core.empty:
        raise ValueError(f"the {k}-core of {n0} interactions is empty: lower data.k_core or use more data")
    split = split_per_user(core, seed)
    quality.append(_step("per-user split", len(core), len(split), "seeded; see mmrepr.data.split"))
    return split, quality


def make_cold_items(split: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """A seeded random ``fraction`` of the items (at least one) become cold: their training
    rows move to test (validation rows stay: unknown-item rows there, masked from the
    users' test candidates like any validation item). Returns the split, a quality row and
    the cold item ids. A user whose every training row moved becomes unknown to training
    (stage 4 counts and excludes such users)."""
    items = np.array(sorted(split["item"].astype(str).unique()))
    n = max(1, int(round(fraction * len(items))))
    if n >= len(items):
        raise ValueError(f"data.cold_items.fraction={fraction}: would make all {len(items)} items cold")
    cold = sorted(np.random.default_rng(seed).choice(items, size=n, replace=False).tolist())
    moved = split["item"].astype(str).isin(cold) & (split["split"] == "train")
    out = split.copy()
    out.loc[moved, "split"] = "test"
    train_users = set(out.loc[out["split"] == "train", "user"])
    lost = sorted(set(split.loc[split["split"] == "train", "user"]) - train_users)
    q = _step("cold items", len(split), len(out), f"{n} of {len(items)} items (fraction {fraction}, seed {seed}) made "
              f"cold: their {int(moved.sum())} training rows moved to test, their validation rows kept; "
              f"{len(lost)} users left without training rows")
    return out, [q], cold


def normalise(inter: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    inter = inter.astype({"user": str, "item": str})
    inter["rating"] = inter["rating"].astype(np.float32)
    inter["timestamp"] = inter["timestamp"].astype(np.int64)
    order = inter["split"].map({"train": 0, "val": 1, "test": 2})
    inter = inter.assign(_s=order).sort_values(["_s", "user", "item"], kind="mergesort").drop(columns="_s")
    inter = inter[["user", "item", "rating", "timestamp", "split"]].reset_index(drop=True)
    keep = items["item"].isin(set(inter["item"]))
    items = items[keep].sort_values("item", kind="mergesort").reset_index(drop=True)
    for col in ("title", "description", "image_path"):
        items[col] = items[col].fillna("").astype(str)
    front = ["item", "title", "description", "image_path"]
    items = items[front + [c for c in items.columns if c not in front]]
    return inter, items


def prepare(P: Params) -> Prepared:
    items, inter, quality, gt_src = load_source(P)
    cold_items: list[str] = []
    if P.data.source == "allrecipes":
        if P.data.cold_items is not None:
            raise ValueError("data.cold_items: allrecipes uses the authors' fixed split as released (it has its own "
                             "cold items); remove data.cold_items from the profile")
        split = inter  # the authors' fixed split is used as released
    else:
        split, q = filter_and_split(inter, P.data.k_core, P.seed)
        quality += q
        c = P.data.cold_items
        if c is not None:
            split, q, cold_items = make_cold_items(split, c.fraction, P.seed if c.seed is None else c.seed)
            quality += q
    inter, items = normalise(split, items)
    validate_interactions(inter)
    validate_items(items)

    out = data_dir(P.run_dir)
    write_parquet(inter, out / "interactions.parquet")
    write_parquet(items, out / "items.parquet")
    for kind, col in (("user", "user"), ("item", "item")):
        ids = sorted(inter[col].unique()) if kind == "user" else items["item"].tolist()
        write_parquet(pd.DataFrame({"id": ids, "index": np.arange(len(ids), dtype=np.int32)}), out / f"{kind}_map.parquet")
    quality_df = pd.DataFrame(quality, columns=["step", "rows_in", "rows_out", "dropped", "reason"])
    write_csv(quality_df, out / "quality.csv")
    stats = dataset_statistics(inter, n_catalogue_items=len(items))
    write_csv(stats, out / "stats.csv")
    if gt_src is not None and gt_src.is_dir():
        gt_dst = out / "ground_truth"
        tmp = out / ".ground_truth.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(gt_src, tmp)
        shutil.rmtree(gt_dst, ignore_errors=True)
        tmp.rename(gt_dst)
    write_json(out / "summary.json", {
        "source": P.data.source, "category": P.data.category, "k_core": P.data.k_core,
        "users": int(inter["user"].nunique()), "items": len(items), "interactions": len(inter),
        # items with no training interaction (made by data.cold_items, or in the release)
        "cold_items": int((~items["item"].isin(set(inter.loc[inter["split"] == "train", "item"]))).sum()),
        "cold_items_made": len(cold_items),
    })
    return Prepared(Dataset(inter, items, out), quality_df, stats)
