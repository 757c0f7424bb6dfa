"""Stage 4's predicted time: the real plan's cells and epochs times measured per-model costs.

``python -m mmrepr.bench budget params/allrecipes.yaml [--measure] [--cores 1,2]
[--final-fraction F]``

1. ``--measure`` (needs the profile's stages 1-3): for every model the plan trains, one
   cell's pieces are timed on the profile's data with its batch size and ``--threads`` torch
   threads (default 1): the set-up (building the model and its graphs), seconds per training
   epoch (median of ``--epochs`` epochs), seconds per validation evaluation (median) and one
   test evaluation. Multimodal models at each ``factors`` of the grid (their lr/reg do not
   change the work), on the first of ``train.feature_sets``; baselines at the middle of their
   search space (geometric for log ranges), those without one at their defaults (attribute models on the first
   attribute set). Written to ``runs/<profile>/bench_costs.json`` (or ``--costs``).
2. The estimate reads the costs and counts, from the plan code stage 4 runs
   (:mod:`mmrepr.training.plan`): per (model, feature set) group the successive-halving rungs
   (``rung_sizes`` x ``rung_budgets``), the final cells, the retrains of the selected
   configuration with the other seeds, the baselines' TPE trials (each to ``train.epochs``
   with early stopping) and single-fit baselines; the validation evaluations every
   ``eval_every`` epochs and one test evaluation per final cell. Rung cells are counted at
   their whole budget (exact when it is at most ``(patience + 1) * eval_every``: such a cell
   cannot stop before it; else an upper bound); final and TPE cells train ``--final-fraction`` of ``train.epochs`` (1.0, the
   default, is the upper bound; early stopping makes it smaller, by an amount only a run can
   tell). Grid cells are costed at the mean over the grid's ``factors``.

It prints the predicted stage-4 time per model and in total for each ``--cores`` N (cells in
parallel on N single-threaded workers, perfect packing: total / N). A prediction, not a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def _mid(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def _probe_configs(P) -> dict[str, list[dict]]:
    from mmrepr.models import registry
    from mmrepr.training.plan import planned_models

    T = P.train
    mm, bl, _ = planned_models(T)
    out = {m: [dict(lr=_mid(T.grid.lr), factors=f, reg=_mid(T.grid.reg)) for f in sorted(set(T.grid.factors))]
           for m in mm}
    for b in bl:
        out[b] = [{k: _space_mid(v) for k, v in registry.search_space(b).items()}]
    return out


def _space_mid(spec: tuple):
    """The middle of one search-space entry: a categorical's middle choice, a range's
    (geometric, for log ranges) midpoint."""
    if spec[0] == "cat":
        return _mid(spec[1])
    lo, hi, log = spec[1], spec[2], spec[3]
    v = (lo * hi) ** 0.5 if log else (lo + hi) / 2
    return int(round(v)) if spec[0] == "int" else float(v)


def measure(P, epochs: int = 3, threads: int = 1, models: list[str] | None = None, save=None) -> dict:
    """Time one cell's pieces per model (see the module doc). Returns the costs JSON;
    ``save(costs)`` is called after every model (a crash keeps what was measured)."""
    from mmrepr.evaluation.ranking import evaluate
    from mmrepr.models import adapters, registry
    from mmrepr.models.base import set_torch_threads
    from mmrepr.training.cells import _attach, prepare
    from mmrepr.training.plan import baseline_sets
    from mmrepr.training.results import parse_metric

    threads = set_torch_threads(threads)
    ctx = prepare(P)
    T = P.train
    sel = parse_metric(T.selection_metric, "train.selection_metric")
    cutoffs = sorted(set(T.cutoffs) | {sel.k})
    costs = dict(profile=P.profile, threads=threads, batch_size=T.batch_size, epochs_timed=epochs,
                 load_before=[round(x, 2) for x in os.getloadavg()], models={})
    for model, configs in _probe_configs(P).items():
        if models is not None and model not in models:
            continue
        spec = registry.get_spec(model)
        fs = T.feature_sets[0] if spec.needs == "features" else (
            baseline_sets(T, model)[0] if spec.needs == "attributes" else "")
        for hp in configs:
            evals: list[float] = []

            def val_eval(m):
                t = time.perf_counter()
                r = evaluate(lambda u: adapters.score_users(m, u, spec), ctx.val_split, cutoffs, T.eval_chunk_size)
                evals.append(time.perf_counter() - t)
                return r.mean(sel.metric, sel.k), {}

            t0 = time.perf_counter()
            _attach(ctx, model, fs)
            m = registry.build_model(model, hp, seed=T.seeds[0], n_epochs=epochs, batch_size=T.batch_size)
            adapters.train_epochwise(m, ctx.method.train_set, ctx.method.val_set, val_eval, epochs, 1, None, spec=spec)
            total = time.perf_counter() - t0
            t = time.perf_counter()
            evaluate(lambda u: adapters.score_users(m, u, spec), ctx.test_split, cutoffs, T.eval_chunk_size)
            test_s = time.perf_counter() - t
            ep = list(getattr(m, "epoch_seconds", []) or [])
            epochwise = spec.epochwise
            if epochwise and not ep:  # epochs without per-epoch timing (Cornac BPR): the rest / epochs
                ep = [(total - sum(evals)) / epochs] * epochs
            epoch_s = statistics.median(ep) if epochwise else 0.0
            setup = max(0.0, total - sum(ep) - sum(evals)) if epochwise else max(0.0, total - sum(evals))
            row = dict(params=hp, feature_set=fs, epochwise=epochwise, setup_s=round(setup, 3),
                       epoch_s=round(epoch_s, 4), eval_s=round(statistics.median(evals), 4), test_eval_s=round(test_s, 4),
                       epoch_seconds=[round(x, 4) for x in ep], eval_seconds=[round(x, 4) for x in evals])
            costs["models"].setdefault(model, []).append(row)
            print(f"measured {model} {hp}: set-up {setup:.2f} s, {epoch_s:.3f} s/epoch, "
                  f"{row['eval_s']:.3f} s/validation, test {test_s:.3f} s", flush=True)
        if save is not None:
            save(dict(costs, load_after=[round(x, 2) for x in os.getloadavg()]))
    costs["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return costs


def plan_counts(T) -> dict[str, dict]:
    """Per model: cells and epochs (upper bounds) of stage 4's plan, by phase."""
    from mmrepr.models import registry
    from mmrepr.training.plan import (baseline_sets, grid_configs, planned_models, rung_budgets, rung_sizes,
                                      search_seeds)

    mm, bl, _ = planned_models(T)
    n_search, n_retrain = len(search_seeds(T)), len(T.seeds) - len(search_seeds(T))
    G = len(grid_configs(T, 0))
    sizes, budgets = rung_sizes(G, T), rung_budgets(T)
    out = {}
    for m in mm:
        groups = len(T.feature_sets)
        rungs = [dict(cells=groups * n_search * s, epochs=b) for s, b in zip(sizes[:-1], budgets)]
        out[m] = dict(kind="grid", rungs=rungs, final=groups * n_search * sizes[-1], retrain=groups * n_retrain)
    for b in bl:
        groups = len(baseline_sets(T, b))
        trials = T.baseline_trials if registry.search_space(b) else 1
        out[b] = dict(kind="tpe" if trials > 1 else "single", rungs=[], final=groups * n_search * trials,
                      retrain=groups * n_retrain)
    return out


def estimate(T, costs: dict, final_fraction: float = 1.0) -> dict[str, dict]:
    """Predicted seconds per model (see the module doc)."""
    counts = plan_counts(T)
    out = {}
    for model, c in counts.items():
        rows = costs["models"].get(model)
        if not rows:
            out[model] = dict(c, seconds=None, note="no measured cost")
            continue
        mean = {k: statistics.mean(r[k] for r in rows) for k in ("setup_s", "epoch_s", "eval_s", "test_eval_s")}
        epochwise = rows[0]["epochwise"]

        def cell_s(epochs: float, final: bool) -> float:
            if not epochwise:
                return mean["setup_s"] + mean["eval_s"] + (mean["test_eval_s"] if final else 0.0)
            n_eval = max(1, int(epochs // T.eval_every))
            return (mean["setup_s"] + epochs * mean["epoch_s"] + n_eval * mean["eval_s"]
                    + (mean["test_eval_s"] if final else 0.0))

        final_epochs = T.epochs * final_fraction
        secs = sum(r["cells"] * cell_s(r["epochs"], False) for r in c["rungs"])
        secs += (c["final"] + c["retrain"]) * cell_s(final_epochs, True)
        n_cells = sum(r["cells"] for r in c["rungs"]) + c["final"] + c["retrain"]
        n_epochs = sum(r["cells"] * r["epochs"] for r in c["rungs"]) + (
            (c["final"] + c["retrain"]) * final_epochs if epochwise else 0)
        out[model] = dict(c, seconds=secs, cells=n_cells, epochs=n_epochs, **{f"cost_{k}": v for k, v in mean.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmrepr.bench budget", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("params")
    ap.add_argument("--measure", action="store_true", help="time the per-model costs first (needs stages 1-3)")
    ap.add_argument("--models", default=None, help="with --measure: only these (comma-separated)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs timed per model with --measure")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--costs", default=None, help="costs JSON (default runs/<profile>/bench_costs.json)")
    ap.add_argument("--cores", default="1,2", help="predict for these numbers of single-threaded workers")
    ap.add_argument("--final-fraction", type=float, default=1.0,
                    help="share of train.epochs a final/TPE cell trains (1.0: no early stop, the upper bound)")
    a = ap.parse_args(argv)

    from mmrepr.config import load_params
    from mmrepr.training.plan import count_cells

    P = load_params(a.params)
    T = P.train
    path = Path(a.costs or Path(P.run_dir) / "bench_costs.json")
    if a.measure:
        old = json.loads(path.read_text()) if path.is_file() else None

        def save(new: dict) -> None:  # keep the models not measured now
            if old is not None:
                new = dict(new, models={**old["models"], **new["models"]})
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(new, indent=1))

        save(measure(P, a.epochs, a.threads, a.models.split(",") if a.models else None, save))
        print(f"wrote {path}")
    if not path.is_file():
        print(f"{path}: no measured costs; run with --measure first")
        return 2
    costs = json.loads(path.read_text())
    est = estimate(T, costs, a.final_fraction)
    n_plan = count_cells(T, P.seed)
    n_est = sum(e.get("cells", 0) for e in est.values())
    print(f"\n{a.params}: {n_plan} cells planned (plan.count_cells; counted here {n_est}); grid "
          f"{len(T.grid.lr)}x{len(T.grid.factors)}x{len(T.grid.reg)}, {len(T.feature_sets)} feature sets, "
          f"epochs {T.epochs}, pruning {T.pruning.kind} (eta {T.pruning.eta}, min {T.pruning.min_epochs}), "
          f"seeds {len(T.seeds)}, TPE trials {T.baseline_trials}; final cells at {a.final_fraction:.0%} of "
          f"{T.epochs} epochs; costs from {path} ({costs.get('threads')} thread(s), load {costs.get('load_before')})")
    print("| model | cells | epochs | s/epoch | s/validation | set-up s | predicted s (1 worker) |")
    print("|---|---|---|---|---|---|---|")
    total = 0.0
    for m, e in est.items():
        if e.get("seconds") is None:
            print(f"| {m} | – | – | – | – | – | not measured |")
            continue
        total += e["seconds"]
        print(f"| {m} | {e['cells']} | {e['epochs']:.0f} | {e['cost_epoch_s']:.3f} | {e['cost_eval_s']:.3f} | "
              f"{e['cost_setup_s']:.2f} | {e['seconds']:.0f} |")
    for n in [int(x) for x in a.cores.split(",")]:
        print(f"predicted stage 4 on {n} worker(s): {total / n / 3600:.2f} h ({total / n:.0f} s)")
    return 0
