"""The one schema every dataset is written in (``runs/<profile>/data/``).

- ``interactions.parquet``: user (str), item (str), rating (float32), timestamp (int64),
  split ("train" | "val" | "test"); sorted by split, user, item.
- ``items.parquet``: item (str), title (str), description (str), image_path (str, absolute,
  or "" when there is no image), plus source fields prefixed ``src_``; sorted by item.
- ``user_map.parquet`` / ``item_map.parquet``: id (str) -> index (int32), in sorted order.
- ``quality.csv``: step, rows_in, rows_out, dropped, reason (one row per processing step).
- ``stats.csv``: users, items, interactions and density, overall and per split.
- ``ground_truth/`` (synthetic catalogue only): the planted attributes and preferences.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SPLITS = ("train", "val", "test")
INTERACTION_COLUMNS = ["user", "item", "rating", "timestamp", "split"]
ITEM_COLUMNS = ["item", "title", "description", "image_path"]


class SchemaError(ValueError):
    pass


@dataclass(frozen=True)
class Dataset:
    """Stage 1's output, as the later stages read it."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    root: Path

    @property
    def item_ids(self) -> list[str]:
        return self.items["item"].tolist()

    def split(self, name: str) -> pd.DataFrame:
        return self.interactions[self.interactions["split"] == name]

    @property
    def ground_truth_dir(self) -> Path | None:
        gt = self.root / "ground_truth"
        return gt if gt.is_dir() else None


def data_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "data"


def validate_interactions(df: pd.DataFrame, source: str = "interactions") -> None:
    missing = [c for c in INTERACTION_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"{source}: missing columns {missing}")
    bad = set(df["split"].unique()) - set(SPLITS)
    if bad:
        raise SchemaError(f"{source}: unknown split labels {sorted(bad)}; allowed {SPLITS}")


def validate_items(df: pd.DataFrame, source: str = "items") -> None:
    missing = [c for c in ITEM_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"{source}: missing columns {missing}")
    if df["item"].duplicated().any():
        dup = df.loc[df["item"].duplicated(), "item"].iloc[0]
        raise SchemaError(f"{source}: duplicated item id {dup!r}")


def load_dataset(run_dir: Path) -> Dataset:
    root = data_dir(run_dir)
    for name in ("interactions.parquet", "items.parquet"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} not found: run stage 1 (01_data_prep) first")
    inter = pd.read_parquet(root / "interactions.parquet")
    items = pd.read_parquet(root / "items.parquet")
    validate_interactions(inter, str(root / "interactions.parquet"))
    validate_items(items, str(root / "items.parquet"))
    return Dataset(interactions=inter, items=items, root=root)
