"""Modality ablation: which of a feature set's two modalities does a model use?

Stage 2/3 controls with a ``role`` replace one modality of a real feature set (by zeros,
noise or shuffled rows) and keep the other real (``kind: ablation`` in meta.json). The
``ablation`` comparisons test the model on the real set against each ablated set. A model
*uses* a modality when removing it significantly hurts (real significantly better than at
least one ablation of that role), and gets a label per dataset and real set:

* ``uses both modalities``; ``relies on visual`` / ``relies on textual``; ``uses neither``.

On the synthetic catalogue the planted weights say which modality carries a signal of its
own (``image_weight`` -> visual, ``text_weight`` -> textual; the ``shared`` category is in
both, so losing one modality does not lose it), and each label is checked against them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ROLES = ("visual", "textual")
TRUTH_KEYS = {"visual": "image_weight", "textual": "text_weight"}
COLUMNS = ["dataset", "model", "reference", "roles_ablated", "uses_visual", "uses_textual", "label",
           "evidence", "expected", "matches_truth"]


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


def ablation_labels(tests: pd.DataFrame, feature_meta: dict[str, dict], primary: str,
                    content_verdicts: dict[tuple[str, str], str] | None = None,
                    weights: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per (dataset, model, real set) with ablations trained; see the module doc.

    ``content_verdicts[(dataset, model)]`` is the content verdict of the computed answer: the
    planted truth is checked only for models that use content at all (for a model that
    ignores its features, "uses neither" says nothing about the data)."""
    if tests.empty:
        return pd.DataFrame(columns=COLUMNS)
    t = tests[(tests["family"] == "ablation") & (tests["metric"] == primary)]
    expected = expected_label(weights)
    rows = []
    for (ds, model, ref), g in t.groupby(["dataset", "a_model", "a_fs"], sort=True):
        used, ev = {}, []
        for r in g.itertuples():
            meta = feature_meta.get(r.b_fs, {})
            role, how = meta.get("ablated_role"), meta.get("replacement", "?")
            if role not in ROLES:
                continue
            hurt = bool(r.significant) and r.diff > 0
            used[role] = used.get(role, False) or hurt
            ev.append(f"{role}->{how}: {r.diff:+.4f} (p_adj {r.p_wilcoxon_adj:.2g})")
        if not used:
            continue
        lab = label_for(used)
        verdict = (content_verdicts or {}).get((ds, model))
        check = expected is not None and verdict in ("uses content", "uses content against some controls")
        rows.append(dict(dataset=ds, model=model, reference=ref, roles_ablated=" ".join(sorted(used)),
                         uses_visual=used.get("visual", np.nan), uses_textual=used.get("textual", np.nan),
                         label=lab, evidence="; ".join(ev), expected=expected if check else None,
                         matches_truth=(lab == expected) if check else np.nan))
    return pd.DataFrame(rows, columns=COLUMNS)
