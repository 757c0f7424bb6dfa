"""``python -m mmrepr.bench lvlm``: batched LVLM generation vs one item at a time.

Builds a random-weight model in memory (a tiny one by default; ``--preset 2b|7b`` gives
Qwen2-VL-2B/7B architecture sizes, still random weights), feeds it ``--n`` random images
of ``--image-size`` pixels with the demo FITB prompt, and times answer + embedding (the
same code path as the stage: :class:`mmrepr.lvlm.generate.LvlmGenerator`). Random models
rarely emit EOS, so nearly every answer runs to ``--max-new-tokens``.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

DEFAULT_PROMPT = (
    "Imagine you’re creating metadata for an image database of synthetic products. Your task is to select five "
    "keywords that best represent the image content. Fill in the blanks: [Category], [Color], [Pattern], "
    "[Material], [Style]. For example, your answer will be: [Category] {Mug}, [Color] {Red}, [Pattern] {Striped}, "
    "[Material] {Ceramic}, [Style] {Modern}."
)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(gen, images, batch_size: int, device: str) -> dict:
    _sync(device)
    t0 = time.perf_counter()
    tokens = 0
    for i in range(0, len(images), batch_size):
        tokens += sum(o.n_tokens for o in gen(images[i : i + batch_size]))
    _sync(device)
    dt = time.perf_counter() - t0
    return {"items": len(images), "batch_size": batch_size, "seconds": dt, "items_per_s": len(images) / dt,
            "tokens": tokens, "tokens_per_s": tokens / dt}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmrepr.bench lvlm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="qwen2_vl")
    ap.add_argument("--n", type=int, default=32, help="items in the batched run")
    ap.add_argument("--n-single", type=int, default=None, help="items run one at a time (default: --n)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64, help="text hidden size of the tiny model")
    ap.add_argument("--layers", type=int, default=2, help="text layers of the tiny model")
    ap.add_argument("--preset", choices=["2b", "7b"], default=None,
                    help="Qwen2-VL-2B/7B architecture sizes (random weights) instead of a tiny model")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--position", default="answer_eos")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on GPU, fp32 on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the numbers here")
    a = ap.parse_args(argv)

    import torch
    import transformers
    from PIL import Image

    from mmrepr.lvlm.families import make_tiny
    from mmrepr.lvlm.generate import LvlmGenerator, pick_attention, pick_device, pick_dtype

    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    dtype = pick_dtype(device, a.dtype)
    t0 = time.perf_counter()
    model, processor = make_tiny(a.family, a.seed, hidden_size=a.hidden, num_layers=a.layers, preset=a.preset,
                                 dtype=dtype, device=device)
    attn = pick_attention(device)
    model.set_attn_implementation(attn) if hasattr(model, "set_attn_implementation") else None
    build_s = time.perf_counter() - t0
    gen = LvlmGenerator(model, processor, a.family, prompt=DEFAULT_PROMPT, position=a.position,
                        max_new_tokens=a.max_new_tokens)
    rng = np.random.default_rng(a.seed)
    n_single = a.n if a.n_single is None else a.n_single
    images = [Image.fromarray((rng.random((a.image_size, a.image_size, 3)) * 255).astype("uint8"))
              for _ in range(max(a.n, n_single))]
    gen(images[: min(2, len(images))])  # warm-up (kernels, allocator)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    batched = _time(gen, images[: a.n], a.batch_size, device)
    single = _time(gen, images[:n_single], 1, device)
    result = {
        "family": a.family, "preset": a.preset, "hidden": None if a.preset else a.hidden,
        "layers": None if a.preset else a.layers, "parameters": sum(p.numel() for p in model.parameters()),
        "random_weights": True, "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(), "dtype": str(dtype), "attention": attn,
        "max_new_tokens": a.max_new_tokens, "image_size": a.image_size, "position": a.position,
        "build_seconds": build_s, "batched": batched, "single": single,
        "speedup_items_per_s": batched["items_per_s"] / single["items_per_s"],
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    what = f"{a.family} {'preset ' + a.preset if a.preset else f'tiny h={a.hidden} L={a.layers}'} (random weights)"
    print(f"LVLM generation bench: {what}, {result['parameters'] / 1e6:.2f}M params, {device} {dtype}, {attn}, "
          f"max_new_tokens={a.max_new_tokens}, image {a.image_size}px")
    for key in ("batched", "single"):
        r = result[key]
        print(f"  {key:8s} batch={r['batch_size']:<3d} items={r['items']:<4d} {r['seconds']:8.2f} s "
              f"{r['items_per_s']:8.2f} items/s {r['tokens_per_s']:9.1f} tokens/s")
    print(f"  speed-up (items/s): x{result['speedup_items_per_s']:.2f}")
    if a.json:
        from mmrepr.io import write_json

        write_json(a.json, result)
        print(f"  written {a.json}")
    return 0
