"""The synthetic catalogue: Amazon 2023 format, determinism, modality purity, planted signal."""

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmrepr.data import synthetic as S
from mmrepr.data.params import SyntheticParams
from mmrepr.data.synthetic import generate_catalogue, load_ground_truth

CAT = "Synthetic_Products"
# The published Amazon Reviews 2023 field names, written out here (not imported) so a change
# in the generator cannot silently change what the test expects.
REVIEW_KEYS = ["rating", "title", "text", "images", "asin", "parent_asin", "user_id", "timestamp",
               "helpful_vote", "verified_purchase"]
META_KEYS = {"main_category", "title", "average_rating", "rating_number", "features", "description", "price",
             "images", "videos", "store", "categories", "details", "parent_asin", "bought_together"}
SMALL = SyntheticParams(n_users=60, n_items=50, interactions_per_user=8, image_size=24)


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def paths(out: Path) -> dict[str, Path]:
    return {"reviews": out / "raw" / "review_categories" / f"{CAT}.jsonl.gz",
            "meta": out / "raw" / "meta_categories" / f"meta_{CAT}.jsonl.gz",
            "marker": out / "raw" / ".complete.json", "images": out / "images", "gt": out / "ground_truth"}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    generate_catalogue(SMALL, out, seed=11)
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- determinism ---------------------------------------------------------------------------
def test_same_seed_byte_identical_other_seed_differs(tmp_path, small):
    a = tree_bytes(small)
    generate_catalogue(SMALL, tmp_path / "b", seed=11)
    b = tree_bytes(tmp_path / "b")
    assert sorted(a) == sorted(b)
    for name in a:
        if name.startswith("raw/meta_categories"):
            # Image URLs hold the absolute output folder; everything else must match.
            ma = gzip.decompress(a[name]).decode().replace(str(small.resolve()), "<OUT>")
            mb = gzip.decompress(b[name]).decode().replace(str((tmp_path / "b").resolve()), "<OUT>")
            assert ma == mb
        elif name.startswith("raw/.complete") or name == "ground_truth/truth.json":
            continue  # both hold the params hash, which includes the output folder
        else:
            assert a[name] == b[name], name
    # Regenerating into the same folder gives the very same bytes, meta and marker included.
    regen = tmp_path / "c"
    generate_catalogue(SMALL, regen, seed=11)
    first = tree_bytes(regen)
    paths(regen)["marker"].unlink()
    generate_catalogue(SMALL, regen, seed=11)
    assert tree_bytes(regen) == first

    generate_catalogue(SMALL, tmp_path / "d", seed=12)
    d = tree_bytes(tmp_path / "d")
    assert d["raw/review_categories/Synthetic_Products.jsonl.gz"] != a["raw/review_categories/Synthetic_Products.jsonl.gz"]
    assert set(k for k in d if k.startswith("images/")) != set(k for k in a if k.startswith("images/"))


# ---- format --------------------------------------------------------------------------------
def test_reviews_have_exactly_the_2023_fields_and_types(small):
    reviews = read_jsonl_gz(paths(small)["reviews"])
    assert len(reviews) >= SMALL.n_users * SMALL.min_interactions
    for j, r in enumerate(reviews):
        assert list(r) == REVIEW_KEYS, f"line {j}: {list(r)}"
        assert isinstance(r["rating"], float) and 1.0 <= r["rating"] <= 5.0 and r["rating"] == int(r["rating"])
        assert isinstance(r["title"], str) and r["title"] and isinstance(r["text"], str) and r["text"]
        assert r["images"] == []
        assert re.fullmatch(r"B0[A-Z0-9]{8}", r["parent_asin"]) and re.fullmatch(r"B0[A-Z0-9]{8}", r["asin"])
        assert re.fullmatch(r"A[A-Z0-9]{27}", r["user_id"])
        assert type(r["timestamp"]) is int and 1.4e12 < r["timestamp"] < 1.8e12  # ms since epoch
        assert type(r["helpful_vote"]) is int and r["helpful_vote"] >= 0
        assert type(r["verified_purchase"]) is bool
    df = pd.DataFrame(reviews)
    assert not df.duplicated(["user_id", "parent_asin"]).any()
    assert (df["asin"] != df["parent_asin"]).any()  # some reviews name a variant, as in the real files
    # Timestamps strictly increase within a user.
    for _, g in df.groupby("user_id"):
        t = np.sort(g["timestamp"].to_numpy())
        assert (np.diff(t) > 0).all()


def test_meta_has_the_2023_fields_types_and_local_images(small):
    meta = read_jsonl_gz(paths(small)["meta"])
    assert len(meta) == SMALL.n_items
    asins = [m["parent_asin"] for m in meta]
    assert len(set(asins)) == len(asins)
    reviews = read_jsonl_gz(paths(small)["reviews"])
    assert {r["parent_asin"] for r in reviews} <= set(asins)
    from PIL import Image

    for m in meta:
        assert set(m) == META_KEYS
        assert isinstance(m["title"], str) and isinstance(m["store"], str) and isinstance(m["main_category"], str)
        assert isinstance(m["average_rating"], float) and type(m["rating_number"]) is int
        assert m["price"] is None or isinstance(m["price"], float)
        for key in ("features", "description", "categories"):
            assert isinstance(m[key], list) and all(isinstance(s, str) for s in m[key])
        assert isinstance(m["details"], dict) and m["videos"] == [] and m["bought_together"] is None
        for img in m["images"]:
            assert set(img) == {"thumb", "large", "hi_res", "variant"}
        if m["images"]:
            assert m["images"][0]["variant"] == "MAIN"
            url = m["images"][0]["large"]
            assert url.startswith("file:///")
            path = Path(url[len("file://"):])
            assert path == (small / "images" / f"{m['parent_asin']}.png").resolve()
            with Image.open(path) as im:
                assert im.format == "PNG" and im.size == (SMALL.image_size, SMALL.image_size) and im.mode == "RGB"
    # rating_number / average_rating agree with the reviews written.
    df = pd.DataFrame(reviews).groupby("parent_asin")["rating"].agg(["size", "mean"])
    for m in meta:
        n = int(df["size"].get(m["parent_asin"], 0))
        assert m["rating_number"] == n
        if n:
            assert abs(m["average_rating"] - df["mean"][m["parent_asin"]]) <= 0.05 + 1e-9


# ---- modality purity -----------------------------------------------------------------------
def test_image_only_attributes_never_in_text_text_only_always(small):
    gt = load_ground_truth(paths(small)["gt"])
    vocab = gt.truth["vocabularies"]
    assert gt.truth["modalities"]["image_only"] == ["colour", "pattern"]
    forbidden = re.compile(r"\b(" + "|".join(vocab["colour"] + vocab["pattern"] + ["stripe", "striped", "dot",
                                                                                  "check", "colou?r"]) + r")\b", re.I)
    items = gt.items.set_index("parent_asin")
    meta = read_jsonl_gz(paths(small)["meta"])
    for m in meta:
        text = json.dumps({k: m[k] for k in m if k != "images"})  # URLs are paths, not text
        assert not forbidden.search(text), (m["parent_asin"], forbidden.search(text).group(0))
        row = items.loc[m["parent_asin"]]
        assert row["brand"] in m["title"] and row["material"] in m["title"].lower() and row["category"] in m["title"]
        if m["description"]:
            desc = " ".join(m["description"]).lower()
            assert row["material"] in desc and row["brand"].lower() in desc and row["category"].lower() in desc
    for r in read_jsonl_gz(paths(small)["reviews"]):
        assert not forbidden.search(r["title"] + " " + r["text"])


def test_text_only_attributes_never_change_pixels():
    base = {"parent_asin": "B000000001", "category": "Mug", "colour": "blue", "pattern": "stripes",
            "material": "glass", "brand": "Norvale", "image_seed": 5, "text_seed": 9, "price": 9.99}
    img = S.png_bytes(S.render_item_image(base, 32))
    txt = S.item_text(base)
    # Text-only changes: same picture, different text.
    text_changes = [{"brand": b} for b in S.BRANDS if b != base["brand"]] + \
                   [{"material": m} for m in S.MATERIALS if m != base["material"]]
    for change in text_changes + [{"text_seed": 10}, {"price": 50.0}]:
        assert S.png_bytes(S.render_item_image({**base, **change}, 32)) == img, change
    for change in text_changes:
        assert S.item_text({**base, **change}) != txt, change
    # Image-only changes: same text, different picture.
    image_changes = [{"colour": c} for c in S.COLOURS if c != base["colour"]] + \
                    [{"pattern": q} for q in S.PATTERNS if q != base["pattern"]]
    for change in image_changes + [{"image_seed": 6}]:
        assert S.item_text({**base, **change}) == txt, change
        assert S.png_bytes(S.render_item_image({**base, **change}, 32)) != img, change
    # The shared attribute changes both.
    assert S.png_bytes(S.render_item_image({**base, "category": "Lamp"}, 32)) != img
    assert S.item_text({**base, "category": "Lamp"}) != txt


def test_written_images_show_the_planted_colour_not_the_brand(small):
    gt = load_ground_truth(paths(small)["gt"])
    from PIL import Image

    rows = gt.items[gt.items["has_image"]].to_dict("records")
    for row in rows:  # the files are exactly the renderer's output for the item's visual attributes
        assert (small / "images" / f"{row['parent_asin']}.png").read_bytes() == S.png_bytes(S.render_item_image(row, SMALL.image_size))
    # The dominant non-background colour is nearest to the planted colour for (almost) every item.
    rgb = {k: np.array(v, float) for k, v in gt.truth["colours_rgb"].items()}
    hits = 0
    for row in rows:
        arr = np.asarray(Image.open(small / "images" / f"{row['parent_asin']}.png"), float).reshape(-1, 3)
        sat = arr.max(1) - arr.min(1)
        fg = arr[sat > 60]
        brightest = fg[np.argsort(-fg.sum(1))[: max(len(fg) // 3, 1)]].mean(0)
        nearest = min(rgb, key=lambda c: np.linalg.norm(rgb[c] - brightest))
        hits += nearest == row["colour"]
    assert hits / len(rows) > 0.9


# ---- the planted signal --------------------------------------------------------------------
def _gen(tmp_path, name, **kw) -> S.GroundTruth:
    p = SyntheticParams(n_users=200, n_items=120, interactions_per_user=12, image_size=8, **kw)
    out = generate_catalogue(p, tmp_path / name, seed=5)
    return load_ground_truth(out / "ground_truth")


def test_choices_follow_the_planted_utility(tmp_path):
    gt = _gen(tmp_path, "full")
    w = gt.truth["weights"]
    util = sum(S.utility_components(gt.items, gt.users, w).values())
    reviews = pd.DataFrame(read_jsonl_gz(paths(tmp_path / "full")["reviews"]))
    ui = {u: j for j, u in enumerate(gt.users["user_id"])}
    ii = {a: j for j, a in enumerate(gt.items["parent_asin"])}
    chosen = util[reviews["user_id"].map(ui), reviews["parent_asin"].map(ii)]
    # Chosen items beat the average item of the same user by a wide margin, for nearly every user.
    gap = pd.Series(chosen - util.mean(1)[reviews["user_id"].map(ui)]).groupby(reviews["user_id"].to_numpy()).mean()
    assert (gap > 0).mean() > 0.97 and gap.mean() > 1.0
    # Ratings come from the utility: liked (>= 4) picks have higher utility; both sides exist.
    share = (reviews["rating"] >= 4).mean()
    assert 0.55 < share < 0.9
    assert chosen[reviews["rating"].to_numpy() >= 4].mean() > chosen[reviews["rating"].to_numpy() <= 3].mean() + 0.3
    # utility_components agrees with the utility recorded per interaction.
    assert np.allclose(chosen, gt.interactions.set_index(["user_id", "parent_asin"]).loc[
        list(zip(reviews["user_id"], reviews["parent_asin"])), "utility"].to_numpy())


def test_image_weight_zero_makes_colour_irrelevant(tmp_path):
    on = S.preference_alignment(_gen(tmp_path, "on", image_weight=1.0))
    off = S.preference_alignment(_gen(tmp_path, "off", image_weight=0.0))
    assert on["colour"] > 0.35 and on["pattern"] > 0.35
    assert abs(off["colour"]) < 0.12 and abs(off["pattern"]) < 0.12
    # The other modalities still drive choices.
    for attr in ("material", "brand", "category"):
        assert off[attr] > 0.35 and on[attr] > 0.35
    # And the alignment is measured on the published reviews, not only on the ground truth.
    off_gt = load_ground_truth(tmp_path / "off" / "ground_truth")
    reviews = pd.DataFrame(read_jsonl_gz(paths(tmp_path / "off")["reviews"]))
    again = S.preference_alignment(off_gt, reviews[["user_id", "parent_asin"]])
    assert np.allclose(again.to_numpy(), off.to_numpy())


# ---- missing content, idempotence ----------------------------------------------------------
def test_missing_content_fraction(tmp_path):
    p = SyntheticParams(n_users=20, n_items=200, interactions_per_user=5, image_size=8, missing_fraction=0.05)
    out = generate_catalogue(p, tmp_path / "m", seed=3)
    meta = read_jsonl_gz(paths(out)["meta"])
    no_desc = {m["parent_asin"] for m in meta if not m["description"]}
    no_img = {m["parent_asin"] for m in meta if not m["images"]}
    assert len(no_desc) == 10 and len(no_img) == 10
    gt = load_ground_truth(out / "ground_truth")
    assert set(gt.items.loc[~gt.items["has_description"], "parent_asin"]) == no_desc
    assert set(gt.items.loc[~gt.items["has_image"], "parent_asin"]) == no_img
    pngs = {p.stem for p in (out / "images").glob("*.png")}
    assert pngs == {m["parent_asin"] for m in meta} - no_img
    assert gt.truth["summary"]["n_items_without_image"] == 10

    none = generate_catalogue(p.model_copy(update={"missing_fraction": 0.0}), tmp_path / "n", seed=3)
    assert all(m["description"] and m["images"] for m in read_jsonl_gz(paths(none)["meta"]))


def test_idempotent_skip_and_regeneration(tmp_path, monkeypatch):
    out = tmp_path / "idem"
    generate_catalogue(SMALL, out, seed=1)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    generate_catalogue(SMALL, out, seed=1)  # matching marker: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamp

    # Other params: regenerated, and images of items that no longer exist are removed.
    old_reviews = paths(out)["reviews"].read_bytes()
    generate_catalogue(SMALL, out, seed=2)
    assert paths(out)["reviews"].read_bytes() != old_reviews
    meta = read_jsonl_gz(paths(out)["meta"])
    assert {p.stem for p in (out / "images").glob("*.png")} == {m["parent_asin"] for m in meta if m["images"]}
    assert S.read_json(paths(out)["marker"])["params_hash"] == S.params_hash(SMALL, 2, CAT, out)

    # A run killed before the end leaves no marker, so the next call regenerates.
    def boom(path, records):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(S, "_write_jsonl_gz", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_catalogue(SMALL, out, seed=3)
    assert not paths(out)["marker"].exists()
    monkeypatch.undo()
    generate_catalogue(SMALL, out, seed=3)
    assert S.read_json(paths(out)["marker"])["params_hash"] == S.params_hash(SMALL, 3, CAT, out)
    assert not [p for p in out.rglob("*.tmp")]


def test_bad_category_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="category"):
        generate_catalogue(SMALL, tmp_path, seed=1, category="a/b")
    with pytest.raises(FileNotFoundError, match="missing"):
        load_ground_truth(tmp_path / "nothing")


def test_the_amazon_parser_reads_it_unchanged(tmp_path):
    amazon = pytest.importorskip("mmrepr.data.amazon")
    p = SyntheticParams(n_users=40, n_items=100, interactions_per_user=6, image_size=8, missing_fraction=0.03)
    out = generate_catalogue(p, tmp_path / "a", seed=4)
    items, inter, quality = amazon.load_category(out / "raw", CAT, image_dir=out / "images", download_images=True,
                                                 workers=1, progress=False)
    gt = load_ground_truth(out / "ground_truth")
    keep = gt.items[gt.items["has_image"] & gt.items["has_description"]]
    assert sorted(items["item"]) == sorted(keep["parent_asin"])
    # Every kept item's image is the rendered PNG, used in place.
    assert all(Path(pth) == (out / "images" / f"{a}.png").resolve() for a, pth in zip(items["item"], items["image_path"]))
    expected = gt.interactions[gt.interactions["parent_asin"].isin(set(keep["parent_asin"]))]
    got = inter.merge(expected, left_on=["user", "item"], right_on=["user_id", "parent_asin"], how="outer", indicator=True)
    assert (got["_merge"] == "both").all()
    assert np.array_equal(got["rating_x"].to_numpy(float), got["rating_y"].to_numpy(float))
    assert np.array_equal(got["timestamp_x"].to_numpy(np.int64), got["timestamp_y"].to_numpy(np.int64))
    dropped = {q["step"]: q["dropped"] for q in quality}
    assert dropped["items without image"] == int((~gt.items["has_image"]).sum())
