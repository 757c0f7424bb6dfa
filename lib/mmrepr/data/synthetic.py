"""A synthetic product catalogue whose modality signal is known (the offline ``demo`` data).

Every item has five planted attributes, each visible in a known place:

============  =========================  ==========================================
attribute     where it can be seen       how
============  =========================  ==========================================
category      image and text (shared)    a shape in the picture; named in the text
colour        image only                 fill colour of the shape
pattern       image only                 plain / stripes / dots / checks / zigzag
material      text only                  title, description, features, details
brand         text only                  title, description, ``store``
============  =========================  ==========================================

plus a free collaborative factor and a popularity score that appear in no content.
Each synthetic user has a preference for every attribute value and a latent factor; the
planted utility of item *i* for user *u* is (each group scaled to unit variance, so a
weight is the standard deviation of its group's contribution)::

    U(u,i) = image_weight  * (colour_u[c_i] + pattern_u[p_i]) / sqrt(2)
           + text_weight   * (material_u[m_i] + brand_u[b_i]) / sqrt(2)
           + shared_weight * category_u[k_i]
           + collab_weight * <f_u, f_i>              (f ~ N(0, I/sqrt(d)): unit variance)
           + popularity_skew * pop_i                 (pop ~ N(0, 1))

A user picks k_u items without replacement by Gumbel-top-k on U/temperature, rates them
1-5 from their standardised utility (so low-rated picks exist and the rating >= 4
threshold matters) and reviews them at increasing times.

The files are written in the exact Amazon Reviews 2023 format, so the real parser
(:mod:`mmrepr.data.amazon`) reads them unchanged::

    <out>/raw/review_categories/<category>.jsonl.gz
    <out>/raw/meta_categories/meta_<category>.jsonl.gz
    <out>/raw/.complete.json          (written last; a matching hash skips regeneration)
    <out>/images/<parent_asin>.png    (meta "images" URLs are file://<absolute path>)
    <out>/ground_truth/{items,users,interactions}.parquet, truth.json

Output is byte-identical for the same params, seed and output folder (the image URLs
hold the absolute folder path; everything else is independent of where it is written).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from mmrepr.progress import tqdm

from mmrepr.data.params import SyntheticParams
from mmrepr.io import atomic_path, read_json, sha256_json, write_json, write_parquet

# Bump when the generator's output changes for the same params (invalidates the marker).
GENERATOR_VERSION = 2

# ---- vocabularies ------------------------------------------------------------------------
# category -> the shape that shows it in the image (the shape is never named in text).
CATEGORY_SHAPES: dict[str, str] = {
    "Mug": "circle", "Lamp": "triangle", "Pillow": "square", "Vase": "diamond",
    "Clock": "hexagon", "Basket": "star", "Bottle": "cross", "Frame": "ring",
}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40), "orange": (245, 130, 20), "yellow": (240, 210, 30),
    "green": (50, 160, 60), "teal": (20, 150, 150), "blue": (40, 80, 210),
    "purple": (130, 50, 170), "pink": (240, 110, 180),
}
PATTERNS = ["plain", "stripes", "dots", "checks", "zigzag"]
MATERIALS = ["cotton", "ceramic", "wood", "glass", "steel", "bamboo", "leather", "linen"]
BRANDS = ["Norvale", "Kestrel", "Almsby", "Quillon", "Tavira", "Ostrand",
          "Velmor", "Hartwell", "Lumaro", "Pendry", "Corvane", "Ashgrove"]

ATTRIBUTES = ["category", "colour", "pattern", "material", "brand"]
VOCAB: dict[str, list[str]] = {
    "category": list(CATEGORY_SHAPES), "colour": list(COLOURS), "pattern": PATTERNS,
    "material": MATERIALS, "brand": BRANDS,
}
MODALITY = {"image_only": ["colour", "pattern"], "text_only": ["material", "brand"],
            "shared": ["category"], "no_content": ["collab", "popularity"]}

# Words that would leak an image-only attribute into the text: checked on every string
# written, so a template edit that leaks fails loudly instead of silently planting signal.
_LEAK_WORDS = sorted(set(COLOURS) | {"colour", "color", "colored", "coloured", "grey", "gray", "white",
                                     "black", "brown", "violet", "plain", "stripe", "stripes", "striped",
                                     "dot", "dots", "dotted", "polka", "check", "checks", "checked",
                                     "checkered", "plaid", "zigzag", "chevron", "pattern", "patterned", "print"})
LEAK_RE = re.compile(r"\b(" + "|".join(_LEAK_WORDS) + r")\b", re.IGNORECASE)

REVIEW_FIELDS = ["rating", "title", "text", "images", "asin", "parent_asin", "user_id",
                 "timestamp", "helpful_vote", "verified_purchase"]
META_FIELDS = ["main_category", "title", "average_rating", "rating_number", "features", "description",
               "price", "images", "videos", "store", "categories", "details", "parent_asin",
               "bought_together"]
MAIN_CATEGORY = "Synthetic Products"

_ALNUM = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
_T0_MS = int(dt.datetime(2018, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
_T1_MS = int(dt.datetime(2021, 6, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
_DAY_MS = 86_400_000
# Background and the darkening factor of the pattern inside the shape.
_BG = np.array([236.0, 233.0, 226.0])
_PATTERN_SHADE = 0.45
# rating = round(intercept + slope * (utility - user's k-th best) / user's sd + bias + N(0, 0.6)),
# calibrated so that about 75% of picks (demo and smoke sizes, temperature 0.3) are rated >= 4.
RATING_INTERCEPT = 3.7
RATING_SLOPE = 1.5


@dataclass(frozen=True)
class GroundTruth:
    """The planted truth: ``items`` (one row per parent_asin), ``users`` (one row per user_id,
    preferences in ``pref__<attribute>__<value>`` columns, factors in ``collab_<j>``),
    ``truth`` (weights, vocabularies, modality map, params, seed, summary statistics) and
    ``interactions`` (every generated review as (user_id, parent_asin, rating, timestamp, utility))."""

    items: pd.DataFrame
    users: pd.DataFrame
    truth: dict
    interactions: pd.DataFrame | None = None


# ---- seeding -------------------------------------------------------------------------------
_STREAMS = {"items": 1, "users": 2, "choices": 3, "reviews": 4, "text": 5, "missing": 6}


def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent generator per concern, so changing one part never shifts another's draws
    (e.g. image_weight=0 leaves the catalogue and the users' preferences unchanged)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) % (2**63), _STREAMS[stream]]))


def _unique_ids(rng: np.random.Generator, n: int, prefix: str, length: int, taken: set[str] | None = None) -> list[str]:
    taken = set() if taken is None else taken
    out: list[str] = []
    while len(out) < n:
        draws = rng.choice(_ALNUM, size=(n - len(out), length))
        for row in draws:
            s = prefix + "".join(row)
            if s not in taken:
                taken.add(s)
                out.append(s)
    return out


def params_hash(params: SyntheticParams, seed: int, category: str, out_dir: Path) -> str:
    """What the ``.complete.json`` marker records: output changes iff this changes."""
    return sha256_json({"params": params.model_dump(mode="json"), "seed": int(seed), "category": category,
                        "generator_version": GENERATOR_VERSION, "out_dir": str(Path(out_dir).resolve())})


# ---- items ---------------------------------------------------------------------------------
def sample_items(params: SyntheticParams, seed: int) -> pd.DataFrame:
    """The catalogue's planted attributes (independent uniform draws per attribute)."""
    rng = _rng(seed, "items")
    n = params.n_items
    asins = sorted(_unique_ids(rng, n, "B0", 8))
    df = pd.DataFrame({"parent_asin": asins})
    for attr in ATTRIBUTES:
        df[attr] = np.asarray(VOCAB[attr], dtype=object)[rng.integers(len(VOCAB[attr]), size=n)]
    df["shape"] = df["category"].map(CATEGORY_SHAPES)
    df["popularity"] = rng.standard_normal(n)
    factors = rng.standard_normal((n, params.collab_dim)) / params.collab_dim**0.25
    for j in range(params.collab_dim):
        df[f"collab_{j}"] = factors[:, j]
    # Per-item seeds for the image nuisance (jitter, noise) and the text template choice:
    # drawn apart from the attributes, so the image never depends on brand or material.
    df["image_seed"] = rng.integers(0, 2**31 - 1, size=n)
    df["text_seed"] = rng.integers(0, 2**31 - 1, size=n)
    df["price"] = np.round(rng.uniform(6.0, 80.0, size=n), 0) - 0.01
    # About 5% of real 2023 metadata has no price.
    df.loc[rng.random(n) < 0.05, "price"] = np.nan
    # A child ASIN per item: ~10% of reviews name it in "asin" (as real variant reviews do).
    df["variant_asin"] = _unique_ids(rng, n, "B0", 8, taken=set(asins))

    mrng = _rng(seed, "missing")
    n_miss = int(round(params.missing_fraction * n))
    df["has_description"] = True
    df["has_image"] = True
    df.loc[mrng.choice(n, size=n_miss, replace=False), "has_description"] = False
    df.loc[mrng.choice(n, size=n_miss, replace=False), "has_image"] = False
    return df


# ---- images --------------------------------------------------------------------------------
def _shape_mask(shape: str, s: int, cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    img = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(img)

    def poly(radii: list[float], start: float) -> list[tuple[float, float]]:
        k = len(radii)
        return [(cx + rr * math.cos(start + 2 * math.pi * j / k), cy + rr * math.sin(start + 2 * math.pi * j / k))
                for j, rr in enumerate(radii)]

    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        d.ellipse([cx - 0.5 * r, cy - 0.5 * r, cx + 0.5 * r, cy + 0.5 * r], fill=0)
    elif shape == "square":
        d.polygon(poly([r * 0.95] * 4, math.pi / 4 + rot), fill=255)
    elif shape == "diamond":
        d.polygon(poly([r, r * 0.7, r, r * 0.7], -math.pi / 2 + rot), fill=255)
    elif shape == "triangle":
        d.polygon(poly([r] * 3, -math.pi / 2 + rot), fill=255)
    elif shape == "hexagon":
        d.polygon(poly([r] * 6, rot), fill=255)
    elif shape == "star":
        d.polygon(poly([r, 0.45 * r] * 5, -math.pi / 2 + rot), fill=255)
    elif shape == "cross":
        w = 0.36 * r
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=255)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {sorted(set(CATEGORY_SHAPES.values()))}")
    return np.asarray(img) > 127


def _pattern_mask(pattern: str, s: int, period: float, phase: tuple[float, float]) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    xx += phase[0] * period
    yy += phase[1] * period
    half = period / 2
    if pattern == "plain":
        return np.zeros((s, s), dtype=bool)
    if pattern == "stripes":
        return (np.floor((xx + yy) / half) % 2) == 1
    if pattern == "checks":
        return ((np.floor(xx / half) + np.floor(yy / half)) % 2) == 1
    if pattern == "dots":
        dx = (xx % period) - half
        dy = (yy % period) - half
        return dx * dx + dy * dy < (0.3 * period) ** 2
    if pattern == "zigzag":
        tri = half * np.abs(2 * ((xx / period) % 1.0) - 1)
        return (np.floor((yy + tri) / half) % 2) == 1
    raise ValueError(f"unknown pattern {pattern!r}; known: {PATTERNS}")


def render_item_image(item: Mapping[str, Any], size: int) -> Image.Image:
    """The item's picture: its category's shape, filled with its colour and pattern, jittered and
    noised by its ``image_seed``. Reads only category, colour, pattern and image_seed, so text-only
    attributes (material, brand) cannot reach the pixels."""
    rng = np.random.default_rng(int(item["image_seed"]))
    ss = 2 * size  # supersample, then box-filter down: smooth edges, deterministic
    r = ss * rng.uniform(0.30, 0.40)
    cx = ss / 2 + ss * rng.uniform(-0.07, 0.07)
    cy = ss / 2 + ss * rng.uniform(-0.07, 0.07)
    rot = rng.uniform(-0.25, 0.25)
    phase = (float(rng.uniform()), float(rng.uniform()))
    shape = _shape_mask(CATEGORY_SHAPES[item["category"]], ss, cx, cy, r, rot)
    pat = _pattern_mask(item["pattern"], ss, period=ss / 7.0, phase=phase)
    colour = np.asarray(COLOURS[item["colour"]], dtype=np.float64)
    canvas = np.broadcast_to(_BG, (ss, ss, 3)).copy()
    canvas[shape] = colour
    canvas[shape & pat] = colour * _PATTERN_SHADE
    small = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB").resize(
        (size, size), Image.Resampling.BOX)
    arr = np.asarray(small, dtype=np.float64)
    # Mild texture: a soft illumination gradient plus pixel noise.
    gy, gx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    light = 1.0 + rng.uniform(-0.05, 0.05) * (gx - 0.5) + rng.uniform(-0.05, 0.05) * (gy - 0.5)
    arr = arr * light[..., None] + rng.normal(0.0, 4.0, size=arr.shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# ---- text ----------------------------------------------------------------------------------
_TITLE_TAILS = ["for Everyday Use", "Classic Edition", "Compact Size", "Home Essential", "Gift Ready",
                "Premium Build", "Easy Care"]
_DESC_OPENERS = [
    "This {category} from {brand} is made of {material}.",
    "{brand} crafts this {category} from {material}.",
    "A {material} {category} designed by {brand}.",
    "Meet the {brand} {category}, built from {material}.",
]
_DESC_MIDDLES = [
    "It suits a kitchen, a desk or a shelf.",
    "It is light, sturdy and easy to clean.",
    "It arrives ready to use.",
    "Each piece is inspected by hand before shipping.",
    "It makes a thoughtful gift.",
]
_MATERIAL_NOTES = {
    "cotton": "Soft {material} that keeps its shape wash after wash.",
    "ceramic": "Glazed {material}, fired for a smooth finish.",
    "wood": "Sustainably sourced solid {material}, sanded smooth.",
    "glass": "Clear, thick {material} that resists chips.",
    "steel": "Brushed stainless {material} that will not rust.",
    "bamboo": "Fast-growing {material}, light and strong.",
    "leather": "Full-grain {material} that ages beautifully.",
    "linen": "Breathable {material} with a natural texture.",
}
_REVIEW_TITLES = {
    5: ["Love it", "Perfect {category}", "Exactly what I wanted", "Five stars"],
    4: ["Very nice", "Good {category}", "Happy with it", "Solid purchase"],
    3: ["It's okay", "Average {category}", "Fine for the price", "Mixed feelings"],
    2: ["Not great", "Disappointed", "Expected more", "Meh"],
    1: ["Would not buy again", "Returned it", "Poor {category}", "Not for me"],
}
_REVIEW_TEXTS = {
    5: ["This {category} is wonderful. I use it every day.", "Beautiful {category}, arrived fast. Highly recommend.",
        "Exactly as described and it feels well made."],
    4: ["Nice {category}, does the job well.", "Good quality for the money. Would buy again.",
        "I like it, small flaws but overall happy."],
    3: ["The {category} is fine, nothing special.", "It works, but I expected a bit more.",
        "Okay overall. Shipping was slow."],
    2: ["The {category} looked better online.", "Not really my taste, and it feels cheap.",
        "Arrived with a scratch. Not impressed."],
    1: ["Broke after a week.", "Did not like this {category} at all.", "Returned it the same day."],
}


def item_text(item: Mapping[str, Any]) -> dict[str, Any]:
    """Title, description, features, details and categories of an item. Reads only category,
    material, brand and text_seed, so image-only attributes (colour, pattern) cannot reach the text."""
    rng = np.random.default_rng(int(item["text_seed"]))
    cat, mat, brand = item["category"], item["material"], item["brand"]
    fmt = {"category": cat.lower(), "material": mat, "brand": brand}
    title = f"{brand} {mat.capitalize()} {cat} - {_TITLE_TAILS[rng.integers(len(_TITLE_TAILS))]}"
    description = [_DESC_OPENERS[rng.integers(len(_DESC_OPENERS))].format(**fmt),
                   _DESC_MIDDLES[rng.integers(len(_DESC_MIDDLES))]]
    description[0] = description[0][0].upper() + description[0][1:]
    features = [_MATERIAL_NOTES[mat].format(**fmt),
                f"Genuine {brand} {cat.lower()} with a one-year warranty.",
                f"Dimensions: {int(rng.integers(8, 40))} x {int(rng.integers(8, 40))} x {int(rng.integers(4, 30))} cm."]
    details = {
        "Brand": brand,
        "Material": mat.capitalize(),
        "Item Weight": f"{round(float(rng.uniform(0.1, 3.0)), 2)} Pounds",
        "Date First Available": (dt.date(2016, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1500)))).strftime("%B %-d, %Y"),
    }
    categories = ["Home & Kitchen", f"{cat}s"]
    return {"title": title, "description": description, "features": features, "details": details,
            "categories": categories}


def _check_no_leak(where: str, *texts: Any) -> None:
    for t in texts:
        for s in (t if isinstance(t, (list, tuple)) else t.values() if isinstance(t, dict) else [t]):
            m = LEAK_RE.search(str(s))
            if m:
                raise AssertionError(f"{where}: image-only word {m.group(0)!r} leaked into text {s!r}")


# ---- users and choices ---------------------------------------------------------------------
def sample_users(params: SyntheticParams, seed: int) -> pd.DataFrame:
    rng = _rng(seed, "users")
    n = params.n_users
    df = pd.DataFrame({"user_id": sorted(_unique_ids(rng, n, "AG", 26))})
    cols: dict[str, np.ndarray] = {}
    for attr in ATTRIBUTES:
        prefs = rng.standard_normal((n, len(VOCAB[attr])))
        for j, v in enumerate(VOCAB[attr]):
            cols[f"pref__{attr}__{v}"] = prefs[:, j]
    factors = rng.standard_normal((n, params.collab_dim)) / params.collab_dim**0.25
    for j in range(params.collab_dim):
        cols[f"collab_{j}"] = factors[:, j]
    cols["rating_bias"] = rng.normal(0.0, 0.3, size=n)
    # How many items each user picks: a floor (survives a small k-core) plus an
    # over-dispersed (negative binomial) extra with the requested mean.
    cap = params.n_items - 1
    floor = min(params.min_interactions, cap, int(math.ceil(params.interactions_per_user)))
    extra_mean = max(params.interactions_per_user - floor, 0.0)
    if extra_mean > 0:
        shape = 2.0
        extra = rng.negative_binomial(shape, shape / (shape + extra_mean), size=n)
    else:
        extra = np.zeros(n, dtype=int)
    cols["n_interactions"] = np.minimum(floor + extra, cap).astype(np.int64)
    return pd.concat([df, pd.DataFrame(cols)], axis=1)


def _codes(items: pd.DataFrame, attr: str) -> np.ndarray:
    index = {v: j for j, v in enumerate(VOCAB[attr])}
    return items[attr].map(index).to_numpy(dtype=np.int64)


def _prefs(users: pd.DataFrame, attr: str) -> np.ndarray:
    return users[[f"pref__{attr}__{v}" for v in VOCAB[attr]]].to_numpy(dtype=np.float64)


def _collab(df: pd.DataFrame) -> np.ndarray:
    cols = sorted((c for c in df.columns if c.startswith("collab_")), key=lambda c: int(c.split("_")[1]))
    return df[cols].to_numpy(dtype=np.float64)


def utility_components(items: pd.DataFrame, users: pd.DataFrame, weights: Mapping[str, float]) -> dict[str, np.ndarray]:
    """The planted utility split by where its signal lives: (n_users, n_items) arrays, already
    weighted, keyed image / text / shared / collab / popularity; their sum is the utility.
    ``weights`` holds image_weight, text_weight, shared_weight, collab_weight, popularity_skew."""
    c = {a: _codes(items, a) for a in ATTRIBUTES}
    p = {a: _prefs(users, a) for a in ATTRIBUTES}
    s2 = math.sqrt(2.0)
    return {
        "image": weights["image_weight"] * (p["colour"][:, c["colour"]] + p["pattern"][:, c["pattern"]]) / s2,
        "text": weights["text_weight"] * (p["material"][:, c["material"]] + p["brand"][:, c["brand"]]) / s2,
        "shared": weights["shared_weight"] * p["category"][:, c["category"]],
        "collab": weights["collab_weight"] * (_collab(users) @ _collab(items).T),
        "popularity": np.broadcast_to(weights["popularity_skew"] * items["popularity"].to_numpy(dtype=np.float64),
                                      (len(users), len(items))),
    }


def _weights(params: SyntheticParams) -> dict[str, float]:
    return {k: float(getattr(params, k)) for k in
            ("image_weight", "text_weight", "shared_weight", "collab_weight", "popularity_skew", "temperature")}


def simulate_interactions(params: SyntheticParams, items: pd.DataFrame, users: pd.DataFrame, seed: int,
                          block: int = 512) -> pd.DataFrame:
    """Each user picks n_interactions items by Gumbel-top-k on utility/temperature and rates them.
    Users are processed in blocks, so memory stays at block x n_items whatever the user count."""
    rng = _rng(seed, "choices")
    w = _weights(params)
    n_u, n_i = len(users), len(items)
    ks = users["n_interactions"].to_numpy()
    bias = users["rating_bias"].to_numpy()
    t_start = rng.integers(_T0_MS, _T1_MS, size=n_u)
    parts = []
    bar = tqdm(total=n_u, desc="synthetic users", leave=False, disable=n_u < 2000)
    for b0 in range(0, n_u, block):
        b = np.arange(b0, min(b0 + block, n_u))
        util = sum(utility_components(items, users.iloc[b], w).values())
        order = np.argsort(-(util / params.temperature + rng.gumbel(size=util.shape)), axis=1, kind="stable")
        # Ratings from the utility measured against the user's own selection threshold (the
        # utility of their k-th best item) in units of their utility spread: a pick above the
        # threshold is usually a 4-5, a pick that only got in through the Gumbel draw a 1-3.
        # Relative to the threshold, the share of liked picks does not depend on k / n_items.
        thresh = -np.sort(-util, axis=1)[np.arange(len(b)), np.maximum(ks[b] - 1, 0)]
        z = (util - thresh[:, None]) / (util.std(axis=1, keepdims=True) + 1e-12)
        for r, u in enumerate(b):
            picked = order[r, : ks[u]]
            picked = picked[rng.permutation(len(picked))]  # time order unrelated to utility rank
            cont = RATING_INTERCEPT + RATING_SLOPE * z[r, picked] + bias[u] + rng.normal(0.0, 0.6, size=len(picked))
            gaps = 1000 + np.floor(rng.exponential(12 * _DAY_MS, size=len(picked))).astype(np.int64)
            parts.append(pd.DataFrame({"_u": u, "_i": picked, "rating": np.clip(np.rint(cont), 1, 5),
                                       "timestamp": t_start[u] + np.cumsum(gaps), "utility": util[r, picked]}))
        bar.update(len(b))
    bar.close()
    df = pd.concat(parts, ignore_index=True)
    df.insert(0, "user_id", users["user_id"].to_numpy()[df["_u"]])
    df.insert(1, "parent_asin", items["parent_asin"].to_numpy()[df["_i"]])
    df = df.drop(columns=["_u", "_i"]).astype({"rating": np.float64, "timestamp": np.int64, "utility": np.float64})
    return df.sort_values(["user_id", "timestamp"], kind="mergesort").reset_index(drop=True)


# ---- statistics on the planted signal -------------------------------------------------------
def preference_alignment(gt: GroundTruth, interactions: pd.DataFrame | None = None) -> pd.Series:
    """Per attribute: mean over users of the correlation between the user's preference for each
    value and how over-represented that value is among the user's picks (share picked minus share
    in the catalogue). About 0 when the attribute does not drive choices; clearly positive when it
    does. ``interactions`` (user_id, parent_asin) defaults to the generated ones."""
    inter = gt.interactions if interactions is None else interactions
    if inter is None:
        raise ValueError("no interactions given and the ground truth holds none")
    items = gt.items.set_index("parent_asin")
    uidx = {u: j for j, u in enumerate(gt.users["user_id"])}
    out = {}
    for attr in ATTRIBUTES:
        vocab = VOCAB[attr]
        base = items[attr].value_counts(normalize=True).reindex(vocab, fill_value=0.0).to_numpy()
        counts = pd.crosstab(inter["user_id"], items.loc[inter["parent_asin"], attr].to_numpy()).reindex(columns=vocab, fill_value=0)
        share = counts.to_numpy(dtype=float) / counts.to_numpy().sum(axis=1, keepdims=True)
        prefs = _prefs(gt.users, attr)[[uidx[u] for u in counts.index]]
        excess = share - base
        a = prefs - prefs.mean(axis=1, keepdims=True)
        b = excess - excess.mean(axis=1, keepdims=True)
        denom = np.sqrt((a * a).sum(1) * (b * b).sum(1))
        ok = denom > 0
        out[attr] = float(np.mean((a * b).sum(1)[ok] / denom[ok])) if ok.any() else float("nan")
    return pd.Series(out, name="alignment")


# ---- writing -------------------------------------------------------------------------------
def _write_jsonl_gz(path: Path, records: list[dict]) -> None:
    # filename="" and mtime=0 keep the gzip header free of the temp name and the clock.
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            for rec in records:
                gz.write((json.dumps(rec) + "\n").encode("utf-8"))


def _review_records(inter: pd.DataFrame, items: pd.DataFrame, seed: int) -> list[dict]:
    rng = _rng(seed, "reviews")
    info = items.set_index("parent_asin")[["category", "variant_asin"]]
    cats = info["category"].to_dict()
    variants = info["variant_asin"].to_dict()
    n = len(inter)
    use_variant = rng.random(n) < 0.10
    votes = rng.geometric(0.6, size=n) - 1
    verified = rng.random(n) < 0.9
    pick_t = rng.integers(0, 1 << 30, size=n)
    pick_x = rng.integers(0, 1 << 30, size=n)
    records = []
    for j, row in enumerate(inter.itertuples(index=False)):
        r = int(row.rating)
        fmt = {"category": cats[row.parent_asin].lower()}
        title = _REVIEW_TITLES[r][pick_t[j] % len(_REVIEW_TITLES[r])].format(**fmt)
        text = _REVIEW_TEXTS[r][pick_x[j] % len(_REVIEW_TEXTS[r])].format(**fmt)
        records.append({
            "rating": float(row.rating), "title": title, "text": text, "images": [],
            "asin": variants[row.parent_asin] if use_variant[j] else row.parent_asin,
            "parent_asin": row.parent_asin, "user_id": row.user_id, "timestamp": int(row.timestamp),
            "helpful_vote": int(votes[j]), "verified_purchase": bool(verified[j]),
        })
    return records


def _meta_records(items: pd.DataFrame, inter: pd.DataFrame, image_dir: Path) -> list[dict]:
    agg = inter.groupby("parent_asin")["rating"].agg(["mean", "size"])
    records = []
    for row in items.to_dict("records"):
        t = item_text(row)
        _check_no_leak(f"item {row['parent_asin']}", t["title"], t["description"], t["features"], t["details"],
                       t["categories"], row["brand"])
        images = []
        if row["has_image"]:
            url = "file://" + str((image_dir / f"{row['parent_asin']}.png").resolve())
            images = [{"thumb": url, "large": url, "variant": "MAIN", "hi_res": url}]
        n_r = int(agg["size"].get(row["parent_asin"], 0))
        avg = round(float(agg["mean"].get(row["parent_asin"], 0.0)), 1) if n_r else 0.0
        price = None if pd.isna(row["price"]) else round(float(row["price"]), 2)
        records.append({
            "main_category": MAIN_CATEGORY, "title": t["title"], "average_rating": avg, "rating_number": n_r,
            "features": t["features"], "description": t["description"] if row["has_description"] else [],
            "price": price, "images": images, "videos": [], "store": row["brand"],
            "categories": t["categories"], "details": t["details"], "parent_asin": row["parent_asin"],
            "bought_together": None,
        })
    return records


def _summary(items: pd.DataFrame, users: pd.DataFrame, inter: pd.DataFrame, params: SyntheticParams) -> dict:
    comps = utility_components(items, users.iloc[:2000], _weights(params))  # a bounded sample is enough
    total = sum(comps.values())
    var_total = float(total.var())
    gt = GroundTruth(items, users, {}, inter)
    return {
        "n_items": len(items), "n_users": len(users), "n_interactions": len(inter),
        "n_items_without_description": int((~items["has_description"]).sum()),
        "n_items_without_image": int((~items["has_image"]).sum()),
        "n_items_without_interactions": int(len(items) - inter["parent_asin"].nunique()),
        "share_rating_ge_4": float((inter["rating"] >= 4).mean()),
        "rating_counts": {str(int(k)): int(v) for k, v in inter["rating"].value_counts().sort_index().items()},
        # Share of the utility's variance (over all user-item pairs) carried by each group.
        "utility_variance_share": {k: (float(v.var()) / var_total if var_total > 0 else 0.0) for k, v in comps.items()},
        "preference_alignment": {k: round(v, 6) for k, v in preference_alignment(gt).to_dict().items()},
    }


def generate_catalogue(params: SyntheticParams, out_dir: Path, seed: int, category: str = "Synthetic_Products") -> Path:
    """Write the synthetic catalogue under ``out_dir`` (see the module docstring) and return ``out_dir``.

    Skipped when ``out_dir/raw/.complete.json`` records the same params hash (params, seed,
    category, generator version and output folder)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", category):
        raise ValueError(f"category {category!r}: use letters, digits, '_', '.', '-' (it becomes a file name)")
    out_dir = Path(out_dir).resolve()
    raw = out_dir / "raw"
    marker = raw / ".complete.json"
    review_path = raw / "review_categories" / f"{category}.jsonl.gz"
    meta_path = raw / "meta_categories" / f"meta_{category}.jsonl.gz"
    gt_dir = out_dir / "ground_truth"
    image_dir = out_dir / "images"
    h = params_hash(params, seed, category, out_dir)
    if marker.is_file() and review_path.is_file() and meta_path.is_file() and (gt_dir / "truth.json").is_file():
        try:
            if read_json(marker).get("params_hash") == h:
                return out_dir
        except (OSError, ValueError):
            pass  # an unreadable marker means: regenerate
    marker.unlink(missing_ok=True)

    items = sample_items(params, seed)
    users = sample_users(params, seed)
    inter = simulate_interactions(params, items, users, seed)

    image_dir.mkdir(parents=True, exist_ok=True)
    wanted = {f"{a}.png" for a in items.loc[items["has_image"], "parent_asin"]}
    for stale in image_dir.glob("*.png"):  # left by an earlier run with other params
        if stale.name not in wanted:
            stale.unlink()
    for row in tqdm(items[items["has_image"]].to_dict("records"), desc="synthetic images", leave=False):
        data = png_bytes(render_item_image(row, params.image_size))
        path = image_dir / f"{row['parent_asin']}.png"
        if path.is_file() and path.read_bytes() == data:
            continue
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)

    truth = {
        "generator_version": GENERATOR_VERSION, "seed": int(seed), "category": category,
        "params": params.model_dump(mode="json"), "params_hash": h,
        "weights": _weights(params),
        "modalities": MODALITY,
        "vocabularies": VOCAB,
        "category_shapes": CATEGORY_SHAPES,
        "colours_rgb": {k: list(v) for k, v in COLOURS.items()},
        "utility": ("image_weight*(colour+pattern)/sqrt2 + text_weight*(material+brand)/sqrt2 + "
                    "shared_weight*category + collab_weight*<f_u,f_i> + popularity_skew*popularity; "
                    "preferences N(0,1) per value; choices Gumbel-top-k on utility/temperature"),
        "summary": _summary(items, users, inter, params),
    }
    write_parquet(items, gt_dir / "items.parquet")
    write_parquet(users, gt_dir / "users.parquet")
    write_parquet(inter, gt_dir / "interactions.parquet")
    write_json(gt_dir / "truth.json", truth)

    _write_jsonl_gz(meta_path, _meta_records(items, inter, image_dir))
    _write_jsonl_gz(review_path, _review_records(inter, items, seed))
    write_json(marker, {"params_hash": h, "generator_version": GENERATOR_VERSION, "seed": int(seed),
                        "category": category})
    return out_dir


def load_ground_truth(gt_dir: Path) -> GroundTruth:
    """Read ``ground_truth/`` back (as written by :func:`generate_catalogue`)."""
    gt_dir = Path(gt_dir)
    need = ["items.parquet", "users.parquet", "truth.json"]
    missing = [n for n in need if not (gt_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{gt_dir}: missing {missing}; generate the synthetic catalogue first")
    inter_path = gt_dir / "interactions.parquet"
    return GroundTruth(
        items=pd.read_parquet(gt_dir / "items.parquet"),
        users=pd.read_parquet(gt_dir / "users.parquet"),
        truth=read_json(gt_dir / "truth.json"),
        interactions=pd.read_parquet(inter_path) if inter_path.is_file() else None,
    )
