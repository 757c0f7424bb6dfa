"""The run manifest: what ran, with which params, code, packages, seeds and host."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from mmrepr.io import read_json, write_json
from mmrepr.paths import project_root

KEY_PACKAGES = (
    "mmrepr", "numpy", "scipy", "pandas", "pyarrow", "torch", "cornac", "transformers",
    "sentence-transformers", "tokenizers", "scikit-learn", "optuna", "statsmodels",
    "papermill", "pydantic", "simplemma", "pillow", "seaborn", "matplotlib",
)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def git_state() -> dict[str, Any]:
    root = project_root()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip() or None
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root, capture_output=True, text=True, timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def update_manifest(path: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the manifest at ``path`` (``stages`` merged by name)."""
    manifest = read_json(path) if path.is_file() else {}
    stages = fields.pop("stages", None)
    manifest.update(fields)
    if stages:
        manifest.setdefault("stages", {}).update(stages)
    write_json(path, manifest)
    return manifest
