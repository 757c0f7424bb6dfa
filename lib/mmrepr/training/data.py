"""Stage 1's splits and stage 2/3's feature sets, into Cornac.

- The fixed splits enter through ``cornac.eval_methods.BaseMethod.from_splits`` with
  ``exclude_unknowns=True``: its training ``Dataset`` holds the warm items (indices
  ``0 .. n_warm-1``) and its validation/test sets the rows of known users and warm items;
  this is what training, validation and the ``test`` (warm) slice use, unchanged. Rows of
  users unknown to training are counted (:func:`unknown_report`) and never evaluated.
- The whole catalogue (:func:`full_catalogue`): the *cold* items (in validation/test, with
  no training interaction) are appended after the warm ones, ``n_warm .. n_all-1`` (sorted
  by raw id); a second training ``Dataset`` over all of them (same users and interactions)
  is what models built over every item train on, and the validation/test interactions of
  known users over all items feed the ``test_cold`` and ``test_all`` slices.
- A feature set becomes Cornac modalities aligned row by row to ``train_set.iid_map``:
  ``item_image=ImageModality(features=visual)`` and ``item_text=TextModality(features=
  textual)`` (Cornac 3.0.1's ``BaseMethod`` only accepts a ``TextModality`` as item_text;
  with no corpus it is a plain feature holder), ``item_feature=FeatureModality(attributes)``
  for attribute models (Attribute Item-kNN). A model declared with ``concat_modalities`` reads one matrix (item_image): visual and textual are
  concatenated for it (STUDY.md: one linear projection over the concatenated modalities).
- An item (warm or cold) with no row in a feature set is an error naming the set and items,
  unless the set was built with ``missing_policy: drop`` (its meta says so): then the item
  gets a zero row and the count is reported.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from collections import OrderedDict

from cornac.data import Dataset, FeatureModality, ImageModality, TextModality
from cornac.eval_methods import BaseMethod

from mmrepr.features.store import FeatureSet, FeatureSetError

log = logging.getLogger(__name__)


@dataclass
class SplitTriples:
    """(user, item, rating) triples per split, as Cornac wants them."""

    train: list
    val: list
    test: list
    source: str = ""

    @classmethod
    def from_interactions(cls, inter: pd.DataFrame, source: str = "") -> "SplitTriples":
        out = {}
        for s in ("train", "val", "test"):
            d = inter[inter["split"] == s]
            out[s] = list(zip(d["user"].astype(str), d["item"].astype(str), d["rating"].astype(float)))
        if not out["train"] or not out["test"]:
            raise ValueError(f"{source or 'interactions'}: the train and test splits must not be empty")
        return cls(out["train"], out["val"], out["test"], source)

    @classmethod
    def from_tsv_folder(cls, folder: Path) -> "SplitTriples":
        """The authors' ``{train,val,test}.tsv`` (user, item, rating; no header)."""
        frames = []
        for s in ("train", "val", "test"):
            path = Path(folder) / f"{s}.tsv"
            d = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating"], dtype=str)
            bad = pd.to_numeric(d["rating"], errors="coerce").isna()
            if bad.any():
                raise ValueError(f"{path}: row {int(np.flatnonzero(bad)[0]) + 1} has a non-numeric rating")
            d["rating"] = d["rating"].astype(float)
            d["split"] = s
            frames.append(d)
        return cls.from_interactions(pd.concat(frames, ignore_index=True), str(folder))


def unknown_report(triples: SplitTriples) -> pd.DataFrame:
    """Per split: rows, users, and how many involve a user/item unseen in training."""
    tu = {u for u, _, _ in triples.train}
    ti = {i for _, i, _ in triples.train}
    rows = []
    for name, data in (("train", triples.train), ("val", triples.val), ("test", triples.test)):
        users = {u for u, _, _ in data}
        unk_u = sum(u not in tu for u, _, _ in data)
        unk_i = sum(i not in ti for _, i, _ in data)
        unk_any = sum((u not in tu) or (i not in ti) for u, i, _ in data)
        rows.append(
            dict(split=name, rows=len(data), users=len(users), rows_unknown_user=unk_u, rows_unknown_item=unk_i,
                 rows_excluded=unk_any, users_unknown=len(users - tu), rows_kept=len(data) - unk_any)
        )
    return pd.DataFrame(rows)


def build_method(triples: SplitTriples, rating_threshold: float = 4.0, seed: int = 123) -> BaseMethod:
    """Cornac's evaluation method over the fixed splits (unknown users/items excluded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Cornac warns about duplicates; they are counted by stage 1
        return BaseMethod.from_splits(
            train_data=triples.train,
            test_data=triples.test,
            val_data=triples.val if triples.val else None,
            rating_threshold=rating_threshold,
            exclude_unknowns=True,
            seed=seed,
            verbose=False,
        )


def train_item_ids(method: BaseMethod) -> list[str]:
    iid_map = method.train_set.iid_map
    ids = [None] * len(iid_map)
    for raw, idx in iid_map.items():
        ids[idx] = raw
    return ids


@dataclass
class Catalogue:
    """Every item of the dataset in one index space: warm items first (Cornac's training
    indices), then the cold ones. ``train_set``: the training interactions over all items
    (cold columns empty); ``val``/``test``: those splits' interactions of known users."""

    warm_ids: list[str]
    cold_ids: list[str]
    train_set: Dataset
    val: Dataset | None
    test: Dataset

    @property
    def n_warm(self) -> int:
        return len(self.warm_ids)

    @property
    def n_items(self) -> int:
        return len(self.warm_ids) + len(self.cold_ids)

    @property
    def item_ids(self) -> list[str]:
        return self.warm_ids + self.cold_ids


def full_catalogue(method: BaseMethod, triples: SplitTriples) -> Catalogue:
    """The cold items appended to ``method``'s training items, and the datasets over all."""
    warm = train_item_ids(method)
    known = set(warm)
    cold = sorted({i for split in (triples.val, triples.test) for _, i, _ in split} - known)
    iid_map = OrderedDict((iid, idx) for idx, iid in enumerate(warm))
    for iid in cold:
        iid_map[iid] = len(iid_map)
    ts = method.train_set
    uid_map = OrderedDict(ts.uid_map)
    full = Dataset(num_users=ts.num_users, num_items=len(iid_map), uid_map=uid_map, iid_map=iid_map,
                   uir_tuple=ts.uir_tuple, timestamps=ts.timestamps, seed=ts.seed)

    def known_users(data):
        if not any(u in uid_map for u, _, _ in data):
            return None  # nothing of known users (Cornac refuses an empty Dataset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicates: counted by stage 1
            # copies of the maps: nothing is added (exclude_unknowns drops unknown users)
            return Dataset.build(data, global_uid_map=OrderedDict(uid_map), global_iid_map=OrderedDict(iid_map),
                                 seed=ts.seed, exclude_unknowns=True)

    return Catalogue(warm, cold, full, known_users(triples.val), known_users(triples.test))


@dataclass
class AlignedFeatures:
    name: str
    matrices: dict[str, np.ndarray]  # role -> (n_items, dim), rows in catalogue index order (warm, then cold)
    n_missing_zeroed: int = 0
    meta: dict = field(default_factory=dict)


def align_feature_set(fs: FeatureSet, item_ids: list[str]) -> AlignedFeatures:
    """``fs``'s matrices reordered to ``item_ids``; every check fails with a clear message."""
    n = len(fs.item_ids)
    if len(set(fs.item_ids)) != n:
        raise FeatureSetError(f"feature set {fs.name!r}: duplicated item ids")
    index = {iid: r for r, iid in enumerate(fs.item_ids)}
    missing = [iid for iid in item_ids if iid not in index]
    zeroed = 0
    if missing:
        if fs.meta.get("missing_policy") != "drop":
            raise FeatureSetError(
                f"feature set {fs.name!r}: {len(missing)} of {len(item_ids)} items have no row "
                f"(first: {missing[:3]}); the set's item ids do not match the dataset"
            )
        zeroed = len(missing)
        log.warning("feature set %r: %d items dropped at extraction get zero rows", fs.name, zeroed)
    rows = np.array([index.get(i, -1) for i in item_ids], dtype=np.int64)
    out = {}
    for role, m in fs.matrices.items():
        m = np.asarray(m)
        if m.ndim != 2 or m.shape[0] != n:
            raise FeatureSetError(
                f"feature set {fs.name!r}, role {role!r}: matrix shape {m.shape} does not match its {n} item ids"
            )
        a = np.zeros((len(item_ids), m.shape[1]), dtype=np.float32)
        a[rows >= 0] = m[rows[rows >= 0]]
        if not np.isfinite(a).all():
            bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
            raise FeatureSetError(
                f"feature set {fs.name!r}, role {role!r}: {len(bad)} items with NaN/inf (first: {item_ids[bad[0]]!r})"
            )
        out[role] = a
    return AlignedFeatures(fs.name, out, zeroed, dict(fs.meta))


def attach_features(method: BaseMethod, aligned: AlignedFeatures | None, concat_for_single_matrix: bool = False,
                    attributes: AlignedFeatures | None = None, catalogue: Catalogue | None = None) -> None:
    """Put a feature set on ``method``'s datasets (and ``catalogue.train_set``) as Cornac
    modalities, replacing any before. The matrices' rows are in catalogue order (warm items,
    then cold ones; without a catalogue, the training items only).

    ``concat_for_single_matrix``: visual and textual concatenated into item_image (``ModelSpec.concat_modalities``).
    """
    ids = catalogue.item_ids if catalogue is not None else train_item_ids(method)
    id_map = catalogue.train_set.iid_map if catalogue is not None else method.global_iid_map
    image = text = feature = None
    if aligned is not None:
        v = aligned.matrices.get("visual")
        t = aligned.matrices.get("textual")
        if v is None and t is None:
            raise FeatureSetError(f"feature set {aligned.name!r} has no visual or textual matrix for a multimodal model")
        if concat_for_single_matrix:
            image = ImageModality(features=np.concatenate([m for m in (v, t) if m is not None], axis=1), ids=ids)
        else:
            image = ImageModality(features=v, ids=ids) if v is not None else None
            text = TextModality(features=t, ids=ids) if t is not None else None
    if attributes is not None:
        a = attributes.matrices.get("attributes")
        if a is None:
            raise FeatureSetError(f"feature set {attributes.name!r} has no 'attributes' matrix for Attribute Item-kNN")
        feature = FeatureModality(features=a, ids=ids)
    for m in (image, text, feature):
        if m is not None:
            m.build(id_map=id_map)  # ids are already in index order: no reordering
    method.add_modalities(item_image=image, item_text=text, item_feature=feature)
    if catalogue is not None:
        catalogue.train_set.add_modalities(item_image=image, item_text=text, item_feature=feature)
