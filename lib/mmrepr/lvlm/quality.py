"""How good are the LVLMs' descriptions? Tables and plots for notebook 03.

- :func:`format_table`: per LVLM, strict bracket format %, rows with all five slots %,
  refusals, slots filled per label.
- :func:`vocabulary_table`: per LVLM and slot, distinct values before/after normalising,
  clusters, and the share of items that fell into "Other".
- :func:`agreement_table`: per pair of LVLMs and slot, the share of common items given the
  same normalised keyword, and Cohen's kappa on those keywords. (Cluster ids are per LVLM,
  so they cannot be compared across LVLMs; normalised keywords can.)
- :func:`freetext_table`: DESCR/MIS answers: length, refusals, within the 30-word limit.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from mmrepr.lvlm.parse import _REFUSAL, STATUS_STRICT


def format_table(reports: list[dict], labels: list[str]) -> pd.DataFrame:
    rows = []
    for r in reports:
        n = max(r["rows"], 1)
        sc = r["status_counts"]
        row = {
            "lvlm": r["name"],
            "rows": r["rows"],
            "strict_format_%": 100 * r["strict_rows"] / n,
            "all_five_slots_%": 100 * r["complete_rows"] / n,
            "repaired": sc.get("repaired", 0),
            "partial": sc.get("partial", 0),
            "refusal": sc.get("refusal", 0),
            "unparsed": sc.get("unparsed", 0) + sc.get("empty", 0),
        }
        for lab in labels:
            row[f"{lab}_filled_%"] = 100 * r["slots_filled"].get(lab, 0) / n
        rows.append(row)
    return pd.DataFrame(rows)


def vocabulary_table(parsed: dict[str, pd.DataFrame], onehots: dict, labels: list[str]) -> pd.DataFrame:
    rows = []
    for name, oh in onehots.items():
        p = parsed[name]
        for lab in labels:
            voc = oh.vocabulary[oh.vocabulary["slot"] == lab]
            asg = oh.assignments[oh.assignments["slot"] == lab]
            rows.append({
                "lvlm": name,
                "slot": lab,
                "distinct_raw": int(p[lab].dropna().str.lower().nunique()),
                "distinct_normalised": int(asg["normalised"].nunique()),
                "clusters": int(len(voc)),
                "kept_clusters": int(voc["kept"].sum()),
                "other_%": 100 * float((asg["column"].str.endswith("=Other")).mean()) if len(asg) else 0.0,
                "top_keywords": ", ".join(voc.sort_values("count", ascending=False)["label"].head(5)),
            })
    return pd.DataFrame(rows)


def agreement_table(assignments: dict[str, pd.DataFrame], labels: list[str]) -> pd.DataFrame:
    """Pairwise agreement on normalised keywords, per slot, over items both LVLMs filled."""
    from sklearn.metrics import cohen_kappa_score

    rows = []
    for a, b in itertools.combinations(sorted(assignments), 2):
        for lab in labels:
            xa = assignments[a][assignments[a]["slot"] == lab].set_index("asin")["normalised"]
            xb = assignments[b][assignments[b]["slot"] == lab].set_index("asin")["normalised"]
            common = xa.index.intersection(xb.index)
            if len(common) == 0:
                continue
            va, vb = xa.loc[common], xb.loc[common]
            same = float((va.values == vb.values).mean())
            kappa = float(cohen_kappa_score(va.values, vb.values)) if len(set(va) | set(vb)) > 1 else np.nan
            rows.append({"lvlm_a": a, "lvlm_b": b, "slot": lab, "items": int(len(common)),
                         "same_keyword_%": 100 * same, "cohen_kappa": kappa})
    return pd.DataFrame(rows, columns=["lvlm_a", "lvlm_b", "slot", "items", "same_keyword_%", "cohen_kappa"])


def freetext_table(answers: dict[str, pd.DataFrame], max_words: int = 30) -> pd.DataFrame:
    rows = []
    for name, df in answers.items():
        t = df["result"].astype(str).str.strip()
        words = t.str.split().str.len().fillna(0)
        rows.append({
            "lvlm": name,
            "rows": int(len(t)),
            "empty": int((t == "").sum()),
            "refusal_%": 100 * float(t.map(lambda x: bool(_REFUSAL.search(x))).mean()) if len(t) else 0.0,
            "mean_words": float(words.mean()) if len(t) else 0.0,
            f"within_{max_words}_words_%": 100 * float((words <= max_words).mean()) if len(t) else 0.0,
            "distinct_answers_%": 100 * float(t.nunique() / max(len(t), 1)),
        })
    return pd.DataFrame(rows)


def hard_examples(parsed: pd.DataFrame, answers: pd.DataFrame, n: int = 10, seed: int = 0) -> pd.DataFrame:
    """Rows that were not in strict format (repaired first shown per note, then failures)."""
    texts = answers.set_index("asin")["result"]
    hard = parsed[parsed["status"] != STATUS_STRICT].copy()
    if hard.empty:
        return hard
    hard["answer"] = hard["asin"].map(texts).astype(str).str.slice(0, 200)
    hard["_key"] = hard["status"] + "|" + hard["notes"]
    shuffled = hard.sample(frac=1.0, random_state=seed)
    picked = shuffled.groupby("_key", sort=True).head(max(1, n // 4)).sort_values("_key")
    return picked.drop(columns="_key").head(n).reset_index(drop=True)


def plot_quality(fmt: pd.DataFrame, agreement: pd.DataFrame | None = None):
    """Bar plot of format compliance; heatmap of mean agreement across slots (if given)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    ncols = 2 if agreement is not None and not agreement.empty else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4), squeeze=False)
    long = fmt.melt(id_vars="lvlm", value_vars=["strict_format_%", "all_five_slots_%"], var_name="measure", value_name="%")
    sns.barplot(data=long, y="lvlm", x="%", hue="measure", ax=axes[0, 0])
    axes[0, 0].set_title("FITB answers: strict bracket format vs. all five slots parsed")
    axes[0, 0].set_xlim(0, 100)
    if ncols == 2:
        mean = agreement.groupby(["lvlm_a", "lvlm_b"])["same_keyword_%"].mean().reset_index()
        names = sorted(set(mean["lvlm_a"]) | set(mean["lvlm_b"]))
        m = pd.DataFrame(100.0, index=names, columns=names)
        for _, r in mean.iterrows():
            m.loc[r["lvlm_a"], r["lvlm_b"]] = m.loc[r["lvlm_b"], r["lvlm_a"]] = r["same_keyword_%"]
        sns.heatmap(m, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100, ax=axes[0, 1], cbar=False)
        axes[0, 1].set_title("Same keyword (%), mean over slots")
    fig.tight_layout()
    return fig


def keyword_distribution(onehot, slot: str, top: int = 15) -> pd.DataFrame:
    voc = onehot.vocabulary[onehot.vocabulary["slot"] == slot]
    return voc.sort_values("count", ascending=False).head(top)[["label", "count", "n_members", "members"]]

