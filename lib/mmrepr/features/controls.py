"""Control feature sets: the same shapes as a real set, but no (or the wrong) item information.

- ``noise_gaussian``: i.i.d. N(0, 1) of the reference's shape, per role.
- ``noise_mvn``: rows drawn from N(mean, covariance) of the reference, per role; rows are
  not tied to items. Sampled as ``mean + z · F`` with a factor ``cov = Fᵀ F``: with fewer
  rows than dimensions (a 3584-d LVLM embedding of a few thousand items) F is the scaled
  centred reference itself (rank n-1, no decomposition); otherwise the Cholesky factor of
  the d×d covariance (jittered if singular, eigendecomposition as the last resort).
- ``shuffled``: the reference's real rows, assigned to the wrong items by a seeded
  derangement (no item keeps its own row). One permutation for all roles, so an item's
  visual and textual rows still come from one (other) item.
- a *modality ablation* (``role`` set): only that role is replaced (by zeros, noise or
  shuffled rows); the other roles keep the reference's real rows. Its meta has
  ``kind: ablation``, ``ablated_role`` and ``replacement``.

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
    if spec.name:
        return spec.name
    return f"{spec.kind}_{spec.role}_{spec.reference}" if spec.role else f"{spec.kind}_{spec.reference}"


def gaussian_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def mvn_factor(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """``(mean, F, method)`` with cov(ref) = Fᵀ F, F of shape (r, d), r = min(n, d)."""
    x = np.asarray(ref, dtype=np.float64)
    n, d = x.shape
    mean = x.mean(axis=0)
    xc = x - mean
    if n <= d:
        # low rank: the centred rows themselves are a factor (cov = xcᵀ xc / (n-1)); exact,
        # no decomposition at all, and the draws stay in the reference's span
        return mean, xc / np.sqrt(max(n - 1, 1)), "centred-rows factor"
    cov = xc.T @ xc / (n - 1)
    # Cholesky is ~20x faster than an eigendecomposition at d = 3584; a covariance that is
    # singular (constant columns, rank < d) gets a jitter of 1e-10 of its mean variance first,
    # and only if that still fails do we fall back to the eigendecomposition.
    jitter = 1e-10 * max(np.trace(cov) / d, 1e-300)
    for eps in (0.0, jitter, 1e3 * jitter):
        try:
            return mean, np.linalg.cholesky(cov + eps * np.eye(d)).T, "cholesky"
        except np.linalg.LinAlgError:
            continue
    w, v = np.linalg.eigh(cov)
    keep = w > 1e-12 * max(w.max(), 1e-300)
    return mean, np.sqrt(w[keep])[:, None] * v[:, keep].T, "eigh"


def mvn_noise(ref: np.ndarray, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """``n_rows`` draws from N(mean(ref), cov(ref)), rows not tied to the reference's items."""
    mean, factor, _ = mvn_factor(ref)
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
    if spec.role is not None and spec.role not in reference.matrices:
        raise ValueError(f"control {name}: feature set {reference.name!r} has no {spec.role!r} matrix to ablate "
                         f"(roles: {sorted(reference.matrices)})")
    matrices: dict[str, np.ndarray] = {}
    perm = None
    if spec.kind == "shuffled":
        perm = derangement(len(reference.item_ids), np.random.default_rng(stable_seed(seed, name, "perm")))
    for role, m in reference.matrices.items():
        rng = np.random.default_rng(stable_seed(seed, name, role))
        if spec.role is not None and role != spec.role:
            matrices[role] = np.asarray(m, dtype=np.float32)  # the roles not ablated stay real
        elif spec.kind == "zeros":
            matrices[role] = np.zeros(m.shape, dtype=np.float32)
        elif spec.kind == "noise_gaussian":
            matrices[role] = gaussian_noise(m.shape, rng)
        elif spec.kind == "noise_mvn":
            matrices[role] = mvn_noise(m, m.shape[0], rng)
        elif spec.kind == "shuffled":
            matrices[role] = np.ascontiguousarray(m[perm], dtype=np.float32)
        else:  # pragma: no cover -- ControlSpec validates kind
            raise ValueError(f"unknown control kind {spec.kind!r}")
    meta = {
        "kind": "ablation" if spec.role else spec.kind,
        "reference": spec.reference,
        # noise carries no model; mvn/shuffled inherit what the reference's numbers came from
        "random_weights": False if spec.kind == "noise_gaussian" else reference.random_weights,
        "reference_random_weights": reference.random_weights,
        "reference_meta_sha256": _reference_fingerprint(reference),
        "seed": seed,
        "control_version": CONTROL_VERSION,
        "spec": spec.model_dump(mode="json"),
    }
    if spec.role:
        meta.update(ablated_role=spec.role, replacement=spec.kind,
                    random_weights=reference.random_weights)
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
