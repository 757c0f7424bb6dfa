"""Stage 4's wall time in-process vs on a local Ray with N workers, same cells, same results.

``python -m mmrepr.bench train [--params params/demo.yaml] [--workers 2]``: needs stages 1-3
of the profile done (``runs/<profile>/data``, ``features``). Each executor trains every cell
from scratch in its own copy of the run folder under ``--tmp`` (the cell cache is not
shared), then the two ``results.parquet`` are compared. Prints the times and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def _copy_inputs(src: Path, dst: Path) -> None:
    for sub in ("data", "features"):
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dst / sub, dirs_exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmrepr.bench train", description=__doc__)
    ap.add_argument("--params", default="params/demo.yaml")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tmp", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the numbers here")
    a = ap.parse_args(argv)

    import pandas as pd
    import torch

    from mmrepr.config import load_params
    from mmrepr.training import search

    P = load_params(a.params)
    src = Path(P.run_dir)
    if not (src / "data" / "interactions.parquet").is_file():
        print(f"{src}/data not found: run stages 1-3 first (python -m mmrepr run {a.params} --stages data features lvlm)")
        return 2
    scratch = Path(a.tmp or tempfile.mkdtemp(prefix="mmrepr-bench-train-"))
    out = {"params": a.params, "workers": a.workers, "torch_threads_inprocess": torch.get_num_threads()}
    frames = {}
    for name, train in (("inprocess", dict(executor="inprocess")),
                        ("ray", dict(executor="ray", ray=dict(num_workers=a.workers)))):
        runs = scratch / name
        shutil.rmtree(runs, ignore_errors=True)
        Q = P.model_copy(update=dict(runs_dir=runs, train=P.train.model_copy(update=dict(
            executor=train["executor"], ray=P.train.ray.model_copy(update=train.get("ray", {}))))))
        _copy_inputs(src, Path(Q.run_dir))
        t0 = time.perf_counter()
        rep = search.run_search(Q, progress=False)
        out[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
        out[f"{name}_cells"] = len(rep.metas)
        frames[name] = pd.read_parquet(Path(Q.run_dir) / "train" / "results.parquet")
        print(f"{name:9s}: {out[f'{name}_seconds']:7.1f} s for {len(rep.metas)} cells"
              + (f" ({a.workers} local workers, Ray start-up included)" if name == "ray" else ""))
    key = list(frames["inprocess"].columns)
    same = frames["inprocess"].sort_values(key).reset_index(drop=True).equals(
        frames["ray"].sort_values(key).reset_index(drop=True))
    out["identical_results"] = bool(same)
    print(f"results.parquet identical after sorting: {same}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    if not a.tmp:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
