"""``mmrepr export``: MMRec's and Elliot's input formats from a small synthetic run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmrepr.export import ExportError, export
from mmrepr.features.store import FeatureSet, FeatureSetError, save_feature_set


def _run(tmp_path, with_all_items=True):
    rng = np.random.default_rng(0)
    rows = []
    for u in range(7):
        for s, n in (("train", 4), ("val", 1), ("test", 2)):
            for i in rng.choice(12, size=n, replace=False):
                rows.append((f"user{u}", f"rec{i:03d}", float(rng.integers(1, 6)), 100 + u, s))
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp", "split"])
    (tmp_path / "data").mkdir(parents=True)
    inter.to_parquet(tmp_path / "data" / "interactions.parquet")
    items = sorted(inter["item"].unique()) if with_all_items else sorted(inter["item"].unique())[1:]
    order = list(reversed(items))  # feature rows in another order than the export's ids
    vis = rng.normal(size=(len(order), 5)).astype(np.float32)
    txt = rng.normal(size=(len(order), 3)).astype(np.float32)
    save_feature_set(tmp_path, FeatureSet("fs", order, {"visual": vis, "textual": txt}, {}))
    return inter, dict(zip(order, vis)), dict(zip(order, txt))


def test_mmrec_inter_and_features_follow_mmrecs_loader_format(tmp_path):
    inter, vis, txt = _run(tmp_path / "run")
    folder = export("mmrec", tmp_path / "run", tmp_path / "out", "smoke", "fs")
    df = pd.read_csv(folder / "smoke.inter", sep="\t")
    # the columns MMRec's RecDataset reads (USER_ID_FIELD, ITEM_ID_FIELD, inter_splitting_label)
    assert list(df.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    assert len(df) == len(inter)
    assert set(df["x_label"]) == {0, 1, 2}
    assert (df["x_label"] == 0).sum() == (inter["split"] == "train").sum()
    n_users, n_items = inter["user"].nunique(), inter["item"].nunique()
    assert sorted(df["userID"].unique()) == list(range(n_users))  # MMRec: count = max id + 1
    assert sorted(df["itemID"].unique()) == list(range(n_items))
    imap = pd.read_csv(folder / "item_map.tsv", sep="\t", dtype={"item": str})
    img, tx = np.load(folder / "image_feat.npy"), np.load(folder / "text_feat.npy")
    assert img.shape == (n_items, 5) and tx.shape == (n_items, 3) and img.dtype == np.float32
    for r, raw in zip(imap["itemID"], imap["item"]):  # row r is itemID r
        np.testing.assert_array_equal(img[r], vis[raw])
        np.testing.assert_array_equal(tx[r], txt[raw])
    # the interactions survive the remapping
    umap = pd.read_csv(folder / "user_map.tsv", sep="\t", dtype={"user": str})
    back = set(zip(umap["user"].values[df["userID"]], imap["item"].values[df["itemID"]], df["x_label"]))
    lab = {"train": 0, "val": 1, "test": 2}
    assert back == set(zip(inter["user"], inter["item"], inter["split"].map(lab)))
    assert "inter_file_name: 'smoke.inter'" in (folder / "smoke.yaml").read_text()


def test_elliot_fixed_split_files_and_one_npy_per_item(tmp_path):
    inter, vis, txt = _run(tmp_path / "run")
    folder = export("elliot", tmp_path / "run", tmp_path / "out", "smoke", "fs")
    for split in ("train", "val", "test"):
        d = pd.read_csv(folder / f"{split}.tsv", sep="\t", header=None, dtype={0: str, 1: str})
        assert d.shape[1] == 4
        want = inter[inter["split"] == split]
        assert set(zip(d[0], d[1])) == set(zip(want["user"], want["item"]))
    files = sorted(p.stem for p in (folder / "visual_features").glob("*.npy"))
    assert files == sorted(inter["item"].unique())
    some = files[3]
    np.testing.assert_array_equal(np.load(folder / "visual_features" / f"{some}.npy"), vis[some])
    np.testing.assert_array_equal(np.load(folder / "textual_features" / f"{some}.npy"), txt[some])


def test_missing_feature_rows_and_missing_split_are_clear_errors(tmp_path):
    _run(tmp_path / "run", with_all_items=False)
    with pytest.raises(FeatureSetError, match="have no row"):
        export("mmrec", tmp_path / "run", tmp_path / "out", "smoke", "fs")
    with pytest.raises(ExportError, match="interactions.parquet not found"):
        export("elliot", tmp_path / "nothing", tmp_path / "out", "smoke")
    with pytest.raises(ExportError, match="unknown export format"):
        export("recbole", tmp_path / "run", tmp_path / "out", "smoke")
