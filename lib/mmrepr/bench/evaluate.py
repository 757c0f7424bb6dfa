"""``python -m mmrepr.bench eval [--params params/allrecipes.yaml] [--json out.json]``

Times our batched evaluator against Cornac's ``ranking_eval`` on the Allrecipes split
(stage 1's output if present, else ``shared/data/allrecipes/{train,val,test}.tsv``), for a
model with many ties (MostPop) and one with continuous scores (BPR), and checks that every
per-user value is identical (to 1e-9). Both sides keep their best of ``--repeats`` /
``--cornac-repeats`` runs: the machine's noise then counts against neither.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _triples(params_path: str | None):
    from mmrepr.config import load_params
    from mmrepr.paths import shared_data_dir
    from mmrepr.training.data import SplitTriples

    if params_path:
        P = load_params(params_path)
        inter = P.run_dir / "data" / "interactions.parquet"
        if inter.is_file():
            import pandas as pd

            return SplitTriples.from_interactions(pd.read_parquet(inter), str(inter)), str(inter), P.train
    folder = shared_data_dir() / "allrecipes"
    return SplitTriples.from_tsv_folder(folder), str(folder), None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmrepr.bench eval", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/allrecipes.yaml")
    ap.add_argument("--json", default=None, help="write the numbers here")
    ap.add_argument("--cutoffs", default="10,20,50")
    ap.add_argument("--repeats", type=int, default=3, help="runs of our evaluator (best time kept)")
    ap.add_argument("--cornac-repeats", type=int, default=2, help="runs of Cornac's ranking_eval (best time kept)")
    args = ap.parse_args(argv)

    from cornac.models import BPR, MostPop

    from mmrepr.evaluation.cornac_ref import cornac_ranking_eval, per_user_array
    from mmrepr.evaluation.ranking import evaluate, split_from_cornac
    from mmrepr.models.adapters import score_users
    from mmrepr.training.data import build_method, unknown_report

    cutoffs = tuple(int(k) for k in args.cutoffs.split(","))
    triples, source, _ = _triples(args.params)
    method = build_method(triples, 4.0, seed=123)
    unk = unknown_report(triples)
    print(f"data: {source}")
    print(unk.to_string(index=False))
    tr = method.train_set
    print(f"train: {tr.num_users} users x {tr.num_items} items; test users in Cornac's test set: "
          f"{len(set(method.test_set.uir_tuple[0]))}")

    out = {"source": source, "cutoffs": cutoffs, "models": {}}
    models = [MostPop(), BPR(k=64, max_iter=20, learning_rate=0.01, lambda_reg=0.01, seed=123, verbose=False)]
    for model in models:
        model.fit(tr)
        row = {}
        for split_name, target, exclude in (("val", method.val_set, None), ("test", method.test_set, method.val_set)):
            t0 = time.perf_counter()
            split = split_from_cornac(split_name, tr, target, [exclude] if exclude is not None else [], 4.0)
            t_build = time.perf_counter() - t0
            times = []
            for _ in range(max(1, args.repeats)):
                t0 = time.perf_counter()
                ours = evaluate(lambda u: score_users(model, u), split, cutoffs)
                times.append(time.perf_counter() - t0)
            t_ours = min(times)
            times = []
            for _ in range(max(1, args.cornac_repeats)):
                t0 = time.perf_counter()
                avg, per_user = cornac_ranking_eval(model, tr, target, exclude, 4.0, cutoffs)
                times.append(time.perf_counter() - t0)
            t_cornac = min(times)
            same_users = all(set(per_user[k]) == set(ours.users.tolist()) for k in avg)
            max_diff = max(float(np.abs(ours.values[k] - per_user_array(per_user[k], ours.users)).max()) for k in avg)
            row[split_name] = dict(
                users=int(len(ours.users)), ours_s=t_ours, ours_build_split_s=t_build, cornac_s=t_cornac,
                speedup=t_cornac / t_ours, speedup_incl_build=t_cornac / (t_ours + t_build),
                tie_fallback_users=ours.n_tie_fallback, same_users=same_users, max_abs_diff=max_diff,
                identical=bool(same_users and max_diff <= 1e-9),
                cornac={f"{m}@{k}": v for (m, k), v in avg.items()},
                ours={f"{m}@{k}": ours.mean(m, k) for (m, k) in avg},
                ours_graded={f"nDCG_graded@{k}": ours.mean("nDCG_graded", k) for k in cutoffs},
            )
            r = row[split_name]
            print(f"{model.name:8s} {split_name:4s} users={r['users']:6d}  ours={t_ours:7.3f}s "
                  f"(+{t_build:.3f}s split)  cornac={t_cornac:7.2f}s  speed-up x{r['speedup']:.0f} "
                  f"(x{r['speedup_incl_build']:.0f} incl. split)  ties re-ranked={r['tie_fallback_users']}  "
                  f"max|diff|={max_diff:.1e}  identical={r['identical']}")
            print("         " + "  ".join(f"{k}={v:.5f}" for k, v in r["cornac"].items()))
        out["models"][model.name] = row
    ok = all(r["identical"] for m in out["models"].values() for r in m.values())
    print("all identical to Cornac:", ok)
    if args.json:
        from mmrepr.io import write_json

        write_json(Path(args.json), out)
    return 0 if ok else 1
