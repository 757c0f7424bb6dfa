"""Run the study's notebooks in order with papermill, skipping stages that are up to date.

``python -m mmrepr run params/demo.yaml [--stages data features] [--force]``

Each executed notebook goes to ``runs/<profile>/notebooks/``; each finished stage leaves
a record in ``runs/<profile>/.stages/<stage>.json`` holding its fingerprint. A stage is
skipped when its fingerprint is unchanged and its outputs exist. Stages write their
artefacts atomically and cache their own partial work, so a killed run started again
resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from mmrepr import __version__
from mmrepr.config import Params, load_params
from mmrepr.io import atomic_path, read_json, sha256_file, sha256_json, sha256_tree, write_json
from mmrepr.manifest import git_state, host_info, now, package_versions, update_manifest
from mmrepr.paths import PACKAGE_DIR, notebooks_dir
from mmrepr.stages import STAGE_NAMES, STAGES, Stage, code_hash, get_stage  # noqa: F401 (code_hash re-exported)

log = logging.getLogger("mmrepr.runner")


class StageFailed(RuntimeError):
    pass


@dataclass
class StageResult:
    name: str
    status: str  # "ran" | "skipped"
    seconds: float
    fingerprint: str


def record_path(params: Params, stage: Stage) -> Path:
    return params.run_dir / ".stages" / f"{stage.name}.json"


def read_record(params: Params, stage: Stage) -> dict | None:
    p = record_path(params, stage)
    try:
        return read_json(p) if p.is_file() else None
    except ValueError:  # unreadable record: treat the stage as not done
        return None


def fingerprint(params: Params, stage: Stage, upstream_fps: dict[str, str]) -> str:
    nb = notebooks_dir() / stage.notebook
    return sha256_json(
        {
            "params": params.section_hash(*stage.sections),
            "profile": params.profile,
            "notebook": sha256_file(nb) if nb.is_file() else None,
            "code": code_hash(stage),
            "upstream": {u: upstream_fps.get(u) for u in stage.upstream},
        }
    )


def is_up_to_date(params: Params, stage: Stage, fp: str) -> bool:
    rec = read_record(params, stage)
    if rec is None or rec.get("fingerprint") != fp:
        return False
    return all((params.run_dir / o).exists() for o in stage.outputs)


def execute_notebook(params: Params, params_file: Path, stage: Stage) -> Path:
    import papermill as pm

    src = notebooks_dir() / stage.notebook
    if not src.is_file():
        raise StageFailed(f"stage {stage.name}: notebook {src} not found")
    out_dir = params.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / stage.notebook
    failed = out.with_suffix(".failed.ipynb")
    failed.unlink(missing_ok=True)
    with atomic_path(out) as tmp:
        tmp_nb = tmp.with_suffix(".ipynb")
        try:
            pm.execute_notebook(
                str(src),
                str(tmp_nb),
                parameters={
                    "params_file": str(Path(params_file).resolve()),
                    "params": params.model_dump(mode="json"),
                },
                kernel_name="python3",
                cwd=str(notebooks_dir()),
                progress_bar=False,
                log_output=False,
            )
        except pm.PapermillExecutionError as exc:
            if tmp_nb.exists():
                tmp_nb.replace(failed)
            raise StageFailed(
                f"stage {stage.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                f"  the executed notebook is at {failed}"
            ) from None
        tmp_nb.replace(tmp)
    return out


def run(
    params_file: str | Path,
    stages: list[str] | None = None,
    force: bool = False,
) -> list[StageResult]:
    params_file = Path(params_file)
    params = load_params(params_file)
    wanted = list(stages) if stages else list(STAGE_NAMES)
    for name in wanted:
        get_stage(name)  # clear error for a typo
    run_dir = params.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = run_dir / "manifest.json"
    update_manifest(
        manifest,
        profile=params.profile,
        params_file=str(params_file),
        params=params.model_dump(mode="json"),
        params_hash=params.hash,
        seed=params.seed,
        packages=package_versions(),
        git=git_state(),
        host=host_info(),
        started=now(),
    )
    fps: dict[str, str] = {}
    results: list[StageResult] = []
    for stage in STAGES:
        # Upstream fingerprints come from their records when they are not part of this run.
        for u in stage.upstream:
            if u not in fps:
                rec = read_record(params, get_stage(u))
                fps[u] = rec["fingerprint"] if rec else "missing"
        fp = fingerprint(params, stage, fps)
        if stage.name not in wanted:
            rec = read_record(params, stage)
            fps[stage.name] = rec["fingerprint"] if rec else "missing"
            continue
        missing_up = [u for u in stage.upstream if fps.get(u) == "missing"]
        if missing_up:
            raise StageFailed(
                f"stage {stage.name} needs {', '.join(missing_up)} first: "
                f"run `python -m mmrepr run {params_file} --stages {' '.join(missing_up)} {stage.name}`"
            )
        fps[stage.name] = fp
        if not force and is_up_to_date(params, stage, fp):
            print(f"[mmrepr] {stage.name}: up to date, skipped ({stage.notebook})", flush=True)
            results.append(StageResult(stage.name, "skipped", 0.0, fp))
            update_manifest(manifest, stages={stage.name: {**(read_record(params, stage) or {}), "status": "skipped"}})
            continue
        print(f"[mmrepr] {stage.name}: running {stage.notebook} ...", flush=True)
        t0 = time.perf_counter()
        record_path(params, stage).unlink(missing_ok=True)
        out_nb = execute_notebook(params, params_file, stage)
        seconds = round(time.perf_counter() - t0, 2)
        record = {
            "fingerprint": fp,
            "finished": now(),
            "seconds": seconds,
            "notebook": str(out_nb.relative_to(run_dir)),
        }
        write_json(record_path(params, stage), record)
        update_manifest(manifest, stages={stage.name: {**record, "status": "ran"}})
        print(f"[mmrepr] {stage.name}: done in {seconds:.1f}s -> {out_nb}", flush=True)
        results.append(StageResult(stage.name, "ran", seconds, fp))
    update_manifest(manifest, finished=now())
    return results
