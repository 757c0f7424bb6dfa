"""Stage 4's search: every (model, feature set, configuration, seed) cell, resumable.

Which cells: :mod:`~mmrepr.training.plan`; one cell: :mod:`~mmrepr.training.cells`; where
they run: :mod:`~mmrepr.training.executor`; what is written: :mod:`~mmrepr.training.results`.

Every cell trains with validation every ``eval_every`` epochs (``selection_metric`` on the
validation split), keeps its best epoch (optional early stopping), then is evaluated once on
test at that epoch. The configuration with the best validation value is selected per
(model, feature set, seed). Grid cells are submitted all at once; each TPE study asks one
trial at a time and is told its value in trial order (studies advance together, one trial
each per round), so the cells and their results do not depend on the executor. On resume the
seeded sampler proposes the same trials and finished cells answer from the cell cache.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterable

import pandas as pd
from mmrepr.progress import tqdm

from mmrepr.training import results as _results
from mmrepr.training.cells import (  # noqa: F401 - the stage's API in one place
    Context,
    cell_fingerprint,
    cell_paths,
    load_cell,
    prepare,
    run_cell,
)
from mmrepr.training.executor import make_executor
from mmrepr.training.plan import (  # noqa: F401
    Cell,
    TPEStudy,
    baseline_sets,
    control_pairs,
    count_cells,
    grid_configs,
    missing_inputs,
    planned_models,
)
from mmrepr.training.results import CURVE_COLUMNS, PER_USER_COLUMNS, RESULT_COLUMNS  # noqa: F401

log = logging.getLogger(__name__)


@dataclass
class SearchReport:
    cells: list[Cell]
    metas: dict[str, dict]
    failures: list[dict]
    unavailable: list[str]
    seconds: float
    executor: str = "inprocess"
    # What :func:`mmrepr.training.results.collect` wrote: results, best, curves, summary, models.
    outputs: dict[str, pd.DataFrame] = field(default_factory=dict)
    trained: int = 0  # cells trained by this call (not answered from the cache)


def progress_bar(total: int, desc: str, enabled: bool = True):
    """One terminal progress line (stderr of the process), never in a notebook's output."""
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def run_search(P, ctx: Context | None = None, progress: bool = True, models: Iterable[str] | None = None,
               raise_errors: bool = False) -> SearchReport:
    """Run (or resume) every cell the params ask for; then :func:`collect`. The report
    carries what was written (``report.outputs``)."""
    ctx = ctx or prepare(P)
    T = ctx.train
    only = set(models) if models is not None else None
    mm, bl, unavailable = planned_models(T)
    if unavailable:
        from mmrepr.models import registry

        for name in unavailable:
            log.warning("skipped: %s", registry.unavailable_reason(name))
    grid = grid_configs(T, P.seed)
    metas: dict[str, dict] = {}
    errors: dict[str, dict] = {}
    t0 = time.perf_counter()
    bar = progress_bar(count_cells(T, P.seed, only), "train cells", progress)
    executor = make_executor(P, ctx, raise_errors)
    trained = 0

    def run(cells: list[Cell]) -> None:
        nonlocal trained
        for cell, meta, err, fresh in executor.run(cells):
            trained += int(fresh)
            if meta is not None:
                metas[cell.key] = meta
            else:
                errors[cell.key] = err
                log.error("cell %s failed: %s", cell.key, err["error"])
            bar.update(1)

    grid_cells: dict[int, list[Cell]] = {}
    studies: dict[int, list[TPEStudy]] = {}
    try:
        for seed in T.seeds:
            grid_cells[seed] = [Cell(model, fs, config_id, hp, seed) for fs in T.feature_sets for model in mm
                                if only is None or model in only for config_id, hp in grid]
            studies[seed] = [TPEStudy(model, fs, seed, T.baseline_trials) for model in bl
                             if only is None or model in only for fs in baseline_sets(T, model)]
        run([c for seed in T.seeds for c in grid_cells[seed]])
        # TPE: one trial per study per round, told in order.
        active = [s for seed in T.seeds for s in studies[seed]]
        while active:
            asked = [(s, s.ask()) for s in active]
            run([c for _, c in asked])
            for s, c in asked:
                s.tell(metas.get(c.key))
            active = [s for s in active if not s.done]
    finally:
        bar.close()
        executor.close()
    # Plan order (per seed: grid cells, then each study's trials): what collect() writes in.
    order = [c for seed in T.seeds for c in grid_cells[seed] + [c for s in studies[seed] for c in s.cells]]
    failures = [errors[c.key] for c in order if c.key in errors]
    report = SearchReport(order, metas, failures, unavailable, time.perf_counter() - t0, executor.name,
                          trained=trained)
    report.outputs = collect(ctx, report)
    return report


def collect(ctx: Context, report: SearchReport) -> dict[str, pd.DataFrame]:
    """Write the stage's outputs (:mod:`mmrepr.training.results`) from the finished cells."""
    return _results.collect(ctx.out_dir, report.cells, report.metas, report.failures,
                            lambda c: cell_paths(ctx, c)[1:])


def best_table(best: pd.DataFrame, split: str = "test", k: int = 20) -> pd.DataFrame:
    """Wide table: one row per (model, feature set), metrics as columns (mean over seeds)."""
    d = best[(best["split"] == split) & (best["k"] == k)]
    if d.empty:
        return pd.DataFrame()
    t = d.pivot_table(index=["model", "feature_set"], columns="metric", values="value", aggfunc="mean")
    return t.reset_index().sort_values(["model", "feature_set"]).reset_index(drop=True)
