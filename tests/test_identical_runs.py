"""Two clean runs of a small profile give byte-identical files under runs/, except timing bookkeeping."""

import fnmatch
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from mmrepr.runner import run

ROOT = Path(__file__).resolve().parents[1]

# Timestamps/timings the manifest and stage records hold on purpose (compared after removing them).
TIMING_KEYS = {"started", "finished", "seconds", "report_built", "host", "git"}
JSON_WITH_TIMINGS = ["manifest.json", "report/manifest.json", ".stages/*.json"]
# Files that still carry measured timings in their content (see docs/validation.md, "remaining"):
# stage 2's items/s and peak memory (feature meta, summary, chunk cache, notebook 02) and
# stage 4's training seconds (notebook 04); the report's index shows the manifest's timings.
STILL_TIMED = [
    "report/index.html",
    "features/*/meta.json", "features/summary.csv", "features/_cache/*",
    "notebooks/02_feature_extraction.ipynb", "report/notebooks/02_feature_extraction.html",
    "notebooks/04_train.ipynb", "report/notebooks/04_train.html",
    # stage 4's per-cell records (train seconds) and stage 5's index/notebook that show them
    "train/cells/*.json", "train/cells_summary.csv", "analysis/index.json", "report/analysis/index.json",
    "notebooks/05_analysis.ipynb", "report/notebooks/05_analysis.html",
]


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
        if any(fnmatch.fnmatch(rel, g) for g in JSON_WITH_TIMINGS):
            data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


@pytest.mark.slow
def test_two_clean_runs_are_identical(tmp_path, monkeypatch):
    params = tmp_path / "smoke.yaml"
    params.write_text((ROOT / "params" / "smoke.yaml").read_text() + f"runs_dir: {tmp_path / 'runs'}\n")
    run_dir = tmp_path / "runs" / "smoke"
    digests = []
    for _ in range(2):
        shutil.rmtree(tmp_path / "runs", ignore_errors=True)
        run(params)
        digests.append(digest(run_dir))
    a, b = digests
    assert set(a) == set(b), set(a) ^ set(b)
    assert any(k.endswith(".svg") for k in a) and any(k.endswith(".html") for k in a)
    differ = sorted(k for k in a if a[k] != b[k])
    unexpected = [k for k in differ if not any(fnmatch.fnmatch(k, g) for g in STILL_TIMED)]
    assert not unexpected, f"files that differ between two clean runs: {unexpected}"
    # everything else is byte-identical: figures, tables, data, results, notebooks 01/03/05
    for must in ("analysis/tables/main.html", "notebooks/03_lvlm.ipynb", "notebooks/01_data_prep.ipynb",
                 "train/results.parquet"):
        assert must in a and a[must] == b[must], must
    assert [k for k in a if re.search(r"analysis/figures/.*\.svg$", k)]
