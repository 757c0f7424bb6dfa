"""bench budget: the plan's cells and epochs, costed by hand-made per-model costs."""

from __future__ import annotations

from conftest import ROOT

from mmrepr.bench.budget import estimate, plan_counts
from mmrepr.config import load_params
from mmrepr.training.plan import count_cells


def test_counts_follow_the_plan_and_the_estimate_adds_up():
    P = load_params(ROOT / "params" / "allrecipes.yaml")
    T = P.train.model_copy(update=dict(feature_sets=P.train.feature_sets[:2], epochs=200, eval_every=10,
                                       seeds=[1, 2, 3], baseline_trials=4,
                                       pruning=P.train.pruning.model_copy(update=dict(kind="successive_halving",
                                                                                      eta=3, min_epochs=20))))
    counts = plan_counts(T)
    n = sum(sum(r["cells"] for r in c["rungs"]) + c["final"] + c["retrain"] for c in counts.values())
    assert n == count_cells(T, P.seed)
    one = dict(epochwise=True, setup_s=0.0, epoch_s=1.0, eval_s=0.0, test_eval_s=0.0)
    costs = {"models": {"VBPR": [one], "BPR": [dict(one, eval_s=2.0)],
                        "MostPop": [dict(one, epochwise=False, setup_s=3.0, eval_s=1.0, test_eval_s=1.0)]}}
    est = estimate(T, costs)
    # per feature set: 30 points x 20 epochs, 10 x 60, 3 x 200; 2 more seeds x 200 for the selected one
    assert est["VBPR"]["seconds"] == 2 * (30 * 20 + 10 * 60 + 3 * 200 + 2 * 200)
    # 4 TPE trials and 2 retrains, each 200 epochs and 20 validations of 2 s
    assert est["BPR"]["seconds"] == 6 * (200 + 20 * 2)
    assert est["MostPop"]["seconds"] == 3 * (3 + 1 + 1) and est["LATTICE"]["seconds"] is None
    # early stopping: finals and TPE trials at half of the epochs (rungs unchanged)
    half = estimate(T, costs, final_fraction=0.5)
    assert half["VBPR"]["seconds"] == 2 * (30 * 20 + 10 * 60 + 5 * 100)
