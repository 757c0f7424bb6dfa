"""The modality-ablation label on hand-made comparisons (analysis/ablation.py): warm and cold
items together, one correction family per label, the per-slice labels beside it, and when the
planted truth is checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from mmrepr.analysis.ablation import ablation_labels, label_comparisons

META = {f"{how}_{role}_real": {"kind": "ablation", "reference": "real", "ablated_role": role, "replacement": how}
        for role in ("visual", "textual") for how in ("zeros", "noise_gaussian")}
WEIGHTS = {"image_weight": 1.0, "text_weight": 1.0}


def _rows(split: str, p: dict[str, float], diff: dict[str, float] | None = None, model: str = "M") -> list[dict]:
    diff = diff or {}
    return [dict(split=split, dataset="d", family="ablation", metric="Recall@20", a_model=model, a_fs="real",
                 b_model=model, b_fs=fs, n=100, mean_a=0.5, mean_b=0.5 - diff.get(fs, 0.05), diff=diff.get(fs, 0.05),
                 ci_low=0.0, ci_high=0.1, dz=0.2, p_wilcoxon=pv) for fs, pv in p.items()]


def test_a_modality_used_only_on_cold_items_is_used():
    warm = _rows("test", {"zeros_textual_real": 1e-6, "zeros_visual_real": 0.6})
    cold = _rows("test_cold", {"zeros_textual_real": 1e-5, "zeros_visual_real": 1e-4})
    lt = label_comparisons(pd.DataFrame(warm + cold), pd.DataFrame(), META, "Recall@20")
    assert len(lt) == 4 and set(lt["split"]) == {"test", "test_cold"}
    ab = ablation_labels(lt, {("d", "M"): ["no evidence of content use", "uses content"]}, WEIGHTS).iloc[0]
    assert ab["label_warm"] == "relies on textual" and ab["label_cold"] == "uses both modalities"
    assert ab["label"] == "uses both modalities" and ab["slices"] == "warm cold"
    # checked: the model uses content on cold items, though not on warm ones
    assert ab["expected"] == "uses both modalities" and bool(ab["matches_truth"])
    assert "cold: visual->zeros: +0.0500" in ab["evidence"]


def test_the_label_is_one_correction_family_over_both_slices():
    # alone in the cold slice with a 0.5 beside it, p 0.02 would be Holm 0.04 (significant);
    # in the label's family of four it is 0.06 (not)
    warm = _rows("test", {"zeros_textual_real": 0.001, "zeros_visual_real": 0.5})
    cold = _rows("test_cold", {"zeros_textual_real": 0.5, "zeros_visual_real": 0.02})
    lt = label_comparisons(pd.DataFrame(warm + cold), pd.DataFrame(), META, "Recall@20")
    np.testing.assert_allclose(lt["p_label_adj"], multipletests(lt["p_wilcoxon"], method="holm")[1])
    ab = ablation_labels(lt, {("d", "M"): ["uses content"]}, WEIGHTS).iloc[0]
    assert ab["label"] == "relies on textual" and not bool(ab["matches_truth"])
    # with no correction the same p-values give both
    lt0 = label_comparisons(pd.DataFrame(warm + cold), pd.DataFrame(), META, "Recall@20", correction="none")
    assert ablation_labels(lt0, {("d", "M"): ["uses content"]}, WEIGHTS).iloc[0]["label"] == "uses both modalities"


def test_a_significant_gain_from_removing_a_modality_is_not_use_and_whole_catalogue_rows_are_ignored():
    warm = _rows("test", {"zeros_textual_real": 1e-6, "zeros_visual_real": 1e-6},
                 diff={"zeros_visual_real": -0.05})  # visual zeroed does better
    whole = _rows("test_all", {"zeros_textual_real": 1e-9, "zeros_visual_real": 1e-9})
    other = _rows("test", {"zeros_textual_real": 1e-9}, model="N")
    lt = label_comparisons(pd.DataFrame(warm + whole + other), pd.DataFrame(), META, "Recall@20")
    assert "test_all" not in set(lt["split"])
    ab = ablation_labels(lt, {("d", "M"): "uses content"}, WEIGHTS).set_index("model")
    assert ab.loc["M", "label"] == "relies on textual" and ab.loc["M", "slices"] == "warm"
    assert pd.isna(ab.loc["M", "label_cold"])
    # N ablated only its textual role: its visual use is unknown, not "no"
    assert ab.loc["N", "roles_ablated"] == "textual" and np.isnan(ab.loc["N", "uses_visual"])
    # N's content verdict is unknown: its label is not checked against the truth
    assert pd.isna(ab.loc["N", "expected"]) and pd.isna(ab.loc["N", "matches_truth"])


def test_without_slice_results_the_warm_tests_are_used():
    tests = pd.DataFrame(_rows("test", {"zeros_textual_real": 1e-6, "noise_gaussian_visual_real": 1e-6})).drop(
        columns="split")
    lt = label_comparisons(pd.DataFrame(), tests, META, "Recall@20")
    assert list(lt["split"].unique()) == ["test"]
    assert ablation_labels(lt).iloc[0]["label"] == "uses both modalities"
    assert label_comparisons(pd.DataFrame(), pd.DataFrame(), META, "Recall@20").empty
    assert ablation_labels(label_comparisons(pd.DataFrame(), pd.DataFrame(), META, "Recall@20")).empty
