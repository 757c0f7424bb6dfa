"""Two clean runs of a small profile give byte-identical files under runs/, except timing bookkeeping;
rerunning stage 2 retrains no cell of stage 4."""

import fnmatch
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from mmrepr import timings
from mmrepr.runner import run

ROOT = Path(__file__).resolve().parents[1]

# Timestamps/timings the manifest and stage records hold on purpose (compared after removing them).
TIMING_KEYS = {"started", "finished", "seconds", "report_built", "host", "git", "timings"}
JSON_WITH_TIMINGS = ["manifest.json", "report/manifest.json", ".stages/*.json"]
# What stages measured (mmrepr.timings): the records' own files; only their names are compared.
TIMING_RECORDS = ".stages/timings/*"
# The report's page keeps run times, durations and the manifest dump in one section.
TIMINGS_SECTION = re.compile(rb'<section id="timings">.*?</section>', re.S)
# Names of measurements that must appear in no stage output (only in the records).
MEASURED = (b"fit_seconds", b"items_per_s", b"peak_memory", b"tokens_per_s")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def digest(run_dir: Path) -> dict[str, str]:
    out = {}
    for p in sorted(run_dir.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(run_dir).as_posix()
        data = p.read_bytes()
        if fnmatch.fnmatch(rel, TIMING_RECORDS):
            data = b"timing record"
        elif rel == "report/index.html":
            assert len(TIMINGS_SECTION.findall(data)) == 1, "report/index.html: one timings section"
            data = TIMINGS_SECTION.sub(b"", data)
        elif any(fnmatch.fnmatch(rel, g) for g in JSON_WITH_TIMINGS):
            data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def two_clean_runs(tmp_path_factory):
    """Run params/smoke.yaml twice from an empty runs folder; the second run folder stays."""
    tmp = tmp_path_factory.mktemp("identical")
    params = tmp / "smoke.yaml"
    params.write_text((ROOT / "params" / "smoke.yaml").read_text() + f"runs_dir: {tmp / 'runs'}\n")
    run_dir = tmp / "runs" / "smoke"
    digests = []
    for _ in range(2):
        shutil.rmtree(tmp / "runs", ignore_errors=True)
        run(params)
        digests.append(digest(run_dir))
    return params, run_dir, digests


@pytest.mark.slow
def test_two_clean_runs_are_identical(two_clean_runs):
    _, run_dir, (a, b) = two_clean_runs
    assert set(a) == set(b), set(a) ^ set(b)
    assert any(k.endswith(".svg") for k in a) and any(k.endswith(".html") for k in a)
    differ = sorted(k for k in a if a[k] != b[k])
    assert not differ, f"files that differ between two clean runs: {differ}"
    # the measurements went to the stage records, which the runner gathered into the manifest
    for stage in ("features", "train", "analysis"):
        assert any(k.startswith(f".stages/timings/{stage}/") for k in a), stage
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cells = manifest["stages"]["train"]["timings"]
    assert cells and all(v["fit_seconds"] >= 0 for v in cells.values())
    assert all(v["items_per_s"] for v in manifest["stages"]["features"]["timings"].values())
    outputs = [k for k in a if not k.startswith(".stages/") and k not in ("manifest.json", "report/manifest.json",
                                                                           "report/index.html")]
    timed = [k for k in outputs if any(m in (run_dir / k).read_bytes() for m in MEASURED)]
    assert not timed, f"stage outputs naming a measurement: {timed}"
    for must in ("analysis/tables/main.html", "notebooks/02_feature_extraction.ipynb", "notebooks/04_train.ipynb",
                 "train/results.parquet", "train/cells_summary.csv", "features/summary.csv"):
        assert must in a, must
    assert [k for k in a if re.search(r"analysis/figures/.*\.svg$", k)]


@pytest.mark.slow
def test_forced_features_rerun_retrains_no_cell(two_clean_runs):
    """`--stages features --force` then `--stages train` (and even `--stages train --force`)
    trains no cell: cell fingerprints cover the features' content, which did not change."""
    params, run_dir, (_, before) = two_clean_runs
    cells = sorted((run_dir / "train" / "cells").glob("*.json"))
    assert cells
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    assert [r.status for r in run(params, stages=["features"], force=True)] == ["ran"]
    assert timings.gather(run_dir, "features")  # it did run its encoders (from the cache)
    after = digest(run_dir)
    changed = [k for k in before if k.startswith("features/") and before[k] != after.get(k)]
    assert not changed, f"a forced features rerun changed {changed}"
    assert [r.status for r in run(params, stages=["train"])] == ["skipped"]
    assert [r.status for r in run(params, stages=["train"], force=True)] == ["ran"]
    assert timings.gather(run_dir, "train") == {}, "cells were trained again"  # one record per trained cell
    assert {p: p.stat().st_mtime_ns for p in cells} == stamps
    assert digest(run_dir)["train/results.parquet"] == before["train/results.parquet"]
