"""``python -m mmrepr.bench extract [--model r50] [--n 64] [--batch-size 32] [--json out.json]``

Throughput and peak memory of stage 2's batched extraction (thread-pool decoding, batched
forward under ``torch.inference_mode``, channels-last convolutions on CPU, half precision
on GPU) against the way the paper's extractor ran: one item at a time (decode, preprocess,
forward with batch 1 under ``torch.no_grad``, float32). Both use the same model weights and
the same images; model loading is not timed. Without weights (the default, offline) the
model has random weights of the paper's size, which costs exactly the same compute.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


class RssPeak:
    """Peak resident memory of this process during a ``with`` block (sampled from /proc)."""

    def __init__(self, every_s: float = 0.005):
        self.every_s = every_s
        self.peak_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.rss_mb())
            time.sleep(self.every_s)

    def __enter__(self) -> "RssPeak":
        self.peak_mb = self.rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = round(max(self.peak_mb, self.rss_mb()), 1)


def make_images(folder: Path, n: int, size: int, seed: int) -> list[str]:
    """``n`` product-photo-sized JPEGs (smooth colour field plus texture), deterministic."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(n):
        base = rng.uniform(0, 255, 3)
        freq = rng.uniform(2, 12)
        wave = (np.sin(2 * np.pi * freq * (xx + rng.uniform() * yy)) * 40)[..., None]
        arr = np.clip(base + wave + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
        p = folder / f"bench_{i:05d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        paths.append(str(p))
    return paths


def _one_at_a_time(enc, paths: list[str], model) -> float:
    """The paper-style loop: one image decoded, preprocessed and run at a time."""
    import torch

    from mmrepr.features.content import decode_image
    from mmrepr.features.encoders import _forward_image, _forward_text

    t0 = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            if enc.spec.modality == "text":
                enc_in = enc._tokenizer([p], truncation=True, max_length=enc.spec.preprocessing.get("max_length", 512), return_tensors="pt")
                _forward_text(enc.spec.family, model, dict(enc_in))
                continue
            img, _ = decode_image(p)
            if enc.spec.weight_free:
                from mmrepr.features.colour import describe

                describe(img)
                continue
            x = torch.from_numpy(enc._processor(images=[img], return_tensors="np")["pixel_values"]).to(enc.device)
            if enc.dtype == "float16":
                x = x.half()
            _forward_image(enc.spec.family, model, x)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmrepr.bench extract", description=__doc__.split("\n\n")[1])
    ap.add_argument("--model", default="r50", help="extractor name (r50, vit, clip_image, sbert, clip_text, minilm, colour)")
    ap.add_argument("--n", type=int, default=64, help="items to encode")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=2, help="decoding threads")
    ap.add_argument("--image-size", type=int, default=256, help="side of the generated JPEGs")
    ap.add_argument("--pretrained", action="store_true", help="load hub weights instead of random ones")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from mmrepr.features.content import image_keys, text_key
    from mmrepr.features.encoders import build_encoder
    from mmrepr.features.extract import encode_items

    with tempfile.TemporaryDirectory(prefix="mmrepr-bench-") as tmp:
        tmp = Path(tmp)
        texts = [
            f"A {c} {m} item with a {p} pattern, number {i}; durable, easy to clean and made for everyday use."
            for i, (c, m, p) in enumerate(zip(["red", "blue", "teal"] * args.n, ["ceramic", "steel"] * args.n, ["striped", "plain", "dotted"] * args.n))
        ][: args.n]
        enc = build_encoder(
            args.model, pretrained=args.pretrained, seed=args.seed, device=args.device,
            tokenizer_dir=tmp / "tok", train_texts=texts,
        )
        if enc.spec.modality == "image":
            sources = make_images(tmp / "img", args.n, args.image_size, args.seed)
            keys = image_keys(sources)
        else:
            sources, keys = texts, [text_key(t) for t in texts]

        t_load = time.perf_counter()
        enc.load()
        load_s = time.perf_counter() - t_load
        if not enc.spec.weight_free and enc.spec.modality == "image":
            plain = copy.deepcopy(enc._model).to(memory_format=torch.contiguous_format)
        else:
            plain = enc._model
        if enc.spec.modality == "text":
            enc._load_tokenizer()

        # warm-up both paths on a few items (allocator, oneDNN kernel selection)
        warm = min(2, args.n)
        _one_at_a_time(enc, sources[:warm], plain)
        encode_items(enc, keys[:warm], sources[:warm], cache_dir=tmp / "warm", batch_size=args.batch_size,
                     chunk_size=args.n, num_workers=args.num_workers, progress=False)

        with RssPeak() as mem_loop:
            loop_s = _one_at_a_time(enc, sources, plain)
        if enc.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with RssPeak() as mem_batch:
            t0 = time.perf_counter()
            res = encode_items(enc, keys, sources, cache_dir=tmp / "cache", batch_size=args.batch_size,
                               chunk_size=args.n, num_workers=args.num_workers, progress=True)
            batch_s = time.perf_counter() - t0
        assert res.n_encoded == len(set(keys)), "the benchmark must encode every item"

    out = {
        "model": args.model,
        "model_id": enc.spec.model_id,
        "weights": enc.weights,
        "random_weights": enc.random_weights,
        "dim": int(res.matrix.shape[1]),
        "n": args.n,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "image_size": args.image_size if enc.spec.modality == "image" else None,
        "device": enc.device,
        "dtype": enc.dtype,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "model_load_s": round(load_s, 2),
        "one_at_a_time": {"seconds": round(loop_s, 3), "items_per_s": round(args.n / loop_s, 2), "peak_rss_mb": mem_loop.peak_mb},
        "batched": {"seconds": round(batch_s, 3), "items_per_s": round(args.n / batch_s, 2), "peak_rss_mb": mem_batch.peak_mb},
        "speedup": round(loop_s / batch_s, 2),
    }
    if enc.device == "cuda":
        out["batched"]["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(f"extractor {args.model} ({enc.spec.model_id}, {enc.weights} weights, {enc.device}/{enc.dtype}, "
          f"{out['torch_threads']} torch threads, {os.cpu_count()} CPUs), n={args.n}")
    print(f"  one at a time      : {out['one_at_a_time']['items_per_s']:8.2f} items/s   peak RSS {mem_loop.peak_mb:8.1f} MB")
    print(f"  batched (bs={args.batch_size:<4d})   : {out['batched']['items_per_s']:8.2f} items/s   peak RSS {mem_batch.peak_mb:8.1f} MB")
    print(f"  speed-up           : {out['speedup']:.2f}x")
    if args.json:
        from mmrepr.io import write_json

        write_json(args.json, out)
        print(f"  written to {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
