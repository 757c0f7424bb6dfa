"""The FITB parser on every answer shape found in the released files, and on adversarial text."""

from __future__ import annotations

import pytest

from mmrepr.lvlm.parse import (
    STATUS_EMPTY, STATUS_PARTIAL, STATUS_REFUSAL, STATUS_REPAIRED, STATUS_STRICT, STATUS_UNPARSED,
    FitbParser, ParseError, labels_from_prompt, parse_answers, parse_report,
)
from mmrepr.lvlm.prompts import ALLRECIPES, BABY, CLOTHING

AR = ["Dish Type", "Cuisine", "Primary Ingredient", "Flavor Profile", "Meal Type"]
BB = ["Category", "Age Group", "Purpose", "Material", "Usage Context"]


@pytest.fixture(scope="module")
def ar():
    return FitbParser(AR)


@pytest.fixture(scope="module")
def bb():
    return FitbParser(BB)


def test_labels_from_prompts():
    assert labels_from_prompt(ALLRECIPES) == AR
    assert labels_from_prompt(BABY) == BB
    assert labels_from_prompt(CLOTHING) == ["Type", "Color", "Wear Location", "Material", "Style"]
    with pytest.raises(ParseError):
        labels_from_prompt("Fill in the blanks: [A], [B].")
    with pytest.raises(ParseError):
        labels_from_prompt("")


# (answer text as released, expected five values, expected status)
SHAPES = [
    # strict (qwen2vl-7b)
    ("[Dish Type] {Chili} [Cuisine] {American} [Primary Ingredient] {Beans} [Flavor Profile] {Spicy} [Meal Type] {Dinner}",
     ["Chili", "American", "Beans", "Spicy", "Dinner"], STATUS_STRICT),
    # trailing period (phi35vl)
    ("[Dish Type] {Pasta} [Cuisine] {Italian} [Primary Ingredient] {Cheese} [Flavor Profile] {Savory} [Meal Type] {Dinner}.",
     ["Pasta", "Italian", "Cheese", "Savory", "Dinner"], STATUS_STRICT),
    # Python list repr (phi4mm)
    ("['[Dish Type] {Dip} [Cuisine] {American} [Primary Ingredient] {Carrot} [Flavor Profile] {Sweet and Savory} [Meal Type] {Snack}']",
     ["Dip", "American", "Carrot", "Sweet and Savory", "Snack"], STATUS_STRICT),
    ('["[Dish Type] {Shepherd\'s Pie} [Cuisine] {British} [Primary Ingredient] {Ground Meat} [Flavor Profile] {Rich} [Meal Type] {Main Course}"]',
     ["Shepherd's Pie", "British", "Ground Meat", "Rich", "Main Course"], STATUS_STRICT),
    # alternatives: a, b and a/b (qwen25vl-3b, qwen25vl-7b)
    ("[Dish Type] {Chili} [Cuisine] {American} [Primary Ingredient] {Beans} [Flavor Profile] {Spicy, Sweet, Savory} [Meal Type] {Lunch, Dinner}",
     ["Chili", "American", "Beans", "Spicy", "Lunch"], STATUS_STRICT),
    ("[Dish Type] {Fries} [Cuisine] {American} [Primary Ingredient] {Potatoes} [Flavor Profile] {Herbaceous} [Meal Type] {Lunch/Dinner}",
     ["Fries", "American", "Potatoes", "Herbaceous", "Lunch"], STATUS_STRICT),
    # braces without labels after a dish title (phi35vl)
    ("Pecan Pie {Pie} {American} {Pecans} {Sweet} {Dessert}", ["Pie", "American", "Pecans", "Sweet", "Dessert"], STATUS_REPAIRED),
    ("Tiramisu {Dessert} {Italian} {Coffee} {Rich, Creamy} {Dessert}", ["Dessert", "Italian", "Coffee", "Rich", "Dessert"], STATUS_REPAIRED),
    # first label replaced by a title (phi35vl)
    ("Chili {Soup} [Cuisine] {American} [Primary Ingredient] {Beans} [Flavor Profile] {Spicy} [Meal Type] {Dinner}.",
     ["Soup", "American", "Beans", "Spicy", "Dinner"], STATUS_REPAIRED),
    # bare labels (phi35vl)
    ("Dish Type {Pastry} Cuisine {French} Primary Ingredient {Butter} Flavor Profile {Sweet} Meal Type {Dessert}.",
     ["Pastry", "French", "Butter", "Sweet", "Dessert"], STATUS_REPAIRED),
    ("Dish Type {Raw}, Cuisine {Vegetarian}, Primary Ingredient {Carrot}, Flavor Profile {Sweet}, Meal Type {Appetizer}.",
     ["Raw", "Vegetarian", "Carrot", "Sweet", "Appetizer"], STATUS_REPAIRED),
    # the value written before its braced label (phi35vl)
    ("Cornbread {Dish Type} [Cuisine] {American} [Primary Ingredient] {Corn} [Flavor Profile] {Sweet} [Meal Type] {Breakfast}.",
     ["Cornbread", "American", "Corn", "Sweet", "Breakfast"], STATUS_REPAIRED),
    ("Thai Green Curry {Dish Type} {Cuisine} {Thai} {Primary Ingredient} {Coconut Milk} [Flavor Profile] {Spicy} [Meal Type] {Dinner}.",
     ["Thai Green Curry", "Thai", "Coconut Milk", "Spicy", "Dinner"], STATUS_REPAIRED),
    # label without its space (qwen3vl-4b); value before an empty label (phi35vl)
    ("[Dish Type] {Stew} [Cuisine] {Southern} [Primary Ingredient] {Beans} [Flavor Profile] {Sweet and Savory} [MealType] {Dinner}",
     ["Stew", "Southern", "Beans", "Sweet and Savory", "Dinner"], STATUS_REPAIRED),
    ("French toast [Dish Type] [Cuisine] [French] [Primary Ingredient] [Bread] [Flavor Profile] [Sweet] [Meal Type] [Breakfast].",
     ["French toast", "French", "Bread", "Sweet", "Breakfast"], STATUS_REPAIRED),
    # quoted label (phi35vl)
    ("['Dish Type'] {Fries} [Cuisine] {French} [Primary Ingredient] {Potato} [Flavor Profile] {Spicy} [Meal Type] {Snack}.",
     ["Fries", "French", "Potato", "Spicy", "Snack"], STATUS_REPAIRED),
    # labels without braces (qwen25vl-3b)
    ("[Dish Type] Deviled Egg [Cuisine] American [Primary Ingredient] Hard-Boiled Egg [Flavor Profile] Creamy, Spicy [Meal Type] Snack",
     ["Deviled Egg", "American", "Hard-Boiled Egg", "Creamy", "Snack"], STATUS_REPAIRED),
    # first labels replaced by values (qwen25vl-3b)
    ("[Fried Shrimp] {American} [Primary Ingredient] {Shrimp} [Flavor Profile] {Spicy} [Meal Type] {Appetizer}",
     ["Fried Shrimp", "American", "Shrimp", "Spicy", "Appetizer"], STATUS_REPAIRED),
    ("[Stuffed Tomatoes] {Italian} [Tomato] [Creamy, Herby] [Appetizer]", ["Stuffed Tomatoes", "Italian", "Tomato", "Creamy", "Appetizer"], STATUS_REPAIRED),
    ("[Lemon Bars] [American] [Lemon] [Sweet] [Snack]", ["Lemon Bars", "American", "Lemon", "Sweet", "Snack"], STATUS_REPAIRED),
    # parenthetical and 'or' alternative (qwen25vl-3b)
    ("[Pie] {British} [Primary Ingredient] {Filling (not visible)} [Flavor Profile] {Savory} [Meal Type] {Lunch or Dinner}",
     ["Pie", "British", "Filling", "Savory", "Lunch"], STATUS_REPAIRED),
    # mismatched / missing closers (qwen25vl-7b, qwen3vl-4b)
    ("[Dish Type] {Brownies} [Cuisine] {American} [Primary Ingredient] {Chocolate] [Flavor Profile] {Sweet} [Meal Type] {Snack}",
     ["Brownies", "American", "Chocolate", "Sweet", "Snack"], STATUS_REPAIRED),
    ("[Dish Type] {Bread} [Cuisine] {British} [Primary Ingredient] {Butter} [Flavor Profile] {Sweet & Rich} [Meal Type] {Breakfast",
     ["Bread", "British", "Butter", "Sweet & Rich", "Breakfast"], STATUS_REPAIRED),
    # five bare comma-separated values (phi35vl)
    ("Pasta Salad, Italian, Mozzarella, Savory, Lunch", ["Pasta Salad", "Italian", "Mozzarella", "Savory", "Lunch"], STATUS_REPAIRED),
    # N/A is a null, not the alternative "N" (phi35vl)
    ("Juice {Beverage} {N/A} {Fruit} {Sweet} {Drink} {Morning}", ["Beverage", None, "Fruit", "Sweet", "Drink"], STATUS_PARTIAL),
    # null slots (qwen2vl-7b) and an all-None answer with a note (qwen3vl-8b)
    ("[Dish Type] {Tea} [Cuisine] {Unknown} [Primary Ingredient] {Tea Leaves} [Flavor Profile] {Spicy} [Meal Type] {Snack}",
     ["Tea", None, "Tea Leaves", "Spicy", "Snack"], STATUS_PARTIAL),
    ("[Dish Type] {None} [Cuisine] {None} [Primary Ingredient] {None} [Flavor Profile] {None} [Meal Type] {None}\n\n"
     "Note: The image depicts a sunset sky with golden clouds and silhouetted tree tops — it contains no visible dish or food.",
     [None] * 5, STATUS_REFUSAL),
]


@pytest.mark.parametrize("text,expected,status", SHAPES, ids=[s[0][:40] for s in SHAPES])
def test_real_shapes(ar, text, expected, status):
    p = ar.parse(text)
    assert p.values == expected
    assert p.status == status
    if status not in (STATUS_STRICT, STATUS_REPAIRED):
        assert p.reason  # every incomplete row says why


@pytest.mark.parametrize("text,expected", [
    ("[Category] {Baby Care}, [Age Group] {Infant}, [Purpose] {Healing}, [Material] {Shea Butter}, [Usage Context] {Skin Care}.",
     ["Baby Care", "Infant", "Healing", "Shea Butter", "Skin Care"]),
    ("Category: Feeding, Age Group: Infant, Purpose: Hygiene, Material: Silicone, Usage Context: Home",
     ["Feeding", "Infant", "Hygiene", "Silicone", "Home"]),
    ("Category: Feeding\nAge Group: Infant / Toddler\nPurpose: Hygiene.\nMaterial: Silicone\nUsage Context: Home.",
     ["Feeding", "Infant", "Hygiene", "Silicone", "Home"]),
    ("- **Category**: Stroller\n- **Age Group**: Toddler\n- **Purpose**: Travel\n- **Material**: Aluminum\n- **Usage Context**: Outdoor",
     ["Stroller", "Toddler", "Travel", "Aluminum", "Outdoor"]),
    ("Here are the keywords: [Category] {Toys} [Age Group] {Baby} [Purpose] {Play} [Material] {Plastic} [Usage Context] {Home}",
     ["Toys", "Baby", "Play", "Plastic", "Home"]),
    # labels out of order are matched by name, not by position
    ("[Age Group] {Infant} [Category] {Bottle} [Purpose] {Feeding} [Material] {Glass} [Usage Context] {Home}",
     ["Bottle", "Infant", "Feeding", "Glass", "Home"]),
])
def test_baby_and_colon_shapes(bb, text, expected):
    p = bb.parse(text)
    assert p.values == expected
    assert p.complete


def test_refusals_and_empty(ar):
    assert ar.parse("").status == STATUS_EMPTY
    assert ar.parse("   \n").status == STATUS_EMPTY
    assert ar.parse(None).status == STATUS_EMPTY
    p = ar.parse("I'm sorry, but I cannot provide assistance with that request.")
    assert p.status == STATUS_REFUSAL and not p.complete
    p = ar.parse("Sip back and relax.")
    assert p.status in (STATUS_PARTIAL, STATUS_UNPARSED) and not p.complete


def test_adversarial(ar):
    huge = "[Dish Type] {" + "Pretzel " * 50_000 + "} [Cuisine] {German}"
    p = ar.parse(huge)  # truncated, value too long → not a keyword; no crash, bounded time
    assert not p.complete and p.values[0] is None
    p = ar.parse("[Dish Type] {Crème brûlée} [Cuisine] {Française} [Primary Ingredient] {Œuf} [Flavor Profile] {甘い} [Meal Type] {Dessert}")
    assert p.values == ["Crème brûlée", "Française", "Œuf", "甘い", "Dessert"] and p.status == STATUS_STRICT
    # injected braces/brackets inside values do not shift the slots
    p = ar.parse("[Dish Type] {Pasta {with} sauce} [Cuisine] {Italian} [Primary Ingredient] {[Cheese]} "
                 "[Flavor Profile] {Savory} [Meal Type] {Dinner}")
    assert p.values[1:] == ["Italian", "Cheese", "Savory", "Dinner"]
    assert not ar.parse("{}{}{}{}{}").complete
    assert not ar.parse("[[[[[{{{{{").complete
    assert not ar.parse("['unterminated").complete
    p = ar.parse("[Dish Type] {Pie} [Dish Type] {Cake} [Cuisine] {American} [Primary Ingredient] {Apple} "
                 "[Flavor Profile] {Sweet} [Meal Type] {Dessert}")
    assert p.values[0] == "Pie" and p.complete  # a repeated label does not overwrite


def test_parse_answers_and_report():
    import pandas as pd

    answers = pd.DataFrame({
        "asin": ["1", "2", "3", "4"],
        "result": [SHAPES[0][0], "Pecan Pie {Pie} {American} {Pecans} {Sweet} {Dessert}", "", "I'm sorry, I cannot help."],
    })
    parsed = parse_answers(answers, AR)
    assert list(parsed.columns) == ["asin", *AR, "status", "reason", "notes"]
    rep = parse_report(parsed, AR, answers, "x")
    assert rep["rows"] == 4 and rep["complete_rows"] == 2 and rep["strict_rows"] == 1
    assert rep["slots_filled"]["Cuisine"] == 2
    reasons = {f["status"]: f for f in rep["failures"]}
    assert set(reasons) == {STATUS_EMPTY, STATUS_REFUSAL}
    assert reasons[STATUS_REFUSAL]["examples"][0]["asin"] == "4"
