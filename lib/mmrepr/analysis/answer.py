"""The computed answer: sentences generated from the test table, never written by hand.

For each dataset and multimodal model: does real content significantly beat each
noise/shuffled control (Wilcoxon signed-rank over users, corrected p below alpha, real
ahead), and which real representation wins on the primary metric (and whether
significantly). For Attribute Item-kNN: does each LVLM's keyword set beat Item-kNN.
Every sentence quotes its means, difference, bootstrap CI, p-values and n.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

# How the answer names Attribute Item-kNN's reference.
CORRECTION_NAMES = {"holm": "Holm", "bonferroni": "Bonferroni", "fdr_bh": "Benjamini-Hochberg", "none": "uncorrected"}


def _p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    if p == 0:  # below double precision: say so rather than print 0
        return "< 1e-300"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _cell(model: str, fs: str) -> str:
    return f"{model} on {fs}" if fs else model


def evidence(row: pd.Series) -> str:
    """The numbers behind one comparison, as a parenthesis."""
    corr = CORRECTION_NAMES.get(str(row.get("correction", "holm")), str(row.get("correction")))
    ci = ""
    if not (math.isnan(row["ci_low"]) or math.isnan(row["ci_high"])):
        ci = f", 95% bootstrap CI [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
    return (
        f"{row['metric']} {row['mean_a']:.4f} vs {row['mean_b']:.4f}, difference {row['diff']:+.4f}{ci}; "
        f"Wilcoxon signed-rank p = {_p(row['p_wilcoxon'])}, {corr}-adjusted p = {_p(row['p_wilcoxon_adj'])}; "
        f"paired t p = {_p(row['p_ttest'])}; n = {int(row['n'])} paired users"
    )


def _verb(row: pd.Series) -> str:
    if int(row["n"]) < 2 or (isinstance(row["p_wilcoxon"], float) and math.isnan(row["p_wilcoxon"])):
        return "could not be tested against"
    if not row["significant"]:
        return "does not significantly differ from"
    return "significantly beats" if row["diff"] > 0 else "is significantly worse than"


def compute_answer(tests: pd.DataFrame, summary: pd.DataFrame, primary: str, alpha: float) -> dict[str, Any]:
    """Structured verdicts plus the sentences that state them (one list per dataset/model)."""
    random_sets = set(summary.loc[summary["random_weights"].astype(bool), "feature_set"]) if "random_weights" in summary else set()
    records: list[dict[str, Any]] = []
    labels = dict(zip(summary["model"], summary["label"])) if "label" in summary else {}
    t = tests[tests["metric"] == primary] if not tests.empty else tests
    datasets = sorted(set(summary["dataset"]))
    for ds in datasets:
        td = t[t["dataset"] == ds] if not t.empty else t
        mm_models = sorted(set(td[td["family"].isin(["content", "representation"])]["a_model"])) if not td.empty else []
        for model in mm_models:
            rec: dict[str, Any] = {"dataset": ds, "model": model, "metric": primary, "sentences": []}
            content = td[(td["family"] == "content") & (td["a_model"] == model)]
            wins = int(((content["significant"]) & (content["diff"] > 0)).sum())
            losses = int(((content["significant"]) & (content["diff"] < 0)).sum())
            tested = int(content["p_wilcoxon"].notna().sum())
            rec.update(n_controls=len(content), n_tested=tested, real_beats_control=wins, control_beats_real=losses)
            for _, row in content.iterrows():
                rw = " (from a random-weight extractor)" if row["a_fs"] in random_sets else ""
                rec["sentences"].append(
                    f"On {ds}, {model} with real features {row['a_fs']}{rw} {_verb(row)} the {row['b_fs']} control "
                    f"({evidence(row)})."
                )
            if len(content) == 0:
                verdict = "no control trained"
                rec["sentences"].append(f"On {ds}, {model} has no noise or shuffled control, so content use is not tested.")
            elif tested == 0:
                verdict = "not testable"
            elif wins == len(content):
                verdict = "uses content"
            elif wins > 0:
                verdict = "uses content against some controls"
            elif losses > 0:
                verdict = "a control beats real content"
            else:
                verdict = "no evidence of content use"
            rec["content_verdict"] = verdict
            if len(content):
                rec["sentences"].append(
                    f"So on {ds}, {model}: real content significantly beats {wins} of {len(content)} controls and "
                    f"{losses} of {len(content)} controls significantly beat it on {primary} "
                    f"(alpha = {alpha}) — verdict: {verdict}."
                )
            # Which representation wins.
            rep = td[(td["family"] == "representation") & (td["a_model"] == model)]
            s = summary[(summary["dataset"] == ds) & (summary["model"] == model)]
            if len(rep):
                top = str(rep["a_fs"].iloc[0])
                sig = rep[rep["significant"] & (rep["diff"] > 0)]
                rec.update(best_representation=top, best_beats=int(len(sig)), n_other=int(len(rep)))
                score = s.loc[s["feature_set"] == top, primary]
                rec["sentences"].append(
                    f"On {ds}, {model}'s best real representation on {primary} is {top} "
                    f"(test {primary} {float(score.iloc[0]):.4f}); it significantly beats {len(sig)} of the "
                    f"{len(rep)} other real representations."
                )
                for _, row in rep.iterrows():
                    rec["sentences"].append(
                        f"  {model} on {top} {_verb(row)} {model} on {row['b_fs']} ({evidence(row)})."
                    )
            else:
                only = s[s["kind"] == "real"]["feature_set"].tolist() if "kind" in s else []
                rec.update(best_representation=only[0] if len(only) == 1 else None, best_beats=0, n_other=0)
                if len(only) == 1:
                    rec["sentences"].append(f"On {ds}, {model} was trained on one real representation only ({only[0]}).")
            records.append(rec)
        # Keywords: Attribute Item-kNN vs Item-kNN on interactions.
        kw = td[td["family"] == "keywords"] if not td.empty else td
        for _, row in kw.iterrows():
            ref = labels.get(row["b_model"], row["b_model"])
            name = labels.get(row["a_model"], row["a_model"])
            records.append(
                {
                    "dataset": ds,
                    "model": row["a_model"],
                    "feature_set": row["a_fs"],
                    "metric": primary,
                    "reference": row["b_model"],
                    "keywords_verdict": ("beats Item-kNN" if row["significant"] and row["diff"] > 0 else
                                         "worse than Item-kNN" if row["significant"] else "no significant difference"),
                    "sentences": [
                        f"On {ds}, {name} on the {row['a_fs']} keywords {_verb(row)} {ref} "
                        f"({evidence(row)})."
                    ],
                }
            )
    return {"primary_metric": primary, "alpha": alpha, "records": records}


def answer_markdown(answer: dict[str, Any]) -> str:
    lines = [
        f"# Computed answer ({answer['primary_metric']}, alpha = {answer['alpha']})",
        "",
        "Every sentence below is generated from the significance table (analysis/tests.csv).",
        "",
    ]
    for rec in answer["records"]:
        head = rec["model"] + (f" on {rec['feature_set']}" if rec.get("feature_set") else "")
        verdict = rec.get("content_verdict") or rec.get("keywords_verdict", "")
        lines.append(f"## {rec['dataset']} — {head}: {verdict}")
        lines.append("")
        lines.extend(f"- {s.strip()}" for s in rec["sentences"])
        lines.append("")
    if not answer["records"]:
        lines.append("No comparisons could be made (no multimodal model with controls, no keyword sets).")
    return "\n".join(lines) + "\n"
