"""Export a profile's split and a feature set for the reference frameworks (issue #11).

``python -m mmrepr export --format mmrec|elliot --params P [--feature-set NAME] --out DIR``

MMRec (``enoche/MMRec``, ``src/utils/dataset.py`` and ``configs/dataset/*.yaml``):
  ``DIR/<name>/<name>.inter``: TSV with header ``userID itemID rating timestamp x_label``
  (``x_label`` 0/1/2 = train/val/test; MMRec reads ``USER_ID_FIELD``, ``ITEM_ID_FIELD`` and
  ``inter_splitting_label``), ids remapped to 0..n-1 over train ∪ val ∪ test (MMRec takes
  ``max(id) + 1`` as the count); ``image_feat.npy`` / ``text_feat.npy`` (float32, row r =
  itemID r) from the set's ``visual`` / ``textual`` matrices; ``<name>.yaml`` a dataset config
  for ``src/configs/dataset/``; ``user_map.tsv`` / ``item_map.tsv`` back to our raw ids.
Elliot (``data_config: strategy: fixed`` with ``train_path``/``validation_path``/``test_path``;
  multimodal side information as one ``<item>.npy`` per item in a folder per modality):
  ``DIR/<name>/{train,val,test}.tsv`` (``user<TAB>item<TAB>rating<TAB>timestamp``, no header,
  our raw ids), ``visual_features/<item>.npy`` and ``textual_features/<item>.npy``.

An item of the split without a row in the feature set is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmrepr.features.store import FeatureSetError, load_feature_set

SPLIT_LABEL = {"train": 0, "val": 1, "test": 2}
MMREC_FILES = {"visual": "image_feat.npy", "textual": "text_feat.npy"}
ELLIOT_DIRS = {"visual": "visual_features", "textual": "textual_features"}


class ExportError(ValueError):
    pass


def read_split(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "data" / "interactions.parquet"
    if not path.is_file():
        raise ExportError(f"{path} not found: run stage 1 (data) for this profile first")
    df = pd.read_parquet(path)
    missing = {"user", "item", "split"} - set(df.columns)
    if missing:
        raise ExportError(f"{path}: missing columns {sorted(missing)}")
    bad = ~df["split"].isin(list(SPLIT_LABEL))
    if bad.any():
        raise ExportError(f"{path}: row {int(np.flatnonzero(bad)[0])} has split {df['split'][bad].iloc[0]!r}")
    df = df.copy()
    df["user"], df["item"] = df["user"].astype(str), df["item"].astype(str)
    if "rating" not in df:
        df["rating"] = 1.0
    if "timestamp" not in df:
        df["timestamp"] = 0
    return df


def _feature_rows(run_dir: Path, name: str, items: list[str]) -> dict[str, np.ndarray]:
    fs = load_feature_set(Path(run_dir), name)
    index = {iid: r for r, iid in enumerate(fs.item_ids)}
    missing = [i for i in items if i not in index]
    if missing:
        raise FeatureSetError(f"feature set {name!r}: {len(missing)} items of the split have no row (first: {missing[:3]})")
    rows = np.array([index[i] for i in items], dtype=np.int64)
    out = {role: np.asarray(fs.matrices[role], dtype=np.float32)[rows] for role in ("visual", "textual")
           if role in fs.matrices}
    if not out:
        raise FeatureSetError(f"feature set {name!r} has no visual or textual matrix")
    return out


def export_mmrec(run_dir: Path, out: Path, name: str, feature_set: str | None = None) -> Path:
    df = read_split(run_dir)
    users = sorted(df["user"].unique())
    items = sorted(df["item"].unique())
    umap = {u: k for k, u in enumerate(users)}
    imap = {i: k for k, i in enumerate(items)}
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    inter = pd.DataFrame({
        "userID": df["user"].map(umap).astype(np.int64), "itemID": df["item"].map(imap).astype(np.int64),
        "rating": df["rating"].astype(float), "timestamp": df["timestamp"].astype(np.int64),
        "x_label": df["split"].map(SPLIT_LABEL).astype(np.int64),
    }).sort_values(["x_label", "userID", "itemID"], kind="stable")
    inter.to_csv(folder / f"{name}.inter", sep="\t", index=False)
    pd.DataFrame({"userID": range(len(users)), "user": users}).to_csv(folder / "user_map.tsv", sep="\t", index=False)
    pd.DataFrame({"itemID": range(len(items)), "item": items}).to_csv(folder / "item_map.tsv", sep="\t", index=False)
    if feature_set:
        for role, m in _feature_rows(run_dir, feature_set, items).items():
            np.save(folder / MMREC_FILES[role], m)
    (folder / f"{name}.yaml").write_text(
        "USER_ID_FIELD: userID\nITEM_ID_FIELD: itemID\nTIME_FIELD: timestamp\n"
        f"filter_out_cod_start_users: True\ninter_file_name: '{name}.inter'\n"
        "vision_feature_file: 'image_feat.npy'\ntext_feature_file: 'text_feat.npy'\n"
        "user_graph_dict_file: 'user_graph_dict.npy'\nfield_separator: \"\\t\"\n",
        encoding="utf-8",
    )
    return folder


def export_elliot(run_dir: Path, out: Path, name: str, feature_set: str | None = None) -> Path:
    df = read_split(run_dir)
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLIT_LABEL:
        d = df[df["split"] == split][["user", "item", "rating", "timestamp"]]
        d.to_csv(folder / f"{split}.tsv", sep="\t", index=False, header=False)
    if feature_set:
        items = sorted(df["item"].unique())
        for role, m in _feature_rows(run_dir, feature_set, items).items():
            d = folder / ELLIOT_DIRS[role]
            d.mkdir(exist_ok=True)
            for iid, row in zip(items, m):
                if "/" in iid or iid in (".", ".."):
                    raise ExportError(f"item id {iid!r} cannot be a file name for Elliot's per-item features")
                np.save(d / f"{iid}.npy", row)
    return folder


def export(fmt: str, run_dir: Path, out: Path, name: str, feature_set: str | None = None) -> Path:
    if fmt == "mmrec":
        return export_mmrec(run_dir, out, name, feature_set)
    if fmt == "elliot":
        return export_elliot(run_dir, out, name, feature_set)
    raise ExportError(f"unknown export format {fmt!r}; use mmrec or elliot")
