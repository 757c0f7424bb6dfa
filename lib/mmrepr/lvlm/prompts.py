"""The exact prompts of the study (STUDY.md, "Structured prompts"): parameters, every character kept.

The FITB prompts are byte-identical to STUDY.md's fenced blocks and to ``lvlm.prompt`` in
``params/{baby,pets,clothing,allrecipes}.yaml`` (tests/test_prompts.py checks both).
Clothing keeps its straight apostrophe, lowercase examples and trailing space, as published.
STUDY.md quotes only the end of the DESCR prompt ("…produce a comprehensive …"); that
quoted part is what :data:`DESCR` holds. MIS, the task-misaligned control, is complete.
"""

from __future__ import annotations

BABY = 'Imagine you’re creating metadata for an image database of baby products. Your task is to select five keywords that best represent the image content. Fill in the blanks: [Category], [Age Group], [Purpose], [Material], [Usage Context]. For example, your answer will be: [Category] {Feeding}, [Age Group] {Infant}, [Purpose] {Hygiene}, [Material] {Silicone}, [Usage Context] {Home}.'
PETS = 'Imagine you’re creating metadata for an image database of pet-related items. Your task is to select five keywords that best represent the image content. Fill in the blanks: [Category], [Pet Type], [Purpose], [Material], [Usage Context]. For example, your answer will be: [Category] {Toys}, [Pet Type] {Dog}, [Purpose] {Entertainment}, [Material] {Rubber}, [Usage Context] {Outdoor}.'
CLOTHING = "Imagine you're creating metadata for an image database of clothing items. Your task is to select five keywords that best represent the image content. Fill in the blanks: [Type], [Color], [Wear Location], [Material], [Style]. For example, your answer will be: [Type] {dress}, [Color] {red}, [Wear Location] {torso}, [Material] {cotton}, [Style] {casual}. "
ALLRECIPES = 'Imagine you’re creating metadata for a recipe recommendation system. Select five keywords that best represent the dish shown in the image. Fill in the blanks: [Dish Type], [Cuisine], [Primary Ingredient], [Flavor Profile], [Meal Type]. For example, your answer will be: [Dish Type] {Pasta} [Cuisine] {Italian} [Primary Ingredient] {Cheese} [Flavor Profile] {Savory} [Meal Type] {Dinner}.'
DESCR = 'produce a comprehensive yet concise description that accurately represents the visual content of the image in 30 words at most.'
MIS = 'You are a computer scientist. Describe in fewer than 30 words how you can use this instrument for building a rocket.'

FITB: dict[str, str] = {"baby": BABY, "pets": PETS, "clothing": CLOTHING, "allrecipes": ALLRECIPES}
PROMPTS: dict[str, str] = {**{f"{k}__fitb": v for k, v in FITB.items()}, "descr": DESCR, "mis": MIS}


def fitb_prompt(dataset: str) -> str:
    """The FITB prompt of a dataset (baby, pets, clothing, allrecipes)."""
    key = dataset.lower()
    if key not in FITB:
        raise KeyError(f"no FITB prompt for dataset {dataset!r}; known: {', '.join(FITB)}")
    return FITB[key]
