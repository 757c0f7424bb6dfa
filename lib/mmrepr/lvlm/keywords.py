"""Parsed slot values → normalised keywords → clusters → one-hot item attributes.

The authors' pipeline (STUDY.md, "From LVLM answers to side content"): lemmatise each
value, embed the distinct values of a slot with Sentence-BERT all-MiniLM-L6-v2, merge
near-synonyms by agglomerative clustering (cosine distance, average linkage, distance
threshold 0.45), keep the 50 most frequent clusters per slot and send the rest to that
slot's "Other"; one-hot encode (at most 5 × 51 = 255 columns).

The authors lemmatised with NLTK WordNet, whose data is downloaded at run time; we use
simplemma, whose data ships in its PyPI package (its version is recorded in the meta).
"""

from __future__ import annotations

import importlib.metadata
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

OTHER = "Other"


def lemmatizer_info(kind: str) -> dict:
    if kind == "none":
        return {"lemmatizer": "none"}
    return {"lemmatizer": "simplemma", "lemmatizer_version": importlib.metadata.version("simplemma"), "language": "en"}


def normalise_value(value: str | None, lemmatizer: str = "simplemma") -> str | None:
    """Lowercase, NFKC, punctuation to spaces (hyphens kept), each word lemmatised."""
    if not isinstance(value, str):  # None, or NaN from a pandas string column
        return None
    v = unicodedata.normalize("NFKC", str(value)).lower().replace("&", " and ")
    v = re.sub(r"[^\w\s'-]+", " ", v)
    words = [w.strip("'-") for w in v.split()]
    words = [w for w in words if w]
    if not words:
        return None
    if lemmatizer == "simplemma":
        import simplemma

        words = [simplemma.lemmatize(w, lang="en").lower() if w.isalpha() else w for w in words]
    elif lemmatizer != "none":
        raise ValueError(f"unknown lemmatizer {lemmatizer!r}; allowed: simplemma, none")
    return " ".join(words)


def cluster_values(values: list[str], embed: Callable[[list[str]], np.ndarray], threshold: float) -> dict[str, int]:
    """Distinct ``values`` → cluster id (agglomerative, cosine distance, average linkage)."""
    from sklearn.cluster import AgglomerativeClustering

    distinct = sorted(set(values))
    if not distinct:
        return {}
    if len(distinct) == 1:
        return {distinct[0]: 0}
    X = np.asarray(embed(distinct), dtype=np.float64)
    model = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average", distance_threshold=threshold)
    labels = model.fit_predict(X)
    return {v: int(c) for v, c in zip(distinct, labels)}


@dataclass
class OneHot:
    item_ids: list[str]
    matrix: np.ndarray  # float32 0/1, items × columns
    columns: list[str]  # "<slot>=<representative>" / "<slot>=Other"
    vocabulary: pd.DataFrame  # slot, cluster, label, members, count, column, kept
    assignments: pd.DataFrame  # asin, slot, value, normalised, cluster, column


def build_onehot(
    parsed: pd.DataFrame,
    labels: list[str],
    item_ids: list[str],
    embed: Callable[[list[str]], np.ndarray],
    threshold: float = 0.45,
    top_k: int = 50,
    lemmatizer: str = "simplemma",
) -> OneHot:
    """One-hot keyword attributes of ``item_ids`` from parsed answers (asin + one column per label).

    An item without an answer, or a slot without a value, gets no 1 in that slot's columns.
    """
    index = {iid: i for i, iid in enumerate(item_ids)}
    vocab_rows = []
    assign_rows = []
    columns: list[str] = []
    col_blocks: list[np.ndarray] = []
    known = parsed[parsed["asin"].isin(index)]
    for slot in labels:
        norm = known[slot].map(lambda v: normalise_value(v, lemmatizer))
        mask = norm.notna()
        asins = known.loc[mask, "asin"].tolist()
        raw_vals = known.loc[mask, slot].tolist()
        norm_vals = norm[mask].tolist()
        cid_of = cluster_values(norm_vals, embed, threshold)
        clusters = [cid_of[v] for v in norm_vals]
        counts = pd.Series(clusters, dtype="int64").value_counts() if clusters else pd.Series(dtype="int64")
        value_counts = pd.Series(norm_vals, dtype=object).value_counts() if norm_vals else pd.Series(dtype="int64")
        # Representative: the cluster's most frequent normalised value (ties: alphabetical).
        members: dict[int, list[str]] = {}
        for v, c in cid_of.items():
            members.setdefault(c, []).append(v)
        rep = {
            c: sorted(ms, key=lambda m: (-int(value_counts.get(m, 0)), m))[0] for c, ms in members.items()
        }
        order = sorted(counts.index, key=lambda c: (-int(counts[c]), rep[c]))
        kept = order[:top_k]
        col_of: dict[int, int] = {c: j for j, c in enumerate(kept)}
        slot_cols = [f"{slot}={rep[c]}" for c in kept]
        has_other = len(order) > top_k
        if has_other:
            slot_cols.append(f"{slot}={OTHER}")
        block = np.zeros((len(item_ids), len(slot_cols)), dtype=np.float32)
        for a, rv, nv, c in zip(asins, raw_vals, norm_vals, clusters):
            j = col_of.get(c, len(kept))  # not kept → Other
            block[index[a], j] = 1.0
            assign_rows.append((a, slot, rv, nv, c, slot_cols[j]))
        for c in order:
            vocab_rows.append({
                "slot": slot,
                "cluster": int(c),
                "label": rep[c],
                "members": "|".join(sorted(members[c], key=lambda m: (-int(value_counts.get(m, 0)), m))),
                "n_members": len(members[c]),
                "count": int(counts[c]),
                "kept": c in col_of,
                "column": slot_cols[col_of[c]] if c in col_of else f"{slot}={OTHER}",
            })
        columns.extend(slot_cols)
        col_blocks.append(block)
    matrix = np.concatenate(col_blocks, axis=1) if col_blocks else np.zeros((len(item_ids), 0), np.float32)
    vocabulary = pd.DataFrame(vocab_rows, columns=["slot", "cluster", "label", "members", "n_members", "count", "kept", "column"])
    assignments = pd.DataFrame(assign_rows, columns=["asin", "slot", "value", "normalised", "cluster", "column"])
    return OneHot(list(item_ids), matrix, columns, vocabulary, assignments)
