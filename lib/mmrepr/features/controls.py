"""Control feature sets: the same shapes as a real set, but no (or the wrong) item information.

- ``noise_gaussian``: i.i.d. N(0, 1) of the reference's shape, per role.
- ``noise_mvn``: rows drawn from N(mean, covariance) of the reference, per role; rows are
  not tied to items. Sampled through the eigendecomposition of the covariance
  (``x = mean + z · sqrt(Λ) · Vᵀ``, only the r = rank components kept), or through the
  thin SVD of the centred matrix when there are fewer rows than dimensions, so a
  3584-d LVLM embedding takes seconds; no d×d Cholesky of a singular matrix.
- ``shuffled``: the reference's real rows, assigned to the wrong items by a seeded
  derangement (no item keeps its own row). One permutation for all roles, so an item's
  visual and textual rows still come from one (other) item.

Stage 3 calls the same functions for controls whose reference is an LVLM embedding.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mmrepr.features.encoders import stable_seed
from mmrepr.features.params import ControlSpec
from mmrepr.features.store import FeatureSet, features_dir, load_feature_set, save_feature_set
from mmrepr.io import read_json, sha256_json

log = logging.getLogger(__name__)

CONTROL_VERSION = 1


def control_name(spec: ControlSpec) -> str:
    return spec.name or f"{spec.kind}_{spec.reference}"


def gaussian_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def mvn_noise(ref: np.ndarray, n_rows: int, rng: np.random.Generator, tol: float = 1e-10) -> np.ndarray:
    """``n_rows`` draws from N(mean(ref), cov(ref)) via a low-rank factor of the covariance."""
    x = np.asarray(ref, dtype=np.float64)
    n, d = x.shape
    mean = x.mean(axis=0)
    xc = x - mean
    if n < 2:
        return np.broadcast_to(mean, (n_rows, d)).astype(np.float32)
    if n > d:
        # d x d covariance, symmetric eigendecomposition: cov = V diag(w) V^T
        w, v = np.linalg.eigh(xc.T @ xc / (n - 1))
        scale, basis = np.sqrt(np.clip(w, 0, None)), v.T  # (d,), (d, d)
    else:
        # thin SVD of the centred data: cov = V diag(s^2 / (n-1)) V^T with r <= n components
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        scale, basis = s / np.sqrt(n - 1), vt
    keep = scale > tol * max(scale.max(), 1e-300)
    factor = scale[keep, None] * basis[keep]  # (r, d): cov = factor^T factor
    z = rng.standard_normal((n_rows, factor.shape[0]))
    return (mean + z @ factor).astype(np.float32)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation without fixed points: item i gets the row of item perm[i] != i."""
    if n < 2:
        raise ValueError(f"cannot shuffle {n} row(s) across items: need at least 2")
    order = rng.permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)  # each item takes the next one's row along a random cycle
    return perm


def make_control(spec: ControlSpec, reference: FeatureSet, seed: int) -> FeatureSet:
    """The control set ``spec`` for ``reference`` (same item ids and roles), seeded."""
    name = control_name(spec)
    matrices: dict[str, np.ndarray] = {}
    perm = None
    if spec.kind == "shuffled":
        perm = derangement(len(reference.item_ids), np.random.default_rng(stable_seed(seed, name, "perm")))
    for role, m in reference.matrices.items():
        rng = np.random.default_rng(stable_seed(seed, name, role))
        if spec.kind == "noise_gaussian":
            matrices[role] = gaussian_noise(m.shape, rng)
        elif spec.kind == "noise_mvn":
            matrices[role] = mvn_noise(m, m.shape[0], rng)
        elif spec.kind == "shuffled":
            matrices[role] = np.ascontiguousarray(m[perm], dtype=np.float32)
        else:  # pragma: no cover -- ControlSpec validates kind
            raise ValueError(f"unknown control kind {spec.kind!r}")
    meta = {
        "kind": spec.kind,
        "reference": spec.reference,
        # noise carries no model; mvn/shuffled inherit what the reference's numbers came from
        "random_weights": False if spec.kind == "noise_gaussian" else reference.random_weights,
        "reference_random_weights": reference.random_weights,
        "reference_meta_sha256": _reference_fingerprint(reference),
        "seed": seed,
        "control_version": CONTROL_VERSION,
        "spec": spec.model_dump(mode="json"),
    }
    return FeatureSet(name, list(reference.item_ids), matrices, meta)


def _reference_fingerprint(ref: FeatureSet) -> str:
    core = {k: v for k, v in ref.meta.items() if k not in ("extractors",)}
    digest = {r: float(np.float64(m.sum())) for r, m in ref.matrices.items()}
    return sha256_json({"meta": core, "sums": digest, "n": len(ref.item_ids), "first": ref.item_ids[:3]})


def apply_controls(run_dir: Path, specs: list[ControlSpec], seed: int) -> list[str]:
    """Build and save every control in ``specs`` (skipping up-to-date ones); their names."""
    names = []
    for spec in specs:
        name = control_name(spec)
        reference = load_feature_set(run_dir, spec.reference)
        meta_file = features_dir(run_dir) / name / "meta.json"
        if meta_file.is_file():
            old = read_json(meta_file)
            if (
                old.get("reference_meta_sha256") == _reference_fingerprint(reference)
                and old.get("seed") == seed
                and old.get("spec") == spec.model_dump(mode="json")
                and old.get("control_version") == CONTROL_VERSION
            ):
                names.append(name)
                continue
        save_feature_set(run_dir, make_control(spec, reference, seed))
        log.info("control %s written (%s of %s)", name, spec.kind, spec.reference)
        names.append(name)
    return names
