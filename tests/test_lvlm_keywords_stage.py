"""run_stage end to end on a tiny recorded mirror (real MiniLM, a handful of texts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmrepr.config import params_from_dict
from mmrepr.features.store import load_feature_set
from mmrepr.lvlm.prompts import ALLRECIPES

FITB = """asin,result
1,[Dish Type] {Chili} [Cuisine] {American} [Primary Ingredient] {Beans} [Flavor Profile] {Spicy} [Meal Type] {Dinner}
asin,result
2,Pecan Pie {Pie} {American} {Pecans} {Sweet} {Dessert}
3,"[Dish Type] {Chili} [Cuisine] {Mexican} [Primary Ingredient] {Beans} [Flavor Profile] {Spicy, Smoky} [Meal Type] {Lunch/Dinner}"
4,"I'm sorry, I cannot help with that."
99,[Dish Type] {Soup} [Cuisine] {French} [Primary Ingredient] {Onion} [Flavor Profile] {Savory} [Meal Type] {Lunch}
"""
DESCR = """Image Name,Keywords
1,A bowl of chili with beans.
2,A pecan pie on a plate.
3,
"""


@pytest.fixture()
def P(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "x").mkdir(parents=True)
    (mirror / "x" / "a__fitb.csv").write_text(FITB, encoding="utf-8")
    (mirror / "x" / "a__descr.csv").write_text(DESCR, encoding="utf-8")
    return params_from_dict({
        "profile": "t", "runs_dir": str(tmp_path / "runs"),
        "data": {"source": "allrecipes", "k_core": 0, "mirror_dir": str(mirror), "cache_dir": str(tmp_path / "cache")},
        "lvlm": {"source": "recorded", "prompt": ALLRECIPES, "recorded": [
            {"name": "a__fitb", "path": "x/a__fitb.csv"},
            {"name": "a__descr", "path": "x/a__descr.csv", "prompt_style": "descr"},
        ]},
    })


def test_run_stage_recorded(P):
    import torch

    torch.set_num_threads(1)
    from mmrepr.lvlm.stage import run_stage

    items = ["1", "2", "3", "4", "5"]  # 5: no answer; 99 in the answers is not an item
    S = run_stage(P, items, show_progress=False)
    assert S.feature_sets == ["a__fitb__onehot", "a__fitb__sbert", "a__descr__sbert"]
    rates = S.parse_rates.set_index("lvlm")
    assert rates.loc["a__fitb", "rows"] == 5 and rates.loc["a__fitb", "failures"] == 1
    cov = S.coverage.set_index("lvlm")
    assert cov.loc["a__fitb", "answers_not_in_items"] == 1
    assert cov.loc["a__fitb", "items_without_answer"] == 1
    assert cov.loc["a__fitb", "items_zero_onehot"] == 2  # item 4 (refusal) and item 5
    assert cov.loc["a__descr", "items_zero_dense"] == 3  # 3 (empty answer), 4, 5

    oh = load_feature_set(P.run_dir, "a__fitb__onehot")
    assert oh.item_ids == items and oh.meta["source"] == "lvlm_keywords" and oh.meta["kind"] == "real"
    assert oh.meta["lemmatizer"] == "simplemma" and oh.meta["lemmatizer_version"]
    A = oh.matrices["attributes"]
    cols = oh.meta["columns"]
    assert A.shape == (5, len(cols)) and set(np.unique(A)) <= {0.0, 1.0}
    assert (A[:3].sum(axis=1) == 5).all() and (A[3:] == 0).all()
    # "Lunch/Dinner" → first alternative, "lunch" (whichever cluster it joined)
    voc = pd.read_csv(P.run_dir / "lvlm" / "keywords" / "a__fitb__vocabulary.csv")
    lunch_col = voc[(voc["slot"] == "Meal Type") & voc["members"].str.split("|").apply(lambda m: "lunch" in m)]["column"]
    assert len(lunch_col) == 1 and A[2, cols.index(lunch_col.iloc[0])] == 1
    assert A[0, cols.index("Dish Type=chili")] == A[2, cols.index("Dish Type=chili")] == 1

    sb = load_feature_set(P.run_dir, "a__descr__sbert")
    T = sb.matrices["textual"]
    assert T.shape == (5, 384) and (np.abs(T[:2]).sum(axis=1) > 0).all() and (T[2:] == 0).all()

    out = P.run_dir / "lvlm"
    written = pd.read_csv(out / "answers" / "a__fitb.csv", dtype=str)
    assert list(written.columns) == ["asin", "result"] and len(written) == 5  # header repeat dropped
    fails = pd.read_csv(out / "reports" / "a__fitb__failures.csv", dtype=str)
    assert fails["asin"].tolist() == ["4"] and fails["status"].tolist() == ["refusal"]
    assert pd.read_csv(out / "reports" / "a__fitb__unknown_items.csv", dtype=str)["asin"].tolist() == ["99"]

    # a rerun encodes nothing new
    S2 = run_stage(P, items, show_progress=False)
    assert all(d["newly_encoded"] == 0 for d in S2.dense_stats.values())


def test_run_stage_needs_prompt_for_fitb(P):
    from mmrepr.lvlm.stage import StageError, run_stage

    P2 = P.model_copy(update={"lvlm": P.lvlm.model_copy(update={"prompt": None})})
    with pytest.raises(StageError, match="lvlm.prompt"):
        run_stage(P2, ["1"], show_progress=False)
