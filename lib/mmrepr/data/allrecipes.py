"""The authors' fixed Allrecipes split (``allrecipes/{train,val,test}.tsv``, no header).

Each file is ``user_id<TAB>recipe_id<TAB>rating``. Rows that do not parse are a clear
error naming the file and line. No images, titles or timestamps are released: items get
empty text and no image, timestamps are 0. Users that appear only in validation or test
(cold users) are kept and counted; the evaluator reports them as unknown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmrepr.data.release import fetch_release_file


class AllrecipesFormatError(ValueError):
    pass


def read_split_file(path: Path, split: str) -> pd.DataFrame:
    import io

    from mmrepr.io import InputError, read_text

    rows = []
    try:
        text = read_text(path)
    except InputError as exc:
        raise AllrecipesFormatError(str(exc)) from None
    for lineno, line in enumerate(io.StringIO(text), start=1):  # the same line breaks as open()
        line = line.rstrip("\n\r")
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise AllrecipesFormatError(f"{path}:{lineno}: expected 3 tab-separated fields, got {len(parts)}: {line[:80]!r}")
        user, item, rating = parts
        try:
            r = float(rating)
        except ValueError:
            raise AllrecipesFormatError(f"{path}:{lineno}: rating {rating!r} is not a number") from None
        if not 1 <= r <= 5:
            raise AllrecipesFormatError(f"{path}:{lineno}: rating {r} outside 1..5")
        rows.append((user.strip(), item.strip(), r))
    df = pd.DataFrame(rows, columns=["user", "item", "rating"])
    df["rating"] = df["rating"].astype(np.float32)
    df["timestamp"] = np.int64(0)
    df["split"] = split
    return df


def load_allrecipes(mirror_dir: Path | None, cache_dir: Path, base_url: str) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(interactions, items, quality rows) of the released split."""
    parts = []
    quality: list[dict] = []
    for split in ("train", "val", "test"):
        path = fetch_release_file(f"allrecipes/{split}.tsv", mirror_dir, cache_dir, base_url)
        df = read_split_file(path, split)
        quality.append({"step": f"read {split}.tsv", "rows_in": len(df), "rows_out": len(df), "dropped": 0, "reason": str(path)})
        parts.append(df)
    inter = pd.concat(parts, ignore_index=True)
    dup = inter.duplicated(["user", "item", "split"], keep="first")
    if dup.any():
        quality.append({"step": "drop duplicate (user, item) within a split", "rows_in": len(inter),
                        "rows_out": int((~dup).sum()), "dropped": int(dup.sum()), "reason": "repeated row"})
        inter = inter[~dup]
    train_users = set(inter.loc[inter["split"] == "train", "user"])
    for split in ("val", "test"):
        s = inter[inter["split"] == split]
        cold = s[~s["user"].isin(train_users)]
        quality.append({
            "step": f"cold users in {split}", "rows_in": len(s), "rows_out": len(s), "dropped": 0,
            "reason": f"{cold['user'].nunique()} users / {len(cold)} rows have no training interaction (kept; the evaluator counts them as unknown)",
        })
    items = pd.DataFrame({"item": sorted(inter["item"].unique())})
    items["title"] = ""
    items["description"] = ""
    items["image_path"] = ""
    return inter.reset_index(drop=True), items, quality
