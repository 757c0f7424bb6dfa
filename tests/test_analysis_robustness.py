"""Effect sizes, seed stability and user-activity slices of stage 5 (planted fixtures)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import analysis_results as F  # noqa: E402

from mmrepr.analysis.activity import assign_buckets, bucket_labels  # noqa: E402
from mmrepr.analysis.run import run_analysis  # noqa: E402
from mmrepr.analysis.stats import paired_test  # noqa: E402


def test_effect_sizes_beside_the_p_value():
    rng = np.random.default_rng(1)
    users = [f"u{i}" for i in range(200)]
    b = pd.Series(rng.uniform(0.1, 0.3, 200), index=users)
    a = b + rng.normal(0.02, 0.04, 200)
    r = paired_test(a, b, n_boot=300, seed=5)
    d = (a - b).to_numpy()
    assert r["rel_change"] == pytest.approx(d.mean() / b.mean())
    assert r["dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert r["dz_ci_low"] < r["dz"] < r["dz_ci_high"]
    # The interval is about the effect size, not the mean difference: it scales with 1/sd, not with d.
    assert r["dz_ci_low"] > r["ci_high"]
    assert paired_test(a, b, n_boot=300, seed=5) == r  # seeded
    q = pd.Series(np.arange(200) / 256, index=users)  # exact in binary
    flat = paired_test(q + 0.125, q, n_boot=100, seed=0)  # no spread: d_z undefined, its CI too
    assert np.isinf(flat["dz"]) and np.isnan(flat["dz_ci_low"])


def test_bucket_labels_and_assignment():
    assert bucket_labels([1, 2, 5]) == ["1", "2-4", "5+"]
    assert bucket_labels([1, 10]) == ["1-9", "10+"]
    with pytest.raises(ValueError, match="strictly increasing"):
        bucket_labels([2, 2])
    got = assign_buckets(pd.Series([1, 2, 4, 5, 100]), [1, 2, 5]).astype(str).tolist()
    assert got == ["1", "2-4", "2-4", "5+", "5+"]


def _add_activity(run_dir: Path) -> dict[str, int]:
    """Users 0-99: 1 training interaction, 100-199: 3, 200-299: 8."""
    counts = {f"u{i:04d}": (1 if i < 100 else 3 if i < 200 else 8) for i in range(F.N_USERS)}
    rows = [(u, f"i{j}", 5.0, j, "train") for u, c in counts.items() for j in range(c)]
    rows += [(u, "iz", 5.0, 99, "test") for u in counts]
    d = run_dir / "data"
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp", "split"]).to_parquet(d / "interactions.parquet")
    return counts


def _add_seed(run_dir: Path, new_seed: int, vbpr_real_like_noise: bool) -> None:
    """A second seed: a copy of the first, except (optionally) VBPR on real = VBPR on noise."""
    tr = run_dir / "train"
    best = pd.read_parquet(tr / "best.parquet")
    extra = best[best["seed"] == F.SEED].assign(seed=new_seed)
    for f in sorted((tr / "per_user").glob(f"*__seed{F.SEED}.parquet")):
        pu = pd.read_parquet(f)
        if vbpr_real_like_noise and f.name.startswith("VBPR__real__"):
            pu = pd.read_parquet(tr / "per_user" / f"VBPR__noise_gaussian_real__seed{F.SEED}.parquet")
            m = pu[pu["metric"] == "Recall"]["value"].mean()
            extra.loc[(extra["model"] == "VBPR") & (extra["feature_set"] == "real") & (extra["metric"] == "Recall")
                      & (extra["split"] == "test"), "value"] = m
        pu.to_parquet(tr / "per_user" / f.name.replace(f"seed{F.SEED}", f"seed{new_seed}"), index=False)
    pd.concat([best, extra], ignore_index=True).to_parquet(tr / "best.parquet", index=False)


@pytest.mark.parametrize("flip", [False, True])
def test_seed_stability_is_reported_not_hidden(tmp_path, flip):
    P = F.params(tmp_path, bootstrap=50)
    F.build(P.run_dir)
    _add_seed(P.run_dir, 999, vbpr_real_like_noise=flip)
    res = run_analysis(P)
    stab = pd.read_csv(res.out_dir / "stability.csv", keep_default_na=False)
    row = stab[(stab["a_model"] == "VBPR") & (stab["b_fs"] == "noise_gaussian_real")].iloc[0]
    assert row["n_seeds"] == 2
    assert row["seed_directions"] == ("123:+ 999:0" if flip else "123:+ 999:+")
    assert bool(row["stable"]) is (not flip)
    rec = next(r for r in res.answer["records"] if r["model"] == "VBPR")
    assert rec["stable_over_seeds"] is (not flip)
    assert ("changes across 2 seeds" in rec["headline"]) is flip
    assert ("stable over 2 seeds" in rec["headline"]) is (not flip)


def test_activity_buckets_test_content_within_each_bucket(tmp_path):
    P = F.params(tmp_path, bootstrap=50)
    F.build(P.run_dir)
    _add_activity(P.run_dir)
    res = run_analysis(P)
    t = pd.read_csv(res.out_dir / "tests_by_activity.csv", keep_default_na=False, dtype={"bucket": str})
    vb = t[(t["a_model"] == "VBPR") & (t["b_fs"] == "noise_gaussian_real")]
    assert vb["bucket"].tolist() == ["1", "2-4", "5+"]
    assert vb["n"].tolist() == [100, 100, 100]
    assert vb["significant"].astype(str).eq("True").all()  # +0.1 on every user, so in every bucket
    # Each bucket is its own correction family: within one bucket, Holm over its comparisons only.
    from statsmodels.stats.multitest import multipletests
    b1 = t[t["bucket"] == "1"]
    assert np.allclose(b1["p_wilcoxon_adj"], multipletests(b1["p_wilcoxon"], method="holm")[1])
    assert "activity_fx" in res.figures
    assert (res.out_dir / "tables" / "activity.html").is_file()


def test_answer_has_one_sentence_per_model(tmp_path):
    P = F.params(tmp_path, bootstrap=50)
    F.build(P.run_dir)
    res = run_analysis(P)
    heads = {r["model"]: r["headline"] for r in res.answer["records"] if r.get("headline")}
    assert heads["VBPR"].startswith("On fx, VBPR uses the content (warm items")
    assert "no evidence" in heads["LATTICE"]
    md = (res.out_dir / "answer.md").read_text()
    assert "In one sentence per model" in md and "effect size d_z" in md and "relative change" in md


def _add_ablation(run_dir: Path, drop_textual: bool) -> None:
    """VBPR on `real` with its visual role zeroed (a drop of 0.1 on every user: the planted
    +0.1 is gone) and its textual role zeroed (the same drop, or none)."""
    import json

    tr = run_dir / "train"
    best = pd.read_parquet(tr / "best.parquet")
    real = pd.read_parquet(tr / "per_user" / f"VBPR__real__seed{F.SEED}.parquet")
    noise = pd.read_parquet(tr / "per_user" / f"VBPR__noise_gaussian_real__seed{F.SEED}.parquet")
    extra = []
    for role, pu in (("visual", noise), ("textual", noise if drop_textual else real)):
        fs = f"zeros_{role}_real"
        (run_dir / "features" / fs).mkdir(parents=True, exist_ok=True)
        (run_dir / "features" / fs / "meta.json").write_text(json.dumps(
            {"name": fs, "kind": "ablation", "reference": "real", "ablated_role": role, "replacement": "zeros"}))
        pu.to_parquet(tr / "per_user" / f"VBPR__{fs}__seed{F.SEED}.parquet", index=False)
        rows = best[(best["model"] == "VBPR") & (best["feature_set"] == "real")].copy()
        for m in ("Recall", "nDCG", "HR"):
            rows.loc[rows["metric"] == m, "value"] = pu.loc[pu["metric"] == m, "value"].mean()
        extra.append(rows.assign(feature_set=fs))
    pd.concat([best, *extra], ignore_index=True).to_parquet(tr / "best.parquet", index=False)


@pytest.mark.parametrize("drop_textual", [True, False])
def test_ablation_labels_and_the_planted_truth(tmp_path, drop_textual):
    P = F.params(tmp_path, bootstrap=50)
    F.build(P.run_dir)  # planted weights: image 1.0, text 0.5 -> a content user should use both
    _add_ablation(P.run_dir, drop_textual)
    res = run_analysis(P)
    ab = pd.read_csv(res.out_dir / "ablation.csv", keep_default_na=False)
    row = ab[ab["model"] == "VBPR"].iloc[0]
    assert row["reference"] == "real" and row["expected"] == "uses both modalities"
    assert row["label"] == ("uses both modalities" if drop_textual else "relies on visual")
    assert str(row["matches_truth"]) == str(drop_textual)
    rec = next(r for r in res.answer["records"] if r["model"] == "VBPR")
    assert rec["ablation"][0]["matches_truth"] is drop_textual
    assert ("does NOT match" in " ".join(rec["sentences"])) is (not drop_textual)
    assert "ablation_fx" in res.figures
    # The ablation sets are not noise controls: the content verdict still counts 2 controls.
    assert rec["n_controls"] == 2
    # The label is its own correction family: its two comparisons are Holm-corrected together,
    # and every other comparison of the dataset without them
    from statsmodels.stats.multitest import multipletests

    t = res.tests[res.tests["metric"] == "Recall@20"]
    abl = t[t["family"] == "ablation"]
    assert len(abl) == 2 and set(abl["correction_family"]) == {"ablation:VBPR:real"}
    np.testing.assert_allclose(abl["p_wilcoxon_adj"], multipletests(abl["p_wilcoxon"], method="holm")[1])
    rest = t[t["family"] != "ablation"]
    assert set(rest["correction_family"]) == {"report"}
    np.testing.assert_allclose(rest["p_wilcoxon_adj"], multipletests(rest["p_wilcoxon"], method="holm")[1])
