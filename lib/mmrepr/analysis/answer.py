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

import numpy as np
import pandas as pd

# How the answer names Attribute Item-kNN's reference.
CORRECTION_NAMES = {"holm": "Holm", "bonferroni": "Bonferroni", "fdr_bh": "Benjamini-Hochberg", "none": "uncorrected"}


def format_p(p: float) -> str:
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
    effect = ""
    rel, dz = row.get("rel_change", float("nan")), row.get("dz", float("nan"))
    if isinstance(rel, float) and math.isfinite(rel):
        effect += f", relative change {rel:+.1%}"
    if isinstance(dz, float) and math.isfinite(dz):
        lo, hi = row.get("dz_ci_low", float("nan")), row.get("dz_ci_high", float("nan"))
        dci = f" [{lo:+.2f}, {hi:+.2f}]" if isinstance(lo, float) and math.isfinite(lo) and math.isfinite(hi) else ""
        effect += f", effect size d_z = {dz:+.2f}{dci}"
    return (
        f"{row['metric']} {row['mean_a']:.4f} vs {row['mean_b']:.4f}, difference {row['diff']:+.4f}{ci}{effect}; "
        f"Wilcoxon signed-rank p = {format_p(row['p_wilcoxon'])}, {corr}-adjusted p = {format_p(row['p_wilcoxon_adj'])}; "
        f"paired t p = {format_p(row['p_ttest'])}; n = {int(row['n'])} paired users"
    )


def _verb(row: pd.Series) -> str:
    if int(row["n"]) < 2 or (isinstance(row["p_wilcoxon"], float) and math.isnan(row["p_wilcoxon"])):
        return "could not be tested against"
    if not row["significant"]:
        return "does not significantly differ from"
    return "significantly beats" if row["diff"] > 0 else "is significantly worse than"


def _stability(content: pd.DataFrame) -> dict[str, Any]:
    """Whether the content comparisons' decisions agree across seeds (``stable`` from
    :func:`mmrepr.analysis.stats.seed_stability`, merged into the tests)."""
    if content.empty or "stable" not in content:
        return {"stable_over_seeds": None, "n_seeds": None, "stability_sentence": "Seed stability was not assessed."}
    n_seeds = int(content["n_seeds"].max()) if content["n_seeds"].notna().any() else 0
    st = content["stable"].dropna()
    if n_seeds < 2 or st.empty:
        return {"stable_over_seeds": None, "n_seeds": n_seeds,
                "stability_sentence": f"Trained with {max(n_seeds, 1)} seed, so stability over seeds is not assessed."}
    unstable = content[content["stable"] == False]  # noqa: E712 - NaN means "not assessable"
    if unstable.empty:
        return {"stable_over_seeds": True, "n_seeds": n_seeds,
                "stability_sentence": f"Every control comparison reaches the same decision in each of the {n_seeds} "
                "seeds tested on their own (stable)."}
    detail = "; ".join(f"vs {r.b_fs}: {r.seed_directions}" for r in unstable.itertuples())
    return {"stable_over_seeds": False, "n_seeds": n_seeds,
            "stability_sentence": f"Unstable over seeds: {len(unstable)} of {len(content)} control comparisons change "
            f"decision from one seed to another (seed:decision, + real better, - control better, 0 no significant "
            f"difference: {detail})."}


def _what(verdict: str, rec: dict[str, Any]) -> str:
    """The verb phrase of a content verdict: 'uses the content', 'shows no evidence ...'."""
    n, beaten = rec.get("n_controls", 0), rec.get("control_beats_real", 0)
    # a mixed verdict names both sides: real beats some controls while others beat real
    against = f"uses the content against {rec.get('real_beats_control', 0)} of {n} controls" + (
        f", while {beaten} of {n} beat it" if beaten else "")
    uses = {"uses content": "uses the content", "uses content against some controls": against}.get(verdict)
    return uses or {"no control trained": "was not tested for content use (no control trained)",
                    "not testable": "could not be tested for content use",
                    "a control beats real content": "does better on a control than on real content"}.get(
        verdict, "shows no evidence of using the content")


def _seed_tail(stable: bool | None, n_seeds: int | None) -> str:
    if stable is None:
        return ""
    return f", stable over {n_seeds} seeds" if stable else f", but the decision changes across {n_seeds} seeds"


def _headline(ds: str, model: str, verdict: str, rec: dict[str, Any]) -> str:
    """One sentence per model and dataset: uses content or not, and how stable that is."""
    tail = _seed_tail(rec.get("stable_over_seeds"), rec.get("n_seeds"))
    return f"On {ds}, {model} {_what(verdict, rec)} (warm items{tail})."


def content_verdict(content: pd.DataFrame) -> dict[str, Any]:
    """The verdict of one model's content comparisons (one row per control, one metric)."""
    wins = int(((content["significant"]) & (content["diff"] > 0)).sum())
    losses = int(((content["significant"]) & (content["diff"] < 0)).sum())
    tested = int(content["p_wilcoxon"].notna().sum())
    if len(content) == 0:
        verdict = "no control trained"
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
    return dict(verdict=verdict, n_controls=len(content), n_tested=tested, real_beats_control=wins,
                control_beats_real=losses)


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
            cv = content_verdict(content)
            verdict, wins, losses = cv.pop("verdict"), cv["real_beats_control"], cv["control_beats_real"]
            rec.update(cv)
            for _, row in content.iterrows():
                rw = " (from a random-weight extractor)" if row["a_fs"] in random_sets else ""
                rec["sentences"].append(
                    f"On {ds}, {model} with real features {row['a_fs']}{rw} {_verb(row)} the {row['b_fs']} control "
                    f"({evidence(row)})."
                )
            if len(content) == 0:
                rec["sentences"].append(f"On {ds}, {model} has no noise or shuffled control, so content use is not tested.")
            rec["content_verdict"] = verdict
            rec.update(_stability(content))
            if len(content):
                rec["sentences"].append(
                    f"So on {ds}, {model}: real content significantly beats {wins} of {len(content)} controls and "
                    f"{losses} of {len(content)} controls significantly beat it on {primary} "
                    f"(alpha = {alpha}) — verdict: {verdict}."
                )
                rec["sentences"].append(rec["stability_sentence"])
            rec["headline"] = _headline(ds, model, verdict, rec)
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


SLICE_PHRASE = {"test": "on warm items", "test_cold": "on cold items", "test_all": "on the whole catalogue"}


def add_slice_verdicts(answer: dict[str, Any], by_slice: pd.DataFrame, slices: dict[str, list[str]]) -> None:
    """Add each model's content verdict on the other test slices to its record, and the
    cold-item one to its headline (one sentence: warm and cold, each with its seed stability).

    ``by_slice``: the tests per slice with their per-seed decisions (``split``, ``n_seeds``,
    ``seed_directions``, ``stable``); ``slices[dataset]``: the slices with results there. A
    dataset without a cold-item slice says so in the headline."""
    primary = answer["primary_metric"]
    t = by_slice[(by_slice["metric"] == primary) & (by_slice["family"] == "content")] if not by_slice.empty else by_slice
    for rec in answer["records"]:
        if "content_verdict" not in rec:
            continue  # keyword records
        ds, model = rec["dataset"], rec["model"]
        present = slices.get(ds, [])
        rec["slices"] = {"test": {"verdict": rec["content_verdict"], "stable_over_seeds": rec.get("stable_over_seeds")}}
        for split in (s for s in present if s != "test"):
            content = t[(t["dataset"] == ds) & (t["split"] == split) & (t["a_model"] == model)] if not t.empty else t
            cv = content_verdict(content)
            st = _stability(content)
            rec["slices"][split] = {"verdict": cv["verdict"], "stable_over_seeds": st["stable_over_seeds"],
                                    "n_seeds": st["n_seeds"], "real_beats_control": cv["real_beats_control"],
                                    "n_controls": cv["n_controls"], "control_beats_real": cv["control_beats_real"]}
            where = SLICE_PHRASE[split]
            for _, row in content.iterrows():
                rec["sentences"].append(f"{where[0].upper() + where[1:]} ({ds}), {model} with real features "
                                        f"{row['a_fs']} {_verb(row)} the {row['b_fs']} control ({evidence(row)}).")
            if len(content):
                rec["sentences"].append(f"So {where} ({ds}), {model}: verdict {cv['verdict']}. "
                                        f"{st['stability_sentence']}")
        if not rec.get("headline"):
            continue
        head = rec["headline"][:-1]
        if "test_cold" in present:
            cold = rec["slices"]["test_cold"]
            what = _what(cold["verdict"], cold)
            tail = _seed_tail(cold["stable_over_seeds"], cold["n_seeds"])
            rec["headline"] = f"{head}; on cold items it {what} (cold items{tail})."
        else:
            rec["headline"] = f"{head}; cold items were not assessed (no cold-item slice in this run)."


def add_ablation_sentences(answer: dict[str, Any], ablations: pd.DataFrame) -> None:
    """Add each model's modality-ablation label (and its check against the planted truth) to
    its record and headline."""
    for rec in answer["records"]:
        rows = ablations[(ablations["dataset"] == rec["dataset"]) & (ablations["model"] == rec["model"])]
        for r in rows.itertuples():
            truth = ""
            if isinstance(r.matches_truth, (bool, np.bool_)):
                truth = (f"; the planted weights imply '{r.expected}', so the label "
                         f"{'matches' if r.matches_truth else 'does NOT match'} the truth")
            per_slice = [f"{where} {lab}" for where, lab in (("warm items:", r.label_warm), ("cold items:", r.label_cold))
                         if isinstance(lab, str) and lab]
            rec.setdefault("ablation", []).append(dict(reference=r.reference, label=r.label,
                                                       label_warm=r.label_warm if isinstance(r.label_warm, str) else None,
                                                       label_cold=r.label_cold if isinstance(r.label_cold, str) else None,
                                                       matches_truth=None if not truth else bool(r.matches_truth)))
            rec["sentences"].append(f"On {rec['dataset']}, replacing one modality of {r.reference} at a time "
                                    f"({'; '.join(per_slice)}), {rec['model']} {r.label} ({r.evidence}){truth}.")
            if rec.get("headline"):
                rec["headline"] = rec["headline"][:-1] + f"; modality ablation on {r.reference}: {r.label}."


def answer_markdown(answer: dict[str, Any]) -> str:
    lines = [
        f"# Computed answer ({answer['primary_metric']}, alpha = {answer['alpha']})",
        "",
        "Every sentence below is generated from the significance table (analysis/tests.csv).",
        "",
    ]
    heads = [rec["headline"] for rec in answer["records"] if rec.get("headline")]
    if heads:
        lines += ["## In one sentence per model", ""] + [f"- {h}" for h in heads] + [""]
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
