"""Successive halving against the exhaustive grid: same cells, same cache, same selection.

``python -m mmrepr.bench pruning --profile params/allrecipes.yaml --models VBPR,FREEDOM
--feature-set qwen2vl-7b__fitb__sbert [--lr ... --factors ... --reg ...] [--threads 1]``

Runs the profile's grid search (stage 4's own ``_grid_search``, cell cache and executor) for
each model on one feature set with the first seed, once with the profile's
``train.pruning`` (successive halving) and once with ``pruning: none`` (every grid point to
``train.epochs`` with the same early stopping). A final cell has the same key and
fingerprint in both, so the exhaustive pass reuses the pruned pass's final cells: nothing is
trained twice. Cells go to the profile's run folder (``train/cells``), the cache the real
stage 4 reads; stage 4's tables are not written.

Prints per model and schedule: the selected configuration, its validation and test
Recall@20 (the selection metric), the epochs trained over all its cells (the last evaluated
epoch of each) and the cells' summed training time (``fit_seconds`` of each cell when it was
trained, from ``.stages/timings/train``; validation included, test evaluation not) -- the cost of
the schedule from a cold cache, whichever pass actually trained a shared cell. ``--lr`` etc.
restrict the grid to a documented subset. Writes JSON with every cell.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def _floats(s: str | None):
    return None if s is None else [float(x) for x in s.split(",")]


def _ints(s: str | None):
    return None if s is None else [int(x) for x in s.split(",")]


def schedule_params(P, models: list[str], feature_set: str, pruning: dict | None, grid: dict, threads: int):
    """The profile's params reduced to one search: these models on one feature set, first seed,
    no baselines, ``pruning`` (None: the profile's)."""
    T = P.train
    upd = dict(multimodal_models=models, baselines=[], attribute_feature_sets=[], feature_sets=[feature_set],
               seeds=[T.seeds[0]], torch_threads=threads, executor="inprocess",
               grid=T.grid.model_copy(update={k: v for k, v in grid.items() if v is not None}))
    if pruning is not None:
        upd["pruning"] = T.pruning.model_copy(update=pruning)
    return P.model_copy(update=dict(train=T.model_copy(update=upd)))


def run_schedule(Q, ctx, models: list[str]) -> dict:
    """The grid search of ``Q`` (stage 4's code path); per model the selected cell and costs."""
    import pandas as pd

    from mmrepr import timings
    from mmrepr.training import results as R
    from mmrepr.training.cells import cell_paths
    from mmrepr.training.executor import make_executor
    from mmrepr.training.search import _grid_search, grid_configs

    T = Q.train
    ctx.train = T  # fingerprints read the context's train params: same data, this schedule
    metas: dict[str, dict] = {}
    fresh: set[str] = set()
    executor = make_executor(Q, ctx, raise_errors=True)

    def run(cells):
        for cell, meta, err, was_trained in executor.run(cells):
            if meta is not None:
                metas[cell.key] = meta
                if was_trained:
                    fresh.add(cell.key)

    t0 = time.perf_counter()
    try:
        cells = _grid_search(T, models, grid_configs(T, Q.seed), [T.seeds[0]], None, run, metas)
    finally:
        executor.close()
    wall = time.perf_counter() - t0
    fit = {k: v.get("fit_seconds") for k, v in timings.gather(Q.run_dir, "train").items()}
    selected = R.select_keys(cells, metas)
    out = {"wall_seconds_this_pass": round(wall, 1), "models": {}}
    for model in models:
        mine = [c for c in cells if c.model == model and c.key in metas]
        key = next(k for (m, _, _), k in selected.items() if m == model)
        c = next(c for c in mine if c.key == key)
        rows = pd.read_parquet(cell_paths(ctx, c)[1])
        test = rows[(rows["split"] == "test") & (rows["metric"] == "Recall") & (rows["k"] == 20)]["value"]
        epochs = sum(int(metas[x.key]["epochs_evaluated"][-1]) for x in mine)
        secs = [fit.get(x.key) for x in mine]
        out["models"][model] = dict(
            selected=c.config_id, params=c.params, val_recall20=float(metas[key]["best_val"]),
            test_recall20=float(test.iloc[0]), best_epoch=int(metas[key]["best_epoch"]),
            stopped_early=bool(metas[key]["stopped_early"]), n_cells=len(mine),
            n_final=sum(1 for x in mine if x.final), epochs_trained=epochs,
            train_seconds=round(sum(s for s in secs if s is not None), 1),
            cells_without_timing=sum(1 for s in secs if s is None),
            trained_in_this_pass=sum(1 for x in mine if x.key in fresh),
            final_cells={x.config_id: dict(val=float(metas[x.key]["best_val"]), best_epoch=int(metas[x.key]["best_epoch"]),
                                           epochs=int(metas[x.key]["epochs_evaluated"][-1]))
                         for x in mine if x.final},
        )
    return out


def compare(P, models: list[str], feature_set: str, grid: dict, threads: int = 1) -> dict:
    """Both schedules on ``P``'s run folder; the numbers :func:`print_table` prints."""
    from mmrepr.training.cells import prepare

    pruned = schedule_params(P, models, feature_set, None, grid, threads)
    exhaustive = schedule_params(P, models, feature_set, dict(kind="none"), grid, threads)
    ctx = prepare(pruned)
    out = dict(profile=P.profile, feature_set=feature_set, seed=P.train.seeds[0], threads=threads,
               grid=pruned.train.grid.model_dump(), epochs=P.train.epochs, eval_every=P.train.eval_every,
               patience=P.train.early_stop_patience, pruning=P.train.pruning.model_dump(),
               batch_size=P.train.batch_size, load_before=[round(x, 2) for x in os.getloadavg()])
    for name, Q in (("successive_halving", pruned), ("exhaustive", exhaustive)):
        out[name] = run_schedule(Q, ctx, models)
        print(f"{name}: pass {out[name]['wall_seconds_this_pass']} s", flush=True)
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def print_table(out: dict, models: list[str]) -> None:
    print(f"\n{out['profile']}, {out['feature_set']}, seed {out['seed']}, grid {out['grid']}, epochs {out['epochs']}, "
          f"eval every {out['eval_every']}, patience {out['patience']}, {out['threads']} thread(s), "
          f"load {out['load_before']} -> {out['load_after']}")
    print("| model | schedule | selected | params | val R@20 | test R@20 | best epoch | cells | epochs trained | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in models:
        for name in ("successive_halving", "exhaustive"):
            r = out[name]["models"][model]
            print(f"| {model} | {name} | {r['selected']} | {json.dumps(r['params'], sort_keys=True)} | "
                  f"{r['val_recall20']:.4f} | {r['test_recall20']:.4f} | {r['best_epoch']} | {r['n_cells']} | "
                  f"{r['epochs_trained']} | {r['train_seconds']} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmrepr.bench pruning", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="params/allrecipes.yaml")
    ap.add_argument("--models", default="VBPR,FREEDOM")
    ap.add_argument("--feature-set", default="qwen2vl-7b__fitb__sbert")
    ap.add_argument("--lr", default=None, help="grid subset, e.g. 0.001,0.01 (default: the profile's)")
    ap.add_argument("--factors", default=None)
    ap.add_argument("--reg", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--json", default=None, help="write the numbers here (default: runs/<profile>/bench_pruning_<models>.json)")
    a = ap.parse_args(argv)

    from mmrepr.config import load_params

    P = load_params(a.profile)
    if P.train.pruning.kind == "none":
        print(f"{a.profile}: train.pruning is none; nothing to compare")
        return 2
    models = a.models.split(",")
    out = compare(P, models, a.feature_set, dict(lr=_floats(a.lr), factors=_ints(a.factors), reg=_floats(a.reg)),
                  a.threads)
    out["profile"] = a.profile
    print_table(out, models)
    path = Path(a.json or Path(P.run_dir) / f"bench_pruning_{'_'.join(models)}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0
