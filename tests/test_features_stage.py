"""Stage 2 end to end: run_features on a run folder, rerun from cache, the notebook (slow)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from mmrepr.config import params_from_dict  # noqa: E402
from mmrepr.features.extract import run_features  # noqa: E402
from mmrepr.features.store import list_feature_sets, load_feature_set  # noqa: E402
from mmrepr.io import write_parquet  # noqa: E402
from mmrepr import timings  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_features import make_items  # noqa: E402


def make_run(tmp_path: Path, features: dict) -> object:
    P = params_from_dict(
        {
            "profile": "t",
            "seed": 11,
            "runs_dir": str(tmp_path / "runs"),
            "data": {"source": "synthetic", "synthetic": {}},
            "features": features,
        }
    )
    items = make_items(tmp_path / "img", n=12)
    items.loc[4, "image_path"] = ""
    inter = pd.DataFrame(
        {"user": ["u1"] * 12, "item": items["item"], "rating": np.float32(5), "timestamp": np.arange(12), "split": "train"}
    )
    data = P.run_dir / "data"
    write_parquet(items, data / "items.parquet")
    write_parquet(inter, data / "interactions.parquet")
    return P


def test_run_features_writes_sets_controls_and_reruns_from_cache(tmp_path):
    P = make_run(
        tmp_path,
        {
            "sets": ["colour", "colour_minilm"],
            "batch_size": 4,
            "chunk_size": 5,
            "missing_policy": "mean",
            "controls": [
                {"kind": "noise_gaussian", "reference": "colour_minilm"},
                {"kind": "noise_mvn", "reference": "colour_minilm"},
                {"kind": "shuffled", "reference": "colour_minilm", "name": "shuf"},
            ],
        },
    )
    summary = run_features(P, progress=False)
    assert set(list_feature_sets(P.run_dir)) == {
        "colour", "colour_minilm", "noise_gaussian_colour_minilm", "noise_mvn_colour_minilm", "shuf"
    }
    fs = load_feature_set(P.run_dir, "colour_minilm")
    assert fs.item_ids == sorted(fs.item_ids) and len(fs.item_ids) == 12
    assert fs.meta["kind"] == "real" and fs.meta["random_weights"] is False
    assert fs.meta["missing"]["per_role"]["visual"] == {"missing": 1, "reasons": {"no_image_path": 1}, "converted": {}}
    ext = fs.meta["extractors"]
    assert ext["textual"]["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    # measurements go to the stage record, never into the set's meta (its bytes depend on the items only)
    assert not {"items_per_s", "peak_memory_mb", "cache", "n_encoded_now"} & (set(ext["visual"]) | set(ext["textual"]))
    measured = timings.gather(P.run_dir, "features")
    assert set(measured) == {ext["visual"]["extractor"], ext["textual"]["extractor"]}
    assert all(m["encoded_now"] > 0 and m["items_per_s"] > 0 and m["peak_memory_mb"] > 0 for m in measured.values())
    meta_bytes = (P.run_dir / "features" / "colour_minilm" / "meta.json").read_bytes()
    ctrl = load_feature_set(P.run_dir, "noise_mvn_colour_minilm")
    assert ctrl.meta["kind"] == "noise_mvn" and ctrl.meta["reference"] == "colour_minilm"
    assert (P.run_dir / "features" / "summary.csv").is_file()
    assert not {"items_per_s", "peak_memory_mb", "encoded_now"} & set(summary.columns)

    again = run_features(P, progress=False)
    measured = timings.gather(P.run_dir, "features")
    assert all(m["encoded_now"] == 0 and m["from_cache"] > 0 for m in measured.values()), "a rerun must not encode"
    assert all(m["items_per_s"] is None for m in measured.values())
    assert (P.run_dir / "features" / "colour_minilm" / "meta.json").read_bytes() == meta_bytes
    fs2 = load_feature_set(P.run_dir, "colour_minilm")
    for role in fs.matrices:
        np.testing.assert_array_equal(fs.matrices[role], fs2.matrices[role])


def test_unknown_set_fails_before_encoding(tmp_path):
    from mmrepr.config import ParamsError

    # refused by the params schema already, naming the key and the allowed sets
    with pytest.raises(ParamsError, match=r"features\.sets\.1.*'rn50'.*allowed"):
        make_run(tmp_path, {"sets": ["colour", "rn50"]})
    # and by the stage itself for params built without validation
    P = make_run(tmp_path, {"sets": ["colour"]})
    P = P.model_copy(update={"features": P.features.model_copy(update={"sets": ["colour", "rn50"]})})
    with pytest.raises(KeyError, match="rn50"):
        run_features(P, progress=False)
    assert list_feature_sets(P.run_dir) == []


@pytest.mark.slow
def test_notebook_runs_on_smoke(tmp_path):
    import papermill as pm
    import yaml

    from mmrepr.config import load_params
    from mmrepr.data.prepare import prepare
    from mmrepr.paths import project_root

    root = project_root()
    raw = yaml.safe_load((root / "params" / "smoke.yaml").read_text())
    raw["runs_dir"] = str(tmp_path / "runs")
    P = params_from_dict(raw)
    prepare(load_params(root / "params" / "smoke.yaml", overrides={"runs_dir": str(tmp_path / "runs")}))
    pm.execute_notebook(
        str(root / "notebooks" / "02_feature_extraction.ipynb"),
        str(tmp_path / "out.ipynb"),
        parameters={"params_file": str(root / "params" / "smoke.yaml"), "params": raw},
        cwd=str(root / "notebooks"),
        progress_bar=False,
    )
    assert set(P.features.sets) <= set(list_feature_sets(P.run_dir))


def test_tables_without_any_feature_set(tmp_path):
    """A profile with no stage-2 sets (allrecipes) still gets its tables, empty, with their columns."""
    from mmrepr.features import report

    sets = report.sets_table(tmp_path)
    assert sets.empty and "set" in sets.columns and "role" in sets.columns
    report.missing_table(tmp_path)
    report.attribute_probe(tmp_path, sorted(set(sets["set"])), [], seed=0)
    report.embedding_maps(tmp_path, [], None, seed=0, method="pca")
