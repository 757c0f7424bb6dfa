"""Figures (seaborn), each saved as PNG and SVG under ``runs/<profile>/analysis/figures/``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)  # headless by default; notebooks display the saved PNGs
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from mmrepr.analysis.load import Inputs  # noqa: E402
from mmrepr.io import atomic_path  # noqa: E402


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def save_figure(fig: plt.Figure, out_dir: Path, name: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {}
    for fmt in ("png", "svg"):
        path = out_dir / f"{_safe(name)}.{fmt}"
        with atomic_path(path) as tmp, plt.rc_context({"svg.hashsalt": f"mmrepr-{_safe(name)}"}):
            # fixed SVG ids (hashsalt) and no date/software stamps: reruns give identical bytes
            meta = {"Date": None} if fmt == "svg" else {"Software": None}
            fig.savefig(tmp, format=fmt, dpi=100, metadata=meta)
        paths[fmt] = path
    plt.close(fig)
    return paths


def stars(p: float) -> str:
    if p is None or np.isnan(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "n.s."


def grouped_bars(intervals: pd.DataFrame, out_dir: Path, dataset: str, metrics: list[str],
                 random_sets: set[str] | frozenset[str] = frozenset()) -> dict[str, Path] | None:
    """Mean test metric per model (x) and feature set (hue), 95% bootstrap CI whiskers.

    Feature sets from random-weight (offline) extractors are labelled so in the legend.
    """
    d = intervals[(intervals["dataset"] == dataset) & intervals["metric"].isin(metrics)].copy()
    if d.empty:
        return None
    d["feature_set"] = d["feature_set"].map(
        lambda fs: "(none)" if not fs else f"{fs} (random weights)" if fs in random_sets else fs
    )
    models = list(dict.fromkeys(d.sort_values(["feature_set", "model"])["model"]))
    hues = sorted(d["feature_set"].unique(), key=lambda s: (s != "(none)", s))
    palette = dict(zip(hues, sns.color_palette("tab20", len(hues))))
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(max(7, 0.9 * len(models) + 3), 3.2 * len(metrics)), squeeze=False,
        layout="constrained",
    )
    width = 0.8
    for ax, metric in zip(axes[:, 0], metrics):
        dm = d[d["metric"] == metric]
        for mi, model in enumerate(models):
            cells = dm[dm["model"] == model].set_index("feature_set")
            present = [h for h in hues if h in cells.index]
            if not present:
                continue
            w = width / len(present)
            for hi, h in enumerate(present):
                r = cells.loc[h]
                x = mi - width / 2 + w * (hi + 0.5)
                ax.bar(x, r["mean"], width=w * 0.95, color=palette[h], label=h)
                if np.isfinite(r["ci_low"]):
                    ax.errorbar(x, r["mean"], yerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]],
                                fmt="none", ecolor="black", capsize=2, lw=0.8)
        ax.set_xticks(range(len(models)), models, rotation=20)
        ax.set_ylabel(metric)
        ax.set_title(f"{dataset}: test {metric} (mean over users, 95% bootstrap CI)", fontsize=10)
    handles = {h.get_label(): h for ax in axes[:, 0] for h in ax.get_legend_handles_labels()[0]}
    axes[0, 0].legend(handles.values(), handles.keys(), fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left",
                      title="feature set")
    sns.despine(fig)
    return save_figure(fig, out_dir, f"bars_{dataset}")


def content_use(tests: pd.DataFrame, out_dir: Path, dataset: str, metric: str) -> dict[str, Path] | None:
    """Real minus control per model, bootstrap CI, corrected-significance stars."""
    t = tests[(tests["dataset"] == dataset) & (tests["metric"] == metric) & (tests["family"] == "content")]
    if t.empty:
        return None
    t = t.sort_values(["a_model", "b_fs"]).reset_index(drop=True)
    labels = [f"{r.a_model}: {r.a_fs} − {r.b_fs}" for r in t.itertuples()]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(t) + 1.5), layout="constrained")
    colors = sns.color_palette("deep")  # [2] green, [3] red
    y = np.arange(len(t))
    col = [colors[2] if (s and d > 0) else colors[3] if (s and d < 0) else "grey"
           for s, d in zip(t["significant"], t["diff"])]
    ax.barh(y, t["diff"], color=col, alpha=0.8)
    err = np.vstack([(t["diff"] - t["ci_low"]).clip(lower=0), (t["ci_high"] - t["diff"]).clip(lower=0)])
    ok = np.isfinite(err).all(axis=0)
    ax.errorbar(t["diff"][ok], y[ok], xerr=err[:, ok], fmt="none", ecolor="black", capsize=2, lw=0.8)
    span = max(float(np.nanmax(np.abs(t[["ci_low", "ci_high", "diff"]].to_numpy()))), 1e-9)
    for yi, r in zip(y, t.itertuples()):
        ax.text(span * 1.08, yi, f"{stars(r.p_wilcoxon_adj)} (n={r.n})", va="center", fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-span * 1.1, span * 1.6)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    corr = str(t["correction"].iloc[0])
    ax.set_xlabel(f"Δ test {metric}: real minus control (95% bootstrap CI)")
    ax.set_title(f"{dataset}: does the model use content? (Wilcoxon, {corr}-adjusted; green = real significantly better)",
                 fontsize=9)
    sns.despine(fig)
    return save_figure(fig, out_dir, f"content_use_{dataset}")


def activity_buckets(by_activity: pd.DataFrame, out_dir: Path, dataset: str, metric: str) -> dict[str, Path] | None:
    """Real minus control per user-activity bucket, one panel per model (95% bootstrap CI)."""
    t = by_activity[(by_activity["dataset"] == dataset) & (by_activity["metric"] == metric)]
    if t.empty:
        return None
    models = sorted(t["a_model"].unique())
    buckets = list(dict.fromkeys(t["bucket"]))  # in the order the table has them (sparse first)
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models) + 1.0, 3.2), sharey=True,
                             squeeze=False, layout="constrained")
    controls = sorted(t["b_fs"].unique())
    palette = dict(zip(controls, sns.color_palette("deep", len(controls))))
    width = 0.8 / max(len(controls), 1)
    for ax, model in zip(axes[0], models):
        sub = t[t["a_model"] == model]
        for j, ctl in enumerate(controls):
            s = sub[sub["b_fs"] == ctl].set_index("bucket").reindex(buckets)
            x = np.arange(len(buckets)) + (j - (len(controls) - 1) / 2) * width
            ax.bar(x, s["diff"], width=width, color=palette[ctl], alpha=0.85, label=ctl)
            err = np.vstack([(s["diff"] - s["ci_low"]).clip(lower=0), (s["ci_high"] - s["diff"]).clip(lower=0)])
            ok = np.isfinite(err).all(axis=0)
            ax.errorbar(x[ok], s["diff"][ok], yerr=err[:, ok], fmt="none", ecolor="black", capsize=2, lw=0.8)
            for xi, r in zip(x, s.itertuples()):
                if isinstance(r.p_wilcoxon_adj, float) and np.isfinite(r.p_wilcoxon_adj):
                    ax.annotate(stars(r.p_wilcoxon_adj), (xi, 0), xytext=(0, -10), textcoords="offset points",
                                ha="center", fontsize=7)
        ax.axhline(0, color="black", lw=0.8)
        ns = sub.groupby("bucket", sort=False)["n"].max().reindex(buckets)
        ax.set_xticks(np.arange(len(buckets)), [f"{b}\n(n={int(n) if n == n else 0})" for b, n in zip(buckets, ns)],
                      fontsize=8)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("user's training interactions", fontsize=8)
    axes[0, 0].set_ylabel(f"Δ test {metric}: real − control")
    axes[0, -1].legend(fontsize=7, title="control", bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.suptitle(f"{dataset}: does content help sparse users more? (95% bootstrap CI; stars: corrected Wilcoxon)",
                 fontsize=9)
    sns.despine(fig)
    return save_figure(fig, out_dir, f"activity_{dataset}")


def ablation(label_tests: pd.DataFrame, out_dir: Path, dataset: str, metric: str) -> dict[str, Path] | None:
    """Drop from removing each modality (real minus ablated), per model and slice (warm, cold
    items), with 95% bootstrap CI; stars from the label's corrected p (``ablation.label_comparisons``)."""
    t = label_tests[label_tests["dataset"] == dataset].reset_index(drop=True)
    if t.empty:
        return None
    short = {"test": "warm", "test_cold": "cold", "test_all": "all"}
    labels = [f"{r.model}[{r.reference}] {short.get(r.split, r.split)}: {r.role} → {r.replacement}"
              for r in t.itertuples()]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(t) + 1.5), layout="constrained")
    colors = dict(zip(("visual", "textual"), sns.color_palette("deep", 2)))
    y = np.arange(len(t))
    from matplotlib.colors import to_rgba

    ax.barh(y, t["diff"], color=[to_rgba(colors.get(r, "grey"), 0.9 if s else 0.35)
                                 for r, s in zip(t["role"], t["significant"])],
            hatch=["//" if sp == "test_cold" else "" for sp in t["split"]], edgecolor="white", linewidth=0)
    err = np.vstack([(t["diff"] - t["ci_low"]).clip(lower=0), (t["ci_high"] - t["diff"]).clip(lower=0)])
    ok = np.isfinite(err).all(axis=0)
    ax.errorbar(t["diff"][ok], y[ok], xerr=err[:, ok], fmt="none", ecolor="black", capsize=2, lw=0.8)
    span = max(float(np.nanmax(np.abs(t[["ci_low", "ci_high", "diff"]].to_numpy(dtype=float)))), 1e-9)
    for yi, r in zip(y, t.itertuples()):
        ax.text(span * 1.08, yi, stars(r.p_label_adj), va="center", fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-span * 1.1, span * 1.4)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ test {metric}: real minus one modality replaced, 95% CI\n"
                  "faded: not significant (corrected per label); hatched: cold items")
    ax.set_title(f"{dataset}: which modality does each model use? (warm and cold items)", fontsize=9)
    sns.despine(fig)
    return save_figure(fig, out_dir, f"ablation_{dataset}")


def lvlm_quality(quality: pd.DataFrame, summary: pd.DataFrame, out_dir: Path, metric: str,
                 feature_meta: dict[str, dict] | None = None) -> dict[str, Path] | None:
    """Description quality of each LVLM (x) against Attribute Item-kNN accuracy on its keywords (y).

    ``quality`` has ``lvlm`` and one numeric quality column ``quality`` (see
    :func:`find_quality_table`). A keyword set belongs to an LVLM when its meta.json
    ``answers_name`` is the LVLM's name, or its name is ``<lvlm>__…``.
    """
    feature_meta = feature_meta or {}
    knn = summary[(summary["role"] == "keywords") & summary[metric].notna()]
    rows = []
    for q in quality.itertuples():
        name = str(q.lvlm)
        owner = knn["feature_set"].map(
            lambda fs: (feature_meta.get(fs) or {}).get("answers_name") == name or fs == name
            or fs.startswith(name + "__")
        )
        match = knn[owner.astype(bool)]
        for _, r in match.iterrows():
            rows.append({"lvlm": q.lvlm, "quality": q.quality, "accuracy": r[metric], "dataset": r["dataset"]})
    if not rows:
        return None
    d = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    sns.scatterplot(data=d, x="quality", y="accuracy", hue="lvlm", style="dataset", s=70, ax=ax)
    for r in d.itertuples():
        ax.annotate(r.lvlm, (r.quality, r.accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    # The Item-kNNs on interactions: keywords above a line help, below it they hurt.
    refs = summary[(summary["role"] == "reference")
                   & summary["dataset"].isin(d["dataset"]) & summary[metric].notna()]
    for (_, r), ls in zip(refs.iterrows(), ("--", ":", "-.", (0, (1, 3)))):
        ax.axhline(r[metric], color="grey", ls=ls, lw=1, label=f"{r['model']} ({r['dataset']})")
    ax.set_xlabel(f"description quality ({quality.attrs.get('quality_name', 'quality')})")
    ax.set_ylabel(f"Attribute Item-kNN test {metric}")
    ax.set_title("LVLMs: description quality vs accuracy of their keywords", fontsize=10)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    sns.despine(fig)
    return save_figure(fig, out_dir, "lvlm_quality_vs_accuracy")


def find_quality_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """Pick a per-LVLM quality table from stage 3's CSVs, whatever its exact column names.

    Looks for a name column (lvlm/model/name) and a rate-like numeric column (compliance,
    parsed, coverage, rate, fraction); returns ``lvlm, quality`` or None.
    """
    name_cols = ("lvlm", "model", "name", "answers", "source")
    score_words = ("compliance", "compliant", "format", "parsed", "coverage", "rate", "fraction", "share")
    for _, df in sorted(tables.items()):
        ncol = next((c for c in df.columns if str(c).lower() in name_cols), None)
        if ncol is None or df[ncol].duplicated().any():
            continue
        num = [c for c in df.columns if c != ncol and pd.api.types.is_numeric_dtype(df[c])]
        scol = next((c for w in score_words for c in num if w in str(c).lower()), None)
        if scol is None:
            continue
        out = pd.DataFrame({"lvlm": df[ncol].astype(str), "quality": df[scol].astype(float)})
        out.attrs["quality_name"] = str(scol)
        return out
    return None


def keyword_distributions(inp: Inputs, out_dir: Path) -> dict[str, Path] | None:
    """Per attribute (keyword) set: share of items carrying each one-hot column, by rank."""
    rows = []
    for fs in sorted(set(inp.best["feature_set"])):
        path = inp.run_dir / "features" / fs / "attributes.npy"
        if not fs or not path.is_file():
            continue
        x = np.load(path, allow_pickle=False)
        if x.ndim != 2 or x.shape[0] == 0:
            continue
        share = np.sort((x > 0).mean(axis=0))[::-1]
        per_item = (x > 0).sum(axis=1)
        rows.append((fs, share, per_item))
    if not rows:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for fs, share, per_item in rows:
        ax1.plot(np.arange(1, len(share) + 1), share, marker=".", lw=1, label=fs)
        sns.histplot(per_item, discrete=True, element="step", fill=False, ax=ax2, label=fs)
    ax1.set_yscale("log")
    ax1.set_xlabel("keyword column, by rank")
    ax1.set_ylabel("share of items carrying it")
    ax1.set_title("keyword frequency (rank plot)", fontsize=10)
    ax2.set_xlabel("active keyword columns per item")
    ax2.set_title("keywords per item", fontsize=10)
    ax1.legend(fontsize=7)
    sns.despine(fig)
    return save_figure(fig, out_dir, "keyword_distributions")


def planted_vs_measured(weights: dict[str, float], tests: pd.DataFrame, inp: Inputs, out_dir: Path, metric: str,
                        dataset: str) -> dict[str, Path] | None:
    """Synthetic catalogue: the planted content signal a feature set can see vs its measured gain over noise.

    The planted share of a feature set = (weights of the modalities its roles carry + the
    shared weight) / all weights incl. collaborative; visual ↔ image, textual ↔ text.
    """
    t = tests[(tests["dataset"] == dataset) & (tests["metric"] == metric) & (tests["family"] == "content")]
    if t.empty:
        return None
    total = sum(weights.values()) or 1.0

    def share(fs: str) -> float:
        roles = set(((inp.feature_meta.get(fs) or {}).get("roles") or {"visual": 1}).keys())
        w = weights.get("shared_weight", 0.0) if roles & {"visual", "textual"} else 0.0
        w += weights.get("image_weight", 0.0) if "visual" in roles else 0.0
        w += weights.get("text_weight", 0.0) if "textual" in roles else 0.0
        return w / total

    d = t.assign(planted=t["a_fs"].map(share), gain=t["diff"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 2]}, layout="constrained")
    wdf = pd.DataFrame({"component": [k.replace("_weight", "") for k in weights], "weight": list(weights.values())})
    sns.barplot(data=wdf, x="component", y="weight", ax=ax1, color="steelblue")
    ax1.set_title("planted utility weights (ground truth)", fontsize=10)
    sns.scatterplot(data=d, x="planted", y="gain", hue="a_model", style="b_fs", s=70, ax=ax2)
    ax2.errorbar(d["planted"], d["gain"], yerr=np.vstack([(d["gain"] - d["ci_low"]).clip(lower=0),
                                                           (d["ci_high"] - d["gain"]).clip(lower=0)]),
                 fmt="none", ecolor="grey", lw=0.8)
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_xlabel("planted content share visible to the feature set")
    ax2.set_ylabel(f"measured gain: real − control, test {metric}")
    ax2.set_title("planted signal vs measured gain", fontsize=10)
    ax2.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    sns.despine(fig)
    return save_figure(fig, out_dir, f"planted_vs_measured_{dataset}")


def cold_vs_warm(values: pd.DataFrame, panels: dict[str, list[str]], out_dir: Path, dataset: str,
                 metric: str) -> dict[str, Path] | None:
    """Per model (a panel), the test ``metric`` on each slice (warm / cold / all) for each feature
    set (hue): bar = mean over seeds, whisker = sd over seeds, dots = the seeds.

    ``values``: one row per split, dataset, model, feature set and seed (``slices.seed_values``);
    ``panels``: title -> the (model, feature set) cells it shows, as ``"model|feature_set"``
    (multimodal models: real sets and their controls; one panel for the ID-only floor)."""
    from mmrepr.analysis.load import SLICE_SHORT

    v = values[values["dataset"] == dataset]
    if v.empty or not panels:
        return None
    splits = [s for s in SLICE_SHORT if s in set(v["split"])]
    cell = v["model"] + "|" + v["feature_set"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels) + 1.5, 4.6), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, (title, cells) in zip(axes[0], panels.items()):
        cells = [c for c in cells if (cell == c).any()]
        palette = dict(zip(cells, sns.color_palette("tab10", max(len(cells), 1))))
        width = 0.8 / max(len(cells), 1)
        for j, c in enumerate(cells):
            sub = v[cell == c]
            x = np.arange(len(splits)) + (j - (len(cells) - 1) / 2) * width
            g = sub.groupby("split")["value"]
            mean, sd = g.mean().reindex(splits), g.std(ddof=1).reindex(splits)
            model, fs = c.split("|", 1)
            label = fs or model if title != "ID-only (floor)" else model
            ax.bar(x, mean, width=width * 0.95, color=palette[c], alpha=0.85, label=label)
            ok = sd.notna().to_numpy()
            ax.errorbar(x[ok], mean[ok], yerr=sd[ok], fmt="none", ecolor="black", capsize=2, lw=0.8)
            for xi, s in zip(x, splits):
                pts = sub.loc[sub["split"] == s, "value"].to_numpy()
                ax.scatter(np.full(len(pts), xi), pts, s=8, color="black", zorder=3)
        ax.set_xticks(np.arange(len(splits)), [SLICE_SHORT[s] for s in splits])
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)  # below: bars stay visible
    axes[0, 0].set_ylabel(f"test {metric}")
    fig.suptitle(f"{dataset}: warm items vs cold items vs whole catalogue (mean over seeds; whisker = sd, "
                 "dots = seeds)", fontsize=9)
    sns.despine(fig)
    return save_figure(fig, out_dir, f"cold_vs_warm_{dataset}")


def figure_list(out_dir: Path) -> list[Path]:
    return sorted(Path(out_dir).glob("*.png"))


__all__: list[Any] = [
    "grouped_bars", "content_use", "lvlm_quality", "find_quality_table", "keyword_distributions",
    "planted_vs_measured", "cold_vs_warm", "save_figure",
]
