"""Feature sets on disk: the contract between stages 2/3 and stage 4.

A feature set is a folder ``runs/<profile>/features/<name>/`` holding one float32 matrix
per modality role (``visual.npy``, ``textual.npy``, ``attributes.npy`` …), all in the
order of ``items.txt`` (one item id a line), and ``meta.json`` describing how they were
made. ``meta.json`` is written last, so a folder without it is incomplete.

Roles: ``visual`` and ``textual`` go to a multimodal model's two branches; an LVLM
embedding is the single ``visual`` matrix; ``attributes`` (one-hot keywords) feed
Attribute Item-kNN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmrepr.io import InputError, read_json, read_text, save_npy, write_json

ROLES = ("visual", "textual", "attributes")


class FeatureSetError(ValueError):
    pass


def distinct_rows(matrix: np.ndarray) -> int:
    """How many different row vectors ``matrix`` has. Items with equal rows are the same item
    to a content model, and their kNN neighbours are tie-breaks (Allrecipes' MiniLM of the
    FITB answers: 3,273 distinct rows for 7,506 items; docs/fidelity.md)."""
    m = np.asarray(matrix)
    if len(m) == 0:
        return 0
    # np.unique compares rows by their bytes: + 0 turns -0.0 into 0.0, the same value
    return int(len(np.unique(m + m.dtype.type(0), axis=0)))


@dataclass
class FeatureSet:
    name: str
    item_ids: list[str]
    matrices: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if len(set(self.item_ids)) != n:
            raise FeatureSetError(f"feature set {self.name!r}: duplicated item ids")
        if not self.matrices:
            raise FeatureSetError(f"feature set {self.name!r}: no matrices")
        for role, m in self.matrices.items():
            if role not in ROLES:
                raise FeatureSetError(f"feature set {self.name!r}: unknown role {role!r}; allowed {ROLES}")
            if m.ndim != 2 or m.shape[0] != n:
                raise FeatureSetError(
                    f"feature set {self.name!r}, role {role!r}: shape {m.shape} does not match {n} item ids"
                )
            if not np.isfinite(m).all():
                bad = int((~np.isfinite(m)).any(axis=1).sum())
                raise FeatureSetError(f"feature set {self.name!r}, role {role!r}: {bad} rows with NaN/inf")

    @property
    def random_weights(self) -> bool:
        return bool(self.meta.get("random_weights", False))

    def aligned(self, item_ids: list[str]) -> "FeatureSet":
        """The same set with rows reordered to ``item_ids``; every id must be present."""
        index = {iid: i for i, iid in enumerate(self.item_ids)}
        missing = [iid for iid in item_ids if iid not in index]
        if missing:
            raise FeatureSetError(
                f"feature set {self.name!r}: {len(missing)} of {len(item_ids)} items have no row "
                f"(first: {missing[:3]})"
            )
        rows = np.fromiter((index[i] for i in item_ids), dtype=np.int64, count=len(item_ids))
        return FeatureSet(self.name, list(item_ids), {r: m[rows] for r, m in self.matrices.items()}, self.meta)


def features_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "features"


def save_feature_set(run_dir: Path, fs: FeatureSet) -> Path:
    out = features_dir(run_dir) / fs.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # mark incomplete while rewriting
    for role, m in fs.matrices.items():
        save_npy(out / f"{role}.npy", np.ascontiguousarray(m, dtype=np.float32))
    from mmrepr.io import atomic_open

    with atomic_open(out / "items.txt", "w", encoding="utf-8") as fh:
        fh.write("\n".join(fs.item_ids) + "\n")
    meta = dict(fs.meta)
    meta.update(
        name=fs.name,
        n_items=len(fs.item_ids),
        roles={r: {"file": f"{r}.npy", "dim": int(m.shape[1])} for r, m in fs.matrices.items()},
    )
    write_json(out / "meta.json", meta)
    return out


def list_feature_sets(run_dir: Path) -> list[str]:
    root = features_dir(run_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "meta.json").is_file())


def load_feature_set(run_dir: Path, name: str) -> FeatureSet:
    folder = features_dir(run_dir) / name
    if not (folder / "meta.json").is_file():
        known = ", ".join(list_feature_sets(run_dir)) or "(none)"
        raise FeatureSetError(f"feature set {name!r} not found (or incomplete) in {folder.parent}; known: {known}")
    meta_path = folder / "meta.json"
    try:
        meta = read_json(meta_path)
        item_ids = read_text(folder / "items.txt").splitlines()
    except (InputError, OSError) as exc:
        raise FeatureSetError(f"feature set {name!r}: {exc}") from None
    roles = meta.get("roles") if isinstance(meta, dict) else None
    if not isinstance(roles, dict) or not roles or not all(isinstance(v, dict) and "file" in v for v in roles.values()):
        raise FeatureSetError(
            f"{meta_path}: no valid 'roles' (expected {{role: {{'file': '<role>.npy', 'dim': d}}}} with roles from "
            f"{ROLES}); rerun the stage that made feature set {name!r}"
        )
    matrices = {role: _load_matrix(folder / spec["file"], name) for role, spec in roles.items()}
    try:
        return FeatureSet(name, item_ids, matrices, meta)
    except FeatureSetError as exc:
        raise FeatureSetError(f"{folder}: {exc}") from None


def _load_matrix(path: Path, name: str) -> np.ndarray:
    """``np.load`` that names the file when it is missing, truncated or not a float matrix."""
    try:
        m = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FeatureSetError(f"{path}: missing file of feature set {name!r}") from None
    except (ValueError, OSError, EOFError) as exc:
        raise FeatureSetError(
            f"{path}: not a readable .npy matrix ({exc}); the file may be truncated: rerun the stage that made "
            f"feature set {name!r}") from None
    if m.dtype.kind not in "fiub":
        raise FeatureSetError(f"{path}: dtype {m.dtype} is not numeric")
    return m
