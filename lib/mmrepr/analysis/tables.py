"""The paper's tables: per dataset, model x feature set with the cut-off metrics, best marked.

Each table is a DataFrame (written as CSV) plus a styled HTML version in which the best
value of each metric column (per group) is bold. ``best <metric>`` columns in the CSV say
the same thing in data: ties are all marked.
"""

from __future__ import annotations

import hashlib

from pathlib import Path

import numpy as np
import pandas as pd

from mmrepr.analysis.load import CONTROL_KINDS, SLICE_SHORT, Inputs
from mmrepr.io import atomic_open, write_csv


def annotate(summary: pd.DataFrame, inp: Inputs) -> pd.DataFrame:
    df = summary.copy()
    df["family"] = np.where(df["model"].map(inp.is_multimodal), "multimodal", "baseline")
    df["label"] = df["model"].map(inp.label)
    # Roles in the keyword question: "keywords" (trained on attribute sets), "reference"
    # (a keyword model's reference on interactions), "" otherwise.
    refs = set(inp.keyword_references)
    df["role"] = [("keywords" if inp.is_keyword_model(m) else "reference" if m in refs and fs == "" else "")
                  for m, fs in zip(df["model"], df["feature_set"])]
    df["kind"] = df["feature_set"].map(inp.kind)
    df["random_weights"] = df["feature_set"].map(
        lambda fs: bool((inp.feature_meta.get(fs) or {}).get("random_weights", False))
    )
    df["source"] = df["feature_set"].map(lambda fs: (inp.feature_meta.get(fs) or {}).get("source", ""))
    return df


def mark_best(df: pd.DataFrame, metrics: list[str], by: list[str]) -> pd.DataFrame:
    df = df.copy()
    for m in metrics:
        best = df.groupby(by)[m].transform("max")
        df[f"best {m}"] = np.isclose(df[m], best, rtol=0, atol=1e-12) & df[m].notna()
    return df


_FRONT = ["dataset", "family", "model", "feature_set", "kind"]


def _order(df: pd.DataFrame, metrics: list[str], extra: list[str] = ()) -> pd.DataFrame:
    fam = {"baseline": 0, "multimodal": 1}
    kind = {"none": 0, "real": 1, **{k: 2 + i for i, k in enumerate(CONTROL_KINDS)}, "ablation": 2 + len(CONTROL_KINDS)}
    df = df.assign(_f=df["family"].map(fam), _k=df["kind"].map(kind).fillna(9))
    df = df.sort_values(["dataset", "_f", "model", "_k", "feature_set"]).drop(columns=["_f", "_k"])
    cols = [c for c in _FRONT if c in df] + list(extra) + [c for m in metrics for c in (m, f"{m} sd") if c in df]
    rest = [c for c in df.columns if c not in cols]
    return df[cols + rest].reset_index(drop=True)


def main_table(ann: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Every model and feature set per dataset; best per column over the whole dataset."""
    return _order(mark_best(ann, metrics, ["dataset"]), metrics)


def baselines_table(ann: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    sub = ann[ann["family"] == "baseline"]
    return _order(mark_best(sub, metrics, ["dataset"]), metrics)


def _attach_tests(df: pd.DataFrame, tests: pd.DataFrame, family: str, primary: str, side: str) -> pd.DataFrame:
    """Add the primary metric's Δ, CI, Holm-adjusted p and n of each row's comparison."""
    cols = ["diff", "ci_low", "ci_high", "p_wilcoxon_adj", "n", "significant"]
    if tests.empty:
        for c in cols:
            df[f"{c} ({primary})"] = np.nan
        df["compared with"] = ""
        return df
    t = tests[(tests["family"] == family) & (tests["metric"] == primary)]
    key_m, key_fs = (f"{side}_model", f"{side}_fs")
    other = "b" if side == "a" else "a"
    t = t.assign(**{"compared with": t[f"{other}_model"] + np.where(t[f"{other}_fs"] != "", "[" + t[f"{other}_fs"] + "]", "")})
    t = t[["dataset", key_m, key_fs, "compared with", *cols]].rename(
        columns={key_m: "model", key_fs: "feature_set", **{c: f"{c} ({primary})" for c in cols}}
    )
    return df.merge(t, on=["dataset", "model", "feature_set"], how="left")


def keywords_table(ann: pd.DataFrame, tests: pd.DataFrame, metrics: list[str], primary: str) -> pd.DataFrame:
    """The keyword models on each LVLM's keywords next to their references on interactions, with the test."""
    sub = ann[ann["role"].isin(["keywords", "reference"])]
    out = _attach_tests(mark_best(sub, metrics, ["dataset"]), tests, "keywords", primary, "a")
    return _order(out, metrics)


def controls_table(ann: pd.DataFrame, tests: pd.DataFrame, metrics: list[str], primary: str) -> pd.DataFrame:
    """Real features vs noise vs shuffled per multimodal model; best per model; tests on controls."""
    sub = ann[ann["family"] == "multimodal"]
    out = _attach_tests(mark_best(sub, metrics, ["dataset", "model"]), tests, "content", primary, "b")
    return _order(out, metrics)


def styled_html(df: pd.DataFrame, metrics: list[str], caption: str) -> str:
    """HTML table; the best value of each metric column is bold (from the ``best`` columns)."""
    shown = df.drop(columns=[c for c in df.columns if c.startswith("best ")])
    shown = shown.assign(feature_set=shown["feature_set"].replace("", "—")) if "feature_set" in shown else shown
    best = {m: df[f"best {m}"].to_numpy() for m in metrics if f"best {m}" in df}

    def bold(col: pd.Series) -> list[str]:
        mask = best.get(col.name)
        if mask is None:
            return [""] * len(col)
        return ["font-weight:bold;background-color:#e8f4e8" if b else "" for b in mask]

    floats = [c for c in shown.columns if pd.api.types.is_float_dtype(shown[c])]
    fmt = {c: ("{:.3g}" if c.startswith("p_") else "{:.4f}") for c in floats}
    styler = (
        # a fixed uuid (pandas draws a random one) so the HTML is identical between runs
        shown.style.set_uuid(hashlib.sha256(caption.encode()).hexdigest()[:8]).apply(bold, subset=[m for m in metrics if m in shown])
        .format(fmt, na_rep="")
        .hide(axis="index")
        .set_caption(caption)
        .set_table_attributes('class="mmtable"')
    )
    return styler.to_html()


def write_table(df: pd.DataFrame, out_dir: Path, name: str, metrics: list[str], caption: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    csv, html = out_dir / f"{name}.csv", out_dir / f"{name}.html"
    write_csv(df, csv)
    with atomic_open(html, "w", encoding="utf-8") as fh:
        fh.write(styled_html(df, metrics, caption))
    return {"csv": csv, "html": html}


def activity_table(by_activity: pd.DataFrame) -> pd.DataFrame:
    """The content tests per user-activity bucket, one row per model, real/control pair and bucket."""
    if by_activity.empty:
        return pd.DataFrame()
    cols = {"dataset": "dataset", "a_model": "model", "a_fs": "real", "b_fs": "control", "bucket": "users' train interactions",
            "n": "n users", "mean_a": "real mean", "mean_b": "control mean", "diff": "diff", "rel_change": "rel_change",
            "dz": "d_z", "dz_ci_low": "d_z CI low", "dz_ci_high": "d_z CI high", "p_wilcoxon_adj": "p_wilcoxon_adj",
            "significant": "significant"}
    t = by_activity[[c for c in cols if c in by_activity]].rename(columns=cols)
    return t.reset_index(drop=True)


def real_vs_controls(best: pd.DataFrame, pairs: dict[str, list[str]], metric: str = "Recall", k: int = 20) -> pd.DataFrame:
    """Per multimodal model and real feature set: the test ``metric@k`` on the real set, on each
    control made from it (``pairs``: real -> controls) and the difference control - real
    (mean over seeds; stage 4's ``best`` rows, before any significance test)."""
    d = best[(best["split"] == "test") & (best["metric"] == metric) & (best["k"] == k)]
    means = d.groupby(["model", "feature_set"])["value"].mean()
    rows = []
    for real, controls in pairs.items():
        for model in sorted({m for m, fs in means.index if fs == real}):
            for ctl in controls:
                if (model, ctl) in means.index:
                    r, c = float(means[(model, real)]), float(means[(model, ctl)])
                    rows.append({"metric": f"{metric}@{k}", "model": model, "real": real, "control": ctl,
                                 "on real": r, "on control": c, "control - real": c - r})
    return pd.DataFrame(rows, columns=["metric", "model", "real", "control", "on real", "on control",
                                       "control - real"])


def slices_table(long: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Every model and feature set with each metric on each test slice (``<metric> warm``,
    ``<metric> cold``, ``<metric> all``: mean over seeds, and its ``sd``); best per column over
    the dataset. ``long`` is the annotated per-slice summary (a ``split`` column); a slice
    without results has no columns, a dataset without it NaN."""
    if long.empty:
        return pd.DataFrame()
    splits = [s for s in SLICE_SHORT if s in set(long["split"])]
    keys = ["dataset", "model", "feature_set"]
    ann = [c for c in ("family", "label", "role", "kind", "random_weights", "source") if c in long]
    wide = long.drop_duplicates(keys)[keys + ann].set_index(keys)
    cols = []
    for m in metrics:
        for s in splits:
            sub = long[long["split"] == s].set_index(keys)
            name = f"{m} {SLICE_SHORT[s]}"
            wide[name] = sub[m] if m in sub else np.nan
            wide[f"{name} sd"] = sub[f"{m} sd"] if f"{m} sd" in sub else np.nan
            cols.append(name)
    wide["n_seeds"] = long.groupby(keys)["n_seeds"].max()
    wide = wide.reset_index()
    return _order(mark_best(wide, cols, ["dataset"]), cols)
