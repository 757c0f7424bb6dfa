"""Measured timings, throughput and peak memory, kept out of the stage outputs.

Stage outputs must be byte-identical between two runs of the same inputs, so nothing a
stage *measures* (seconds, items/s, peak memory) goes into them. A stage writes each
measurement to its own small JSON file, ``runs/<profile>/.stages/timings/<stage>/<name>.json``
(atomic, one file per chunk/cell/role, so Ray workers writing concurrently never share a
file); the runner clears the folder when the stage starts and gathers it into the stage's
record (``.stages/<stage>.json``) and the manifest when it ends. ``say`` prints a timing to
the terminal (never into an executed notebook).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from mmrepr.io import InputError, read_json, write_json

log = logging.getLogger(__name__)

TIMINGS_DIR = Path(".stages") / "timings"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def timings_dir(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / TIMINGS_DIR / stage


def record(run_dir: str | Path, stage: str, name: str, **values: Any) -> Path:
    """Write one measurement (``values``) of ``stage`` under ``name`` (made file-safe)."""
    safe = _UNSAFE.sub("_", name).lstrip(".") or "_"
    path = timings_dir(run_dir, stage) / f"{safe}.json"
    write_json(path, {"name": name, **values})
    return path


def gather(run_dir: str | Path, stage: str) -> dict[str, dict[str, Any]]:
    """Every measurement of ``stage`` by name (sorted); an unreadable file is skipped with a warning."""
    out: dict[str, dict[str, Any]] = {}
    folder = timings_dir(run_dir, stage)
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.json")):
        try:
            rec = read_json(p)
        except (InputError, OSError) as exc:
            log.warning("ignoring unreadable timing record %s (%s)", p, exc)
            continue
        if isinstance(rec, dict):
            out[str(rec.pop("name", p.stem))] = rec
    return out


def clear(run_dir: str | Path, stage: str) -> None:
    shutil.rmtree(timings_dir(run_dir, stage), ignore_errors=True)


def say(message: str) -> None:
    """A timing line for the person running the study: the terminal, not the notebook."""
    from mmrepr.progress import terminal

    out = terminal()
    if out is not None:
        print(f"[mmrepr] {message}", file=out, flush=True)
