"""LVLM generation on tiny random-weight models (offline, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from mmrepr import timings  # noqa: E402
from mmrepr.config import load_params  # noqa: E402
from mmrepr.features.store import load_feature_set  # noqa: E402
from mmrepr.lvlm import generate as G  # noqa: E402
from mmrepr.lvlm.families import (  # noqa: E402
    TINY_FAMILIES,
    TINY_MARKER,
    build_tiny_model,
    get_family,
    load_model,
    load_processor,
)

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Imagine you’re creating metadata. Fill in the blanks: [Category], [Color]. For example: [Category] {Mug}. "


def _images(folder: Path, n: int, seed: int = 0) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = [(56, 56), (56, 112), (112, 56), (84, 84), (56, 168), (70, 70)][i % 6]
        p = folder / f"img{i}.png"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen")
    path = build_tiny_model("qwen2_vl", root / "ckpt", seed=7)
    gen = G.LvlmGenerator.from_pretrained(str(path), "qwen2_vl", device="cpu", prompt=PROMPT, max_new_tokens=6)
    # Let the image grid vary with the picture (4..12 image tokens) so prompts differ in
    # length and left padding is really exercised.
    gen.processor.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": 56 * 56 * 3}
    return path, gen, _images(root / "img", 6)


def _with_stop_token(gen):
    """Make a token the random model emits mid-answer for one item a stop token, so rows end at different steps."""
    ims = [G.load_image(p) for p in gen._paths]
    batch = gen._encode(ims)
    seq = gen.model.generate(**batch, max_new_tokens=gen.max_new_tokens, do_sample=False)
    out = seq[0, batch["input_ids"].shape[1]:].tolist()
    tok = next(t for i, t in enumerate(out) if i >= 1 and t not in out[:i])
    gen.stop_ids = list(gen.stop_ids) + [tok]
    return ims


def _manual(gen, image, layer, position):
    """One item, no batching: greedy generate, then a plain forward pass over prompt + answer."""
    single = gen._encode([image])
    plen = single["input_ids"].shape[1]
    seq = gen.model.generate(**single, max_new_tokens=gen.max_new_tokens, do_sample=False,
                             eos_token_id=gen.stop_ids, pad_token_id=gen.pad_id)
    ans = seq[0, plen:].tolist()
    stop = next((i for i, t in enumerate(ans) if t in gen.stop_ids), None)
    ans = ans if stop is None else ans[: stop + 1]
    ids = torch.tensor([single["input_ids"][0].tolist() + ans])
    extra = {k: v for k, v in single.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    mm = torch.cat([single["mm_token_type_ids"], torch.zeros((1, len(ans)), dtype=torch.long)], dim=1)
    out = gen.model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm, **extra,
                    output_hidden_states=True)
    hs = out.hidden_states[layer][0]
    if position == "prompt_last":
        return hs[plen - 1], ans, stop is not None
    if position == "answer_eos":
        return hs[plen + len(ans) - 1], ans, stop is not None
    return hs[plen:].mean(0), ans, stop is not None


@pytest.mark.parametrize("layer", [-1, 1])
@pytest.mark.parametrize("position", G.POSITIONS)
def test_embedding_is_forward_pass_hidden_state(qwen, position, layer):
    path, gen, paths = qwen
    gen._paths = paths
    ims = _with_stop_token(gen)
    gen.layer, gen.position = layer, position
    outs = gen(ims)
    assert gen._encode(ims)["attention_mask"].min() == 0, "the batch should contain left padding"
    eos_seen = 0
    for im, o in zip(ims, outs):
        want, ans, eos = _manual(gen, im, layer, position)
        assert o.n_tokens == len(ans) and o.eos == eos
        eos_seen += eos
        np.testing.assert_allclose(o.embedding, want.detach().numpy(), atol=2e-5, rtol=1e-4)
    assert 0 < eos_seen  # at least one row stopped early: the EOS position is not simply the last column
    assert len({o.n_tokens for o in outs}) > 1 or eos_seen == len(outs)
    # Different layers/positions really give different vectors.
    other = "prompt_last" if position != "prompt_last" else "answer_eos"
    gen.position = other
    assert not np.allclose(gen(ims[:1])[0].embedding, outs[0].embedding)
    gen.position, gen.layer, gen.stop_ids = "answer_eos", -1, gen.stop_ids[:-1]


def test_batched_equals_one_at_a_time(qwen):
    _, gen, paths = qwen
    ims = [G.load_image(p) for p in paths]
    batched = gen(ims)
    for im, b in zip(ims, batched):
        s = gen([im])[0]
        assert s.answer == b.answer and s.n_tokens == b.n_tokens
        np.testing.assert_allclose(s.embedding, b.embedding, atol=2e-5, rtol=1e-4)
    assert len({b.answer for b in batched}) >= 1


def test_prompt_reaches_model_verbatim(qwen):
    _, gen, paths = qwen
    batch = gen._encode([G.load_image(paths[0])])
    decoded = gen.processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=False)
    assert PROMPT in decoded
    with pytest.raises(ValueError, match="embedding_position"):
        G.LvlmGenerator(gen.model, gen.processor, "qwen2_vl", prompt=PROMPT, position="middle")


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_family_builds_runs_saves_reloads(family, tmp_path):
    path = build_tiny_model(family, tmp_path / family, seed=3, num_layers=1)
    assert (path / TINY_MARKER).is_file() and (path / "config.json").is_file()
    fam = get_family(family)
    gen = G.LvlmGenerator(load_model(str(path), fam), load_processor(str(path), fam), fam, prompt=PROMPT,
                          max_new_tokens=3)
    ims = [G.load_image(p) for p in _images(tmp_path / "img", 2)]
    outs = gen(ims)
    assert [o.embedding.shape for o in outs] == [(64,), (64,)]
    assert all(np.isfinite(o.embedding).all() and 1 <= o.n_tokens <= 3 for o in outs)
    # Reloading the saved checkpoint gives the same model: same outputs, bit for bit.
    gen2 = G.LvlmGenerator(load_model(str(path), fam), load_processor(str(path), fam), fam, prompt=PROMPT,
                           max_new_tokens=3)
    again = gen2(ims)
    assert [o.answer for o in again] == [o.answer for o in outs]
    np.testing.assert_array_equal(np.stack([o.embedding for o in again]), np.stack([o.embedding for o in outs]))
    decoded = gen.processor.tokenizer.decode(gen._encode(ims[:1])["input_ids"][0])
    assert PROMPT in decoded


def test_phi3_v_has_no_offline_build(tmp_path):
    with pytest.raises(ValueError, match="trust_remote_code"):
        build_tiny_model("phi3_v", tmp_path / "phi")
    assert get_family("phi3_v").trust_remote_code


# ---------------------------------------------------------------------------------------
# run_model: chunks, resume, failures
# ---------------------------------------------------------------------------------------
def _params(runs: Path, model_dir: Path, **lvlm):
    over = {"runs_dir": str(runs), "lvlm": {
        "models": [{"name": "tiny", "model_id": str(model_dir), "family": "qwen2_vl", "random_weights": True}],
        "prompt": PROMPT, "chunk_size": 2, "batch_size": 2, "max_new_tokens": 6, **lvlm},
        # the profile's train section must name sets this (renamed) model makes
        "train": {"feature_sets": ["colour_minilm", "tiny"], "attribute_feature_sets": ["tiny__onehot"]}}
    return load_params(ROOT / "params" / "demo.yaml", overrides=over)


def _items(folder: Path) -> pd.DataFrame:
    paths = _images(folder, 5, seed=1)
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    rows = [("i0", paths[0]), ("i1", paths[1]), ("bad", str(corrupt)), ("i3", paths[2]), ("i6", paths[3]),
            ("noimg", ""), ("gone", str(folder / "missing.png")), ("i7", paths[4])]
    return pd.DataFrame({"item": [r[0] for r in rows], "title": "t", "description": "d",
                         "image_path": [r[1] for r in rows]})


def test_run_model_records_failures_and_labels_random(tmp_path):
    model_dir = tmp_path / "models" / "q"  # does not exist: built on demand
    P = _params(tmp_path / "runs", model_dir)
    items = _items(tmp_path / "img")
    (res,) = G.run_models(P, items, device="cpu")
    assert (model_dir / TINY_MARKER).is_file()
    ok = ["i0", "i1", "i3", "i6", "i7"]
    assert res.answers["asin"].tolist() == ok
    assert res.answers_csv == P.run_dir / "lvlm" / "answers" / "tiny.csv"
    on_disk = pd.read_csv(res.answers_csv, dtype=str, keep_default_na=False)
    assert list(on_disk.columns) == ["asin", "result"] and on_disk["asin"].tolist() == ok
    fails = pd.read_csv(res.failures_csv).set_index("asin")["reason"]
    assert set(fails.index) == {"bad", "noimg", "gone"}
    assert fails["noimg"] == "no image" and "unreadable image" in fails["bad"] and "not found" in fails["gone"]
    fs = load_feature_set(P.run_dir, "tiny")
    assert fs.item_ids == ok and fs.matrices["visual"].shape == (5, 64)
    assert fs.meta["random_weights"] is True and fs.meta["kind"] == "real" and fs.meta["position"] == "answer_eos"
    assert res.random_weights and res.summary["n_failed"] == 3 and "RANDOM" in res.summary["warning"]


def test_failed_batch_is_retried_item_by_item(tmp_path, qwen):
    path, gen, _ = qwen
    P = _params(tmp_path / "runs", path, chunk_size=4, batch_size=4)
    items = _items(tmp_path / "img")
    poison = items.loc[items["item"] == "i3", "image_path"].iloc[0]
    real_call = G.LvlmGenerator.__call__

    def flaky(self, images):
        if any(getattr(im, "_poison", False) for im in images):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_call(self, images)

    real_load = G.load_image

    def load(p):
        im = real_load(p)
        im._poison = p == poison
        return im

    mp = pytest.MonkeyPatch()
    mp.setattr(G.LvlmGenerator, "__call__", flaky)
    mp.setattr(G, "load_image", load)
    try:
        res = G.run_model(P, items, P.lvlm.models[0], generator=gen)
    finally:
        mp.undo()
    fails = res.failures.set_index("asin")["reason"]
    assert fails["i3"].startswith("out of memory")
    assert res.answers["asin"].tolist() == ["i0", "i1", "i6", "i7"]  # its batch-mates survived


def test_killed_run_resumes(tmp_path, qwen):
    path, gen, _ = qwen
    items = _items(tmp_path / "img")
    P_ref = _params(tmp_path / "ref", path)
    ref = G.run_model(P_ref, items, P_ref.lvlm.models[0], generator=gen)

    P = _params(tmp_path / "runs", path)
    calls = {"n": 0}
    real_call = G.LvlmGenerator.__call__

    def dies_on_third(self, images):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the process is killed mid-run (not an item failure)
        return real_call(self, images)

    mp = pytest.MonkeyPatch()
    mp.setattr(G.LvlmGenerator, "__call__", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        G.run_model(P, items, P.lvlm.models[0], generator=gen)
    chunks = sorted((G.generation_dir(P, "tiny") / "chunks").glob("*.parquet"))
    assert [c.name for c in chunks] == ["00000.parquet", "00001.parquet"]
    assert not G.answers_path(P, "tiny").exists()

    calls["n"] = -100  # no more kills; count what the resumed run still has to do
    res = G.run_model(P, items, P.lvlm.models[0], generator=gen)
    mp.undo()
    assert calls["n"] == -100 + 2  # chunks 2 and 3 only: one batch each (i6 / i7; noimg, gone fail on load)
    assert res.timing["chunks_resumed"] == 2 and "timing_last_call" not in res.summary
    assert timings.gather(P.run_dir, "lvlm")["tiny"]["chunks_resumed"] == 2  # the stage record's source
    pd.testing.assert_frame_equal(res.answers, ref.answers)
    np.testing.assert_array_equal(res.embedding.matrices["visual"], ref.embedding.matrices["visual"])

    # Changed settings invalidate the cache instead of mixing old and new rows.
    P2 = _params(tmp_path / "runs", path, embedding_position="prompt_last")
    gen.position = "prompt_last"
    try:
        res2 = G.run_model(P2, items, P2.lvlm.models[0], generator=gen)
    finally:
        gen.position = "answer_eos"
    assert res2.timing["chunks_resumed"] == 0
    assert not np.allclose(res2.embedding.matrices["visual"], res.embedding.matrices["visual"])


def test_qwen2_vl_size_presets_match_released_shapes():
    from mmrepr.lvlm.families import _tiny_qwen2_vl, train_tokenizer

    tok = train_tokenizer(get_family("qwen2_vl"))
    cfg, ip, _ = _tiny_qwen2_vl(tok, 64, 2, preset="7b")
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.num_hidden_layers, t.intermediate_size, t.num_attention_heads) == (3584, 28, 18944, 28)
    assert (v.depth, v.embed_dim, v.hidden_size) == (32, 1280, 3584)
    assert sum(t.rope_parameters["mrope_section"]) == t.hidden_size // t.num_attention_heads // 2
    with pytest.raises(ValueError, match="preset"):
        _tiny_qwen2_vl(tok, 64, 2, preset="70b")


def test_bench_cli_writes_numbers(tmp_path, capsys):
    import json

    from mmrepr.bench.lvlm import main

    out = tmp_path / "b.json"
    assert main(["--n", "4", "--n-single", "2", "--batch-size", "2", "--max-new-tokens", "3", "--threads", "1",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["random_weights"] is True and res["batched"]["items"] == 4 and res["single"]["items"] == 2
    assert 2 <= res["batched"]["tokens"] <= 4 * 3 and res["batched"]["items_per_s"] > 0
    assert "items/s" in capsys.readouterr().out
