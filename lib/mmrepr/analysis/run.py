"""Stage 5 in one call: ``run_analysis(P)`` reads stage 4's results and writes
``runs/<profile>/analysis/``: tables (CSV + HTML), ``tests.csv`` (every paired test),
``intervals.csv`` (per-cell bootstrap CIs), ``answer.json``/``answer.md`` (the computed
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

from mmrepr.analysis import plots, tables
from mmrepr.analysis.answer import answer_markdown, compute_answer
from mmrepr.analysis.load import Inputs, load_inputs, load_lvlm_tables, load_truth, parse_metric, planted_weights
from mmrepr.analysis.stats import cell_intervals, plan_comparisons, run_tests, summary_means
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


TABLE_CAPTIONS = {
    "main": "Test metrics per dataset, model and feature set (mean over seeds); bold = best in the column.",
    "baselines": "Baselines (no multimodal features; Attribute Item-kNN on keyword sets); bold = best in the column.",
    "keywords": "Attribute Item-kNN on each LVLM's keywords vs Item-kNN; diff = keywords minus Item-kNN, "
    "Wilcoxon signed-rank over users, corrected p.",
    "controls": "Real features vs noise vs shuffled per multimodal model (bold = best per model); on control rows, "
    "diff = real reference minus this control, with its corrected Wilcoxon p.",
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
    missing = int(tests["missing_per_user"].sum()) if not tests.empty else 0
    if missing:
        inp.problems.append(f"{missing} comparison rows lack per-user results on one side (not tested)")

    tbls = {
        "main": tables.main_table(summary, labels),
        "baselines": tables.baselines_table(summary, labels),
        "keywords": tables.keywords_table(summary, tests, labels, primary),
        "controls": tables.controls_table(summary, tests, labels, primary),
    }
    written: dict[str, Any] = {"tables": {}, "figures": {}}
    for name, df in tbls.items():
        if df.empty:
            continue
        paths = tables.write_table(df, out / "tables", name, labels, TABLE_CAPTIONS[name])
        written["tables"][name] = {k: str(v.relative_to(out)) for k, v in paths.items()}
    write_csv(summary, out / "summary.csv")
    write_csv(tests, out / "tests.csv")
    write_csv(intervals, out / "intervals.csv")

    answer = compute_answer(tests, summary, primary, a.alpha)
    write_json(out / "answer.json", answer)
    with atomic_open(out / "answer.md", "w", encoding="utf-8") as fh:
        fh.write(answer_markdown(answer))

    figs: dict[str, dict[str, Path]] = {}
    fig_dir = out / "figures"
    weights = planted_weights(load_truth(run_dir), P.data.synthetic.model_dump() if P.data.synthetic else None)
    random_sets = {fs for fs, m in inp.feature_meta.items() if m.get("random_weights")}
    for ds in sorted(set(summary["dataset"])):
        for key, made in (
            (f"bars_{ds}", plots.grouped_bars(intervals, fig_dir, ds, labels, random_sets)),
            (f"content_use_{ds}", plots.content_use(tests, fig_dir, ds, primary) if not tests.empty else None),
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
        n_problems=len(inp.problems), seconds=seconds,
    )
    write_json(out / "index.json", written)
    log.info("analysis: %d tests, %d figures, %d problems in %.1fs -> %s", len(tests), len(figs), len(inp.problems),
             seconds, out)
    return AnalysisResult(out, inp, summary, tests, intervals, tbls, answer, figs, seconds)
