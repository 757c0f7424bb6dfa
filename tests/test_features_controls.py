"""Noise and shuffled controls: right moments, seeded, no tie to items."""

from __future__ import annotations

import numpy as np
import pytest

from mmrepr.features.controls import apply_controls, control_name, derangement, make_control, mvn_noise
from mmrepr.features.params import ControlSpec
from mmrepr.features.store import FeatureSet, load_feature_set, save_feature_set


def reference(n=3000, d_vis=12, d_txt=6, seed=0, name="ref") -> FeatureSet:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d_vis, d_vis))
    vis = (rng.normal(size=(n, d_vis)) @ a + np.arange(d_vis)).astype(np.float32)  # correlated, shifted
    txt = (rng.normal(size=(n, d_txt)) * 3 - 1).astype(np.float32)
    return FeatureSet(name, [f"i{i}" for i in range(n)], {"visual": vis, "textual": txt},
                      {"kind": "real", "random_weights": True})


def spec(kind, ref="ref", name=None):
    return ControlSpec(kind=kind, reference=ref, name=name)


def test_gaussian_noise_moments_shape_and_seed():
    ref = reference()
    c = make_control(spec("noise_gaussian"), ref, seed=1)
    assert c.name == "noise_gaussian_ref" and c.item_ids == ref.item_ids
    for role, m in c.matrices.items():
        assert m.shape == ref.matrices[role].shape and m.dtype == np.float32
        assert abs(m.mean()) < 0.02 and abs(m.std() - 1) < 0.02
        cov = np.cov(m, rowvar=False)
        assert np.abs(cov - np.eye(m.shape[1])).max() < 0.1
    assert c.meta["kind"] == "noise_gaussian" and c.meta["reference"] == "ref" and c.meta["random_weights"] is False
    again = make_control(spec("noise_gaussian"), ref, seed=1)
    other = make_control(spec("noise_gaussian"), ref, seed=2)
    assert np.array_equal(again.matrices["visual"], c.matrices["visual"])
    assert not np.allclose(other.matrices["visual"], c.matrices["visual"])
    assert not np.allclose(c.matrices["visual"], c.matrices["textual"][:, :1])  # roles get own streams


def test_mvn_noise_matches_mean_and_covariance():
    ref = reference(n=20000)
    c = make_control(spec("noise_mvn", name="my_mvn"), ref, seed=3)
    assert c.name == "my_mvn" and c.meta["random_weights"] is True  # derived from random-weight features
    for role, m in c.matrices.items():
        r = ref.matrices[role].astype(np.float64)
        scale = np.abs(np.cov(r, rowvar=False)).max()
        np.testing.assert_allclose(m.mean(0), r.mean(0), atol=0.05 * np.sqrt(scale))
        assert np.abs(np.cov(m, rowvar=False) - np.cov(r, rowvar=False)).max() < 0.05 * scale
        # rows are not tied to items: row i of the noise is no closer to row i of the reference
        rc, mc = r - r.mean(0), m - m.mean(0)
        per_item = np.einsum("ij,ij->i", rc, mc) / (np.linalg.norm(rc, axis=1) * np.linalg.norm(mc, axis=1))
        assert abs(per_item.mean()) < 0.03


def test_mvn_low_rank_when_fewer_rows_than_dims():
    rng = np.random.default_rng(0)
    n, d = 40, 300
    ref = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.1 + 5
    out = mvn_noise(ref, 5000, np.random.default_rng(1))
    assert out.shape == (5000, d)
    # draws lie in the affine span of the reference (rank <= n-1), with its mean
    centred = ref - ref.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[s > 1e-8 * s.max()]
    resid = (out - ref.mean(0)) - (out - ref.mean(0)) @ basis.T @ basis
    assert np.abs(resid).max() < 1e-2 * np.abs(out - ref.mean(0)).max()
    np.testing.assert_allclose(out.mean(0), ref.mean(0), atol=0.2 * centred.std())
    # and reproduce the reference covariance along it
    cov_ref = basis @ np.cov(centred, rowvar=False) @ basis.T
    cov_out = basis @ np.cov(out, rowvar=False) @ basis.T
    assert np.abs(cov_out - cov_ref).max() < 0.1 * np.abs(cov_ref).max()


def test_mvn_fast_for_lvlm_width():
    import time

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(500, 3584)).astype(np.float32)
    t = time.perf_counter()
    out = mvn_noise(ref, 500, rng)
    assert out.shape == (500, 3584)
    assert time.perf_counter() - t < 20


def test_shuffled_is_a_derangement_shared_by_roles():
    ref = reference(n=500)
    c = make_control(spec("shuffled"), ref, seed=4)
    vis, txt = c.matrices["visual"], ref.matrices["visual"]
    # each item got another item's real row, every row used once
    idx = {row.tobytes(): i for i, row in enumerate(txt)}
    perm = np.array([idx[row.tobytes()] for row in vis])
    assert sorted(perm.tolist()) == list(range(500))
    assert (perm != np.arange(500)).all()
    # the same permutation for the textual role: an item's two rows come from one other item
    np.testing.assert_array_equal(c.matrices["textual"], ref.matrices["textual"][perm])
    assert c.meta["kind"] == "shuffled" and c.meta["random_weights"] is True
    perm2 = derangement(500, np.random.default_rng(5))
    assert (perm2 != np.arange(500)).all() and not np.array_equal(perm2, perm)
    with pytest.raises(ValueError):
        derangement(1, np.random.default_rng(0))


def test_apply_controls_writes_named_sets_and_skips_up_to_date(tmp_path):
    ref = reference(n=200)
    save_feature_set(tmp_path, ref)
    specs = [spec("noise_gaussian"), spec("noise_mvn"), spec("shuffled", name="shuf")]
    names = apply_controls(tmp_path, specs, seed=9)
    assert names == ["noise_gaussian_ref", "noise_mvn_ref", "shuf"] == [control_name(s) for s in specs]
    loaded = load_feature_set(tmp_path, "noise_mvn_ref")
    assert loaded.meta["kind"] == "noise_mvn" and loaded.meta["reference"] == "ref"
    assert loaded.matrices["visual"].shape == ref.matrices["visual"].shape
    mtime = (tmp_path / "features" / "shuf" / "visual.npy").stat().st_mtime_ns
    apply_controls(tmp_path, specs, seed=9)
    assert (tmp_path / "features" / "shuf" / "visual.npy").stat().st_mtime_ns == mtime
    # a changed reference rebuilds its controls
    ref2 = reference(n=200, seed=1)
    save_feature_set(tmp_path, ref2)
    apply_controls(tmp_path, specs, seed=9)
    new = load_feature_set(tmp_path, "shuf").matrices["visual"]
    assert sorted(r.tobytes() for r in new) == sorted(r.tobytes() for r in ref2.matrices["visual"])
    with pytest.raises(Exception, match="not found"):
        apply_controls(tmp_path, [spec("shuffled", ref="nope")], seed=9)


@pytest.mark.parametrize("kind", ["zeros", "noise_gaussian", "shuffled"])
def test_modality_ablation_replaces_one_role_and_keeps_the_other_real(kind):
    ref = reference(n=300)
    c = make_control(ControlSpec(kind=kind, reference="ref", role="textual"), ref, seed=3)
    assert c.name == f"{kind}_textual_ref"
    np.testing.assert_array_equal(c.matrices["visual"], ref.matrices["visual"])  # untouched
    txt = c.matrices["textual"]
    assert txt.shape == ref.matrices["textual"].shape
    if kind == "zeros":
        assert not txt.any()
    else:
        assert not (txt == ref.matrices["textual"]).all(axis=1).any()  # no item keeps its own row
    assert c.meta["kind"] == "ablation" and c.meta["ablated_role"] == "textual" and c.meta["replacement"] == kind
    assert c.meta["reference"] == "ref"


def test_ablation_spec_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="role: visual or role: textual"):
        ControlSpec(kind="zeros", reference="ref")
    only_visual = FeatureSet("v", ["a", "b"], {"visual": np.ones((2, 3), np.float32)}, {"kind": "real"})
    with pytest.raises(ValueError, match="'v' has no 'textual' matrix"):
        make_control(ControlSpec(kind="zeros", reference="v", role="textual"), only_visual, seed=0)
