"""``python -m mmrepr.bench paired --reference MMREC_SRC [--models LATTICE] [--content noise] [--seeds 999,1000,1001] [--max-epochs 1000] [--patience 20] [--threads 1] [--out CSV]``

Ours and MMRec's own class trained **to the stopping rule in lockstep**: MMRec's initial
weights copied into ours, MMRec's batches fed to both (``bench lockstep``), each side
validated after every epoch with our evaluator (validation Recall@20) and stopped by the
fidelity protocol's rule on its own validation curve (the 21st non-improving validation).
Each side's test Recall@20 is read at its own best epoch, as ``bench fidelity`` reads it; ours
also at MMRec's best epoch.

Why: ``bench fidelity`` compares independent seeds, so a gap of a few per cent drowns in the
seeds' spread (LATTICE on noise: sd ~13 % of the mean, ~60 seeds a side for ±5 %). Here a seed
is the same initialisation and the same sampled triples on both sides (common random
numbers): what differs is the two codes, and the drift that float rounding starts where a
model re-selects neighbours from trained values (LATTICE's learned item graph). The per-seed
differences are paired, so their spread, not the seeds', sets the standard error.

Our training items on both sides (MMRec restricted, as ``bench fidelity --reference-items
train``); ``lockstep.SETTINGS`` applies (BM3 without its target dropout on both sides).
With ``--out``, finished seeds are kept (atomic rewrite after each) and skipped on a rerun;
the per-epoch validation curves go to ``<stem>_curves.csv``.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from mmrepr.bench.fidelity import MMRecScorer, model_list
from mmrepr.bench.lockstep import (EPOCH_SYNC, MODELS, PARAMETERS, SETTINGS, _both_sides, add_input_arguments,
                                   load_inputs, run_lockstep)

SIDES = ("ours", "mmrec")


@dataclass
class EarlyStop:
    """MMRec's stopping rule on one validation curve: stop at the (patience + 1)-th
    validation in a row without a new best (``cur_step > stopping_step``)."""

    patience: int
    best: float = -np.inf
    best_epoch: int = 0
    since: int = 0
    stopped_at: int | None = None

    def update(self, epoch: int, value: float) -> bool:
        """Record ``epoch``'s validation value; True when it is a new best."""
        if self.stopped_at is not None:
            return False
        if value > self.best:
            self.best, self.best_epoch, self.since = value, epoch, 0
            return True
        self.since += 1
        if self.since > self.patience:
            self.stopped_at = epoch
        return False


def run_paired(ours, ref_model, ref_opt, ref_sched, epoch_batches: Callable[[], Iterable], mapping: dict[str, str],
               protocol, *, max_epochs: int, patience: int, users: np.ndarray,
               sync: Callable | None = None, progress: str | None = None) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Train both sides in lockstep (:func:`lockstep.run_lockstep`) until both have stopped.

    ``protocol``: ``val``/``test`` splits and ``recall(model, split)`` (``fidelity.Protocol``).
    Returns the seed's result (each side's best epoch, validation and test Recall@20 there,
    ours at MMRec's best epoch, epochs run, the largest parameter difference at MMRec's best
    epoch), the per-epoch curves (both validation values) and lockstep's rows. ``progress``:
    a progress bar with this label (epochs, both validation values)."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=progress, unit="epoch", disable=progress is None)
    scorers = {"ours": ours, "mmrec": MMRecScorer(ref_model)}
    stops = {side: EarlyStop(patience) for side in SIDES}
    curves, test_at = [], {}

    def epoch_end(epoch: int) -> bool:
        val = {side: protocol.recall(scorers[side], protocol.val) for side in SIDES}
        improved = [stops[side].update(epoch, val[side]) for side in SIDES]
        if any(improved):  # both sides' test at a best epoch of either
            test_at[epoch] = {side: protocol.recall(scorers[side], protocol.test) for side in SIDES}
        curves.append({"epoch": epoch, "val_ours": val["ours"], "val_mmrec": val["mmrec"]})
        bar.update()
        bar.set_postfix(val_ours=f"{val['ours']:.4f}", val_mmrec=f"{val['mmrec']:.4f}", refresh=False)
        return all(stops[side].stopped_at is not None for side in SIDES)

    steps = run_lockstep(ours, ref_model, ref_opt, ref_sched, epoch_batches, mapping, epochs=max_epochs,
                         ref_scores=lambda us: ref_model.full_sort_predict((torch.from_numpy(us),)), users=users,
                         sync=sync, epoch_end=epoch_end)
    bar.close()
    ends = steps[steps["step"] == -1].set_index("epoch")
    o, m = stops["ours"], stops["mmrec"]
    result = {
        "best_epoch_ours": o.best_epoch, "best_epoch_mmrec": m.best_epoch,
        "val_ours": o.best, "val_mmrec": m.best,
        "test_ours": test_at[o.best_epoch]["ours"], "test_mmrec": test_at[m.best_epoch]["mmrec"],
        "test_ours_at_mmrec_best": test_at[m.best_epoch]["ours"],
        "epochs": int(ends.index.max()),
        "stopped_ours": o.stopped_at, "stopped_mmrec": m.stopped_at,
        "param_max_diff_at_mmrec_best": float(ends.loc[m.best_epoch, "param_max_diff"]),
    }
    return result, pd.DataFrame(curves), steps


def paired_summary(results: pd.DataFrame, ours: str = "test_ours", ref: str = "test_mmrec") -> dict:
    """Across seeds: the means, ours / MMRec, the paired differences' mean and standard
    error, that mean over its standard error, the paired t-test's p and a 95 % interval of
    the ratio (the differences' interval over MMRec's mean)."""
    from scipy import stats

    a, b = results[ours].to_numpy(float), results[ref].to_numpy(float)
    d = a - b
    n = len(d)
    out = {"seeds": n, "mean_ours": a.mean(), "mean_mmrec": b.mean(), "ratio": a.mean() / b.mean(),
           "diff_mean": d.mean(), "diff_se": np.nan, "diff_over_se": np.nan, "p_paired": np.nan,
           "ratio_low": np.nan, "ratio_high": np.nan}
    if n >= 2:
        se = d.std(ddof=1) / np.sqrt(n)
        half = stats.t.ppf(0.975, n - 1) * se
        out.update(diff_se=se, diff_over_se=d.mean() / se if se > 0 else np.nan,
                   p_paired=float(stats.ttest_rel(a, b).pvalue) if se > 0 else np.nan,
                   ratio_low=(b.mean() + d.mean() - half) / b.mean(), ratio_high=(b.mean() + d.mean() + half) / b.mean())
    return out


def _print_summary(name: str, content: str, df: pd.DataFrame) -> None:
    for label, col in (("each at its own best epoch", "test_ours"), ("ours at MMRec's best epoch", "test_ours_at_mmrec_best")):
        s = paired_summary(df, ours=col)
        interval = (f", 95 % interval {s['ratio_low']:.3f}-{s['ratio_high']:.3f}, {s['diff_over_se']:+.1f} se, "
                    f"paired t p {s['p_paired']:.2g}") if s["seeds"] >= 2 else ""
        print(f"{name} ({content}), {s['seeds']} paired seeds, test Recall@20 {label}: ours {s['mean_ours']:.4f}, "
              f"MMRec {s['mean_mmrec']:.4f}, ours / MMRec {s['ratio']:.3f}{interval}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmrepr.bench paired", description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="MMRec's src folder")
    ap.add_argument("--models", default="LATTICE")
    ap.add_argument("--content", choices=("real", "noise"), default="noise")
    ap.add_argument("--seeds", default="999,1000,1001", help="comma-separated")
    ap.add_argument("--max-epochs", type=int, default=1000, help="MMRec overall.yaml: 1000 (early stopping ends it)")
    ap.add_argument("--patience", type=int, default=20, help="MMRec stopping_step")
    add_input_arguments(ap)
    ap.add_argument("--out", default=None, help="one row per (model, content, seed) here (CSV); finished seeds "
                                                  "are skipped on a rerun; curves in <stem>_curves.csv")
    args = ap.parse_args(argv)

    from mmrepr.io import write_csv
    from mmrepr.models.base import set_torch_threads

    models = model_list(ap, args.models, MODELS)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    set_torch_threads(args.threads)
    protocol, feats = load_inputs(args.data, args.content, args.noise_seed, args.cache)
    ts = protocol.train_set
    users = np.arange(min(512, ts.num_users), dtype=np.int64)
    out = Path(args.out) if args.out else None
    curves_out = out.with_name(out.stem + "_curves.csv") if out else None
    results = pd.read_csv(out) if out and out.is_file() else pd.DataFrame()
    curves = pd.read_csv(curves_out) if curves_out and curves_out.is_file() else pd.DataFrame()
    for name in models:
        ref_settings, our_settings = SETTINGS.get(name, ({}, {}))
        for seed in seeds:
            done = (not results.empty and ((results["model"] == name) & (results["content"] == args.content)
                                           & (results["seed"] == seed)).any())
            if done:
                print(f"{name} ({args.content}) seed {seed}: in {out}, skipped", flush=True)
                continue
            with tempfile.TemporaryDirectory(prefix="mmrepr-paired-") as tmp:
                ref, ours = _both_sides(name, Path(args.reference), ts, feats, seed, Path(tmp),
                                        epochs=args.max_epochs, ref_settings=ref_settings, our_settings=our_settings)
                result, curve, _ = run_paired(
                    ours, ref.model, ref.ns.optimizer, ref.scheduler, lambda loader=ref.loader: (tuple(b) for b in loader),
                    PARAMETERS[name], protocol, max_epochs=args.max_epochs, patience=args.patience, users=users,
                    sync=EPOCH_SYNC.get(name), progress=f"{name} ({args.content}) seed {seed}")
            key = {"model": name, "content": args.content, "seed": seed}
            print(f"{name} ({args.content}) seed {seed}: " + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()), flush=True)
            results = pd.concat([results, pd.DataFrame([{**key, **result}])], ignore_index=True)
            curves = pd.concat([curves, curve.assign(**key)], ignore_index=True)
            if out:  # curves first: a seed in the results always has its curve
                write_csv(curves, curves_out)
                write_csv(results, out)
        mine = results[(results["model"] == name) & (results["content"] == args.content)
                       & results["seed"].isin(seeds)]
        _print_summary(name, args.content, mine)
    return 0
