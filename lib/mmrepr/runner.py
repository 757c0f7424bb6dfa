"""Run the study's notebooks in order with papermill, skipping stages that are up to date.

``python -m mmrepr run params/demo.yaml [--stages data features] [--force]``

Each executed notebook goes to ``runs/<profile>/notebooks/``; each finished stage leaves
a record in ``runs/<profile>/.stages/<stage>.json`` holding its fingerprint. A stage is
skipped when its fingerprint is unchanged and its outputs exist. What a stage measures
(seconds, items/s, peak memory: :mod:`mmrepr.timings`) goes into its record and the
manifest, never into its outputs. Stages write their
artefacts atomically and cache their own partial work, so a killed run started again
resumes where it stopped.

One run at a time per run folder: ``runs/<profile>/.run.lock`` (an fcntl lock, released by
the kernel when its process dies) with ``.run.lock.json`` naming the holder (pid, host,
start time, command). A second run stops with that name, or waits (``--wait SECONDS``).
The run holding the lock first removes temporary files a killed run left behind.
Executed notebooks are saved without execution timestamps, so reruns are byte-identical.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mmrepr import timings
from mmrepr.config import Params, load_params
from mmrepr.io import atomic_path, read_json, sha256_file, sha256_json, write_json
from mmrepr.manifest import git_state, host_info, now, package_versions, update_manifest
from mmrepr.paths import notebooks_dir
from mmrepr.stages import STAGE_NAMES, STAGES, Stage, code_hash, get_stage  # noqa: F401 (code_hash re-exported)

log = logging.getLogger("mmrepr.runner")


class StageFailed(RuntimeError):
    pass


class RunLocked(StageFailed):
    """Another run holds the run folder's lock."""


LOCK_FILE = ".run.lock"
LOCK_INFO = ".run.lock.json"


def _lock_holder(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / LOCK_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info:
        return "another process (no holder information recorded)"
    return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}, "
            f"command: {info.get('command')}")


def _command_line() -> str:
    argv = list(getattr(sys, "orig_argv", sys.argv))  # orig_argv keeps "-m mmrepr"
    return " ".join([Path(argv[0]).name, *argv[1:]])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: float = 0.0):
    """Hold ``run_dir``'s lock for the ``with`` block; stop (or wait ``wait`` s) if another run holds it."""
    from filelock import FileLock, Timeout

    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK_FILE), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _describe(_lock_holder(run_dir))
        if wait <= 0:
            raise RunLocked(f"{run_dir} is in use by another run: {holder}. Wait for it to finish "
                            f"(or pass --wait SECONDS), or use another profile.") from None
        print(f"[mmrepr] waiting up to {wait:g}s for the run holding {run_dir}: {holder}", flush=True)
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise RunLocked(f"{run_dir} is still in use after waiting {wait:g}s: "
                            f"{_describe(_lock_holder(run_dir))}") from None
    try:
        prev = _lock_holder(run_dir)
        if prev:  # the kernel released its lock, so that run ended without cleaning up
            here = prev.get("host") == socket.gethostname()
            state = ("no longer running" if not _pid_alive(int(prev.get("pid", 0) or 0)) else "pid now reused")\
                if here else "on another host"
            print(f"[mmrepr] taking over the lock of a run that did not finish: {_describe(prev)} ({state})",
                  flush=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": now(),
                "command": _command_line()}
        write_json(run_dir / LOCK_INFO, info)
        yield
    finally:
        (run_dir / LOCK_INFO).unlink(missing_ok=True)
        lock.release()


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Temporary files of a killed run (``mmrepr.io.atomic_path``'s ``.NAME.XXXX.tmp`` and
    papermill's ``.NN_x.ipynb.XXXX.ipynb``); only called while holding the run lock."""
    gone = []
    for p in sorted(run_dir.rglob(".*")):
        if not p.is_file() or p.name in (LOCK_FILE, LOCK_INFO):
            continue
        if p.name.endswith(".tmp") or (p.parent.name == "notebooks" and p.name.endswith(".ipynb")):
            p.unlink(missing_ok=True)
            gone.append(p)
    if gone:
        print(f"[mmrepr] removed {len(gone)} temporary file(s) left by an interrupted run", flush=True)
    return gone


# Timing/host-dependent metadata papermill and nbclient write into an executed notebook.
_CELL_META_DROP = ("execution",)
_PAPERMILL_CELL_DROP = ("start_time", "end_time", "duration")
_PAPERMILL_NB_DROP = ("start_time", "end_time", "duration", "input_path", "output_path")


# tqdm's progress bars (they carry rates and elapsed times) in a stderr stream
_PROGRESS = re.compile(r"\[\d+:\d\d(?::\d\d)?(?:<[^\]]*)?,[^\]]*(?:/s|s/[^\]]*)\]")
# logging's asctime prefix ("2026-01-01 12:00:00,123 ")
_LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.MULTILINE)


def strip_timing(nb) -> None:
    """Make an executed notebook depend on its results only (in place): no execution
    timestamps or temporary paths in the metadata, a fixed id for papermill's injected cell,
    no progress bars, no log timestamps, one output per run of a stream's messages."""
    pm_meta = nb.metadata.get("papermill", {})
    for k in _PAPERMILL_NB_DROP:
        pm_meta.pop(k, None)
    for i, cell in enumerate(nb.cells):
        for k in _CELL_META_DROP:
            cell.metadata.pop(k, None)
        cp = cell.metadata.get("papermill", {})
        for k in _PAPERMILL_CELL_DROP:
            cp.pop(k, None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill draws a random one
        if cell.get("cell_type") != "code":
            continue
        kept = []
        # tqdm writes a closing bar's final newline separately: whether it reaches the
        # notebook in the bar's stream message or at the start of the next one depends on
        # when the kernel flushed stderr. A removed bar line that did not end the line leaves
        # that newline pending, and it goes with the bar.
        bar_open = False
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = out.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                lines = []
                for ln in filter(None, re.split(r"(?<=[\r\n])", text)):
                    if _PROGRESS.search(ln):
                        bar_open = not ln.endswith("\n")
                        continue
                    if not (bar_open and ln == "\n"):  # a bar's own newline goes with it
                        lines.append(ln)
                    bar_open = False
                text = _LOG_TIME.sub("", "".join(lines))
                if not text.strip():
                    continue
                out["text"] = text
            # the kernel flushes a stream whenever its timer fires, so one print can arrive
            # as two messages ("text", "\n") on a loaded machine: consecutive messages of one
            # stream are one output, as Jupyter shows them
            prev = kept[-1] if kept else None
            if (out.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream"
                    and prev.get("name") == out.get("name")):
                prev["text"] = "".join(prev["text"]) + "".join(out.get("text", ""))
                continue
            kept.append(out)
        cell["outputs"] = kept


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
        import nbformat

        nb = nbformat.read(str(tmp_nb), as_version=4)
        strip_timing(nb)
        nbformat.write(nb, str(tmp))
        tmp_nb.unlink(missing_ok=True)
    return out


def run(
    params_file: str | Path,
    stages: list[str] | None = None,
    force: bool = False,
    wait: float = 0.0,
) -> list[StageResult]:
    params_file = Path(params_file)
    params = load_params(params_file)
    wanted = list(stages) if stages else list(STAGE_NAMES)
    for name in wanted:
        get_stage(name)  # clear error for a typo
    with run_lock(params.run_dir, wait=wait):
        remove_stale_temporaries(params.run_dir)
        return _run_locked(params, params_file, wanted, force)


def _run_locked(params: Params, params_file: Path, wanted: list[str], force: bool) -> list[StageResult]:
    run_dir = params.run_dir
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
        timings.clear(run_dir, stage.name)  # the record holds what this execution measured
        out_nb = execute_notebook(params, params_file, stage)
        seconds = round(time.perf_counter() - t0, 2)
        record = {
            "fingerprint": fp,
            "finished": now(),
            "seconds": seconds,
            "notebook": str(out_nb.relative_to(run_dir)),
            # what the stage measured (mmrepr.timings): kept out of its outputs
            "timings": timings.gather(run_dir, stage.name),
        }
        write_json(record_path(params, stage), record)
        update_manifest(manifest, stages={stage.name: {**record, "status": "ran"}})
        print(f"[mmrepr] {stage.name}: done in {seconds:.1f}s -> {out_nb}", flush=True)
        results.append(StageResult(stage.name, "ran", seconds, fp))
    update_manifest(manifest, finished=now())
    return results
