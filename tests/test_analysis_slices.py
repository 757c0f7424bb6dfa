"""Stage 5 on the test slices: warm items, cold items, whole catalogue (planted fixtures).

The fixture runs are built with stage 4's contract (``per_user_filename(..., split)``, the
``split`` column of best.parquet): tests/fixtures/analysis_results.py::add_slices.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import analysis_results as F  # noqa: E402

from mmrepr.analysis import slices, tables  # noqa: E402
from mmrepr.analysis.answer import content_verdict  # noqa: E402
from mmrepr.analysis.load import load_inputs  # noqa: E402
from mmrepr.analysis.run import run_analysis  # noqa: E402
from mmrepr.training.results import MetricSpec, per_user_filename  # noqa: E402

_RUNS: dict[str, object] = {}


def _run(tmp_path_factory, kind: str):
    """One analysis per kind of fixture, shared by the tests: ``good`` (VBPR's real content
    beats its controls on cold items), ``bad`` (it does not), ``absent`` (no slices at all)."""
    if kind not in _RUNS:
        P = F.params(tmp_path_factory.mktemp(kind), bootstrap=20)
        F.build(P.run_dir)
        cold = F.add_slices(P.run_dir, cold_real_better=(kind == "good")) if kind != "absent" else None
        _RUNS[kind] = (P, cold, run_analysis(P))
    return _RUNS[kind]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return _run(tmp_path_factory, "good")


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return _run(tmp_path_factory, "bad")


@pytest.fixture(scope="module")
def absent(tmp_path_factory):
    return _run(tmp_path_factory, "absent")


# ---- hand-sized inputs ----------------------------------------------------------------------

def test_slice_metrics_are_the_profiles_recall_and_ndcg():
    ms = [MetricSpec("Recall", 20), MetricSpec("nDCG", 20), MetricSpec("HR", 20), MetricSpec("Recall", 50)]
    assert [m.label for m in slices.slice_metrics(ms)] == ["Recall@20", "nDCG@20", "Recall@50"]
    assert [m.label for m in slices.slice_metrics([MetricSpec("HR", 10)])] == ["HR@10"]


def test_slices_table_spreads_slices_into_columns_and_marks_the_best():
    long = pd.DataFrame({
        "dataset": "d", "split": ["test", "test", "test_cold", "test_cold"],
        "model": ["BPR", "VBPR", "BPR", "VBPR"], "feature_set": ["", "img", "", "img"],
        "family": ["baseline", "multimodal"] * 2, "kind": ["none", "real"] * 2,
        "Recall@20": [0.3, 0.2, 0.0, 0.1], "Recall@20 sd": [0.01, 0.02, 0.0, 0.03], "n_seeds": 3,
    })
    t = tables.slices_table(long, ["Recall@20"])
    assert list(t.columns[:9]) == ["dataset", "family", "model", "feature_set", "kind", "Recall@20 warm",
                                   "Recall@20 warm sd", "Recall@20 cold", "Recall@20 cold sd"]
    assert "Recall@20 all" not in t  # an absent slice has no column
    row = t.set_index("model")
    assert row.loc["VBPR", "Recall@20 cold"] == 0.1 and row.loc["VBPR", "Recall@20 cold sd"] == 0.03
    assert row.loc["BPR", "Recall@20 warm"] == 0.3
    assert row["best Recall@20 warm"].to_dict() == {"BPR": True, "VBPR": False}
    assert row["best Recall@20 cold"].to_dict() == {"BPR": False, "VBPR": True}
    assert slices.slice_columns(["Recall@20", "nDCG@20"], ["test", "test_cold"]) == [
        "Recall@20 warm", "Recall@20 cold", "nDCG@20 warm", "nDCG@20 cold"]


def test_content_verdict_counts_wins_and_losses():
    def rows(sig, diff):
        return pd.DataFrame({"significant": sig, "diff": diff, "p_wilcoxon": [0.01] * len(sig)})

    assert content_verdict(rows([True, True], [0.1, 0.2]))["verdict"] == "uses content"
    assert content_verdict(rows([True, False], [0.1, 0.2]))["verdict"] == "uses content against some controls"
    assert content_verdict(rows([False, True], [0.1, -0.2]))["verdict"] == "a control beats real content"
    assert content_verdict(rows([False, False], [0.1, -0.2]))["verdict"] == "no evidence of content use"
    assert content_verdict(rows([], []))["verdict"] == "no control trained"


# ---- the fixture runs -------------------------------------------------------------------------

def test_slices_are_loaded_through_the_contract(tmp_path):
    P = F.params(tmp_path, bootstrap=0)
    F.build(P.run_dir)
    F.add_slices(P.run_dir)
    (P.run_dir / "train" / "per_user" / per_user_filename("VBPR", "real", F.SEED, "test_cold")).unlink()
    inp = load_inputs(P.run_dir)
    assert inp.slices() == ["test", "test_cold", "test_all"]
    # The warm frames are unchanged; the slice frames carry the split.
    assert set(inp.best["split"]) == {"test"} and "split" not in inp.per_user
    cold = inp.slice_per_user[inp.slice_per_user["split"] == "test_cold"]
    assert cold["user"].nunique() == F.COLD_USERS
    assert sorted(cold[cold["model"] == "VBPR"]["seed"].unique()) == [F.SEED, F.SEED + 1]
    assert (cold[(cold["model"] == "VBPR") & (cold["feature_set"] == "real")]["seed"] == F.SEED + 1).all()
    assert any("VBPR__real__seed123__test_cold.parquet" in p and "test_cold slice" in p for p in inp.problems)


def test_slices_table_has_each_slice_with_the_seed_spread(good):
    _, cold, res = good
    t = res.tables["slices"].set_index(["model", "feature_set"])
    for col in ("Recall@20 warm", "Recall@20 cold", "Recall@20 all", "nDCG@20 cold", "nDCG@20 cold sd"):
        assert col in t
    assert not any(c.startswith("HR@20") for c in t.columns)
    # Mean over the two seeds (the second is the first + SEED_SHIFT), sd over them.
    assert t.loc[("VBPR", "real"), "Recall@20 cold"] == pytest.approx(cold[("VBPR", "real")].mean() + F.SEED_SHIFT / 2)
    assert t.loc[("VBPR", "real"), "Recall@20 cold sd"] == pytest.approx(F.SEED_SHIFT / np.sqrt(2))
    assert t.loc[("VBPR", "real"), "n_seeds"] == 2
    # ID-only models stay in as the floor: nothing but the seed shift on cold items.
    assert t.loc[("BPR", ""), "Recall@20 cold"] == pytest.approx(F.SEED_SHIFT / 2)
    assert bool(t.loc[("VBPR", "real"), "best Recall@20 cold"])
    assert (res.out_dir / "tables" / "slices.html").is_file()
    assert res.table_metrics["slices"][:3] == ["Recall@20 warm", "Recall@20 cold", "Recall@20 all"]


def test_tests_by_slice_repeat_the_comparisons_each_slice_its_own_family(good):
    _, _, res = good
    by = pd.read_csv(res.out_dir / "tests_by_slice.csv", keep_default_na=False, na_values=[""])
    tests = pd.read_csv(res.out_dir / "tests.csv", keep_default_na=False, na_values=[""])
    warm = by[by["split"] == "test"].drop(columns=["split", "n_seeds", "seed_directions", "stable"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(warm, tests.drop(columns=["n_seeds", "seed_directions", "stable"]))
    cold = by[by["split"] == "test_cold"]
    vb = cold[(cold["comparison"] == "VBPR[real] vs VBPR[noise_gaussian_real]") & (cold["metric"] == "Recall@20")].iloc[0]
    assert vb["n"] == F.COLD_USERS and bool(vb["significant"]) and vb["diff"] > 0.1
    assert vb["seed_directions"] == "123:+ 124:+" and bool(vb["stable"])
    lat = cold[(cold["comparison"] == "LATTICE[real] vs LATTICE[noise_gaussian_real]") & (cold["metric"] == "Recall@20")]
    assert not bool(lat["significant"].iloc[0])
    for _, g in cold.groupby(["dataset", "metric"]):
        np.testing.assert_allclose(g["p_wilcoxon_adj"], multipletests(g["p_wilcoxon"], method="holm")[1])
    # Cold-item comparisons against the ID-only floor are made too (baseline family).
    assert (cold["family"] == "baseline").any()


@pytest.mark.parametrize("kind", ["good", "bad"])
def test_verdict_says_warm_and_cold_with_stability(tmp_path_factory, kind):
    _, _, res = _run(tmp_path_factory, kind)
    heads = {r["model"]: r["headline"] for r in res.answer["records"] if r.get("headline")}
    cold_vbpr = "uses the content" if kind == "good" else "shows no evidence of using the content"
    assert heads["VBPR"] == ("On fx, VBPR uses the content (warm items, stable over 2 seeds); on cold items it "
                             f"{cold_vbpr} (cold items, stable over 2 seeds).")
    assert "on cold items it shows no evidence of using the content" in heads["LATTICE"]
    rec = next(r for r in res.answer["records"] if r["model"] == "VBPR")
    assert rec["slices"]["test_cold"]["verdict"] == ("uses content" if kind == "good" else "no evidence of content use")
    assert rec["slices"]["test_all"]["verdict"] == "uses content"
    assert any(s.startswith("On cold items (fx), VBPR with real features real") for s in rec["sentences"])


@pytest.mark.parametrize("kind", ["good", "bad"])
def test_truth_check_real_beats_noise_on_cold_items(tmp_path_factory, kind):
    """The run's check fails where the planted real content is not better on cold items."""
    _, _, res = _run(tmp_path_factory, kind)
    checks = pd.read_csv(res.out_dir / "truth_checks.csv", keep_default_na=False)
    assert list(checks.columns) == slices.CHECK_COLUMNS
    cold = checks[checks["check"] == slices.CHECK_COLD].set_index("model")
    # Only noise controls are checked (the shuffled one is in tests_by_slice.csv).
    assert set(cold["control"]) == {"noise_gaussian_real"}
    assert str(cold.loc["VBPR", "passed"]) == str(kind == "good")
    assert str(cold.loc["LATTICE", "passed"]) == "False"  # a planted null never passes
    assert "on cold items" in cold.loc["VBPR", "detail"] and f"n = {F.COLD_USERS}" in cold.loc["VBPR", "detail"]
    assert (res.out_dir / "tables" / "truth_checks.csv").is_file()
    index = json.loads((res.out_dir / "index.json").read_text())
    assert index["truth_checks"] == {"n": 2, "passed": 1 if kind == "good" else 0}


def test_figure_and_report_show_the_slices(good):
    import matplotlib.image as mpimg

    from mmrepr.analysis.report import build_report

    P, _, res = good
    img = mpimg.imread(res.figures["cold_vs_warm_fx"]["png"])
    assert img.shape[0] > 100 and img[..., :3].std() > 0.02
    page = build_report(P).read_text()
    assert '<img src="analysis/figures/cold_vs_warm_fx.png"' in page
    assert "analysis/tables/slices.csv" in page and "analysis/tables/truth_checks.csv" in page
    assert "1 of 2 checks passed" in page and "FAILED: beats its noise control on cold items — LATTICE" in page
    assert "cold items: yes" in page


def test_an_absent_slice_is_said_not_an_error(absent):
    _, _, res = absent
    index = json.loads((res.out_dir / "index.json").read_text())
    assert index["slices"] == {"fx": {"test": True, "test_cold": False, "test_all": False}}
    heads = {r["model"]: r["headline"] for r in res.answer["records"] if r.get("headline")}
    assert heads["VBPR"].endswith("; cold items were not assessed (no cold-item slice in this run).")
    t = res.tables["slices"]
    assert "Recall@20 warm" in t and not any(c.startswith("Recall@20 cold") for c in t.columns)
    assert "cold_vs_warm_fx" not in res.figures
    checks = pd.read_csv(res.out_dir / "truth_checks.csv", keep_default_na=False)
    cold = checks[checks["check"] == slices.CHECK_COLD]
    assert len(cold) == 2 and (cold["passed"].astype(str) == "False").all()
    assert cold["detail"].str.contains("no cold-item slice").all()
    by = pd.read_csv(res.out_dir / "tests_by_slice.csv")
    assert set(by["split"]) == {"test"}


def test_a_mixed_verdict_names_the_controls_that_beat_real_content():
    import pandas as pd

    from mmrepr.analysis.answer import _headline, content_verdict

    # real beats the shuffled control, Gaussian noise beats real (allrecipes_spot's FREEDOM)
    content = pd.DataFrame({"significant": [True, True], "diff": [0.004, -0.0065], "p_wilcoxon": [0.003, 0.0004]})
    cv = content_verdict(content)
    assert cv["verdict"] == "uses content against some controls"
    line = _headline("ds", "FREEDOM", cv.pop("verdict"), cv)
    assert line == "On ds, FREEDOM uses the content against 1 of 2 controls, while 1 of 2 beat it (warm items)."
    # with no control beating it, nothing is added
    cv = content_verdict(content.assign(diff=[0.004, 0.001], significant=[True, False]))
    assert _headline("ds", "M", cv.pop("verdict"), cv).endswith("against 1 of 2 controls (warm items).")
