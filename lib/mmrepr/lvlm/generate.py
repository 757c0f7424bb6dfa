"""LVLM generation: one pass per item gives the decoded answer and the item embedding.

For each batch of items the model is shown the image and the dataset's exact prompt
(``P.lvlm.prompt``, through the family's chat template), and

1. ``generate()`` decodes the answer greedily (left padding, ``max_new_tokens``); then
2. one teacher-forced forward pass over *prompt + answer* (same batch, same pixel inputs,
   ``output_hidden_states=True``, no cache) reads the hidden states. ``generate`` never
   computes the hidden state *of* the last token it emits (the EOS is produced, not fed
   back), so this second pass is what gives the EOS its own state; it also makes
   ``embedding == model(prompt + answer).hidden_states[layer][position]`` hold exactly.

``embedding_layer`` indexes transformers' ``hidden_states`` tuple (0 = input embeddings,
-1 = the last layer). ``embedding_position``:

* ``answer_eos`` — the final generated token: the EOS (end-of-turn) token when the model
  stopped, else the last token before ``max_new_tokens`` ran out (counted as ``no_eos``);
* ``prompt_last`` — the last prompt token (the assistant header), before any answer;
* ``answer_mean`` — the mean over the generated tokens, EOS included.

Work is cached in chunks under ``runs/<p>/lvlm/generation/<name>/`` so a killed run
resumes. A batch that fails is retried one item at a time; an item that still fails (bad
image, out of memory ...) is recorded with its reason in ``failures.csv``, as are items
without an image. No row is invented for a failed item.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mmrepr import timings
from mmrepr.features.store import FeatureSet, save_feature_set
from mmrepr.io import read_json, read_parquet, save_npy, sha256_json, write_csv, write_json, write_parquet
from mmrepr.lvlm.families import (
    Family,
    build_tiny_model,
    get_family,
    is_tiny_checkpoint,
    load_model,
    load_processor,
)

log = logging.getLogger(__name__)

POSITIONS = ("answer_eos", "prompt_last", "answer_mean")


@dataclass
class ItemOutput:
    answer: str
    embedding: np.ndarray
    n_tokens: int  # generated tokens up to and including the EOS
    eos: bool  # the model stopped by itself (else max_new_tokens cut it)


@dataclass
class GenerationResult:
    name: str
    answers: pd.DataFrame  # asin, result (successful items only)
    answers_csv: Path
    embedding: FeatureSet  # role "visual", saved under ``name``
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["asin", "reason"]))
    failures_csv: Path | None = None
    random_weights: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    # measured by this call (items/s, tokens/s, resumed chunks): in the stage record, not the outputs
    timing: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Device and dtype
# ---------------------------------------------------------------------------------------
def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: str | None = None):
    import torch

    if dtype:
        return getattr(torch, dtype)
    # bf16 on GPU (the released checkpoints' dtype); float32 on CPU, where bf16 matmuls are slow.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def pick_attention(device: str) -> str:
    import importlib.util

    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


# ---------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------
class LvlmGenerator:
    """Batched greedy generation plus the embedding of each item, for one model."""

    def __init__(
        self,
        model,
        processor,
        family: Family | str,
        *,
        prompt: str,
        layer: int = -1,
        position: str = "answer_eos",
        max_new_tokens: int = 64,
    ):
        if position not in POSITIONS:
            raise ValueError(f"embedding_position {position!r} not one of {POSITIONS}")
        self.model = model
        self.processor = processor
        self.family = get_family(family) if isinstance(family, str) else family
        self.prompt = prompt
        self.layer = layer
        self.position = position
        self.max_new_tokens = max_new_tokens
        tok = processor.tokenizer
        tok.padding_side = "left"  # generation continues from the right end of every row
        gen_cfg = model.generation_config
        stop = gen_cfg.eos_token_id if gen_cfg is not None else None
        stop = [stop] if isinstance(stop, int) else list(stop or [])
        for t in self.family.stop_tokens:
            tid = tok.convert_tokens_to_ids(t)
            if isinstance(tid, int) and tid != tok.unk_token_id and tid not in stop:
                stop.append(tid)
        if not stop:
            raise ValueError(f"no end-of-turn token found for family {self.family.name}")
        self.stop_ids = stop
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else stop[0]
        self.prompt_text = self._render_prompt()
        self.n_layers = None

    @classmethod
    def from_pretrained(cls, path: str, family: str, *, device: str | None = None, dtype: str | None = None,
                        attn_implementation: str | None = None, **kwargs) -> "LvlmGenerator":
        fam = get_family(family)
        device = pick_device(device)
        model = load_model(path, fam, dtype=pick_dtype(device, dtype),
                           attn_implementation=attn_implementation or pick_attention(device), device=device)
        return cls(model, load_processor(path, fam), fam, **kwargs)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _render_prompt(self) -> str:
        if self.family.name == "phi3_v":  # remote-code processor: image placeholder in the text
            messages = [{"role": "user", "content": "<|image_1|>\n" + self.prompt}]
            text = self.processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if self.prompt not in text:  # the dataset's prompt must reach the model character for character
            raise ValueError(f"{self.family.name} chat template altered the prompt: {text!r}")
        return text

    def _encode(self, images: Sequence[Any]):
        if self.family.name == "phi3_v":
            return self._encode_one_by_one(images)
        batch = self.processor(images=[[im] for im in images], text=[self.prompt_text] * len(images),
                               return_tensors="pt", padding=True)
        return batch

    def _encode_one_by_one(self, images: Sequence[Any]):
        """Processors that take one prompt at a time (Phi-3.5-vision): left-pad by hand."""
        import torch

        parts = [self.processor(self.prompt_text, [im], return_tensors="pt") for im in images]
        width = max(p["input_ids"].shape[1] for p in parts)
        out: dict[str, Any] = {}
        for key in parts[0].keys():
            vals = [p[key] for p in parts]
            if key in ("input_ids", "attention_mask"):
                fill = self.pad_id if key == "input_ids" else 0
                vals = [torch.nn.functional.pad(v, (width - v.shape[1], 0), value=fill) for v in vals]
            out[key] = torch.cat(vals, dim=0)
        return out

    def __call__(self, images: Sequence[Any]) -> list[ItemOutput]:
        """Answer and embedding for each image (one batch)."""
        import torch

        batch = self._encode(images)
        batch = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in batch.items()}
        if "pixel_values" in batch and batch["pixel_values"].is_floating_point():
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        n, plen = batch["input_ids"].shape
        with torch.inference_mode():
            seq = self.model.generate(
                **batch, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
                temperature=None, top_p=None, top_k=None,
            )
            gen = seq[:, plen:]
            is_stop = torch.isin(gen, torch.tensor(self.stop_ids, device=gen.device))
            has_stop = is_stop.any(dim=1)
            first_stop = torch.where(has_stop, is_stop.int().argmax(dim=1), torch.full_like(has_stop, gen.shape[1],
                                                                                              dtype=torch.long))
            n_tok = torch.where(has_stop, first_stop + 1, first_stop).clamp(min=1)
            width = int(n_tok.max())
            full = dict(batch)
            full["input_ids"] = seq[:, : plen + width]
            # Generated tokens are always attended (after a row's EOS too: causal attention keeps
            # them from touching the positions read below).
            for key, val in batch.items():
                if key == "input_ids" or not torch.is_tensor(val) or val.dim() != 2 or val.shape != (n, plen):
                    continue
                fill = 1 if key == "attention_mask" else 0
                full[key] = torch.cat([val, torch.full((n, width), fill, dtype=val.dtype, device=val.device)], dim=1)
            out = self.model(**full, output_hidden_states=True, use_cache=False, logits_to_keep=1)
            hs = out.hidden_states[self.layer]
            if self.n_layers is None:
                self.n_layers = len(out.hidden_states)
            if self.position == "prompt_last":
                emb = hs[:, plen - 1]
            elif self.position == "answer_eos":
                emb = hs[torch.arange(n, device=hs.device), plen + n_tok - 1]
            else:  # answer_mean
                pos = torch.arange(width, device=hs.device)[None, :]
                mask = (pos < n_tok[:, None]).to(hs.dtype)
                emb = (hs[:, plen:] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            emb = emb.float().cpu().numpy()
        results = []
        for i in range(n):
            k = int(n_tok[i]) - (1 if bool(has_stop[i]) else 0)
            text = self.processor.tokenizer.decode(gen[i, :k].tolist(), skip_special_tokens=True)
            results.append(ItemOutput(text.strip(), emb[i], int(n_tok[i]), bool(has_stop[i])))
        return results


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------
def load_image(path: str):
    """The item image as RGB, or raise ``ValueError`` naming the file."""
    from PIL import Image

    if not path:
        raise ValueError("no image")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"image file not found: {path}") from None
    except Exception as exc:  # PIL raises several types for corrupt files
        raise ValueError(f"unreadable image {path}: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------------------
# Chunked, resumable runs
# ---------------------------------------------------------------------------------------
def _chunk_files(folder: Path, k: int) -> tuple[Path, Path]:
    return folder / "chunks" / f"{k:05d}.npy", folder / "chunks" / f"{k:05d}.parquet"


def _is_oom(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_chunk(gen: LvlmGenerator, chunk: pd.DataFrame, batch_size: int, bar) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows (asin, status, result, reason, n_tokens, eos) and the embeddings of the ok rows."""
    records: list[dict[str, Any]] = []
    ok_images: list[tuple[int, Any]] = []
    for i, row in enumerate(chunk.itertuples(index=False)):
        try:
            ok_images.append((i, load_image(str(row.image_path or ""))))
        except ValueError as exc:
            records.append({"pos": i, "asin": row.item, "status": "failed", "reason": str(exc)})
            bar.update(1)
    emb: dict[int, np.ndarray] = {}
    for start in range(0, len(ok_images), batch_size):
        part = ok_images[start : start + batch_size]
        t0 = time.perf_counter()
        try:
            outs = list(zip(part, gen([im for _, im in part])))
        except Exception as exc:  # retry alone: one bad item (or too big a batch) must not sink the others
            if _is_oom(exc):
                _free_memory()
            log.warning("batch of %d failed (%s: %s); retrying one item at a time", len(part),
                        type(exc).__name__, str(exc)[:200])
            outs = []
            for pos, im in part:
                try:
                    outs.append(((pos, im), gen([im])[0]))
                except Exception as exc1:
                    if _is_oom(exc1):
                        _free_memory()
                    reason = f"{'out of memory' if _is_oom(exc1) else 'generation error'}: " \
                             f"{type(exc1).__name__}: {str(exc1)[:300]}"
                    records.append({"pos": pos, "asin": chunk.iloc[pos]["item"], "status": "failed", "reason": reason})
        dt = time.perf_counter() - t0
        for (pos, _), o in outs:
            records.append({"pos": pos, "asin": chunk.iloc[pos]["item"], "status": "ok", "result": o.answer,
                            "n_tokens": o.n_tokens, "eos": o.eos})
            emb[pos] = o.embedding
        bar.update(len(part))
        bar.n_tokens += sum(o.n_tokens for _, o in outs)
        bar.gen_seconds += dt
        bar.set_postfix(items_s=f"{bar.n / max(bar.format_dict['elapsed'], 1e-9):.2f}",
                        tok_s=f"{bar.n_tokens / max(bar.gen_seconds, 1e-9):.1f}", refresh=False)
    df = pd.DataFrame.from_records(records, columns=["pos", "asin", "status", "result", "reason", "n_tokens", "eos"])
    df = df.sort_values("pos").reset_index(drop=True)
    ok_pos = df.loc[df["status"] == "ok", "pos"].tolist()
    dim = next(iter(emb.values())).shape[0] if emb else 0
    mat = np.stack([emb[p] for p in ok_pos]).astype(np.float32) if ok_pos else np.zeros((0, dim), np.float32)
    df["result"] = df["result"].astype("string")
    df["reason"] = df["reason"].astype("string")
    df["n_tokens"] = df["n_tokens"].astype("Int64")
    df["eos"] = df["eos"].astype("boolean")
    return df.drop(columns="pos"), mat


def generate_items(
    gen: LvlmGenerator,
    items_df: pd.DataFrame,
    folder: Path,
    *,
    batch_size: int,
    chunk_size: int,
    fingerprint: dict[str, Any],
    desc: str = "lvlm",
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Run ``gen`` over every item, chunk by chunk, skipping chunks already on disk.

    Returns the per-item table (asin, status, result, reason, n_tokens, eos) in
    ``items_df`` order, the embeddings of the ok rows, and timing numbers for this call.
    """
    from mmrepr.progress import tqdm

    folder = Path(folder)
    missing = {"item", "image_path"} - set(items_df.columns)
    if missing:
        raise ValueError(f"items_df lacks columns {sorted(missing)}; has {list(items_df.columns)}")
    if items_df["item"].duplicated().any():
        dup = items_df.loc[items_df["item"].duplicated(), "item"].head(3).tolist()
        raise ValueError(f"items_df has duplicated item ids (first: {dup})")
    items_df = items_df.reset_index(drop=True)
    fp = dict(fingerprint, items=sha256_json(items_df[["item", "image_path"]].astype(str).values.tolist()),
              chunk_size=chunk_size)
    run_file = folder / "run.json"
    if run_file.is_file() and read_json(run_file) != fp:
        log.info("settings changed since the cached chunks in %s were written: starting over", folder)
        shutil.rmtree(folder / "chunks", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(run_file, fp)

    n_chunks = math.ceil(len(items_df) / chunk_size)
    done = [k for k in range(n_chunks) if _chunk_files(folder, k)[1].is_file()]
    todo = [k for k in range(n_chunks) if k not in set(done)]
    n_todo = sum(len(items_df.iloc[k * chunk_size : (k + 1) * chunk_size]) for k in todo)
    if done:
        log.info("%s: %d of %d chunks already done, resuming", desc, len(done), n_chunks)
    bar = tqdm(total=n_todo, desc=desc, unit="item")
    bar.n_tokens, bar.gen_seconds = 0, 0.0
    t0 = time.perf_counter()
    try:
        for k in todo:
            chunk = items_df.iloc[k * chunk_size : (k + 1) * chunk_size]
            df, mat = _run_chunk(gen, chunk, batch_size, bar)
            npy, pq = _chunk_files(folder, k)
            save_npy(npy, mat)
            write_parquet(df, pq)  # written last: marks the chunk complete
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    frames, mats = [], []
    for k in range(n_chunks):
        npy, pq = _chunk_files(folder, k)
        frames.append(read_parquet(pq))
        mats.append(np.load(npy, allow_pickle=False))
    table = pd.concat(frames, ignore_index=True)
    dims = {m.shape[1] for m in mats if len(m)}
    if len(dims) > 1:
        raise ValueError(f"cached chunks in {folder} disagree on the embedding size {dims}; delete the folder")
    emb = np.concatenate([m for m in mats if len(m)]) if dims else np.zeros((0, 0), np.float32)
    timing = {"items_run": n_todo, "chunks_resumed": len(done), "wall_s": wall,
              "generated_tokens": bar.n_tokens, "items_per_s": n_todo / wall if wall else None,
              "tokens_per_s": bar.n_tokens / bar.gen_seconds if bar.gen_seconds else None}
    return table, emb, timing


# ---------------------------------------------------------------------------------------
# Stage entry point
# ---------------------------------------------------------------------------------------
def generation_dir(P, name: str) -> Path:
    return P.run_dir / "lvlm" / "generation" / name


def answers_path(P, name: str) -> Path:
    return P.run_dir / "lvlm" / "answers" / f"{name}.csv"


def resolve_model(P, spec) -> tuple[str, bool]:
    """The checkpoint to load and whether its weights are random.

    A local path that does not exist yet is built as a tiny random model when the spec
    says ``random_weights: true`` (the offline demo); a Hub id is passed through.
    """
    from mmrepr.config import resolve

    mid = spec.model_id
    local = mid.startswith((".", "/", "~")) or mid.startswith("cache/") or Path(mid).is_absolute() \
        or resolve(mid).exists()
    if local:
        path = resolve(mid)
        if not path.exists():
            if not spec.random_weights:
                raise FileNotFoundError(f"lvlm model {spec.name!r}: model_id {mid!r} not found at {path} "
                                        "(set random_weights: true to build a tiny random model there)")
            build_tiny_model(spec.family, path, seed=P.seed, extra_text=P.lvlm.prompt or "")
        return str(path), bool(spec.random_weights or is_tiny_checkpoint(path))
    if spec.random_weights:
        raise ValueError(f"lvlm model {spec.name!r}: random_weights with a Hub id ({mid}) is not supported; "
                         "use a local folder path (a tiny random model is built there)")
    return mid, False


def run_model(P, items_df: pd.DataFrame, spec, *, device: str | None = None, dtype: str | None = None,
              generator: LvlmGenerator | None = None) -> GenerationResult:
    """Generate answers and embeddings for every item with one configured model."""
    import transformers

    L = P.lvlm
    from mmrepr.lvlm.parse import require_prompt

    require_prompt(L.prompt)
    path, random_weights = resolve_model(P, spec)
    if generator is None:
        generator = LvlmGenerator.from_pretrained(
            path, spec.family, device=device, dtype=dtype, prompt=L.prompt, layer=L.embedding_layer,
            position=L.embedding_position, max_new_tokens=L.max_new_tokens)
    else:
        given = (generator.prompt, generator.layer, generator.position, generator.max_new_tokens)
        wanted = (L.prompt, L.embedding_layer, L.embedding_position, L.max_new_tokens)
        if given != wanted:
            raise ValueError(f"generator settings {given[1:]} (or prompt) differ from the params {wanted[1:]}")
    folder = generation_dir(P, spec.name)
    fingerprint = {
        "model_id": spec.model_id, "family": spec.family, "random_weights": random_weights,
        "prompt_sha256": hashlib.sha256(L.prompt.encode("utf-8")).hexdigest(), "layer": L.embedding_layer,
        "position": L.embedding_position, "max_new_tokens": L.max_new_tokens, "seed": P.seed,
        "dtype": str(generator.model.dtype), "transformers": transformers.__version__,
    }
    label = f"{spec.name}{' (RANDOM WEIGHTS)' if random_weights else ''}"
    with _cpu_threads_for(generator):
        table, emb, timing = generate_items(generator, items_df, folder, batch_size=L.batch_size,
                                            chunk_size=L.chunk_size, fingerprint=fingerprint, desc=label)
    ok = table[table["status"] == "ok"].reset_index(drop=True)
    failed = table[table["status"] == "failed"][["asin", "reason"]].reset_index(drop=True)
    answers = pd.DataFrame({"asin": ok["asin"].astype(str), "result": ok["result"].astype(str)})
    out_csv = answers_path(P, spec.name)
    write_csv(answers, out_csv)
    failures_csv = folder / "failures.csv"
    write_csv(failed, failures_csv)
    summary = {
        "name": spec.name, "model_id": spec.model_id, "checkpoint": path, "family": spec.family,
        "random_weights": random_weights, "n_items": int(len(table)), "n_ok": int(len(ok)),
        "n_failed": int(len(failed)), "n_no_image": int(failed["reason"].eq("no image").sum()),
        "n_no_eos": int((~ok["eos"].astype(bool)).sum()), "mean_answer_tokens": float(ok["n_tokens"].mean())
        if len(ok) else None, "layer": L.embedding_layer, "position": L.embedding_position,
        "max_new_tokens": L.max_new_tokens, "batch_size": L.batch_size, "chunk_size": L.chunk_size,
        "device": str(generator.device), "dtype": str(generator.model.dtype),
        "attention": getattr(generator.model.config, "_attn_implementation", None),
        "prompt_sha256": fingerprint["prompt_sha256"], "answers_csv": str(out_csv),
        "failures_csv": str(failures_csv),
        "note": "failed items (see failures_csv) have no answer row and no embedding row",
    }
    if random_weights:
        summary["warning"] = "RANDOM-WEIGHT model: answers are gibberish and embeddings carry no visual knowledge"
    write_json(folder / "summary.json", summary)
    write_json(out_csv.with_suffix(".meta.json"), summary)
    meta = {
        "kind": "real", "source": "lvlm", "random_weights": random_weights, "model_id": spec.model_id,
        "family": spec.family, "layer": L.embedding_layer, "position": L.embedding_position,
        "max_new_tokens": L.max_new_tokens, "prompt_sha256": fingerprint["prompt_sha256"],
        "n_failed": int(len(failed)), "failures_csv": str(failures_csv), "dtype": summary["dtype"],
        "n_hidden_states": generator.n_layers, "transformers": transformers.__version__,
    }
    if len(ok) == 0:
        raise RuntimeError(f"lvlm model {spec.name!r}: every item failed; see {failures_csv}")
    fs = FeatureSet(spec.name, ok["asin"].astype(str).tolist(), {"visual": emb}, meta)
    save_feature_set(P.run_dir, fs)
    log.info("%s: %d answers, %d failures, embedding %s", label, len(ok), len(failed), emb.shape)
    timings.record(P.run_dir, "lvlm", spec.name, **timing)
    if timing["items_per_s"]:
        timings.say(f"lvlm: {label} generated {timing['items_run']} items at {timing['items_per_s']:.2f} items/s, "
                    f"{timing['tokens_per_s'] or 0:.1f} tokens/s")
    return GenerationResult(spec.name, answers, out_csv, fs, failed, failures_csv, random_weights, summary, timing)


@contextlib.contextmanager
def _cpu_threads_for(generator: LvlmGenerator):
    """One torch thread for small models on CPU.

    Their ops are far too small to gain from threads, and on a shared machine extra threads
    make it much slower (measured: 2.5 vs 49 items/s for the tiny Qwen2-VL at load 9 on
    2 cores). Restored afterwards.
    """
    import torch

    small = sum(p.numel() for p in generator.model.parameters()) < 50_000_000
    if generator.device.type != "cpu" or not small:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_models(P, items_df: pd.DataFrame, **kwargs: Any) -> list[GenerationResult]:
    """Every model in ``P.lvlm.models`` over ``items_df`` (columns item, title, description, image_path)."""
    results = []
    for spec in P.lvlm.models:
        results.append(run_model(P, items_df, spec, **kwargs))
        _free_memory()
    return results
