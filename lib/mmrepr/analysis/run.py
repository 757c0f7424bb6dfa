"""Stage 5 in one call: ``run_analysis(P)`` reads stage 4's results and writes
``runs/<profile>/analysis/``: tables (CSV + HTML), ``tests.csv`` (every paired test),
``intervals.csv`` (per-cell bootstrap CIs), ``tests_by_seed.csv`` and ``stability.csv``
(the content tests within each seed, and whether their verdicts agree),
``tests_by_activity.csv`` (the content tests per user-activity bucket), ``slices.csv`` (each
metric per test slice: warm items, cold items, whole catalogue; mean and sd over seeds),
``tests_by_slice.csv`` and ``stability_by_slice.csv`` (the comparisons on each slice, and their
per-seed decisions), ``truth_checks.csv`` (synthetic data: the checks against the planted
truth), ``ablation.csv``
(which modality each model uses, checked against the planted truth on synthetic data) and
``ablation_tests.csv`` (the comparisons each label is made from), ``answer.json``/``answer.md`` (the computed
answer), ``figures/`` (PNG + SVG), ``problems.json`` (input problems, counted) and
``index.json`` (what was written, read by the report).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mmrepr import timings
from mmrepr.analysis import ablation, activity, plots, slices, tables
from mmrepr.analysis.answer import add_ablation_sentences, add_slice_verdicts, answer_markdown, compute_answer
from mmrepr.analysis.load import Inputs, load_inputs, load_lvlm_tables, load_truth, parse_metric, planted_weights
from mmrepr.analysis.stats import cell_intervals, plan_comparisons, run_tests, seed_averaged, seed_stability, summary_means
from mmrepr.io import atomic_open, write_csv, write_json

log = logging.getLogger("mmrepr.analysis")


@dataclass
class AnalysisResult:
    out_dir: Path
    inputs: Inputs
    summary: pd.DataFrame
    tests: pd.DataFrame
    intervals: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    answer: dict[str, Any]
    figures: dict[str, dict[str, Path]] = field(default_factory=dict)
    seconds: float = 0.0
    # Tables whose metric columns (bold = best) are not the profile's metrics, e.g. ``slices``.
    table_metrics: dict[str, list[str]] = field(default_factory=dict)
    tests_by_slice: pd.DataFrame = field(default_factory=pd.DataFrame)
    truth_checks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=slices.CHECK_COLUMNS))


TABLE_CAPTIONS = {
    "main": "Test metrics per dataset, model and feature set (mean over seeds); bold = best in the column.",
    "baselines": "Baselines (no multimodal features; Attribute Item-kNN on keyword sets); bold = best in the column.",
    "keywords": "Attribute Item-kNN on each LVLM's keywords vs Item-kNN; diff = keywords minus Item-kNN, "
    "Wilcoxon signed-rank over users, corrected p.",
    "controls": "Real features vs noise vs shuffled per multimodal model (bold = best per model); on control rows, "
    "diff = real reference minus this control, with its corrected Wilcoxon p.",
    "ablation": "Modality ablation: the model on the real set vs the same set with one modality replaced (zeros or "
    "noise); a modality is used when replacing it significantly hurts on warm or on cold items (the label's "
    "comparisons on both slices corrected together); label_warm / label_cold: the same on one slice. On synthetic "
    "data, expected = what the planted weights imply for a model that uses content.",
    "slices": "Test metrics per test slice: warm = warm items (items with training interactions) ranked for the "
    "user's warm test items; cold = only the cold items (no training interaction) ranked for the user's cold test "
    "items; all = the whole catalogue. Mean over seeds and sd; ID-only models (no feature set) are the floor on cold "
    "items; bold = best in the column. A slice without results has no column.",
    "truth_checks": "Checks against the synthetic catalogue's planted truth: each multimodal model on a real feature "
    "set must significantly beat each noise control made from it on cold items (corrected Wilcoxon); each checked "
    "modality-ablation label must match the planted weights.",
    "activity": "Real features vs each control per bucket of users' training interactions: diff = real minus control, "
    "rel_change = diff / control, d_z = Cohen's paired effect size with its bootstrap CI, corrected Wilcoxon p "
    "(each bucket its own family).",
}


def run_analysis(P, out_dir: Path | None = None) -> AnalysisResult:
    t0 = time.perf_counter()
    a = P.analysis
    run_dir = Path(P.run_dir)
    out = Path(out_dir) if out_dir else run_dir / "analysis"
    metrics = [parse_metric(m) for m in a.metrics]
    labels = [m.label for m in metrics]
    primary = labels[0]
    inp = load_inputs(run_dir)

    summary = tables.annotate(summary_means(inp.best, metrics), inp)
    for lab in labels:
        if lab not in summary or summary[lab].isna().all():
            inp.problems.append(f"analysis.metrics: {lab} not found in train/best.parquet (test split)")
    plan = plan_comparisons(inp, summary, primary)
    tests = run_tests(inp, plan, metrics, n_boot=a.bootstrap, seed=P.seed, correction=a.correction, alpha=a.alpha)
    intervals = cell_intervals(inp, metrics, n_boot=a.bootstrap, seed=P.seed)
    # Seeds: the content tests within each seed; a verdict that changes across seeds is unstable.
    content_plan = [c for c in plan if c.family == "content"]
    by_seed = run_tests(inp, content_plan, metrics[:1], n_boot=0, seed=P.seed, correction=a.correction,
                        alpha=a.alpha, per_user=inp.per_user, by="seed")
    stability = seed_stability(by_seed)
    if not tests.empty:
        tests = tests.merge(stability[["dataset", "comparison", "metric", "n_seeds", "seed_directions", "stable"]],
                            on=["dataset", "comparison", "metric"], how="left")
    # User activity: the content tests per bucket of training interactions.
    by_activity = pd.DataFrame()
    if content_plan:
        try:
            act = activity.user_activity(run_dir)
        except FileNotFoundError as exc:
            inp.problems.append(f"activity slices not computed: {exc}")
        else:
            bucketed = activity.with_buckets(seed_averaged(inp.per_user), act, a.activity_buckets, inp.problems)
            by_activity = run_tests(inp, content_plan, metrics[:1], n_boot=a.bootstrap, seed=P.seed,
                                    correction=a.correction, alpha=a.alpha, per_user=bucketed, by="bucket")
            if not by_activity.empty:
                order = {lab: i for i, lab in enumerate(activity.bucket_labels(a.activity_buckets))}
                by_activity = by_activity.sort_values(
                    ["dataset", "a_model", "b_fs", "bucket"], key=lambda c: c.map(order) if c.name == "bucket" else c
                ).reset_index(drop=True)
    # Test slices (warm / cold items / whole catalogue): summaries, the same comparisons on each
    # slice (each its own correction family), and the content decisions per seed on each slice.
    smetrics = slices.slice_metrics(metrics)
    slice_long = slices.slice_summary(inp, smetrics)
    by_slice = slices.slice_tests(inp, plan, metrics, tests, n_boot=a.bootstrap, seed=P.seed,
                                  correction=a.correction, alpha=a.alpha)
    stab_slice = slices.slice_stability(inp, content_plan, metrics[0], stability, seed=P.seed,
                                        correction=a.correction, alpha=a.alpha)
    by_slice = slices.with_stability(by_slice, stab_slice)
    slices_present = {ds: inp.slices(ds) for ds in sorted(set(summary["dataset"]))}
    for ds, present in slices_present.items():
        absent = [s for s in slices.TEST_SLICES if s not in present]
        if absent:
            log.info("analysis: %s has no %s slice results in train/best.parquet", ds, ", ".join(absent))
    missing = int(tests["missing_per_user"].sum()) if not tests.empty else 0
    if missing:
        inp.problems.append(f"{missing} comparison rows lack per-user results on one side (not tested)")

    weights = planted_weights(load_truth(run_dir), P.data.synthetic.model_dump() if P.data.synthetic else None)
    answer = compute_answer(tests, summary, primary, a.alpha)
    add_slice_verdicts(answer, by_slice, slices_present)
    # Modality ablation: one label per model and real set, from warm and cold items together;
    # the truth is checked for a model that uses content on either of them.
    verdicts = {(r["dataset"], r["model"]): [r["content_verdict"]] + [
        s["verdict"] for k, s in r.get("slices", {}).items() if k != "test" and k in ablation.LABEL_SLICES]
        for r in answer["records"] if "content_verdict" in r}
    label_tests = ablation.label_comparisons(by_slice, tests, inp.feature_meta, primary, a.correction, a.alpha)
    ablations = ablation.ablation_labels(label_tests, verdicts, weights if P.data.source == "synthetic" else None)
    write_csv(ablations, out / "ablation.csv")
    write_csv(label_tests, out / "ablation_tests.csv")
    add_ablation_sentences(answer, ablations)
    checks = (slices.truth_checks(by_slice, tests, ablations, inp, primary) if P.data.source == "synthetic"
              else pd.DataFrame(columns=slices.CHECK_COLUMNS))

    tbls = {
        "main": tables.main_table(summary, labels),
        "baselines": tables.baselines_table(summary, labels),
        "keywords": tables.keywords_table(summary, tests, labels, primary),
        "controls": tables.controls_table(summary, tests, labels, primary),
        "activity": tables.activity_table(by_activity),
        "ablation": ablations,
        "slices": tables.slices_table(slice_long, [m.label for m in smetrics]),
        "truth_checks": checks,
    }
    table_metrics = {"slices": slices.slice_columns([m.label for m in smetrics], inp.slices()), "truth_checks": []}
    written: dict[str, Any] = {"tables": {}, "figures": {}}
    for name, df in tbls.items():
        if df.empty:
            continue
        paths = tables.write_table(df, out / "tables", name, table_metrics.get(name, labels), TABLE_CAPTIONS[name])
        written["tables"][name] = {k: str(v.relative_to(out)) for k, v in paths.items()}
    write_csv(summary, out / "summary.csv")
    write_csv(tests, out / "tests.csv")
    write_csv(intervals, out / "intervals.csv")
    write_csv(by_seed, out / "tests_by_seed.csv")
    write_csv(stability, out / "stability.csv")
    write_csv(by_activity, out / "tests_by_activity.csv")
    write_csv(slice_long, out / "slices.csv")
    write_csv(by_slice, out / "tests_by_slice.csv")
    write_csv(stab_slice, out / "stability_by_slice.csv")
    write_csv(checks, out / "truth_checks.csv")

    write_json(out / "answer.json", answer)
    with atomic_open(out / "answer.md", "w", encoding="utf-8") as fh:
        fh.write(answer_markdown(answer))

    figs: dict[str, dict[str, Path]] = {}
    fig_dir = out / "figures"
    random_sets = {fs for fs, m in inp.feature_meta.items() if m.get("random_weights")}
    for ds in sorted(set(summary["dataset"])):
        for key, made in (
            (f"bars_{ds}", plots.grouped_bars(intervals, fig_dir, ds, labels, random_sets)),
            (f"content_use_{ds}", plots.content_use(tests, fig_dir, ds, primary) if not tests.empty else None),
            (f"ablation_{ds}", plots.ablation(label_tests, fig_dir, ds, primary) if not label_tests.empty else None),
            (f"activity_{ds}", plots.activity_buckets(by_activity, fig_dir, ds, primary) if not by_activity.empty else None),
            (f"cold_vs_warm_{ds}", plots.cold_vs_warm(slices.seed_values(inp, metrics[0]), slices.figure_panels(inp, ds),
                                                      fig_dir, ds, primary) if len(slices_present[ds]) > 1 else None),
            (
                f"planted_vs_measured_{ds}",
                plots.planted_vs_measured(weights, tests, inp, fig_dir, primary, ds)
                if weights and P.data.source == "synthetic" and not tests.empty
                else None,
            ),
        ):
            if made:
                figs[key] = made
    quality = plots.find_quality_table(load_lvlm_tables(run_dir, inp.problems))
    if quality is not None:
        made = plots.lvlm_quality(quality, summary, fig_dir, primary, inp.feature_meta)
        if made:
            figs["lvlm_quality_vs_accuracy"] = made
    made = plots.keyword_distributions(inp, fig_dir)
    if made:
        figs["keyword_distributions"] = made
    written["figures"] = {k: {f: str(p.relative_to(out)) for f, p in v.items()} for k, v in figs.items()}

    write_json(out / "problems.json", {"count": len(inp.problems), "problems": inp.problems})
    seconds = round(time.perf_counter() - t0, 2)
    written.update(
        primary_metric=primary, metrics=labels, alpha=a.alpha, correction=a.correction, bootstrap=a.bootstrap,
        n_tests=int(len(tests)), n_significant=int(tests["significant"].sum()) if not tests.empty else 0,
        n_problems=len(inp.problems),
        slices={ds: {s: s in present for s in slices.TEST_SLICES} for ds, present in slices_present.items()},
        truth_checks={"n": int(len(checks)), "passed": int(checks["passed"].astype(bool).sum())} if len(checks) else None,
    )
    write_json(out / "index.json", written)
    timings.record(run_dir, "analysis", "run_analysis", seconds=seconds)  # measured: not in index.json
    log.info("analysis: %d tests, %d figures, %d problems -> %s", len(tests), len(figs), len(inp.problems), out)
    timings.say(f"analysis: done in {seconds:.1f}s")
    return AnalysisResult(out, inp, summary, tests, intervals, tbls, answer, figs, seconds, table_metrics, by_slice,
                          checks)
