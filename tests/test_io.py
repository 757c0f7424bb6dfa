import os

import numpy as np
import pandas as pd
import pytest

from mmrepr.io import atomic_open, read_json, save_npy, sha256_file, write_json, write_parquet


def test_atomic_open_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(p, "w") as fh:
            fh.write("half")
            raise RuntimeError("killed")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["a.txt"]  # no temp file left behind


def test_parquet_is_byte_identical(tmp_path):
    df = pd.DataFrame({"user": ["b", "a"], "item": ["x", "y"], "rating": np.array([4, 5], np.float32)})
    write_parquet(df, tmp_path / "1.parquet")
    write_parquet(df, tmp_path / "2.parquet")
    assert sha256_file(tmp_path / "1.parquet") == sha256_file(tmp_path / "2.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "1.parquet"), df)


def test_json_and_npy_roundtrip(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": np.float32(0.5), "p": tmp_path})
    assert read_json(tmp_path / "m.json")["a"] == 0.5
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_npy(tmp_path / "x.npy", arr)
    assert np.array_equal(np.load(tmp_path / "x.npy"), arr)
    assert not any(f.name.endswith(".tmp") for f in tmp_path.iterdir())
    assert os.path.getsize(tmp_path / "x.npy") > 0
