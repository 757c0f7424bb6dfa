"""Test slices: warm items, cold items, the whole catalogue (docs/protocol.md, "Cold items").

Stage 4 evaluates every selected cell on the slices of :data:`mmrepr.training.results.TEST_SLICES`
(the ``split`` column of ``best.parquet``; per-user files named by ``per_user_filename(...,
split)``): ``test`` ranks the warm items, ``test_cold`` only the cold items (no training
interaction: content is all a model can know about them), ``test_all`` the whole catalogue.
A slice stage 4 did not write (no cold test items, or an older run) is *absent*: it is said so
in the tables, the answer and ``index.json``, never an error.

Here: the per-slice summaries (mean and sd over seeds), the comparisons of the study repeated
on each slice (each slice its own correction family, like a dataset), the decision per seed on
each slice, and the checks against the synthetic catalogue's planted truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmrepr.analysis import tables
from mmrepr.analysis.answer import format_p
from mmrepr.analysis.load import CONTROL_KINDS, SLICE_SHORT, Inputs, MetricSpec
from mmrepr.analysis.stats import Comparison, run_tests, seed_averaged, seed_stability, summary_means
from mmrepr.training.results import TEST_SLICES

NOISE_KINDS = ("noise_gaussian", "noise_mvn")
CHECK_COLUMNS = ["check", "dataset", "model", "feature_set", "control", "passed", "detail"]
CHECK_COLD = "beats its noise control on cold items"
CHECK_ABLATION = "ablation label matches the planted weights"


def slice_metrics(metrics: list[MetricSpec]) -> list[MetricSpec]:
    """The profile's Recall and nDCG cut-offs (the issue's slice metrics); all of them when it has neither."""
    keep = [m for m in metrics if m.metric in ("Recall", "nDCG")]
    return keep or list(metrics)


def slice_summary(inp: Inputs, metrics: list[MetricSpec]) -> pd.DataFrame:
    """Long table: one row per slice, dataset, model and feature set; each metric's mean and sd
    over seeds (``summary_means`` on that slice's rows), annotated like the main summary."""
    frames = []
    for split in inp.slices():
        rows = inp.slice_best[inp.slice_best["split"] == split]
        frames.append(summary_means(rows, metrics).assign(split=split))
    if not frames:
        return pd.DataFrame()
    return tables.annotate(pd.concat(frames, ignore_index=True), inp)


def slice_columns(metrics: list[str], splits: list[str]) -> list[str]:
    """``Recall@20 warm``, ``Recall@20 cold``, ... : metric first, then slice (the table's order)."""
    return [f"{m} {SLICE_SHORT[s]}" for m in metrics for s in splits]


def slice_tests(inp: Inputs, plan: list[Comparison], metrics: list[MetricSpec], tests: pd.DataFrame,
                n_boot: int, seed: int, correction: str = "holm", alpha: float = 0.05) -> pd.DataFrame:
    """The comparisons of ``plan`` on every slice, a ``split`` column after ``metric``.

    Each slice is tested like the warm test set (``run_tests`` with the same seeds, so its
    families are (dataset, metric) within the slice); the warm rows are ``tests`` itself
    (without the seed-stability columns), so they are exactly those of ``tests.csv``."""
    frames = []
    avg = seed_averaged(inp.slice_per_user) if len(inp.slice_per_user) else inp.slice_per_user
    for split in inp.slices():
        if split == "test":
            t = tests.drop(columns=["n_seeds", "seed_directions", "stable"], errors="ignore")
        else:
            pu = avg[avg["split"] == split].drop(columns="split")
            t = run_tests(inp, plan, metrics, n_boot=n_boot, seed=seed, correction=correction, alpha=alpha,
                          per_user=pu)
        if t.empty:
            continue
        t = t.copy()
        t.insert(t.columns.get_loc("metric") + 1, "split", split)
        frames.append(t)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def slice_stability(inp: Inputs, content_plan: list[Comparison], metric: MetricSpec, stability: pd.DataFrame,
                    seed: int, correction: str = "holm", alpha: float = 0.05) -> pd.DataFrame:
    """``seed_stability`` per slice (``split`` column first): the content tests within each seed
    of each slice; the warm rows are ``stability`` (already computed for tests.csv)."""
    frames = []
    for split in inp.slices():
        if split == "test":
            st = stability
        else:
            pu = inp.slice_per_user[inp.slice_per_user["split"] == split].drop(columns="split")
            by_seed = run_tests(inp, content_plan, [metric], n_boot=0, seed=seed, correction=correction, alpha=alpha,
                                per_user=pu, by="seed")
            st = seed_stability(by_seed)
        frames.append(st.assign(split=split))
    if not frames:
        return pd.DataFrame(columns=["split"] + list(stability.columns))
    out = pd.concat(frames, ignore_index=True)
    return out[["split"] + [c for c in out.columns if c != "split"]]


def with_stability(by_slice: pd.DataFrame, stability: pd.DataFrame) -> pd.DataFrame:
    """``by_slice`` with each content comparison's per-seed decisions on its slice."""
    if by_slice.empty:
        return by_slice
    cols = ["split", "dataset", "comparison", "metric", "n_seeds", "seed_directions", "stable"]
    return by_slice.merge(stability[cols], on=["split", "dataset", "comparison", "metric"], how="left")


def seed_values(inp: Inputs, metric: MetricSpec) -> pd.DataFrame:
    """One value per slice, dataset, model, feature set and seed (best.parquet's test rows)."""
    sb = inp.slice_best
    d = sb[(sb["metric"] == metric.metric) & (sb["k"].astype(int) == metric.k)]
    return d[["split", "dataset", "model", "feature_set", "seed", "value"]].reset_index(drop=True)


def figure_panels(inp: Inputs, dataset: str) -> dict[str, list[str]]:
    """The cold-vs-warm figure's panels (``"model|feature_set"`` cells): per multimodal model its
    real sets that have controls and those controls (all its real sets when it has none), then
    the ID-only models (no feature set) as the floor."""
    sb = inp.slice_best[inp.slice_best["dataset"] == dataset]
    cells = sorted(set(zip(sb["model"], sb["feature_set"])))
    panels: dict[str, list[str]] = {}
    for model in sorted({m for m, _ in cells if inp.is_multimodal(m)}):
        sets = [fs for m, fs in cells if m == model]
        controls = [fs for fs in sets if inp.kind(fs) in CONTROL_KINDS]
        refs = {inp.reference(c) for c in controls}
        real = [fs for fs in sets if inp.kind(fs) == "real" and (fs in refs or not controls)]
        panels[model] = [f"{model}|{fs}" for fs in real + controls]
    floor = [f"{m}|" for m, fs in cells if fs == "" and not inp.is_multimodal(m)]
    if floor:
        panels["ID-only (floor)"] = floor
    return panels


def truth_checks(by_slice: pd.DataFrame, tests: pd.DataFrame, ablations: pd.DataFrame, inp: Inputs,
                 primary: str) -> pd.DataFrame:
    """Checks against the synthetic catalogue's planted truth, one row each (:data:`CHECK_COLUMNS`).

    * ``beats its noise control on cold items``: per multimodal model, real feature set and
      noise control made from it (noise_gaussian, noise_mvn): passed when real is significantly
      better on ``test_cold`` (corrected Wilcoxon, real ahead) on the primary metric. On cold
      items content is the model's only signal, so a model that uses the planted signal must
      pass. Without a cold slice the check fails and says why (it could not be confirmed).
    * ``ablation label matches the planted weights``: each checked row of ``ablation.csv``.
    """
    rows = []
    warm = tests[(tests["family"] == "content") & (tests["metric"] == primary)] if not tests.empty else tests
    if not warm.empty:
        noise = warm[warm["b_fs"].map(inp.kind).isin(NOISE_KINDS)]
        cold = (by_slice[(by_slice["split"] == "test_cold") & (by_slice["family"] == "content")
                         & (by_slice["metric"] == primary)] if not by_slice.empty else pd.DataFrame())
        for r in noise.sort_values(["dataset", "a_model", "a_fs", "b_fs"]).itertuples():
            row = dict(check=CHECK_COLD, dataset=r.dataset, model=r.a_model, feature_set=r.a_fs, control=r.b_fs)
            hit = cold[(cold["dataset"] == r.dataset) & (cold["comparison"] == r.comparison)] if len(cold) else cold
            if hit.empty:
                why = ("no test_cold results for this comparison" if "test_cold" in inp.slices(r.dataset) else
                       "no cold-item slice in train/best.parquet (no cold test items, or stage 4 wrote none)")
                rows.append({**row, "passed": False, "detail": f"not computed: {why}"})
                continue
            c = hit.iloc[0]
            ok = bool(c["significant"]) and float(c["diff"]) > 0
            if int(c["n"]) < 2 or not np.isfinite(float(c["p_wilcoxon"])):
                detail = f"could not be tested on cold items (n = {int(c['n'])} paired users)"
            else:
                detail = (f"{primary} on cold items: real {c['mean_a']:.4f} vs control {c['mean_b']:.4f}, "
                          f"diff {c['diff']:+.4f}, d_z {c['dz']:+.2f}, corrected Wilcoxon p {format_p(c['p_wilcoxon_adj'])}, "
                          f"n = {int(c['n'])} users")
            rows.append({**row, "passed": ok, "detail": detail})
    if not ablations.empty:
        for r in ablations.itertuples():
            if not isinstance(r.matches_truth, (bool, np.bool_)):
                continue
            rows.append(dict(check=CHECK_ABLATION, dataset=r.dataset, model=r.model, feature_set=r.reference,
                             control="", passed=bool(r.matches_truth),
                             detail=f"label '{r.label}', planted weights imply '{r.expected}' ({r.evidence})"))
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


__all__ = ["SLICE_SHORT", "TEST_SLICES", "slice_metrics", "slice_summary", "slice_columns", "slice_tests",
           "slice_stability", "with_stability", "seed_values", "figure_panels", "truth_checks"]
