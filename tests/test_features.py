"""Stage 2: registry, extractors on tiny offline models, bad content, cache and resume."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from mmrepr.features import colour  # noqa: E402
from mmrepr.features.content import decode_image  # noqa: E402
from mmrepr.features.encoders import CLIP_L14_TEXT, CLIP_L14_VISION, WeightsUnavailable, build_encoder  # noqa: E402
from mmrepr.features.extract import Extraction, cache_root, encode_items, item_sources  # noqa: E402
from mmrepr.features.params import FeaturesParams  # noqa: E402
from mmrepr.features.registry import EXTRACTORS, FEATURE_SETS  # noqa: E402
from PIL import Image  # noqa: E402

# Tiny configs of the paper's architectures: same code path, seconds on a CPU.
TINY = {
    "r50": dict(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1]),
    "vit": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=56),
    "sbert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=400),
    "clip_image": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=56, projection_dim=16
    ),
    "clip_text": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=400, projection_dim=12
    ),
}
TINY_DIMS = {"r50": 24, "vit": 32, "sbert": 32, "clip_image": 16, "clip_text": 12, "colour": colour.DIM}

COLOURS = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (240, 240, 40)]
WORDS = ["red", "blue", "green", "yellow"]


def make_items(folder: Path, n: int = 12, seed: int = 0) -> pd.DataFrame:
    """A small catalogue: solid colour images with stripes, one description each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        arr = np.zeros((40, 48, 3), dtype=np.uint8) + np.array(COLOURS[i % 4], dtype=np.uint8)
        if i % 2:
            arr[::6] = 255  # stripes
        arr = np.clip(arr.astype(int) + rng.integers(-10, 10, arr.shape), 0, 255).astype(np.uint8)
        p = folder / f"img{i}.png"
        Image.fromarray(arr).save(p)
        desc = f"A {WORDS[i % 4]} {'striped' if i % 2 else 'plain'} mug made of ceramic, model {i}"
        rows.append({"item": f"it{i:03d}", "title": f"item {i}", "description": desc, "image_path": str(p)})
    return pd.DataFrame(rows)


def params(**kw) -> FeaturesParams:
    base = dict(batch_size=4, chunk_size=4, num_workers=2, device="cpu")
    base.update(kw)
    return FeaturesParams(**base)


# ---- registry: the paper's models ---------------------------------------------------------
def test_registry_matches_study():
    r50, vit, sbert = EXTRACTORS["r50"], EXTRACTORS["vit"], EXTRACTORS["sbert"]
    assert (r50.model_id, r50.dim, r50.modality) == ("microsoft/resnet-50", 2048, "image")
    assert "average pool" in r50.pooling and r50.preprocessing["resize"] == [224, 224]
    assert r50.preprocessing["normalize"]["mean"] == [0.485, 0.456, 0.406]
    assert (vit.model_id, vit.dim) == ("google/vit-base-patch16-224", 768) and "CLS" in vit.pooling
    assert (sbert.model_id, sbert.dim) == ("sentence-transformers/all-mpnet-base-v2", 768)
    assert sbert.preprocessing["field"] == "description"
    for name in ("clip_image", "clip_text"):
        assert EXTRACTORS[name].model_id == "openai/clip-vit-large-patch14" and EXTRACTORS[name].dim == 768
        assert "projection" in EXTRACTORS[name].pooling
    assert FEATURE_SETS["r50_sbert"] == {"visual": "r50", "textual": "sbert"}
    assert FEATURE_SETS["clip"] == {"visual": "clip_image", "textual": "clip_text"}
    assert FEATURE_SETS["colour_minilm"] == {"visual": "colour", "textual": "minilm"}
    # offline builds use configs of the paper's sizes
    from transformers import MPNetConfig, ResNetConfig, ViTConfig

    assert ResNetConfig().hidden_sizes[-1] == 2048 and list(ResNetConfig().depths) == [3, 4, 6, 3]
    assert ViTConfig().hidden_size == 768 and ViTConfig().patch_size == 16 and ViTConfig().image_size == 224
    assert MPNetConfig().hidden_size == 768
    assert CLIP_L14_VISION["projection_dim"] == CLIP_L14_TEXT["projection_dim"] == 768
    assert CLIP_L14_VISION["patch_size"] == 14 and CLIP_L14_VISION["hidden_size"] == 1024


def test_demo_and_smoke_profiles_name_known_sets():
    from mmrepr.config import load_params
    from mmrepr.paths import project_root

    for prof in ("demo", "smoke", "baby"):
        P = load_params(project_root() / "params" / f"{prof}.yaml")
        assert set(P.features.sets) <= set(FEATURE_SETS)


# ---- each extractor on tiny random models ---------------------------------------------------
@pytest.mark.parametrize("fset", ["r50", "vit", "r50_sbert", "clip", "colour"])
def test_extractors_shapes_dtype_determinism_order(tmp_path, fset):
    items = make_items(tmp_path / "img")
    fp = params()
    a = Extraction(items, tmp_path / "runA", fp, seed=5, config_overrides=TINY, progress=False).feature_set(fset)
    b = Extraction(items, tmp_path / "runB", fp, seed=5, config_overrides=TINY, progress=False).feature_set(fset)
    for role, ext in FEATURE_SETS[fset].items():
        m = a.matrices[role]
        assert m.shape == (len(items), TINY_DIMS[ext]) and m.dtype == np.float32
        assert np.array_equal(m, b.matrices[role]), "same seed, fresh cache: same features"
        assert np.linalg.matrix_rank(m) > 1, "items must not all get the same vector"
    assert a.item_ids == items["item"].tolist()
    assert a.meta["random_weights"] is (fset != "colour")
    # item order: a permuted table gives the permuted rows (batch composition does not matter)
    perm = np.random.default_rng(1).permutation(len(items))
    c = Extraction(items.iloc[perm], tmp_path / "runC", params(batch_size=3, chunk_size=5), seed=5,
                   config_overrides=TINY, progress=False).feature_set(fset)
    assert c.item_ids == items["item"].iloc[perm].tolist()
    for role in a.matrices:
        np.testing.assert_allclose(c.matrices[role], a.matrices[role][perm], rtol=1e-4, atol=1e-5)


def test_random_weights_depend_on_seed(tmp_path):
    items = make_items(tmp_path / "img", n=4)
    a = Extraction(items, tmp_path / "a", params(), seed=1, config_overrides=TINY, progress=False).feature_set("r50")
    b = Extraction(items, tmp_path / "b", params(), seed=2, config_overrides=TINY, progress=False).feature_set("r50")
    assert not np.allclose(a.matrices["visual"], b.matrices["visual"])
    assert a.meta["extractors"]["visual"]["weights_seed"] != b.meta["extractors"]["visual"]["weights_seed"]


def test_minilm_is_the_real_sentence_transformer(tmp_path):
    from sentence_transformers import SentenceTransformer

    from mmrepr.features.encoders import minilm_path

    items = make_items(tmp_path / "img", n=6)
    fs = Extraction(items, tmp_path / "run", params(), seed=0, progress=False).feature_set("minilm")
    st = SentenceTransformer(str(minilm_path()), device="cpu")
    ref = st.encode(items["description"].tolist(), convert_to_numpy=True)
    np.testing.assert_allclose(fs.matrices["textual"], ref, atol=1e-5)
    assert fs.meta["random_weights"] is False and fs.meta["extractors"]["textual"]["weights"] == "bundled"


def test_colour_descriptor_separates_colours_and_patterns(tmp_path):
    items = make_items(tmp_path / "img", n=16)
    m = Extraction(items, tmp_path / "run", params(), seed=0, progress=False).feature_set("colour").matrices["visual"]
    colour_id = np.arange(16) % 4
    d = np.linalg.norm(m[:, None] - m[None], axis=-1)
    same = colour_id[:, None] == colour_id[None]
    np.fill_diagonal(same, False)
    diff = colour_id[:, None] != colour_id[None]
    assert d[same].mean() < d[diff].mean()
    striped = np.arange(16) % 2 == 1
    k = colour.PARTS["hsv_hist"] + colour.PARTS["rgb_mean_std"]  # gradient magnitude mean
    assert m[striped, k].min() > m[~striped, k].max()


def test_pretrained_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = build_encoder("r50", pretrained=True, seed=0, device="cpu")
    with pytest.raises(WeightsUnavailable, match="pretrained: false"):
        enc.load()


# ---- bad content ---------------------------------------------------------------------------
def _bad_images(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 30, 3), dtype=np.uint8))
    out = {}

    def save(name, img, fmt, **kw):
        p = folder / name
        img.save(p, fmt, **kw)
        out[name.split(".")[0]] = str(p)

    save("good.png", rgb, "PNG")
    save("gray.png", rgb.convert("L"), "PNG")
    save("cmyk.jpg", rgb.convert("CMYK"), "JPEG")
    save("rgba.png", rgb.convert("RGBA"), "PNG")
    save("palette.png", rgb.convert("P"), "PNG")
    save("tiny.png", Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")
    save("huge.jpg", Image.new("RGB", (4000, 3000), (10, 200, 10)), "JPEG")
    save("i16.png", Image.fromarray((np.arange(900).reshape(30, 30) * 50).astype(np.uint16)), "PNG")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image" * 10)
    out["corrupt"] = str(folder / "corrupt.png")
    buf = io.BytesIO()
    rgb.resize((300, 300)).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    out["truncated"] = str(folder / "truncated.jpg")
    (folder / "empty.png").write_bytes(b"")
    out["empty"] = str(folder / "empty.png")
    out["not_found"] = str(folder / "nope.png")
    out["no_path"] = ""
    return out


def test_decode_image_handles_modes_and_sizes(tmp_path):
    paths = _bad_images(tmp_path)
    for name in ("good", "gray", "cmyk", "rgba", "palette", "tiny", "huge", "i16"):
        img, note = decode_image(paths[name])
        assert img is not None and img.mode == "RGB", name
        assert max(img.size) <= 1024
        assert (note == "ok") == (name in ("good", "tiny", "huge")), (name, note)
    for name in ("corrupt", "truncated", "empty"):
        img, note = decode_image(paths[name])
        assert img is None and note.startswith("image_"), name
    # transparent pixels are composited on white, not on black
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(clear)
    img, _ = decode_image(str(clear))
    assert img.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("policy", ["zeros", "mean", "drop"])
def test_missing_content_policy_and_counts(tmp_path, policy):
    paths = _bad_images(tmp_path / "img")
    names = list(paths)
    texts = ["a mug"] * len(names)
    texts[1], texts[2] = "", "   "  # empty and blank descriptions
    items = pd.DataFrame(
        {"item": [f"x{i:02d}" for i in range(len(names))], "title": names, "description": texts,
         "image_path": [paths[n] for n in names]}
    )
    ex = Extraction(items, tmp_path / "run", params(missing_policy=policy), seed=0, config_overrides=TINY, progress=False)
    fs = ex.feature_set("r50_sbert")
    miss = fs.meta["missing"]["per_role"]
    bad_images = {"corrupt", "truncated", "empty", "not_found", "no_path"}
    assert miss["visual"]["missing"] == len(bad_images)
    assert miss["visual"]["reasons"] == {
        "image_unreadable": 2, "image_empty_file": 1, "image_not_found": 1, "no_image_path": 1
    }
    assert miss["visual"]["converted"] == {
        "ok_converted_from_L": 1, "ok_converted_from_CMYK": 1, "ok_converted_from_RGBA": 1,
        "ok_converted_from_P": 1, "ok_converted_from_I;16": 1,
    }
    assert miss["textual"] == {"missing": 2, "reasons": {"empty_text": 2}, "converted": {}}
    vis = dict(zip(items["title"], range(len(items))))
    bad_rows = [vis[n] for n in bad_images]
    text_bad = {1, 2}
    if policy == "drop":
        dropped = set(bad_rows) | text_bad
        assert fs.meta["missing"]["n_dropped"] == len(dropped)
        assert len(fs.item_ids) == len(items) - len(dropped)
        assert set(fs.meta["missing"]["dropped_items"]) == {items["item"][i] for i in dropped}
        assert (np.linalg.norm(fs.matrices["visual"], axis=1) > 0).all()
    else:
        v = fs.matrices["visual"]
        good = [i for i in range(len(items)) if i not in bad_rows]
        if policy == "zeros":
            assert np.all(v[bad_rows] == 0)
        else:
            np.testing.assert_allclose(v[bad_rows], np.broadcast_to(v[good].mean(0), (len(bad_rows), v.shape[1])), rtol=1e-5)
        assert (np.linalg.norm(v[good], axis=1) > 0).all()


# ---- cache and resume ------------------------------------------------------------------------
class Killed(RuntimeError):
    pass


def test_resume_after_kill_reencodes_nothing_finished(tmp_path):
    items = make_items(tmp_path / "img", n=14)
    fp = params(chunk_size=4, batch_size=2)
    ref = Extraction(items, tmp_path / "clean", fp, seed=3, config_overrides=TINY, progress=False).role("r50")

    def kill_after_two(n_done):
        if n_done == 2:
            raise Killed

    run = tmp_path / "killed"
    with pytest.raises(Killed):
        Extraction(items, run, fp, seed=3, config_overrides=TINY, on_chunk=kill_after_two, progress=False).role("r50")
    chunks = list((cache_root(run) / "r50").glob("*/chunk-*.npz"))
    assert len(chunks) == 2
    before = {p: p.stat().st_mtime_ns for p in chunks}
    res = Extraction(items, run, fp, seed=3, config_overrides=TINY, progress=False).role("r50")
    assert res.n_encoded == 14 - 8 and res.n_cached == 8
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "finished chunks were rewritten"
    np.testing.assert_array_equal(res.matrix, ref.matrix)

    # a rerun encodes nothing and never builds the model
    ex = Extraction(items, run, fp, seed=3, config_overrides=TINY, progress=False)
    again = ex.role("r50")
    assert again.n_encoded == 0 and again.n_cached == 14
    np.testing.assert_array_equal(again.matrix, ref.matrix)


def test_changed_item_is_reencoded_alone(tmp_path):
    items = make_items(tmp_path / "img", n=10)
    fp = params()
    run = tmp_path / "run"
    first = Extraction(items, run, fp, seed=0, config_overrides=TINY, progress=False)
    a_txt, a_img = first.role("sbert"), first.role("colour")
    changed = items.copy()
    changed.loc[3, "description"] = "A completely different wooden spoon"
    Image.new("RGB", (20, 20), (0, 0, 0)).save(changed.loc[5, "image_path"])
    second = Extraction(changed, run, fp, seed=0, config_overrides=TINY, progress=False)
    b_txt, b_img = second.role("sbert"), second.role("colour")
    assert b_txt.n_encoded == 1 and b_img.n_encoded == 1
    keep = [i for i in range(10) if i != 3]
    np.testing.assert_array_equal(b_txt.matrix[keep], a_txt.matrix[keep])
    assert not np.allclose(b_txt.matrix[3], a_txt.matrix[3])
    assert not np.allclose(b_img.matrix[5], a_img.matrix[5])


def test_duplicate_contents_encoded_once(tmp_path):
    items = make_items(tmp_path / "img", n=4)
    items = pd.concat([items, items.assign(item=items["item"] + "_dup")], ignore_index=True)
    enc = build_encoder("colour", pretrained=False, seed=0)
    keys, sources = item_sources(items, "image")
    res = encode_items(enc, keys, sources, cache_dir=tmp_path / "c", progress=False)
    assert res.n_encoded == 4
    np.testing.assert_array_equal(res.matrix[:4], res.matrix[4:])


def test_distinct_rows_counts_equal_vectors_once():
    from mmrepr.features.store import distinct_rows

    m = np.array([[0.0, 1.0], [-0.0, 1.0], [0.0, 1.0 + 1e-7], [2.0, 3.0], [2.0, 3.0]], dtype=np.float32)
    # -0.0 equals 0.0; a last-bit difference is another vector
    assert distinct_rows(m) == 3
    assert distinct_rows(m[:, :1]) == 2
    assert distinct_rows(np.zeros((0, 4), np.float32)) == 0
