"""The written contract between stage 4 (training) and stage 5 (analysis).

Everything stage 4 leaves under ``runs/<profile>/train/`` for others to read is named here,
written by :func:`collect` and read back through the ``read_*`` functions; analysis imports
nothing else from stage 4.

| file | columns / content |
|---|---|
| ``results.parquet`` | :data:`RESULT_COLUMNS`, every validation epoch and the test row of every finished final cell |
| ``best.parquet`` | the same columns, the selected configuration per (model, feature set, seed): its test rows and its best validation epoch |
| ``curves.parquet`` | :data:`CURVE_COLUMNS`, the validation rows (final cells) |
| ``cells_summary.csv`` | one row per finished cell, pruning rungs included (meta without fingerprint) and :data:`SUMMARY_EXTRA` |
| ``models.csv`` | :data:`MODEL_COLUMNS`, the declaration of every trained model (family, needs, label, keyword reference) |
| ``failures.csv`` | cells that raised (absent when none) |
| ``slices.csv`` | :data:`SLICE_COLUMNS`, per test slice: candidate items, evaluated users, relevant (user, item) rows, users with rows in the slice but no relevant item (written when the stage prepares its data) |
| ``unknowns.csv`` | per split (train/val/test): rows, users, rows of users/items unknown to training (``rows_unknown_item``: the cold-item rows, out of ``test`` but in ``test_cold``/``test_all``) |
| ``per_user/<model>__<feature set or none>__seed<seed>.parquet`` | :data:`PER_USER_COLUMNS`, test split (warm items) of the selected configuration |
| ``per_user/<model>__<feature set or none>__seed<seed>__<slice>.parquet`` | the same for the other test slices of :data:`TEST_SLICES` (``test_cold``, ``test_all``) |

A *final* cell trained to ``train.epochs``; an intermediate successive-halving rung's cell
(``epochs`` set, key ending ``__e<epochs>``) only ranks configurations on validation: it is
listed in ``cells_summary.csv`` (``final`` False, ``pruned`` True where the search stopped that
configuration) but never selected and not in results/curves. With ``train.seed_policy:
retrain_selected`` the seeds after the first have one final cell per (model, feature set),
the configuration selected under the first seed (``phase`` "retrain"); every seed still has
its rows in best.parquet and per_user/.

Test slices (:data:`TEST_SLICES`, the ``split`` column of results/best): ``test`` ranks the
warm items (items with a training interaction) for the user's warm test items; ``test_cold``
ranks only the cold items (no training interaction) for the user's cold test items;
``test_all`` ranks the whole catalogue for all the user's test items. Only users known from
training are evaluated in each; a user with no relevant item in a slice is not in it.
``test_cold`` exists only when the data has cold items. Each slice's rows are in
results/best (the selected cell's test rows of every slice) and its per-user file in
``per_user/`` (:func:`per_user_filename` with the slice).

``feature_set`` is "" for models that need no features. Metric labels look like
``Recall@20``: :func:`parse_metric` is the one parser.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from mmrepr.io import write_csv, write_parquet

RESULT_COLUMNS = ["dataset", "model", "feature_set", "config_id", "params", "seed", "split", "epoch", "metric", "k",
                  "value"]
CURVE_COLUMNS = ["model", "feature_set", "config_id", "seed", "epoch", "metric", "k", "value"]
PER_USER_COLUMNS = ["user", "metric", "k", "value"]
MODEL_COLUMNS = ["model", "family", "needs", "label", "keyword_reference"]
# Columns cells_summary.csv adds to each cell's meta: its rung (0 without pruning), whether it
# is final (may be selected), was pruned at that rung, search or retrain phase, converged
# (:func:`converged`) and selected.
SUMMARY_EXTRA = ["rung", "final", "pruned", "phase", "converged", "selected"]

# split value -> what it ranks (docs/protocol.md, "Cold items"); "test" is the warm slice.
TEST_SLICES = {"test": "warm items", "test_cold": "cold items", "test_all": "whole catalogue"}

# slices.csv: one row per test slice (see the table above)
SLICE_COLUMNS = ["split", "candidates", "users", "relevant", "users_no_relevant"]
SLICES_FILE = "slices.csv"

RESULTS_FILE = "results.parquet"
BEST_FILE = "best.parquet"
CURVES_FILE = "curves.parquet"
SUMMARY_FILE = "cells_summary.csv"
MODELS_FILE = "models.csv"
FAILURES_FILE = "failures.csv"
PER_USER_DIR = "per_user"

METRIC_NAMES = ("Recall", "nDCG", "HR", "nDCG_graded")
METRIC_PATTERN = r"^(" + "|".join(METRIC_NAMES) + r")@[1-9][0-9]*$"


class ResultsError(ValueError):
    """Stage-4 output that is missing or does not follow the contract."""


@dataclass(frozen=True)
class MetricSpec:
    metric: str
    k: int

    @property
    def label(self) -> str:
        return f"{self.metric}@{self.k}"


def parse_metric(label: str, where: str = "metric") -> MetricSpec:
    """``"Recall@20"`` -> ``MetricSpec("Recall", 20)``; ``where`` names the params key in the error."""
    m = re.fullmatch(r"\s*(" + "|".join(METRIC_NAMES) + r")@(\d+)\s*", str(label))
    if not m or int(m.group(2)) < 1:
        raise ResultsError(f"{where}: {label!r} is not of the form Name@k (e.g. Recall@20) with Name one of "
                           f"{', '.join(METRIC_NAMES)}")
    return MetricSpec(m.group(1), int(m.group(2)))


def train_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "train"


def per_user_filename(model: str, feature_set: str, seed: int, split: str = "test") -> str:
    if split not in TEST_SLICES:
        raise ResultsError(f"test slice {split!r}: not one of {list(TEST_SLICES)}")
    tail = "" if split == "test" else f"__{split}"
    return f"{model}__{feature_set or 'none'}__seed{int(seed)}{tail}.parquet"


def per_user_path(run_dir: Path, model: str, feature_set: str, seed: int, split: str = "test") -> Path:
    return train_dir(run_dir) / PER_USER_DIR / per_user_filename(model, feature_set, seed, split)


# ---- writing ------------------------------------------------------------------------------


def model_table(models: Iterable[str]) -> pd.DataFrame:
    """The declarations of ``models`` as the table written to ``models.csv``."""
    from mmrepr.models import registry

    rows = []
    for name in dict.fromkeys(models):
        if not registry.available(name):
            continue
        s = registry.get_spec(name)
        rows.append(dict(model=name, family=s.family, needs=s.needs or "", label=s.display,
                         keyword_reference=-1 if s.keyword_reference is None else int(s.keyword_reference)))
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def converged(meta: dict) -> bool:
    """The issue's criterion: training stopped early (patience) or its best validation epoch
    came before its last evaluation, so more epochs would not have been selected. A model
    fitted once (a single evaluation at epoch 0) has nothing to train further: True."""
    evaluated = list(meta.get("epochs_evaluated") or [])
    if bool(meta.get("stopped_early")):
        return True
    if not evaluated or evaluated == [0]:
        return True
    return int(meta["best_epoch"]) < max(int(e) for e in evaluated)


def select_keys(cells: list, metas: dict[str, dict]) -> dict[tuple[str, str, int], str]:
    """(model, feature set, seed) -> key of the selected cell: the highest ``best_val`` among
    the finished *final* cells (``cell.epochs`` None), the first in ``cells`` order on ties."""
    best: dict[tuple[str, str, int], tuple[float, int, str]] = {}
    for i, c in enumerate(cells):
        if getattr(c, "epochs", None) is not None or c.key not in metas:
            continue
        v = float(metas[c.key]["best_val"])
        g = (c.model, c.feature_set, int(c.seed))
        if g not in best or v > best[g][0]:
            best[g] = (v, i, c.key)
    return {g: key for g, (_, _, key) in best.items()}


def collect(out_dir: Path, cells: list, metas: dict[str, dict], failures: list[dict],
            cell_files: Callable[[Any], tuple[Path, Path]]) -> dict[str, pd.DataFrame]:
    """Write results/best/curves/per_user/models and a per-cell summary from the finished cells.

    ``cells``: every planned cell in plan order (``.key``, ``.model``, ``.feature_set``,
    ``.config_id``, ``.seed``); ``metas``: key -> meta of the finished ones;
    ``cell_files(cell) -> (rows parquet, per-user parquet)`` of a finished cell; the per-user
    parquet has a ``split`` column naming the test slice (absent: all ``test``)."""
    out = Path(out_dir)
    done = [c for c in cells if c.key in metas]
    finals = [c for c in done if getattr(c, "epochs", None) is None]
    frames = [pd.read_parquet(cell_files(c)[0]) for c in finals]
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RESULT_COLUMNS)
    results = results[RESULT_COLUMNS]
    write_parquet(results, out / RESULTS_FILE)

    curves = results[results["split"] == "val"][CURVE_COLUMNS].reset_index(drop=True)
    write_parquet(curves, out / CURVES_FILE)

    # Best configuration per (model, feature set, seed): highest best_val, first on ties.
    best_keys = set(select_keys(cells, metas).values())
    summary = pd.DataFrame([
        dict({k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)
              for k, v in metas[c.key].items() if k != "fingerprint"},
             rung=int(getattr(c, "rung", 0)), final=getattr(c, "epochs", None) is None,
             pruned=bool(getattr(c, "pruned", False)), phase=getattr(c, "phase", "search"),
             converged=converged(metas[c.key]), selected=c.key in best_keys)
        for c in done
    ])
    best_rows = []
    write_csv(summary, out / SUMMARY_FILE)
    if len(failures):
        write_csv(pd.DataFrame(failures).drop(columns="traceback", errors="ignore"), out / FAILURES_FILE)
    else:
        (out / FAILURES_FILE).unlink(missing_ok=True)
    models = model_table(c.model for c in done)
    write_csv(models, out / MODELS_FILE)

    for c in finals:
        if c.key not in best_keys:
            continue
        meta = metas[c.key]
        r = results[(results["model"] == c.model) & (results["feature_set"] == c.feature_set)
                    & (results["config_id"] == c.config_id) & (results["seed"] == c.seed)]
        best_rows.append(r[r["split"].isin(list(TEST_SLICES)) | (r["epoch"] == meta["best_epoch"])])
        pu = pd.read_parquet(cell_files(c)[1])
        split_of = pu["split"] if "split" in pu.columns else pd.Series("test", index=pu.index)
        for name in TEST_SLICES:
            path = out / PER_USER_DIR / per_user_filename(c.model, c.feature_set, c.seed, name)
            part = pu[split_of == name]
            if name == "test" or len(part):
                write_parquet(part[PER_USER_COLUMNS].reset_index(drop=True), path)
            else:
                path.unlink(missing_ok=True)  # no such slice (no cold items): no stale file
    best = pd.concat(best_rows, ignore_index=True) if best_rows else pd.DataFrame(columns=RESULT_COLUMNS)
    best = best[RESULT_COLUMNS]
    write_parquet(best, out / BEST_FILE)
    return dict(results=results, best=best, curves=curves, summary=summary, models=models)


# ---- reading ------------------------------------------------------------------------------


def check_columns(df: pd.DataFrame, needed: Iterable[str], path: Path, error: type[Exception] = ResultsError) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise error(f"{path}: missing column(s) {missing}; has {list(df.columns)}")


def read_table(run_dir: Path, name: str, error: type[Exception] = ResultsError) -> pd.DataFrame:
    """One of the files above, its columns checked; a missing file is an error naming it."""
    path = train_dir(run_dir) / name
    if not path.is_file():
        raise error(f"{path}: not found; run the train stage first")
    df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    needed = {RESULTS_FILE: RESULT_COLUMNS, BEST_FILE: RESULT_COLUMNS, CURVES_FILE: CURVE_COLUMNS,
              MODELS_FILE: MODEL_COLUMNS}.get(name, [])
    check_columns(df, needed, path, error)
    if "feature_set" in df:
        df = df.assign(feature_set=df["feature_set"].fillna("").astype(str))
    return df


def read_per_user(run_dir: Path, model: str, feature_set: str, seed: int,
                  error: type[Exception] = ResultsError, split: str = "test") -> pd.DataFrame | None:
    """The per-user metrics of a selected cell on one test slice (None when the file is missing)."""
    path = per_user_path(run_dir, model, feature_set, seed, split)
    if not path.is_file():
        return None
    df = pd.read_parquet(path)
    check_columns(df, PER_USER_COLUMNS, path, error)
    return df


def read_models(run_dir: Path, models: Iterable[str] = ()) -> pd.DataFrame:
    """``models.csv``; for runs written before it existed, the registry's declarations of ``models``."""
    path = train_dir(run_dir) / MODELS_FILE
    if path.is_file():
        df = pd.read_csv(path, keep_default_na=False)
        check_columns(df, MODEL_COLUMNS, path)
        missing = [m for m in models if m not in set(df["model"])]
        if missing:
            df = pd.concat([df, model_table(missing)], ignore_index=True)
        return df
    return model_table(models)
