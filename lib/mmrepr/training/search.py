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

from mmrepr import timings
from mmrepr.training import results as _results
from mmrepr.training.cells import (  # noqa: F401 - the stage's API in one place
    Context,
    cell_fingerprint,
    cell_paths,
    load_cell,
    prepare,
    run_cell,
    slice_report,
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
    n_promoted,
    planned_models,
    rank_configs,
    rung_budgets,
    rung_sizes,
    search_seeds,
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

    order: list[Cell] = []  # plan order: what collect() writes in
    try:
        seeds = search_seeds(T)
        order += _grid_search(T, mm, grid, seeds, only, run, metas)
        # TPE: one trial per study per round, told in order (all search seeds together).
        studies = {seed: [TPEStudy(model, fs, seed, T.baseline_trials) for model in bl
                          if only is None or model in only for fs in baseline_sets(T, model)] for seed in seeds}
        active = [s for seed in seeds for s in studies[seed]]
        while active:
            asked = [(s, s.ask()) for s in active]
            run([c for _, c in asked])
            for s, c in asked:
                s.tell(metas.get(c.key))
            active = [s for s in active if not s.done]
        for seed in seeds:
            order += [c for s in studies[seed] for c in s.cells]
        if T.seed_policy == "retrain_selected" and len(T.seeds) > 1:
            again = retrain_cells(order, metas, T.seeds[0], T.seeds[1:])
            run(again)
            order += again
    finally:
        bar.close()
        executor.close()
    failures = [errors[c.key] for c in order if c.key in errors]
    report = SearchReport(order, metas, failures, unavailable, time.perf_counter() - t0, executor.name,
                          trained=trained)
    timings.say(f"train: {len(metas)} cells ({trained} trained now) in {report.seconds:.0f}s on {executor.name}")
    report.outputs = collect(ctx, report)
    return report


def _grid_search(T, mm: list[str], grid: list[tuple[str, dict]], seeds: list[int], only, run, metas) -> list[Cell]:
    """The grid of every (seed, multimodal model, feature set) group; with ``train.pruning``
    synchronous successive halving: every group runs rung r (all their cells at once on the
    executor), then each keeps its best 1/eta by validation (ties by grid order; failed cells
    never) for rung r+1; the survivors of the last intermediate rung train to
    ``train.epochs``. Returns the cells in the order run (deterministic: values decide, not
    the executor)."""
    groups = [(seed, model, fs) for seed in seeds for fs in T.feature_sets for model in mm
              if only is None or model in only]
    alive = {g: list(range(len(grid))) for g in groups}  # grid indices still in the running
    rung_of = {g: 0 for g in groups}
    order: list[Cell] = []

    def cell(g, i: int, **kw) -> Cell:
        return Cell(g[1], g[2], grid[i][0], grid[i][1], g[0], **kw)

    for r, budget in enumerate(rung_budgets(T)):
        active = [g for g in groups if len(alive[g]) > 1]
        if not active:
            break
        batch = {g: [cell(g, i, epochs=budget, rung=r) for i in alive[g]] for g in active}
        run([c for g in active for c in batch[g]])
        for g in active:
            cells = batch[g]
            vals = [metas[c.key]["best_val"] if c.key in metas else None for c in cells]
            ranked = [j for j in rank_configs(vals) if vals[j] is not None]
            keep = sorted(ranked[:n_promoted(len(cells), T.pruning.eta)])
            for j, c in enumerate(cells):
                c.pruned = j not in keep
            alive[g] = [alive[g][j] for j in keep]
            rung_of[g] = r + 1
            order += cells
    final = [cell(g, i, rung=rung_of[g]) for g in groups for i in alive[g]]
    run(final)
    # Plan order: per seed, per group, rung by rung.
    rank = {g: n for n, g in enumerate(groups)}
    cells = order + final
    return sorted(cells, key=lambda c: (rank[(c.seed, c.model, c.feature_set)], c.epochs is None, c.rung))


def retrain_cells(cells: list[Cell], metas: dict[str, dict], first_seed: int, seeds: list[int]) -> list[Cell]:
    """The configuration selected under ``first_seed`` for every (model, feature set), with each
    of ``seeds``, in the order the groups were planned (a group with no finished cell: none)."""
    selected = _results.select_keys(cells, metas)
    by_key = {c.key: c for c in cells}
    groups = list(dict.fromkeys((c.model, c.feature_set) for c in cells if c.seed == first_seed))
    out = []
    for seed in seeds:
        for model, fs in groups:
            key = selected.get((model, fs, int(first_seed)))
            if key is None:
                log.warning("%s on %r: no finished configuration under seed %s; nothing to retrain", model, fs,
                            first_seed)
                continue
            c = by_key[key]
            out.append(Cell(c.model, c.feature_set, c.config_id, c.params, seed, rung=c.rung, phase="retrain"))
    return out


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
