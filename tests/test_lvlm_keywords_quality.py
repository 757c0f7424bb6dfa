"""Quality tables on tiny hand-checked inputs."""

from __future__ import annotations

import pandas as pd

from mmrepr.lvlm import quality
from mmrepr.lvlm.parse import parse_answers, parse_report

LABELS = ["Dish Type", "Cuisine", "Primary Ingredient", "Flavor Profile", "Meal Type"]


def _asg(rows):
    return pd.DataFrame(rows, columns=["asin", "slot", "normalised"])


def test_agreement_table():
    a = _asg([("1", "Cuisine", "italian"), ("2", "Cuisine", "mexican"), ("3", "Cuisine", "french"), ("4", "Cuisine", "thai")])
    b = _asg([("1", "Cuisine", "italian"), ("2", "Cuisine", "italian"), ("3", "Cuisine", "french")])
    t = quality.agreement_table({"a": a, "b": b}, ["Cuisine"])
    row = t.iloc[0]
    assert row["items"] == 3  # only items both filled
    assert abs(row["same_keyword_%"] - 200 / 3) < 1e-9
    assert -1 <= row["cohen_kappa"] < 1


def test_format_table_and_hard_examples():
    answers = pd.DataFrame({"asin": ["1", "2", "3"], "result": [
        "[Dish Type] {Pie} [Cuisine] {American} [Primary Ingredient] {Apple} [Flavor Profile] {Sweet} [Meal Type] {Dessert}",
        "Pecan Pie {Pie} {American} {Pecans} {Sweet} {Dessert}",
        "Sorry, I cannot help.",
    ]})
    parsed = parse_answers(answers, LABELS)
    rep = parse_report(parsed, LABELS, answers, "m")
    fmt = quality.format_table([rep], LABELS).iloc[0]
    assert abs(fmt["strict_format_%"] - 100 / 3) < 1e-9
    assert abs(fmt["all_five_slots_%"] - 200 / 3) < 1e-9
    assert fmt["refusal"] == 1 and fmt["repaired"] == 1
    ex = quality.hard_examples(parsed, answers, n=8)
    assert set(ex["asin"]) == {"2", "3"} and "answer" in ex.columns


def test_freetext_table():
    t = quality.freetext_table({"d": pd.DataFrame({"asin": ["1", "2"], "result": ["a b c", "I'm sorry, I cannot."]})}, max_words=2)
    r = t.iloc[0]
    assert r["refusal_%"] == 50 and r["within_2_words_%"] == 0 and r["mean_words"] == 3.5
