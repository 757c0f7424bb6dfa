"""Stage 5 on a results fixture with planted answers (tests/fixtures/analysis_results.py)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import analysis_results as F  # noqa: E402

from mmrepr.analysis.load import AnalysisInputError, load_inputs, parse_metric  # noqa: E402
from mmrepr.analysis.run import run_analysis  # noqa: E402
from mmrepr.analysis.stats import bootstrap_ci, paired_test  # noqa: E402


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    P = F.params(root, bootstrap=200)
    cells = F.build(P.run_dir)
    return P, cells, run_analysis(P)


def _row(tests, family, a_model, a_fs, b_fs, metric="Recall@20"):
    t = tests[(tests.family == family) & (tests.a_model == a_model) & (tests.a_fs == a_fs) & (tests.b_fs == b_fs)
              & (tests.metric == metric)]
    assert len(t) == 1, t
    return t.iloc[0]


# ---- the statistics on small known inputs ---------------------------------------------

def test_paired_test_pairs_by_user_id_and_counts_unpaired():
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(40)]
    a = pd.Series(rng.uniform(0, 1, 40), index=users)
    b = (a - rng.uniform(0.01, 0.2, 40)).drop(["u0", "u1", "u2"])
    b["x9"] = 0.5  # a user only b has
    shuffled = b.sample(frac=1, random_state=1)  # order must not matter
    r1, r2 = paired_test(a, b, n_boot=100, seed=3), paired_test(a, shuffled, n_boot=100, seed=3)
    assert (r1["n"], r1["n_only_a"], r1["n_only_b"]) == (37, 3, 1)
    assert r1 == r2
    d = (a - b).dropna()
    assert r1["diff"] == pytest.approx(d.mean())
    assert r1["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert r1["p_ttest"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert r1["dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert r1["rank_biserial"] == pytest.approx(1.0)  # every paired difference positive
    assert r1["ci_low"] < d.mean() < r1["ci_high"]


def test_rank_biserial_and_identical_series():
    a = pd.Series([1.0, 0.0, 3.0, 0.5], index=list("abcd"))
    b = pd.Series([0.0, 2.0, 0.0, 0.5], index=list("abcd"))  # d = 1, -2, 3, 0 -> ranks 1,2,3
    assert paired_test(a, b, n_boot=0)["rank_biserial"] == pytest.approx((1 + 3 - 2) / 6)
    same = paired_test(a, a.copy(), n_boot=50)
    assert same["p_wilcoxon"] == 1.0 and same["diff"] == 0.0 and same["n_nonzero"] == 0


def test_bootstrap_ci_is_seeded():
    x = np.random.default_rng(1).normal(0.3, 1, 200)
    assert bootstrap_ci(x, 300, seed=5) == bootstrap_ci(x, 300, seed=5)
    lo, hi = bootstrap_ci(x, 300, seed=5)
    assert lo < x.mean() < hi
    assert bootstrap_ci(x, 300, seed=6) != (lo, hi)


def test_parse_metric_rejects_bad_labels():
    assert parse_metric("nDCG@20").label == "nDCG@20"
    with pytest.raises(AnalysisInputError, match="Name@k"):
        parse_metric("Recall20")


# ---- the fixture: planted answers --------------------------------------------------------

def test_tables_mark_the_planted_best(result):
    _, cells, res = result
    main = res.tables["main"]
    for metric, (model, fs) in F.EXPECTED_BEST.items():
        marked = main[main[f"best {metric}"]]
        assert list(zip(marked.model, marked.feature_set)) == [(model, fs)], metric
    # Test split only (val rows in the fixture are different), mean over users.
    vbpr = main[(main.model == "VBPR") & (main.feature_set == "real")].iloc[0]
    assert vbpr["Recall@20"] == pytest.approx(cells[("VBPR", "real")]["Recall"].mean())
    ctrl = res.tables["controls"]
    assert set(ctrl.model) == {"VBPR", "LATTICE"}
    lat = ctrl[ctrl.model == "LATTICE"]
    assert lat.loc[lat["best nDCG@20"], "feature_set"].tolist() == ["real2"]
    kw = res.tables["keywords"]
    assert set(zip(kw.model, kw.feature_set)) == {("ItemKNN", ""), ("AttributeItemKNN", "kwA__onehot"),
                                                   ("AttributeItemKNN", "kwB__onehot")}
    assert bool(kw.loc[kw.feature_set == "kwA__onehot", "significant (Recall@20)"].iloc[0])
    assert not bool(kw.loc[kw.feature_set == "kwB__onehot", "significant (Recall@20)"].iloc[0])
    # The HTML bolds exactly those cells (Styler ids: rowR_colC of the shown columns).
    html = (res.out_dir / "tables" / "main.html").read_text()
    rule = re.search(r"\n([^{}]*)\{\s*font-weight: bold;", html).group(1)
    shown = [c for c in main.columns if not c.startswith("best ")]
    bold = {(main.model[int(r)], main.feature_set[int(r)], shown[int(c)]) for r, c in re.findall(r"row(\d+)_col(\d+)", rule)}
    assert bold == {(m, fs, metric) for metric, (m, fs) in F.EXPECTED_BEST.items()}
    assert (res.out_dir / "tables" / "main.csv").is_file()


def test_planted_difference_significant_after_holm_null_not(result):
    _, _, res = result
    t = res.tests
    for metric in ("Recall@20", "nDCG@20", "HR@20"):
        for ctrl in ("noise_gaussian_real", "shuffled_real"):
            r = _row(t, "content", "VBPR", "real", ctrl, metric)
            assert r.significant and r["diff"] > 0 and r.p_wilcoxon_adj < 0.05 and r.n == F.N_USERS
        null = _row(t, "content", "LATTICE", "real", "noise_gaussian_real", metric)
        assert not null.significant and null.p_wilcoxon_adj > 0.5
        assert null.ci_low < 0 < null.ci_high
    kw_a = _row(t, "keywords", "AttributeItemKNN", "kwA__onehot", "")
    kw_b = _row(t, "keywords", "AttributeItemKNN", "kwB__onehot", "")
    assert kw_a.significant and not kw_b.significant
    assert (kw_a.n, kw_a.n_only_a, kw_a.n_only_b) == (F.N_USERS - F.MISSING_ITEMKNN, F.MISSING_ITEMKNN, 0)


def test_holm_is_applied_per_dataset_and_metric(result):
    # (no ablation sets in this fixture: every comparison is in its dataset-and-metric family;
    # an ablation label's own family: test_analysis_robustness.py)
    _, _, res = result
    t = res.tests
    assert (t.p_wilcoxon_adj >= t.p_wilcoxon - 1e-15).all()
    for _, g in t.groupby(["dataset", "metric"]):
        expected = multipletests(g.p_wilcoxon.to_numpy(), method="holm")[1]
        np.testing.assert_allclose(g.p_wilcoxon_adj.to_numpy(), expected)
        assert len(g) == len(t) // 3  # one family per metric, all comparisons in it


def test_computed_answer_says_what_the_numbers_say(result):
    _, _, res = result
    recs = {(r["model"], r.get("feature_set")): r for r in res.answer["records"]}
    assert recs[("VBPR", None)]["content_verdict"] == "uses content"
    assert recs[("VBPR", None)]["real_beats_control"] == 2
    assert recs[("LATTICE", None)]["content_verdict"] == "no evidence of content use"
    assert recs[("LATTICE", None)]["best_representation"] == "real"
    assert recs[("AttributeItemKNN", "kwA__onehot")]["keywords_verdict"] == "beats Item-kNN"
    assert recs[("AttributeItemKNN", "kwB__onehot")]["keywords_verdict"] == "no significant difference"
    t = res.tests
    vb = _row(t, "content", "VBPR", "real", "noise_gaussian_real")
    sent = next(s for s in recs[("VBPR", None)]["sentences"] if "noise_gaussian_real control" in s)
    assert "significantly beats" in sent and f"n = {vb.n} paired users" in sent and f"{vb['diff']:+.4f}" in sent
    lat = next(s for s in recs[("LATTICE", None)]["sentences"] if "noise_gaussian_real control" in s)
    assert "does not significantly differ" in lat and "Holm-adjusted p = 1" in lat
    # Every sentence about a comparison carries its numbers.
    for r in res.answer["records"]:
        for s in r["sentences"]:
            if "significantly" in s and "verdict" not in s and "representations" not in s:
                assert "Wilcoxon signed-rank p =" in s and "paired users" in s, s
    md = (res.out_dir / "answer.md").read_text()
    assert "VBPR: uses content" in md and "LATTICE: no evidence of content use" in md
    assert json.loads((res.out_dir / "answer.json").read_text())["records"]


def test_figures_written_and_not_blank(result):
    import matplotlib.image as mpimg

    _, _, res = result
    expected = {"bars_fx", "content_use_fx", "planted_vs_measured_fx", "lvlm_quality_vs_accuracy",
                "keyword_distributions"}
    assert expected <= set(res.figures)
    for key, paths in res.figures.items():
        img = mpimg.imread(paths["png"])
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.02, f"{key} looks blank"
        assert "<svg" in paths["svg"].read_text()[:2000]


def test_missing_inputs_are_counted_or_named(tmp_path):
    P = F.params(tmp_path, bootstrap=0)
    with pytest.raises(AnalysisInputError, match="best.parquet"):
        load_inputs(P.run_dir)
    F.build(P.run_dir)
    (P.run_dir / "train" / "per_user" / "BPR__none__seed123.parquet").unlink()
    shutil.rmtree(P.run_dir / "features" / "real2")
    inp = load_inputs(P.run_dir)
    assert any("BPR__none__seed123.parquet" in p for p in inp.problems)
    assert any("real2" in p and "meta.json" in p for p in inp.problems)
    assert inp.kind("noise_gaussian_real") == "noise_gaussian" and inp.reference("shuffled_real") == "real"
    bad = pd.read_parquet(P.run_dir / "train" / "per_user" / "VBPR__real__seed123.parquet").drop(columns=["k"])
    bad.to_parquet(P.run_dir / "train" / "per_user" / "VBPR__real__seed123.parquet")
    with pytest.raises(AnalysisInputError, match=r"VBPR__real__seed123.parquet: missing column"):
        load_inputs(P.run_dir)


def test_keywords_reference_is_the_item_knn_with_the_same_scorer():
    """With both trained, Attribute Item-kNN is tested against ElliotItemKNN (same scorer,
    interaction vectors); with only Cornac's ItemKNN, against that one."""
    from mmrepr.analysis.load import Inputs
    from mmrepr.analysis.stats import plan_comparisons

    def plan(models):
        summary = pd.DataFrame({"dataset": "d", "model": [m for m, _ in models], "feature_set": [f for _, f in models],
                                "Recall@20": np.linspace(0.1, 0.2, len(models))})
        from mmrepr.training.results import model_table

        inp = Inputs(Path("."), pd.DataFrame(), pd.DataFrame(), {}, model_table(m for m, _ in models))
        return {(c.a_model, c.a_fs, c.b_model) for c in plan_comparisons(inp, summary, "Recall@20")
                if c.family == "keywords"}

    both = [("ItemKNN", ""), ("ElliotItemKNN", ""), ("AttributeItemKNN", "kw__onehot")]
    assert plan(both) == {("AttributeItemKNN", "kw__onehot", "ElliotItemKNN")}
    assert plan([both[0], both[2]]) == {("AttributeItemKNN", "kw__onehot", "ItemKNN")}
    assert plan([both[2]]) == set()
