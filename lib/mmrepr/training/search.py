"""Hyperparameter search over every (model, feature set, configuration, seed) cell, resumable.

- Multimodal models: the ``train.grid`` (lr x factors x reg), optionally subsampled to
  ``max_grid_points`` (seeded), on every feature set of ``train.feature_sets``.
- Baselines: optuna's TPESampler (seeded) with ``baseline_trials`` trials over
  ``registry.search_space``; models with an empty space run once. Models that need
  attributes run once per ``train.attribute_feature_sets`` entry.
- Every cell trains with validation every ``eval_every`` epochs (``selection_metric`` on
  the validation split), keeps its best epoch (optional early stopping), then is evaluated
  once on test at that epoch. The configuration with the best validation value is selected
  per (model, feature set, seed).
- A finished cell is saved under ``train/cells/`` (rows parquet, per-user parquet, then the
  JSON written last marks it done, with a fingerprint of everything that decides it); a
  rerun skips cells whose JSON and fingerprint match. The TPE study is replayed on resume:
  the seeded sampler proposes the same trials and finished ones are told their stored value.

Outputs (the contract with stage 5) are written by :func:`collect`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mmrepr.evaluation.ranking import EvalSplit, evaluate, split_from_cornac
from mmrepr.features.store import load_feature_set
from mmrepr.io import read_json, sha256_json, write_csv, write_json, write_parquet
from mmrepr.models import adapters, registry
from mmrepr.training.data import (
    AlignedFeatures,
    SplitTriples,
    align_feature_set,
    attach_features,
    build_method,
    train_item_ids,
    unknown_report,
)

log = logging.getLogger(__name__)

from mmrepr.training import results as _results
from mmrepr.training.results import CURVE_COLUMNS, PER_USER_COLUMNS, RESULT_COLUMNS  # noqa: F401


def parse_selection(metric: str) -> tuple[str, int]:
    m = _results.parse_metric(metric, "train.selection_metric")
    return m.metric, m.k


@dataclass
class Cell:
    model: str
    feature_set: str  # "" for pure baselines; the attribute set for attribute models
    config_id: str
    params: dict[str, Any]
    seed: int

    @property
    def key(self) -> str:
        fs = self.feature_set or "none"
        return f"{self.model}__{fs}__{self.config_id}__seed{self.seed}"


@dataclass
class Context:
    """Data prepared once for a whole search."""

    dataset: str
    run_dir: Path
    out_dir: Path
    train: Any  # TrainParams
    method: Any  # cornac BaseMethod
    val_split: EvalSplit
    test_split: EvalSplit
    user_ids: np.ndarray  # model user index -> raw id
    unknowns: pd.DataFrame
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


def prepare(P, triples: SplitTriples | None = None, feature_loader=None) -> Context:
    """Splits into Cornac, the evaluation splits, the unknown-user/item report."""
    from mmrepr.data.schema import load_dataset

    if triples is None:
        ds = load_dataset(P.run_dir)
        triples = SplitTriples.from_interactions(ds.interactions, str(ds.root / "interactions.parquet"))
    T = P.train
    method = build_method(triples, T.rating_threshold, P.seed)
    mask = getattr(T, "mask_train", "positives")
    val = split_from_cornac("val", method.train_set, method.val_set, [], T.rating_threshold, mask=mask)
    test = split_from_cornac("test", method.train_set, method.test_set, [method.val_set], T.rating_threshold, mask=mask)
    uid = method.train_set.uid_map
    n_users = max(len(method.global_uid_map), 1)
    user_ids = np.empty(n_users, dtype=object)
    for raw, idx in method.global_uid_map.items():
        user_ids[idx] = raw
    out_dir = Path(P.run_dir) / "train"
    unk = unknown_report(triples)
    unk["evaluated_users"] = [len(uid), len(val.users), len(test.users)]
    unk["users_no_relevant"] = [0, val.n_skipped_no_relevant, test.n_skipped_no_relevant]
    write_csv(unk, out_dir / "unknowns.csv")
    loader = feature_loader or (lambda name: load_feature_set(P.run_dir, name))
    return Context(P.profile, Path(P.run_dir), out_dir, T, method, val, test, user_ids, unk, feature_loader=loader,
                   inputs_hash=sha256_json(dict(data=_triples_hash(triples), code=_training_code_hash())))


def _triples_hash(triples: SplitTriples) -> str:
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        h.update(name.encode())
        h.update(json.dumps(getattr(triples, name), default=str, separators=(",", ":")).encode("utf-8"))
    return h.hexdigest()


def _training_code_hash() -> str:
    """The train stage's code (the same hash the runner's stage fingerprint uses)."""
    from mmrepr.runner import code_hash
    from mmrepr.stages import get_stage

    return code_hash(get_stage("train"))


def _feature_hash(ctx: Context, name: str) -> str:
    """Content of a feature set as the models see it (aligned rows, every role, its meta)."""
    if name not in ctx.feature_hashes:
        al = _features_for(ctx, name)
        h = hashlib.sha256(json.dumps(dict(meta=al.meta, zeroed=al.n_missing_zeroed), sort_keys=True,
                                      default=str).encode("utf-8"))
        for role in sorted(al.matrices):
            m = np.ascontiguousarray(al.matrices[role])
            h.update(f"{role}:{m.dtype}:{m.shape}".encode())
            h.update(m.tobytes())
        ctx.feature_hashes[name] = h.hexdigest()
    return ctx.feature_hashes[name]


# ---- planning -------------------------------------------------------------------------


def grid_configs(train, seed: int) -> list[tuple[str, dict]]:
    g = train.grid
    full = [dict(lr=lr, factors=f, reg=r) for lr, f, r in itertools.product(g.lr, g.factors, g.reg)]
    idx = list(range(len(full)))
    if train.max_grid_points is not None and train.max_grid_points < len(full):
        rng = np.random.default_rng(seed)
        idx = sorted(rng.choice(len(full), size=train.max_grid_points, replace=False).tolist())
    return [(f"grid{i:02d}", full[i]) for i in idx]


def planned_models(train) -> tuple[list[str], list[str], list[str]]:
    """(multimodal, baselines, unavailable) among those the params ask for."""
    mm, bl, missing = [], [], []
    wanted_mm = registry.names("multimodal") if train.multimodal_models is None else train.multimodal_models
    wanted_bl = registry.names("baseline") if train.baselines is None else train.baselines
    for name in wanted_mm:
        (mm if registry.available(name) else missing).append(name)
    for name in wanted_bl:
        (bl if registry.available(name) else missing).append(name)
    return mm, bl, missing


def missing_inputs(P) -> list[str]:
    """Feature sets the params name that stages 2/3 have not (completely) written."""
    from mmrepr.features.store import list_feature_sets

    have = set(list_feature_sets(P.run_dir))
    wanted = list(P.train.feature_sets) + list(P.train.attribute_feature_sets)
    return [n for n in wanted if n not in have]


def control_pairs(P) -> dict[str, list[str]]:
    """real feature set -> the control sets (noise, shuffled) made from it, among train.feature_sets."""
    from mmrepr.features.store import features_dir

    out: dict[str, list[str]] = {}
    for name in P.train.feature_sets:
        meta_p = features_dir(P.run_dir) / name / "meta.json"
        if not meta_p.is_file():
            continue
        meta = read_json(meta_p)
        ref = meta.get("reference")
        if meta.get("kind", "real") != "real" and ref in P.train.feature_sets:
            out.setdefault(ref, []).append(name)
    return out


# ---- one cell --------------------------------------------------------------------------


def cell_fingerprint(ctx: Context, cell: Cell) -> str:
    """Everything that decides a cell's numbers: its settings, the training settings, the
    split's content, the training code and the content of its feature set. A saved cell
    is reused only when all of them match, so changed data, features or code retrain."""
    T = ctx.train
    return sha256_json(
        dict(cell=cell.__dict__, epochs=T.epochs, eval_every=T.eval_every, patience=T.early_stop_patience,
             batch_size=T.batch_size, cutoffs=sorted(set(T.cutoffs)), threshold=T.rating_threshold,
             selection=T.selection_metric, mask=getattr(T, "mask_train", "positives"), inputs=ctx.inputs_hash,
             features=_feature_hash(ctx, cell.feature_set) if cell.feature_set else "")
    )


def _cell_paths(ctx: Context, cell: Cell) -> tuple[Path, Path, Path]:
    base = ctx.cells_dir / cell.key
    return base.with_suffix(".json"), Path(f"{base}.rows.parquet"), Path(f"{base}.users.parquet")


def load_cell(ctx: Context, cell: Cell) -> dict | None:
    meta_p, rows_p, users_p = _cell_paths(ctx, cell)
    if not meta_p.is_file() or not rows_p.is_file():
        return None
    meta = read_json(meta_p)
    if meta.get("fingerprint") != cell_fingerprint(ctx, cell):
        return None
    return meta


def _features_for(ctx: Context, name: str) -> AlignedFeatures:
    if name not in ctx.feature_cache:
        fs = ctx.feature_loader(name)
        ctx.feature_cache[name] = align_feature_set(fs, train_item_ids(ctx.method))
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
            attach_features(ctx.method, al, concat_for_single_matrix=spec.concat_modalities)
    elif spec.needs == "attributes":
        al = _features_for(ctx, feature_set)
        info = dict(feature_kind=al.meta.get("kind", "real"), n_missing_zeroed=al.n_missing_zeroed)
        if ctx.attached != key:
            attach_features(ctx.method, None, attributes=al)
    elif ctx.attached is not None and ctx.attached[0] is not None:
        attach_features(ctx.method, None)
    ctx.attached = key
    return info


def run_cell(ctx: Context, cell: Cell) -> dict:
    """Train, select the best epoch on validation, test it, save the cell. Returns its meta."""
    cached = load_cell(ctx, cell)
    if cached is not None:
        return cached
    T = ctx.train
    sel_metric, sel_k = parse_selection(T.selection_metric)
    cutoffs = sorted(set(T.cutoffs) | {sel_k})
    chunk = getattr(T, "eval_chunk_size", 1024)
    info = _attach(ctx, cell.model, cell.feature_set)
    model = registry.build_model(cell.model, cell.params, seed=cell.seed, n_epochs=T.epochs, batch_size=T.batch_size)

    def val_eval(m):
        r = evaluate(lambda u: adapters.score_users(m, u), ctx.val_split, cutoffs, chunk)
        return r.mean(sel_metric, sel_k), {key: r.mean(*key) for key in r.values}

    t0 = time.perf_counter()
    elog = adapters.train_epochwise(model, ctx.method.train_set, ctx.method.val_set, val_eval, T.epochs,
                                    T.eval_every, T.early_stop_patience)
    fit_s = time.perf_counter() - t0
    test = evaluate(lambda u: adapters.score_users(model, u), ctx.test_split, cutoffs, chunk)
    params_s = json.dumps(cell.params, sort_keys=True)
    base = dict(dataset=ctx.dataset, model=cell.model, feature_set=cell.feature_set, config_id=cell.config_id,
                params=params_s, seed=cell.seed)
    rows = [dict(base, split="val", epoch=ep, metric=m, k=k, value=v) for ep, vals in elog.evaluations
            for (m, k), v in vals.items()]
    rows += [dict(base, split="test", epoch=elog.best_epoch, metric=m, k=k, value=test.mean(m, k))
             for (m, k) in test.values]
    meta_p, rows_p, users_p = _cell_paths(ctx, cell)
    write_parquet(pd.DataFrame(rows, columns=RESULT_COLUMNS), rows_p)
    pu = test.per_user_frame()
    pu["user"] = ctx.user_ids[pu["user"].to_numpy()].astype(str)
    write_parquet(pu[PER_USER_COLUMNS], users_p)
    meta = dict(
        key=cell.key, model=cell.model, feature_set=cell.feature_set, config_id=cell.config_id, params=cell.params,
        seed=cell.seed, fingerprint=cell_fingerprint(ctx, cell), best_epoch=elog.best_epoch,
        best_val=elog.best_value, selection_metric=T.selection_metric, stopped_early=elog.stopped_early,
        epochs_evaluated=[e for e, _ in elog.evaluations], fit_seconds=round(fit_s, 3),
        test_tie_fallback_users=test.n_tie_fallback, diverged=bool(getattr(model, "diverged", False)), **info,
    )
    write_json(meta_p, meta)  # last: marks the cell done
    return meta


# ---- the search ------------------------------------------------------------------------


@dataclass
class SearchReport:
    cells: list[Cell]
    metas: dict[str, dict]
    failures: list[dict]
    unavailable: list[str]
    seconds: float


def _tpe_cells(ctx: Context, model: str, feature_set: str, seed: int, n_trials: int, run, bar) -> list[Cell]:
    import optuna

    space = registry.search_space(model)
    if not space:
        cell = Cell(model, feature_set, "default", {}, seed)
        run(cell)
        return [cell]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = registry.optuna_distributions(space)
    offset = int(sha256_json([model, feature_set])[:6], 16)
    sampler = optuna.samplers.TPESampler(seed=(seed * 7919 + offset) % (2**31))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    cells = []
    for t in range(n_trials):
        trial = study.ask(dists)
        params = {k: (v.item() if hasattr(v, "item") else v) for k, v in trial.params.items()}
        cell = Cell(model, feature_set, f"tpe{t:02d}", params, seed)
        meta = run(cell)
        cells.append(cell)
        if meta is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, float(meta["best_val"]))
    return cells


def run_search(P, ctx: Context | None = None, progress: bool = True, models: Iterable[str] | None = None,
               raise_errors: bool = False) -> SearchReport:
    """Run (or resume) every cell the params ask for; then :func:`collect`."""
    ctx = ctx or prepare(P)
    T = ctx.train
    only = set(models) if models is not None else None
    mm, bl, unavailable = planned_models(T)
    if unavailable:
        log.warning("models not available (module missing), skipped: %s", unavailable)
    grid = grid_configs(T, P.seed)
    total = 0
    for _ in T.seeds:
        total += len(mm) * len(T.feature_sets) * len(grid)
        for b in bl:
            reps = len(T.attribute_feature_sets) if registry.get_spec(b).needs == "attributes" else 1
            total += reps * (T.baseline_trials if registry.search_space(b) else 1)
    metas: dict[str, dict] = {}
    failures: list[dict] = []
    cells: list[Cell] = []
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc="train cells", disable=not progress)

    def run(cell: Cell) -> dict | None:
        bar.set_postfix_str(cell.key[:60])
        try:
            meta = run_cell(ctx, cell)
        except Exception as exc:  # recorded and reported; the cell is retried on the next run
            if raise_errors:
                raise
            err = dict(key=cell.key, model=cell.model, feature_set=cell.feature_set, config_id=cell.config_id,
                       params=cell.params, seed=cell.seed, error=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc(limit=8))
            write_json(ctx.cells_dir / f"{cell.key}.error.json", err)
            log.error("cell %s failed: %s", cell.key, err["error"])
            failures.append(err)
            meta = None
        else:
            metas[cell.key] = meta
            (ctx.cells_dir / f"{cell.key}.error.json").unlink(missing_ok=True)
        bar.update(1)
        return meta

    for seed in T.seeds:
        for fs in T.feature_sets:
            for model in mm:
                if only is not None and model not in only:
                    continue
                for config_id, hp in grid:
                    cell = Cell(model, fs, config_id, hp, seed)
                    cells.append(cell)
                    run(cell)
        for model in bl:
            if only is not None and model not in only:
                continue
            sets = T.attribute_feature_sets if registry.get_spec(model).needs == "attributes" else [""]
            for fs in sets:
                cells += _tpe_cells(ctx, model, fs, seed, T.baseline_trials, run, bar)
    bar.close()
    report = SearchReport(cells, metas, failures, unavailable, time.perf_counter() - t0)
    collect(ctx, report)
    return report


# ---- outputs ---------------------------------------------------------------------------


def collect(ctx: Context, report: SearchReport) -> dict[str, pd.DataFrame]:
    """Write the stage's outputs (:mod:`mmrepr.training.results`) from the finished cells."""
    return _results.collect(ctx.out_dir, report.cells, report.metas, report.failures,
                            lambda c: _cell_paths(ctx, c)[1:])


def best_table(best: pd.DataFrame, split: str = "test", k: int = 20) -> pd.DataFrame:
    """Wide table: one row per (model, feature set), metrics as columns (mean over seeds)."""
    d = best[(best["split"] == split) & (best["k"] == k)]
    if d.empty:
        return pd.DataFrame()
    t = d.pivot_table(index=["model", "feature_set"], columns="metric", values="value", aggfunc="mean")
    return t.reset_index().sort_values(["model", "feature_set"]).reset_index(drop=True)


def real_vs_noise(best: pd.DataFrame, real: str, controls: list[str], metric: str = "Recall", k: int = 20) -> pd.DataFrame:
    """Per multimodal model: the test metric on ``real`` against each control set."""
    d = best[(best["split"] == "test") & (best["metric"] == metric) & (best["k"] == k)]
    d = d.groupby(["model", "feature_set"])["value"].mean().unstack("feature_set")
    cols = [c for c in [real, *controls] if c in d.columns]
    d = d[cols].dropna(how="all")
    if real in d.columns:
        for c in controls:
            if c in d.columns:
                d[f"{c} - {real}"] = d[c] - d[real]
    return d.reset_index()
