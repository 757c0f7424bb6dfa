"""Train, evaluate and cache one cell.

A finished cell is saved under ``train/cells/`` (rows parquet, per-user parquet, then the
JSON written last marks it done, with a fingerprint of everything that decides it); a
rerun skips cells whose JSON and fingerprint match, whichever executor wrote them.

Items: a model is trained over the whole catalogue (``ctx.catalogue``: warm items, then the
cold ones) unless its spec says ``item_scope="warm"``; validation and selection rank the
warm items only. A final cell is tested on every slice of ``ctx.test_slices``
(``results.TEST_SLICES``: ``test`` = warm, ``test_cold``, ``test_all``); its per-user
parquet holds all slices (column ``split``), and ``results.collect`` writes one file per slice.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmrepr import timings
from mmrepr.data.checks import check_rating_threshold
from mmrepr.evaluation.ranking import EvalSplit, build_split, evaluate, split_from_cornac
from mmrepr.features.store import load_feature_set
from mmrepr.io import read_json, sha256_json, write_csv, write_json, write_parquet
from mmrepr.models import adapters, registry
from mmrepr.stages import code_hash, get_stage
from mmrepr.training.data import (
    AlignedFeatures,
    Catalogue,
    SplitTriples,
    align_feature_set,
    attach_features,
    build_method,
    full_catalogue,
    train_item_ids,
    unknown_report,
)
from mmrepr.training.plan import Cell
from mmrepr.training.results import (
    PER_USER_COLUMNS,
    RESULT_COLUMNS,
    SLICE_COLUMNS,
    SLICES_FILE,
    parse_metric,
)


@dataclass
class Context:
    """Data prepared once for a whole search (once per worker process on Ray)."""

    dataset: str
    run_dir: Path
    out_dir: Path
    train: Any  # TrainParams
    method: Any  # cornac BaseMethod
    val_split: EvalSplit
    test_split: EvalSplit  # the warm slice, test_slices["test"]
    user_ids: np.ndarray  # model user index -> raw id
    unknowns: pd.DataFrame
    catalogue: Catalogue | None = None
    # split name (results.TEST_SLICES) -> EvalSplit; test_cold only when there are cold items
    test_slices: dict[str, EvalSplit] = field(default_factory=dict)
    feature_cache: dict[str, AlignedFeatures] = field(default_factory=dict)
    attached: tuple | None = None
    feature_loader: Any = None  # name -> FeatureSet (default: the run's feature store)
    # What every cell depends on besides its own settings: the split's content and the
    # training code (models, evaluation, training); see :func:`cell_fingerprint`.
    inputs_hash: str = ""
    feature_hashes: dict[str, str] = field(default_factory=dict)

    @property
    def cells_dir(self) -> Path:
        return self.out_dir / "cells"

    def train_set_for(self, spec):
        """The training Dataset a model is fitted on: the whole catalogue, or the warm items
        for a spec with ``item_scope="warm"`` (Cornac's own samplers)."""
        if spec.item_scope == "warm" or self.catalogue is None:
            return self.method.train_set
        return self.catalogue.train_set


def build_test_slices(method, catalogue: Catalogue, threshold: float, mask: str) -> dict[str, EvalSplit]:
    """``test`` (warm items, Cornac's test set: today's split), ``test_cold`` (candidates: the
    cold items; relevant: the user's cold test items) and ``test_all`` (every item; all the
    user's test items). Users known from training only; the user's validation positives are
    masked in each, as in ``test``."""
    warm = split_from_cornac("test", method.train_set, method.test_set, [method.val_set], threshold, mask=mask)
    out = {"test": warm}
    train = catalogue.train_set.csr_matrix
    target = catalogue.test.csr_matrix
    exclude = [catalogue.val.csr_matrix] if catalogue.val is not None else []
    if catalogue.cold_ids:
        out["test_cold"] = build_split("test_cold", train, target, exclude, threshold,
                                       n_items=len(catalogue.cold_ids), mask=mask, offset=catalogue.n_warm)
    out["test_all"] = build_split("test_all", train, target, exclude, threshold, n_items=catalogue.n_items,
                                  mask=mask)
    return out


def slice_report(slices: dict[str, EvalSplit]) -> pd.DataFrame:
    """Per test slice: candidate items, evaluated users, relevant (user, item) rows, and the
    users with test rows in the slice but no relevant item (not evaluated)."""
    return pd.DataFrame([dict(split=name, candidates=sp_.n_items, users=len(sp_.users),
                              relevant=int(sp_.relevant[sp_.users].nnz), users_no_relevant=sp_.n_skipped_no_relevant)
                         for name, sp_ in slices.items()], columns=SLICE_COLUMNS)


def prepare(P, triples: SplitTriples | None = None, feature_loader=None) -> Context:
    """Splits into Cornac, the evaluation splits, the unknown-user/item report."""
    from mmrepr.data.schema import load_dataset

    if triples is None:
        ds = load_dataset(P.run_dir)
        triples = SplitTriples.from_interactions(ds.interactions, str(ds.root / "interactions.parquet"))
    T = P.train
    # a threshold above every rating would make no interaction relevant: refuse it, naming the file
    check_rating_threshold(T.rating_threshold, [r for split in (triples.train, triples.val, triples.test)
                                                for _, _, r in split], triples.source or "the interactions")
    method = build_method(triples, T.rating_threshold, P.seed)
    catalogue = full_catalogue(method, triples)
    mask = getattr(T, "mask_train", "positives")
    val = split_from_cornac("val", method.train_set, method.val_set, [], T.rating_threshold, mask=mask)
    slices = build_test_slices(method, catalogue, T.rating_threshold, mask)
    test = slices["test"]
    uid = method.train_set.uid_map
    n_users = max(len(method.global_uid_map), 1)
    user_ids = np.empty(n_users, dtype=object)
    for raw, idx in method.global_uid_map.items():
        user_ids[idx] = raw
    out_dir = Path(P.run_dir) / "train"
    unk = unknown_report(triples)
    unk["evaluated_users"] = [len(uid), len(val.users), len(test.users)]
    unk["users_no_relevant"] = [0, val.n_skipped_no_relevant, test.n_skipped_no_relevant]
    # the evaluator's count of target users with no training interaction (cold), and of those evaluated
    unk["users_cold"] = [0, val.n_cold_users, test.n_cold_users]
    unk["users_cold_evaluated"] = [0, val.n_cold_evaluated, test.n_cold_evaluated]
    write_csv(unk, out_dir / "unknowns.csv")
    write_csv(slice_report(slices), out_dir / SLICES_FILE)
    loader = feature_loader or (lambda name: load_feature_set(P.run_dir, name))
    return Context(P.profile, Path(P.run_dir), out_dir, T, method, val, test, user_ids, unk, catalogue=catalogue,
                   test_slices=slices, feature_loader=loader,
                   inputs_hash=sha256_json(dict(data=_triples_hash(triples), code=training_code_hash())))


_WORKER_CONTEXTS: dict[tuple[str, str], Context] = {}


def worker_context(P) -> Context:
    """A per-process Context cache keyed by run dir and train params: a Ray worker prepares
    the data once and reuses it for every cell it is given."""
    key = (str(Path(P.run_dir).resolve()), sha256_json(P.train.model_dump(mode="json")))
    if key not in _WORKER_CONTEXTS:
        _WORKER_CONTEXTS.clear()
        _WORKER_CONTEXTS[key] = prepare(P)
    return _WORKER_CONTEXTS[key]


def _triples_hash(triples: SplitTriples) -> str:
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        h.update(name.encode())
        h.update(json.dumps(getattr(triples, name), default=str, separators=(",", ":")).encode("utf-8"))
    return h.hexdigest()


def training_code_hash() -> str:
    """The train stage's code (the same hash the runner's stage fingerprint uses)."""
    return code_hash(get_stage("train"))


# Meta fields of a feature set that say what its numbers are (never timings, counts of
# cache hits or paths): the cell records kind/reference/random_weights, and the extractor
# or model ids tell two sets with equal bytes apart in the saved cell.
SEMANTIC_META = ("kind", "reference", "random_weights")
EXTRACTOR_ID_KEYS = ("extractor", "model_id", "random_weights", "pretrained")


def feature_content(meta: dict, matrices: dict[str, np.ndarray], n_missing_zeroed: int = 0) -> str:
    """Hash of a feature set's content as the models see it: the aligned matrices' bytes and
    the semantic meta fields (:data:`SEMANTIC_META`, role names, extractor ids)."""
    exts = meta.get("extractors") or {}
    sem = dict(
        {k: meta.get(k) for k in SEMANTIC_META},
        roles=sorted(matrices),
        extractors={r: {k: (e or {}).get(k) for k in EXTRACTOR_ID_KEYS} for r, e in sorted(exts.items())}
        if isinstance(exts, dict) else None,
        zeroed=int(n_missing_zeroed),
    )
    h = hashlib.sha256(json.dumps(sem, sort_keys=True, default=str).encode("utf-8"))
    for role in sorted(matrices):
        m = np.ascontiguousarray(matrices[role])
        h.update(f"{role}:{m.dtype}:{m.shape}".encode())
        h.update(m.tobytes())
    return h.hexdigest()


def _feature_hash(ctx: Context, name: str) -> str:
    if name not in ctx.feature_hashes:
        al = _features_for(ctx, name)
        ctx.feature_hashes[name] = feature_content(al.meta, al.matrices, al.n_missing_zeroed)
    return ctx.feature_hashes[name]


def cell_fingerprint(ctx: Context, cell: Cell) -> str:
    """Everything that decides a cell's numbers: its settings, the training settings, the
    split's content, the training code and the content of its feature set. A saved cell
    is reused only when all of them match, so changed data, features or code retrain."""
    T = ctx.train
    # Bookkeeping (rung, pruned, phase) stays out: the same training in another role is reused.
    settings = dict(model=cell.model, feature_set=cell.feature_set, config_id=cell.config_id, params=cell.params,
                    seed=cell.seed)
    return sha256_json(
        dict(cell=settings, epochs=cell_epochs(T, cell), eval_every=T.eval_every, patience=T.early_stop_patience,
             batch_size=T.batch_size, cutoffs=sorted(set(T.cutoffs)), threshold=T.rating_threshold,
             selection=T.selection_metric, mask=getattr(T, "mask_train", "positives"), inputs=ctx.inputs_hash,
             features=_feature_hash(ctx, cell.feature_set) if cell.feature_set else "")
    )


def cell_epochs(train, cell: Cell) -> int:
    """The cell's epoch budget: its pruning rung's, else ``train.epochs``."""
    return train.epochs if cell.epochs is None else int(cell.epochs)


def cell_paths(ctx: Context, cell: Cell) -> tuple[Path, Path, Path]:
    """(meta JSON, rows parquet, per-user parquet) of a cell."""
    base = ctx.cells_dir / cell.key
    return base.with_suffix(".json"), Path(f"{base}.rows.parquet"), Path(f"{base}.users.parquet")


def load_cell(ctx: Context, cell: Cell) -> dict | None:
    meta_p, rows_p, users_p = cell_paths(ctx, cell)
    if not meta_p.is_file() or not rows_p.is_file():
        return None
    meta = read_json(meta_p)
    if meta.get("fingerprint") != cell_fingerprint(ctx, cell):
        return None
    return meta


def _features_for(ctx: Context, name: str) -> AlignedFeatures:
    if name not in ctx.feature_cache:
        fs = ctx.feature_loader(name)
        ids = ctx.catalogue.item_ids if ctx.catalogue is not None else train_item_ids(ctx.method)
        ctx.feature_cache[name] = align_feature_set(fs, ids)
    return ctx.feature_cache[name]


def _attach(ctx: Context, model: str, feature_set: str) -> dict:
    spec = registry.get_spec(model)
    key = (spec.needs, feature_set, spec.concat_modalities)
    info: dict = {}
    if spec.needs == "features":
        al = _features_for(ctx, feature_set)
        info = dict(feature_kind=al.meta.get("kind", "real"), reference=al.meta.get("reference", ""),
                    random_weights=bool(al.meta.get("random_weights", False)),
                    n_missing_zeroed=al.n_missing_zeroed, roles=sorted(al.matrices))
        if ctx.attached != key:
            attach_features(ctx.method, al, concat_for_single_matrix=spec.concat_modalities, catalogue=ctx.catalogue)
    elif spec.needs == "attributes":
        al = _features_for(ctx, feature_set)
        info = dict(feature_kind=al.meta.get("kind", "real"), n_missing_zeroed=al.n_missing_zeroed)
        if ctx.attached != key:
            attach_features(ctx.method, None, attributes=al, catalogue=ctx.catalogue)
    elif ctx.attached is not None and ctx.attached[0] is not None:
        attach_features(ctx.method, None, catalogue=ctx.catalogue)
    ctx.attached = key
    return info


def run_cell(ctx: Context, cell: Cell) -> dict:
    """Train, select the best epoch on validation, test it, save the cell. Returns its meta."""
    cached = load_cell(ctx, cell)
    if cached is not None:
        return cached
    T = ctx.train
    sel = parse_metric(T.selection_metric, "train.selection_metric")
    cutoffs = sorted(set(T.cutoffs) | {sel.k})
    chunk = getattr(T, "eval_chunk_size", 1024)
    info = _attach(ctx, cell.model, cell.feature_set)
    spec = registry.get_spec(cell.model)
    n_epochs = cell_epochs(T, cell)
    model = registry.build_model(cell.model, cell.params, seed=cell.seed, n_epochs=n_epochs, batch_size=T.batch_size)

    def val_eval(m):
        r = evaluate(lambda u: adapters.score_users(m, u, spec), ctx.val_split, cutoffs, chunk)
        return r.mean(sel.metric, sel.k), {key: r.mean(*key) for key in r.values}

    t0 = time.perf_counter()
    elog = adapters.train_epochwise(model, ctx.train_set_for(spec), ctx.method.val_set, val_eval, n_epochs,
                                    T.eval_every, T.early_stop_patience, spec=spec)
    fit_s = time.perf_counter() - t0
    # An intermediate pruning rung only ranks configurations on validation: no test evaluation.
    t1 = time.perf_counter()
    slices = (ctx.test_slices or {"test": ctx.test_split}) if cell.final else {}
    tests = {name: evaluate(lambda u: adapters.score_users(model, u, spec), split, cutoffs, chunk)
             for name, split in slices.items()}
    test_s = time.perf_counter() - t1
    test = tests.get("test")
    params_s = json.dumps(cell.params, sort_keys=True)
    base = dict(dataset=ctx.dataset, model=cell.model, feature_set=cell.feature_set, config_id=cell.config_id,
                params=params_s, seed=cell.seed)
    rows = [dict(base, split="val", epoch=ep, metric=m, k=k, value=v) for ep, vals in elog.evaluations
            for (m, k), v in vals.items()]
    for name, res in tests.items():
        rows += [dict(base, split=name, epoch=elog.best_epoch, metric=m, k=k, value=res.mean(m, k))
                 for (m, k) in res.values]
    meta_p, rows_p, users_p = cell_paths(ctx, cell)
    write_parquet(pd.DataFrame(rows, columns=RESULT_COLUMNS), rows_p)
    frames = []
    for name, res in tests.items():
        pu = res.per_user_frame()
        pu["user"] = ctx.user_ids[pu["user"].to_numpy()].astype(str)
        frames.append(pu[PER_USER_COLUMNS].assign(split=name))
    write_parquet(pd.concat(frames, ignore_index=True) if frames
                  else pd.DataFrame(columns=PER_USER_COLUMNS + ["split"]), users_p)
    meta = dict(
        key=cell.key, model=cell.model, feature_set=cell.feature_set, config_id=cell.config_id, params=cell.params,
        seed=cell.seed, fingerprint=cell_fingerprint(ctx, cell), best_epoch=elog.best_epoch,
        best_val=elog.best_value, selection_metric=T.selection_metric, stopped_early=elog.stopped_early,
        epochs_evaluated=[e for e, _ in elog.evaluations], epoch_budget=n_epochs,
        test_tie_fallback_users=test.n_tie_fallback if test is not None else 0,
        slice_tie_fallback_users={name: int(r.n_tie_fallback) for name, r in tests.items()},
        diverged=bool(getattr(model, "diverged", False)), **info,
    )
    write_json(meta_p, meta)  # last: marks the cell done
    # measured, so kept out of the cell's outputs: one timing file per cell (safe for Ray workers)
    timings.record(ctx.run_dir, "train", cell.key, fit_seconds=round(fit_s, 3), test_seconds=round(test_s, 3))
    return meta


def run_cell_safely(ctx: Context, cell: Cell, raise_errors: bool = False) -> tuple[dict | None, dict | None, bool]:
    """(meta, None, trained) for a finished cell (trained: False when it came from the cache),
    (None, error record, True) for one that raised (written to ``cells/<key>.error.json``;
    the cell is retried on the next run)."""
    cached = load_cell(ctx, cell)
    if cached is not None:
        return cached, None, False
    try:
        meta = run_cell(ctx, cell)
    except Exception as exc:
        if raise_errors:
            raise
        err = dict(key=cell.key, model=cell.model, feature_set=cell.feature_set, config_id=cell.config_id,
                   params=cell.params, seed=cell.seed, error=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc(limit=8))
        write_json(ctx.cells_dir / f"{cell.key}.error.json", err)
        return None, err, True
    (ctx.cells_dir / f"{cell.key}.error.json").unlink(missing_ok=True)
    return meta, None, True
