"""Stage 2: encode every item once per extractor, cached by content, and build feature sets.

Cache layout (under ``runs/<profile>/features/_cache/``)::

    <extractor>/<identity hash>/identity.json         what decides the output
    <extractor>/<identity hash>/chunk-<hash>.npz      keys, vectors, ok flags, notes
    tokenizers/<extractor>-<kind>-<vocab>.json         locally trained tokenizers (offline)

Vectors are addressed by the item's *content* (hash of image bytes / description), so a
rerun loads everything and encodes nothing, a killed run keeps every finished chunk, and a
changed item is encoded alone. Unreadable images are cached too (with their reason), so
they are not retried on every run. What encoding measured (items/s, peak memory) goes to
the stage record (:mod:`mmrepr.timings`, one file per extractor), not into the cache or the
feature sets, whose bytes depend on the items only.

Missing content (no image, unreadable image, empty description) follows
``features.missing_policy``: ``zeros`` (a zero row), ``mean`` (the mean of the role's
present rows) or ``drop`` (the item gets no row in the set; it is listed in
``meta["missing"]["dropped_items"]``). Stage 4 aligns every feature set to the dataset's
items with ``FeatureSet.aligned``, which fails naming the missing items; a set made with
``drop`` must therefore be trained on the items it has (stage 4 restricts its item list to
``items.txt`` and reports how many interactions that removes).
"""

from __future__ import annotations

import hashlib
import logging
import resource
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from mmrepr.progress import tqdm

from mmrepr.features.content import image_keys, is_missing, text_key
from mmrepr.features.encoders import Encoder, build_encoder
from mmrepr.features.params import FeaturesParams
from mmrepr.features.registry import feature_set_roles, get_extractor
from mmrepr.features.store import FeatureSet, distinct_rows, features_dir, save_feature_set
from mmrepr import timings
from mmrepr.io import save_npz, sha256_json, write_csv, write_json

log = logging.getLogger(__name__)

CACHE_DIRNAME = "_cache"


def cache_root(run_dir: Path) -> Path:
    return features_dir(run_dir) / CACHE_DIRNAME


def peak_memory_mb(device: str = "cpu") -> dict[str, float]:
    """Peak resident memory of this process (Linux reports KiB), and of the GPU if used."""
    out = {"process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device == "cuda":
        import torch

        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


# ---- the chunk cache -------------------------------------------------------------------------
class ChunkCache:
    def __init__(self, folder: Path, identity: dict[str, Any]):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        ident_file = self.folder / "identity.json"
        if not ident_file.is_file():
            write_json(ident_file, identity)

    def chunk_files(self) -> list[Path]:
        return sorted(self.folder.glob("chunk-*.npz"))

    def load(self) -> dict[str, tuple[np.ndarray | None, str]]:
        """Every cached key -> (vector or None if unreadable, note)."""
        found: dict[str, tuple[np.ndarray | None, str]] = {}
        for f in self.chunk_files():
            try:
                with np.load(f, allow_pickle=False) as z:
                    keys, vecs, ok, notes = z["keys"], z["vectors"], z["ok"], z["notes"]
            except Exception as exc:  # noqa: BLE001 -- a damaged chunk is re-encoded, not fatal
                log.warning("ignoring unreadable cache chunk %s (%s); its items are encoded again", f, exc)
                continue
            for k, v, o, n in zip(keys.tolist(), vecs, ok.tolist(), notes.tolist()):
                found[k] = (v if o else None, n)
        return found

    def write(self, keys: list[str], vectors: np.ndarray, ok: list[bool], notes: list[str]) -> Path:
        name = "chunk-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:20] + ".npz"
        path = self.folder / name
        save_npz(path, keys=np.array(keys, dtype=str), vectors=np.ascontiguousarray(vectors, dtype=np.float32),
                 ok=np.array(ok, dtype=bool), notes=np.array(notes, dtype=str))
        return path


# ---- encoding one role ---------------------------------------------------------------------
@dataclass
class RoleResult:
    extractor: str
    matrix: np.ndarray  # (n_items, dim) float32; rows of missing items are zeros
    valid: np.ndarray  # (n_items,) bool
    missing: dict[str, int]  # reason -> items
    notes: dict[str, int]  # e.g. ok_converted_from_CMYK -> items
    n_encoded: int  # distinct contents encoded in this call
    n_cached: int  # distinct contents read from the cache
    info: dict[str, Any] = field(default_factory=dict)
    # measured while encoding (items/s, peak memory): for the stage record, never the set's meta
    timing: dict[str, Any] = field(default_factory=dict)


def _batches(seq: list, size: int) -> list[list]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def encode_items(
    encoder: Encoder,
    keys: list[str],
    sources: list[str],
    *,
    cache_dir: Path,
    batch_size: int = 32,
    chunk_size: int = 256,
    num_workers: int = 2,
    on_chunk: Callable[[int], None] | None = None,
    progress: bool = True,
) -> RoleResult:
    """Vectors for ``keys`` (content keys, item order), encoding only what the cache lacks.

    ``sources[i]`` is what the encoder reads for item i (image path or text). ``on_chunk``
    is called with the number of chunks written so far after each chunk (tests use it to
    simulate a kill).
    """
    spec = encoder.spec
    identity = encoder.identity()
    cache = ChunkCache(Path(cache_dir) / spec.name / sha256_json(identity)[:16], identity)
    found = cache.load()
    stats: list[dict[str, float]] = []
    n_cached = len({k for k in keys if k in found})

    todo: dict[str, str] = {}
    for k, src in zip(keys, sources):
        if not is_missing(k) and k not in found and k not in todo:
            todo[k] = src
    todo_items = list(todo.items())

    if todo_items:
        encoder.load()  # outside the timed chunks: items/s measures encoding, not loading
        bar = tqdm(total=len(todo_items), desc=f"encode {spec.name}", unit="item", disable=not progress, smoothing=0.1)
        pool = ThreadPoolExecutor(max_workers=num_workers) if num_workers > 0 else None
        try:
            for c, chunk in enumerate(_batches(todo_items, chunk_size), start=1):
                if spec.modality == "text":  # similar lengths per batch: less padding
                    chunk = sorted(chunk, key=lambda kv: len(kv[1]))
                t0 = time.perf_counter()
                ck, cv, cok, cnotes = _encode_chunk(encoder, chunk, batch_size, pool, num_workers, bar)
                seconds = time.perf_counter() - t0
                peak = peak_memory_mb(encoder.device)
                cache.write(ck, cv, cok, cnotes)
                stats.append({"n": len(ck), "seconds": seconds, "peak_mb": max(peak.values())})
                for k, v, o, n in zip(ck, cv, cok, cnotes):
                    found[k] = (v if o else None, n)
                if on_chunk is not None:
                    on_chunk(c)
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    dim = next((v.shape[0] for v, _ in found.values() if v is not None), None)
    if dim is None:
        dim = spec.dim or 0
        if not dim:
            from mmrepr.features.colour import DIM

            dim = DIM
    n = len(keys)
    matrix = np.zeros((n, dim), dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    missing: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    for i, k in enumerate(keys):
        if is_missing(k):
            missing[k.split(":", 1)[1]] += 1
            continue
        vec, note = found[k]
        if vec is None:
            missing[note] += 1
            continue
        matrix[i] = vec
        valid[i] = True
        if note != "ok":
            notes[note] += 1

    total_n = sum(s["n"] for s in stats)
    total_s = sum(s["seconds"] for s in stats)
    info = encoder.info()
    # no cache path or cache counts here: they would make the set's meta depend on the run
    info.update(dim=int(dim), batch_size=batch_size, num_workers=num_workers)
    timing = dict(
        encoded_now=int(total_n), from_cache=int(n_cached), seconds=round(total_s, 3),
        items_per_s=round(total_n / total_s, 2) if total_s > 0 else None,
        peak_memory_mb=max((s["peak_mb"] for s in stats), default=None),
        device=encoder.device, batch_size=batch_size, num_workers=num_workers,
    )
    return RoleResult(spec.name, matrix, valid, dict(missing), dict(notes), len(todo_items), n_cached, info, timing)


def _encode_chunk(encoder: Encoder, chunk, batch_size, pool, num_workers, bar):
    batches = _batches(chunk, batch_size)
    keys: list[str] = []
    vecs: list[np.ndarray] = []
    oks: list[bool] = []
    notes: list[str] = []

    def prep(batch):
        return encoder.prepare([src for _, src in batch])

    # decode the next batches in worker threads while the model runs the current one
    pending: deque = deque()
    it = iter(batches)
    window = max(1, num_workers + 1)

    def submit_next() -> None:
        b = next(it, None)
        if b is not None:
            pending.append((b, pool.submit(prep, b) if pool is not None else None))

    for _ in range(window):
        submit_next()
    while pending:
        batch, fut = pending.popleft()
        prepared, bnotes, bok = fut.result() if fut is not None else prep(batch)
        submit_next()
        out = encoder.encode(prepared) if prepared is not None else None
        j = 0
        for (k, _), note, o in zip(batch, bnotes, bok):
            keys.append(k)
            notes.append(note)
            oks.append(o)
            if o:
                vecs.append(out[j])
                j += 1
            else:
                vecs.append(None)
        bar.update(len(batch))
    dim = next((v.shape[0] for v in vecs if v is not None), 0)
    mat = np.zeros((len(vecs), dim), dtype=np.float32)
    for i, v in enumerate(vecs):
        if v is not None:
            mat[i] = v
    return keys, mat, oks, notes


# ---- feature sets ----------------------------------------------------------------------------
def item_sources(items: pd.DataFrame, modality: str, num_workers: int = 2) -> tuple[list[str], list[str]]:
    """``(content keys, sources)`` for every item in order."""
    if modality == "image":
        paths = items["image_path"].fillna("").astype(str).tolist()
        return image_keys(paths, num_workers), paths
    texts = items["description"].fillna("").astype(str).tolist()
    return [text_key(t) for t in texts], [t.strip() for t in texts]


class Extraction:
    """One stage-2 run over an items table: encodes each extractor once, builds sets."""

    def __init__(
        self,
        items: pd.DataFrame,
        run_dir: Path,
        params: FeaturesParams,
        seed: int,
        *,
        config_overrides: dict[str, dict[str, Any]] | None = None,
        on_chunk: Callable[[int], None] | None = None,
        progress: bool = True,
    ):
        self.items = items.reset_index(drop=True)
        self.run_dir = Path(run_dir)
        self.params = params
        self.seed = seed
        self.config_overrides = config_overrides or {}
        self.on_chunk = on_chunk
        self.progress = progress
        self._roles: dict[str, RoleResult] = {}
        self._keys: dict[str, tuple[list[str], list[str]]] = {}

    @property
    def cache_dir(self) -> Path:
        return cache_root(self.run_dir)

    def role(self, extractor: str) -> RoleResult:
        if extractor in self._roles:
            return self._roles[extractor]
        spec = get_extractor(extractor)
        if spec.modality not in self._keys:
            self._keys[spec.modality] = item_sources(self.items, spec.modality, self.params.num_workers)
        keys, sources = self._keys[spec.modality]
        enc = build_encoder(
            extractor,
            pretrained=self.params.pretrained,
            seed=self.seed,
            device=self.params.device,
            config_overrides=self.config_overrides.get(extractor),
            tokenizer_dir=self.cache_dir / "tokenizers",
            train_texts=[s for k, s in zip(keys, sources) if not is_missing(k)] if spec.modality == "text" else None,
        )
        res = encode_items(
            enc,
            keys,
            sources,
            cache_dir=self.cache_dir,
            batch_size=self.params.batch_size,
            chunk_size=self.params.chunk_size,
            num_workers=self.params.num_workers,
            on_chunk=self.on_chunk,
            progress=self.progress,
        )
        log.info(
            "%s: %d distinct contents encoded, %d from cache, missing %s", extractor, res.n_encoded, res.n_cached, res.missing
        )
        timings.record(self.run_dir, "features", extractor, **res.timing)
        if res.timing["items_per_s"] is not None:
            timings.say(f"features: {extractor} encoded {res.n_encoded} contents at {res.timing['items_per_s']} items/s, "
                        f"peak memory {res.timing['peak_memory_mb']} MB")
        self._roles[extractor] = res
        return res

    def feature_set(self, name: str) -> FeatureSet:
        roles = feature_set_roles(name)
        results = {role: self.role(ext) for role, ext in roles.items()}
        return assemble(name, self.items["item"].astype(str).tolist(), results, self.params.missing_policy)


def assemble(name: str, item_ids: list[str], results: dict[str, RoleResult], policy: str) -> FeatureSet:
    """Apply the missing-content policy and label the set."""
    n = len(item_ids)
    keep = np.ones(n, dtype=bool)
    matrices: dict[str, np.ndarray] = {}
    extractors: dict[str, Any] = {}
    missing_report: dict[str, Any] = {"policy": policy, "per_role": {}}
    for role, res in results.items():
        m = res.matrix.copy()
        n_missing = int((~res.valid).sum())
        if policy == "mean" and n_missing:
            fill = m[res.valid].mean(axis=0) if res.valid.any() else np.zeros(m.shape[1], np.float32)
            m[~res.valid] = fill
        elif policy == "drop":
            keep &= res.valid
        matrices[role] = m
        extractors[role] = dict(res.info)
        missing_report["per_role"][role] = {"missing": n_missing, "reasons": res.missing, "converted": res.notes}
    dropped = [iid for iid, k in zip(item_ids, keep) if not k]
    if policy == "drop":
        matrices = {r: m[keep] for r, m in matrices.items()}
        item_ids = [iid for iid, k in zip(item_ids, keep) if k]
    missing_report["dropped_items"] = dropped
    missing_report["n_dropped"] = len(dropped)
    random_weights = any(e["random_weights"] for e in extractors.values())
    meta = {
        "kind": "real",
        "reference": None,
        "random_weights": random_weights,
        "extractors": extractors,
        "missing": missing_report,
        "n_items_input": n,
    }
    return FeatureSet(name, item_ids, matrices, meta)


def feature_summary(fs: FeatureSet) -> list[dict[str, Any]]:
    """One row per role: shape and statistics, with the random-weight flag visible."""
    rows = []
    for role, m in fs.matrices.items():
        ext = fs.meta.get("extractors", {}).get(role, {})
        miss = fs.meta.get("missing", {}).get("per_role", {}).get(role, {})
        norms = np.linalg.norm(m, axis=1)
        rows.append(
            {
                "set": fs.name,
                "role": role,
                "kind": fs.meta.get("kind"),
                "extractor": ext.get("extractor"),
                "reference": fs.meta.get("reference"),
                "random_weights": bool(ext.get("random_weights", fs.meta.get("random_weights", False))),
                "rows": m.shape[0],
                "dim": m.shape[1],
                "mean": float(m.mean()),
                "std": float(m.std()),
                "row_norm_mean": float(norms.mean()),
                "zero_rows": int((norms == 0).sum()),
                "distinct_rows": distinct_rows(m),
                "missing": miss.get("missing"),
            }
        )
    return rows


def run_features(P, *, config_overrides=None, on_chunk=None, progress: bool = True) -> pd.DataFrame:
    """The whole stage for validated params ``P``: every set in ``features.sets``, then controls.

    Returns the summary table (also written to ``features/summary.csv``).
    """
    from mmrepr.data.schema import load_dataset
    from mmrepr.features.controls import apply_controls
    from mmrepr.features.store import load_feature_set

    fp: FeaturesParams = P.features
    for name in fp.sets:
        feature_set_roles(name)  # fail early on a typo, before any encoding
    items = load_dataset(P.run_dir).items
    ex = Extraction(items, P.run_dir, fp, P.seed, config_overrides=config_overrides, on_chunk=on_chunk, progress=progress)
    rows = []
    for name in fp.sets:
        fs = ex.feature_set(name)
        save_feature_set(P.run_dir, fs)
        rows += feature_summary(fs)
    for name in apply_controls(P.run_dir, fp.controls, P.seed):
        rows += feature_summary(load_feature_set(P.run_dir, name))
    summary = pd.DataFrame(rows)
    write_csv(summary, features_dir(P.run_dir) / "summary.csv")
    return summary
