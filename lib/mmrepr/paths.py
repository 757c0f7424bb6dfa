"""Where things live. Every path in a params file is relative to the project root."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The folder holding pyproject.toml (override with MMREPR_ROOT)."""
    env = os.environ.get("MMREPR_ROOT")
    if env:
        return Path(env).resolve()
    for parent in [PACKAGE_DIR, *PACKAGE_DIR.parents]:
        if (parent / "pyproject.toml").exists() and (parent / "notebooks").is_dir():
            return parent
    return Path.cwd().resolve()


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def shared_data_dir() -> Path:
    """The read-only mirror of the authors' released files (``../shared/data``)."""
    return (project_root().parent / "shared" / "data").resolve()
