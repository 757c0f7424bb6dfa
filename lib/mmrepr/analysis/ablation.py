"""Modality ablation: which of a feature set's two modalities does a model use?

Stage 2/3 controls with a ``role`` replace one modality of a real feature set (by zeros,
noise or shuffled rows) and keep the other real (``kind: ablation`` in meta.json). The
``ablation`` comparisons test the model on the real set against each ablated set. A model
*uses* a modality when removing it significantly hurts (real significantly better than at
least one ablation of that role) on the **warm items or on the cold items**
(:data:`LABEL_SLICES`): the two item populations a model is evaluated on, and on cold items
content is all a model has, so a modality that only cold items need is still used. One
label per dataset, model and real set:

* ``uses both modalities``; ``relies on visual`` / ``relies on textual``; ``uses neither``.

The label's comparisons (each ablation on each slice) are corrected together, in a family of
their own (``analysis.correction``, Holm by default): the label is one claim, made from all of
them. The label on each slice alone (``label_warm``, ``label_cold``) is reported beside it,
from the same corrected p-values. A run without a cold-item slice labels from warm items
only, and says so (``slices``). The whole-catalogue slice is not used: its items are the warm
and cold ones together, no third population (docs/protocol.md, "Modality ablation").

On the synthetic catalogue the planted weights say which modality carries a signal of its
own (``image_weight`` -> visual, ``text_weight`` -> textual; the ``shared`` category is in
both, so losing one modality does not lose it), and each label is checked against them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from mmrepr.analysis.load import SLICE_SHORT

ROLES = ("visual", "textual")
TRUTH_KEYS = {"visual": "image_weight", "textual": "text_weight"}
# the slices a label reads: warm items and cold items (two disjoint item populations)
LABEL_SLICES = ("test", "test_cold")
USES_CONTENT = ("uses content", "uses content against some controls")
COLUMNS = ["dataset", "model", "reference", "slices", "roles_ablated", "uses_visual", "uses_textual", "label",
           "label_warm", "label_cold", "evidence", "expected", "matches_truth"]
TEST_COLUMNS = ["dataset", "model", "reference", "split", "role", "replacement", "feature_set", "n", "mean_a",
                "mean_b", "diff", "ci_low", "ci_high", "dz", "p_wilcoxon", "p_label_adj", "significant", "hurts"]


def label_for(used: dict[str, bool]) -> str:
    on = [r for r in ROLES if used.get(r)]
    if len(on) == 2:
        return "uses both modalities"
    if len(on) == 1:
        return f"relies on {on[0]}"
    return "uses neither modality"


def expected_label(weights: dict[str, float] | None) -> str | None:
    """What a model that uses the content should show, from the planted weights."""
    if not weights:
        return None
    return label_for({r: float(weights.get(k, 0.0)) > 0 for r, k in TRUTH_KEYS.items()})


def label_comparisons(by_slice: pd.DataFrame, tests: pd.DataFrame, feature_meta: dict[str, dict], primary: str,
                      correction: str = "holm", alpha: float = 0.05) -> pd.DataFrame:
    """The comparisons each label is made from (:data:`TEST_COLUMNS`): every ablation of a real
    set on the warm and the cold slice, primary metric, with ``p_label_adj`` corrected over the
    label's family (dataset, model, real set: all its ablations on both slices).

    ``by_slice`` is ``tests_by_slice`` (its warm rows are ``tests``); without it (no slice
    results) the warm ``tests`` alone."""
    src = by_slice if not by_slice.empty and "split" in by_slice else (
        tests.assign(split="test") if not tests.empty else tests)
    if src.empty:
        return pd.DataFrame(columns=TEST_COLUMNS)
    t = src[(src["family"] == "ablation") & (src["metric"] == primary) & src["split"].isin(LABEL_SLICES)]
    meta = [feature_meta.get(fs, {}) for fs in t["b_fs"]]
    t = t.assign(role=[m.get("ablated_role") for m in meta], replacement=[m.get("replacement", "?") for m in meta])
    t = t[t["role"].isin(ROLES)]
    if t.empty:
        return pd.DataFrame(columns=TEST_COLUMNS)
    t = t.rename(columns={"a_model": "model", "a_fs": "reference", "b_fs": "feature_set"})
    t = t.assign(split=pd.Categorical(t["split"], LABEL_SLICES, ordered=True)).sort_values(
        ["dataset", "model", "reference", "split", "role", "replacement"]).reset_index(drop=True)
    t["split"] = t["split"].astype(str)
    t["p_label_adj"] = np.nan
    for _, idx in t.groupby(["dataset", "model", "reference"]).groups.items():
        p = t.loc[idx, "p_wilcoxon"].astype(float)
        ok = p.notna()
        if ok.any():
            adj = p[ok].to_numpy() if correction == "none" else multipletests(p[ok].to_numpy(), alpha=alpha,
                                                                                 method=correction)[1]
            t.loc[p[ok].index, "p_label_adj"] = adj
    t["significant"] = (t["p_label_adj"] < alpha).fillna(False).astype(bool)
    t["hurts"] = t["significant"] & (t["diff"].astype(float) > 0)
    return t[TEST_COLUMNS]


def _verdicts(v: str | Iterable[str] | None) -> list[str]:
    if v is None:
        return []
    return [v] if isinstance(v, str) else [x for x in v if x]


def ablation_labels(label_tests: pd.DataFrame,
                    content_verdicts: Mapping[tuple[str, str], str | Iterable[str]] | None = None,
                    weights: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per (dataset, model, real set) with ablations trained (:data:`COLUMNS`), from
    :func:`label_comparisons`; see the module doc.

    ``content_verdicts[(dataset, model)]``: the model's content verdicts (warm, cold): the
    planted truth is checked only for a model that uses content on at least one of them (for
    a model that ignores its features, "uses neither" says nothing about the data)."""
    if label_tests.empty:
        return pd.DataFrame(columns=COLUMNS)
    expected = expected_label(weights)
    rows = []
    for (ds, model, ref), g in label_tests.groupby(["dataset", "model", "reference"], sort=True):
        per_slice: dict[str, dict[str, bool]] = {}
        ev = []
        for r in g.itertuples():
            used = per_slice.setdefault(r.split, {})
            used[r.role] = used.get(r.role, False) or bool(r.hurts)
            ev.append(f"{SLICE_SHORT[r.split]}: {r.role}->{r.replacement}: {r.diff:+.4f} (p_adj {r.p_label_adj:.2g})")
        used = {role: any(u.get(role, False) for u in per_slice.values()) for role in ROLES
                if any(role in u for u in per_slice.values())}
        lab = label_for(used)
        check = expected is not None and any(v in USES_CONTENT for v in _verdicts((content_verdicts or {}).get((ds, model))))
        rows.append(dict(dataset=ds, model=model, reference=ref,
                         slices=" ".join(SLICE_SHORT[s] for s in LABEL_SLICES if s in per_slice),
                         roles_ablated=" ".join(sorted(used)),
                         uses_visual=used.get("visual", np.nan), uses_textual=used.get("textual", np.nan),
                         label=lab,
                         label_warm=label_for(per_slice["test"]) if "test" in per_slice else None,
                         label_cold=label_for(per_slice["test_cold"]) if "test_cold" in per_slice else None,
                         evidence="; ".join(ev), expected=expected if check else None,
                         matches_truth=(lab == expected) if check else np.nan))
    return pd.DataFrame(rows, columns=COLUMNS)
