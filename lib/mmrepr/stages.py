"""The study's stages: notebook, params sections, upstream stages, code and outputs.

A stage's fingerprint hashes everything that decides its outputs: its params sections,
its notebook, the library code it uses and the fingerprints of the stages it reads
from. An unchanged fingerprint with outputs present means the stage is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmrepr import __version__
from mmrepr.io import sha256_file, sha256_json, sha256_tree
from mmrepr.paths import PACKAGE_DIR


@dataclass(frozen=True)
class Stage:
    name: str
    notebook: str
    sections: tuple[str, ...]
    upstream: tuple[str, ...]
    # Sub-packages of mmrepr whose code decides this stage's outputs.
    code: tuple[str, ...]
    # Folders under runs/<profile>/ the stage writes.
    outputs: tuple[str, ...]


CORE_CODE = ("io.py", "config.py", "paths.py", "seeding.py", "data/schema.py", "features/store.py")

STAGES: tuple[Stage, ...] = (
    Stage("data", "01_data_prep.ipynb", ("seed", "data"), (), ("data",), ("data",)),
    Stage("features", "02_feature_extraction.ipynb", ("seed", "features"), ("data",), ("features",), ("features",)),
    Stage("lvlm", "03_lvlm.ipynb", ("seed", "lvlm"), ("data",), ("lvlm",), ("lvlm",)),
    Stage(
        "train",
        "04_train.ipynb",
        ("seed", "train"),
        ("data", "features", "lvlm"),
        ("models", "evaluation", "training"),
        ("train",),
    ),
    Stage("analysis", "05_analysis.ipynb", ("seed", "analysis"), ("train",), ("analysis",), ("analysis",)),
)

STAGE_NAMES = tuple(s.name for s in STAGES)


def get_stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")


def code_hash(stage: Stage) -> str:
    """Hash of the library code that decides ``stage``'s outputs (core files + its sub-packages)."""
    parts = {}
    for rel in CORE_CODE:
        p = PACKAGE_DIR / rel
        parts[rel] = sha256_file(p) if p.is_file() else None
    for pkg in stage.code:
        parts[pkg] = sha256_tree(PACKAGE_DIR / pkg)
    return sha256_json({"version": __version__, "files": parts})
