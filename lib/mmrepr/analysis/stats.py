"""Paired significance tests over users, effect sizes, bootstrap intervals, Holm.

A comparison pairs two cells (model, feature set) of one dataset by user id (inner join);
users present in only one of them are counted, not tested. Per-user values are averaged
over seeds first. The decision uses the Wilcoxon signed-rank test; the paired t-test is
reported beside it. p-values are corrected per (dataset, metric) over every comparison
the tables make (Holm by default, ``analysis.correction``), except the modality-ablation
comparisons: each model's label on one real set (``family == "ablation"``) is its own
question, corrected over its own comparisons (:func:`correction_family`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from mmrepr.progress import tqdm

from mmrepr.analysis.load import CONTROL_KINDS, Inputs, MetricSpec


@dataclass(frozen=True)
class Comparison:
    dataset: str
    family: str  # content | representation | keywords | baseline
    a_model: str
    a_fs: str
    b_model: str
    b_fs: str

    @property
    def label(self) -> str:
        a = f"{self.a_model}[{self.a_fs}]" if self.a_fs else self.a_model
        b = f"{self.b_model}[{self.b_fs}]" if self.b_fs else self.b_model
        return f"{a} vs {b}"


def bootstrap_ci(x: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``x`` (seeded); NaNs when it cannot be computed."""
    x = np.asarray(x, dtype=float)
    if n_boot <= 0 or x.size < 2:
        return (float("nan"), float("nan"))
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    res = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        batch=max(1, min(n_boot, 20_000_000 // max(x.size, 1))),  # bounds memory on big user sets
        rng=np.random.default_rng(seed),
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def _dz(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cohen's d_z of paired differences: mean / sd (ddof 1) along ``axis``."""
    sd = x.std(axis=axis, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, x.mean(axis=axis) / sd, np.nan)


def dz_ci(d: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of Cohen's d_z over users (seeded); NaNs when undefined
    (fewer than 3 users, or no spread in the differences)."""
    d = np.asarray(d, dtype=float)
    if n_boot <= 0 or d.size < 3 or np.all(d == d[0]):
        return (float("nan"), float("nan"))
    res = stats.bootstrap(
        (d,),
        _dz,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        batch=max(1, min(n_boot, 20_000_000 // max(d.size, 1))),
        rng=np.random.default_rng(seed),
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def paired_test(a: pd.Series, b: pd.Series, n_boot: int = 1000, seed: int = 0) -> dict:
    """Compare two per-user series indexed by user id (a minus b).

    Effect sizes beside the p-values: ``dz`` (Cohen's d_z, mean difference over its sd) with
    a bootstrap interval (``dz_ci_low``/``dz_ci_high``), the matched-pairs rank-biserial, and
    ``rel_change`` = (mean a - mean b) / mean b (NaN when mean b is 0)."""
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    out: dict = {
        "n": int(len(joined)),
        "n_only_a": int(len(a.index.difference(b.index))),
        "n_only_b": int(len(b.index.difference(a.index))),
    }
    d = (joined["a"] - joined["b"]).to_numpy(dtype=float)
    out["mean_a"] = float(joined["a"].mean()) if len(joined) else float("nan")
    out["mean_b"] = float(joined["b"].mean()) if len(joined) else float("nan")
    out["diff"] = float(d.mean()) if d.size else float("nan")
    out["rel_change"] = out["diff"] / out["mean_b"] if d.size and out["mean_b"] != 0 else float("nan")
    nonzero = d[d != 0]
    out["n_nonzero"] = int(nonzero.size)
    nan = float("nan")
    out.update(p_wilcoxon=nan, wilcoxon_stat=nan, p_ttest=nan, t_stat=nan, dz=nan, rank_biserial=nan)
    if d.size >= 2:
        if nonzero.size == 0:
            # Identical on every user: no evidence of a difference at all.
            out.update(p_wilcoxon=1.0, p_ttest=1.0, dz=0.0, rank_biserial=0.0, wilcoxon_stat=0.0, t_stat=0.0)
        else:
            w = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
            out["wilcoxon_stat"], out["p_wilcoxon"] = float(w.statistic), float(w.pvalue)
            sd = d.std(ddof=1)
            if sd > 0:
                t = stats.ttest_rel(joined["a"], joined["b"])
                out["t_stat"], out["p_ttest"] = float(t.statistic), float(t.pvalue)
                out["dz"] = float(d.mean() / sd)
            else:  # a constant non-zero shift: t is infinite
                out.update(t_stat=float(np.sign(d.mean()) * np.inf), p_ttest=0.0, dz=float(np.sign(d.mean()) * np.inf))
            # Matched-pairs rank-biserial: (sum of positive ranks - negative ranks) / total.
            ranks = stats.rankdata(np.abs(nonzero))
            total = ranks.sum()
            out["rank_biserial"] = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / total)
    out["ci_low"], out["ci_high"] = bootstrap_ci(d, n_boot, seed)
    out["dz_ci_low"], out["dz_ci_high"] = dz_ci(d, n_boot, seed + 1)
    return out


def seed_averaged(per_user: pd.DataFrame) -> pd.DataFrame:
    """One value per user and cell (and any extra column such as a slice): the mean over seeds."""
    keys = [c for c in per_user.columns if c not in ("seed", "value")]
    return per_user.groupby(keys, as_index=False, sort=False)["value"].mean()


def summary_means(best: pd.DataFrame, metrics: list[MetricSpec]) -> pd.DataFrame:
    """Test metric per dataset/model/feature_set (mean over seeds), wide by metric label."""
    rows = []
    for m in metrics:
        sel = best[(best["metric"] == m.metric) & (best["k"] == m.k)]
        g = sel.groupby(["dataset", "model", "feature_set"])["value"]
        rows.append(g.mean().rename(m.label))
        rows.append(g.std(ddof=1).rename(f"{m.label} sd"))
    wide = pd.concat(rows, axis=1).reset_index()
    seeds = best.groupby(["dataset", "model", "feature_set"])["seed"].nunique().rename("n_seeds").reset_index()
    return wide.merge(seeds, on=["dataset", "model", "feature_set"], how="left")


def plan_comparisons(inp: Inputs, summary: pd.DataFrame, primary: str) -> list[Comparison]:
    """Every comparison the tables make.

    * content: each multimodal model on a control (noise/shuffled) vs on its reference
      feature set (or every real set when the reference was not trained);
    * ablation: each multimodal model on a real set vs on that set with one modality replaced;
    * representation: each multimodal model's best real set (primary metric) vs its other real sets;
    * keywords: each keyword model (needs attributes) on each attribute set vs its most
      preferred trained reference on interactions (``Inputs.keyword_references``);
    * baseline: each multimodal model's best real set vs the best pure baseline.
    """
    plan: list[Comparison] = []
    for dataset, sub in summary.groupby("dataset", sort=True):
        cells = set(zip(sub["model"], sub["feature_set"]))
        score = dict(zip(zip(sub["model"], sub["feature_set"]), sub[primary].astype(float)))
        best_real: dict[str, str] = {}
        for model in sorted(set(sub["model"])):
            if not inp.is_multimodal(model):
                continue
            sets = sorted(fs for (m, fs) in cells if m == model)
            real = [fs for fs in sets if inp.kind(fs) == "real"]
            controls = [fs for fs in sets if inp.kind(fs) in CONTROL_KINDS]
            for c in controls:
                ref = inp.reference(c)
                refs = [ref] if ref in real else real
                for r in refs:
                    plan.append(Comparison(str(dataset), "content", model, r, model, c))
            # Modality ablations: the real set against the same set with one modality replaced.
            for c in (fs for fs in sets if inp.kind(fs) == "ablation"):
                if inp.reference(c) in real:
                    plan.append(Comparison(str(dataset), "ablation", model, inp.reference(c), model, c))
            if real:
                top = max(real, key=lambda fs: (np.nan_to_num(score[(model, fs)], nan=-np.inf), fs))
                best_real[model] = top
                for other in real:
                    if other != top:
                        plan.append(Comparison(str(dataset), "representation", model, top, model, other))
        # Keywords vs interactions: a keyword model against the preferred reference that was
        # trained (the models' declarations order them: the same scorer first).
        knn_ref = next((m for m in inp.keyword_references if (m, "") in cells), None)
        if knn_ref is not None:
            for m, fs in sorted(cells):
                if inp.is_keyword_model(m) and fs:
                    plan.append(Comparison(str(dataset), "keywords", m, fs, knn_ref, ""))
        pure = [(m, fs) for (m, fs) in cells if fs == "" and not inp.is_multimodal(m)]
        if pure:
            top_b = max(pure, key=lambda c: (np.nan_to_num(score[c], nan=-np.inf), c[0]))
            for model, fs in sorted(best_real.items()):
                plan.append(Comparison(str(dataset), "baseline", model, fs, top_b[0], ""))
    return plan


def correction_family(df: pd.DataFrame) -> pd.Series:
    """The correction family within a (dataset, metric): ``report`` for the comparisons the
    tables and verdicts make together, ``ablation:<model>:<real set>`` for one ablation label's
    comparisons. A label (which modalities does this model use?) then does not change with
    whatever else a run compares on the dataset: on the demo, adding the r50 and LVLM sets
    and four models' other comparisons (41 in the family) moved LATTICE's four ablation
    p-values from 0.021-0.042 (its own family) to 0.093-0.59, and its label from "uses both"
    to "uses neither" (docs/protocol.md, "Modality ablation")."""
    abl = df["family"].eq("ablation")
    return pd.Series(np.where(abl, "ablation:" + df["a_model"].astype(str) + ":" + df["a_fs"].astype(str), "report"),
                     index=df.index)


def run_tests(
    inp: Inputs,
    plan: list[Comparison],
    metrics: list[MetricSpec],
    n_boot: int,
    seed: int,
    correction: str = "holm",
    alpha: float = 0.05,
    per_user: pd.DataFrame | None = None,
    by: str | None = None,
) -> pd.DataFrame:
    """One row per comparison and metric (and level of ``by``); adjusted p-values and the decision.

    ``per_user`` is the frame to test (default: ``inp.per_user`` averaged over seeds). With
    ``by`` (a column of it: ``seed``, an activity bucket, a slice), each comparison is tested
    within every level, and each level is its own family for the correction, like a dataset.
    """
    avg = seed_averaged(inp.per_user) if per_user is None else per_user
    keys = ["dataset", "model", "feature_set", "metric", "k"] + ([by] if by else [])
    series = {key: grp.set_index("user")["value"] for key, grp in avg.groupby(keys, sort=False)}
    levels = sorted(avg[by].dropna().unique().tolist()) if by else [None]
    rows = []
    empty = pd.Series(dtype=float)
    n_total = len(plan) * len(levels)
    for i, (cmp, level) in enumerate(tqdm([(c, lv) for c in plan for lv in levels], desc="paired tests",
                                          disable=n_total < 20)):
        extra = (level,) if by else ()
        for j, m in enumerate(metrics):
            a = series.get((cmp.dataset, cmp.a_model, cmp.a_fs, m.metric, m.k, *extra), empty)
            b = series.get((cmp.dataset, cmp.b_model, cmp.b_fs, m.metric, m.k, *extra), empty)
            if by and a.empty and b.empty:
                continue  # neither side has users at this level
            res = paired_test(a, b, n_boot=n_boot, seed=seed + 1000 * i + j)
            res["missing_per_user"] = bool(a.empty or b.empty)
            row = {**asdict(cmp), "comparison": cmp.label, "metric": m.label}
            if by:
                row[by] = level
            rows.append({**row, **res})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["correction_family"] = correction_family(df)
    family = ["dataset", "metric", "correction_family"] + ([by] if by else [])
    for col in ("p_wilcoxon", "p_ttest"):
        df[f"{col}_adj"] = np.nan
        for _, idx in df.groupby(family).groups.items():
            p = df.loc[idx, col]
            ok = p.notna()
            if not ok.any():
                continue
            if correction == "none":
                adj = p[ok].to_numpy()
            else:
                adj = multipletests(p[ok].to_numpy(), alpha=alpha, method=correction)[1]
            df.loc[p[ok].index, f"{col}_adj"] = adj
    df["significant"] = (df["p_wilcoxon_adj"] < alpha).fillna(False).astype(bool)
    df["direction"] = np.where(
        ~df["significant"], "no significant difference", np.where(df["diff"] > 0, "a better", "b better")
    )
    df["correction"] = correction
    return df


def seed_stability(by_seed: pd.DataFrame) -> pd.DataFrame:
    """Per comparison and metric, from tests run within each seed (``run_tests(..., by="seed")``):
    the decision in every seed and whether they agree. A verdict that changes from one seed
    to another is ``stable == False``; with one seed, ``stable`` is NaN (not assessable)."""
    cols = ["dataset", "family", "a_model", "a_fs", "b_model", "b_fs", "comparison", "metric", "n_seeds",
            "seed_directions", "stable"]
    if by_seed.empty or "seed" not in by_seed:
        return pd.DataFrame(columns=cols)
    short = {"a better": "+", "b better": "-", "no significant difference": "0"}
    rows = []
    keys = ["dataset", "family", "a_model", "a_fs", "b_model", "b_fs", "comparison", "metric"]
    for key, g in by_seed.sort_values("seed").groupby(keys, sort=True):
        dirs = [short[d] for d in g["direction"]]
        rows.append({**dict(zip(keys, key)), "n_seeds": len(g),
                     "seed_directions": " ".join(f"{int(s)}:{d}" for s, d in zip(g["seed"], dirs)),
                     "stable": (len(set(dirs)) == 1) if len(g) > 1 else np.nan})
    return pd.DataFrame(rows, columns=cols)


def cell_intervals(inp: Inputs, metrics: list[MetricSpec], n_boot: int, seed: int) -> pd.DataFrame:
    """Mean per-user metric and its bootstrap CI for every cell (for bars and tables)."""
    avg = seed_averaged(inp.per_user)
    labels = {(m.metric, m.k): m.label for m in metrics}
    rows = []
    groups = list(avg.groupby(["dataset", "model", "feature_set", "metric", "k"], sort=True))
    for i, ((ds, model, fs, metric, k), g) in enumerate(tqdm(groups, desc="bootstrap", disable=len(groups) < 50)):
        if (metric, k) not in labels:
            continue
        x = g["value"].to_numpy(dtype=float)
        lo, hi = bootstrap_ci(x, n_boot, seed + i)
        rows.append(
            dict(dataset=ds, model=model, feature_set=fs, metric=labels[(metric, k)], n_users=len(x),
                 mean=float(x.mean()), ci_low=lo, ci_high=hi)
        )
    return pd.DataFrame(rows, columns=["dataset", "model", "feature_set", "metric", "n_users", "mean", "ci_low", "ci_high"])
