"""``python -m mmrepr.bench {extract,lvlm,eval,train,fidelity,speed,lockstep,paired,pruning,budget} ...`` — each prints numbers and writes JSON."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "extract": ("mmrepr.bench.extract", "batched feature extraction vs one item at a time"),
    "lvlm": ("mmrepr.bench.lvlm", "batched LVLM generation vs one item at a time"),
    "eval": ("mmrepr.bench.evaluate", "the fast evaluator vs Cornac's ranking evaluation"),
    "train": ("mmrepr.bench.train", "stage 4's wall time in-process vs on a local Ray"),
    "fidelity": ("mmrepr.bench.fidelity", "VBPR, LATTICE, FREEDOM, BM3, LightGCN vs the MMRec reference (issue #11)"),
    "speed": ("mmrepr.bench.speed", "s/epoch per model; with --reference, interleaved with MMRec's own code"),
    "lockstep": ("mmrepr.bench.lockstep", "ours and MMRec's own class from the same weights and batches, step by step"),
    "paired": ("mmrepr.bench.paired", "ours and MMRec's own class in lockstep to the stopping rule, seeds paired"),
    "pruning": ("mmrepr.bench.pruning", "successive halving vs the exhaustive grid: selection, epochs, time"),
    "budget": ("mmrepr.bench.budget", "stage 4's predicted time from the plan and measured per-epoch costs"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        print("usage: python -m mmrepr.bench {" + ",".join(COMMANDS) + "} [options]\n")
        for name, (_, what) in COMMANDS.items():
            print(f"  {name:8s} {what}")
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
