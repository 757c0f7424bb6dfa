"""``bench paired``: lockstep to the stopping rule, each side stopped on its own validation
curve, and the paired summary across seeds. Checked with the MMRec-formula VBPR of
``test_bench_lockstep`` (the same model on both sides) and one regularised differently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mmrepr.bench import fidelity as F
from mmrepr.bench import lockstep as L
from mmrepr.bench import paired as P
from mmrepr.training.data import AlignedFeatures, attach_features

from conftest import tiny_split
from test_bench_lockstep import vbpr_pair

BATCH = 64  # 8 steps an epoch


def test_early_stop_is_mmrecs_rule():
    s = P.EarlyStop(patience=2)
    assert s.update(1, 0.1) and not s.update(2, 0.1)  # a tie is not a new best
    assert s.update(3, 0.2)
    assert [s.update(e, 0.0) for e in (4, 5)] == [False, False] and s.stopped_at is None
    s.update(6, 0.0)  # the third validation in a row without a gain
    assert (s.stopped_at, s.best_epoch, s.best) == (6, 3, 0.2)
    s.update(7, 9.9)  # after the stop nothing changes
    assert (s.best_epoch, s.best) == (3, 0.2)


def test_paired_summary_matches_a_paired_t_test():
    df = pd.DataFrame({"test_ours": [0.0100, 0.0128, 0.0081, 0.0111], "test_mmrec": [0.011, 0.014, 0.009, 0.012]})
    s = P.paired_summary(df)
    d = df["test_ours"] - df["test_mmrec"]
    assert s["ratio"] == pytest.approx(0.042 / 0.046)
    assert s["diff_se"] == pytest.approx(d.std(ddof=1) / 2)
    assert s["p_paired"] == pytest.approx(stats.ttest_rel(df["test_ours"], df["test_mmrec"]).pvalue)
    assert s["ratio_low"] < s["ratio"] < s["ratio_high"] < 1.0  # ours lower in every seed: the interval excludes 1
    # independent seeds would not tell this apart: the pairing is what makes the interval short
    assert stats.ttest_ind(df["test_ours"], df["test_mmrec"]).pvalue > 0.2 > s["p_paired"]


@pytest.fixture()
def setup():
    rng = np.random.default_rng(0)
    protocol = F.Protocol(tiny_split(60, 120, 8))  # 120 items: Recall@20 below 1
    n = protocol.train_set.num_items
    ft, fv = (rng.standard_normal((n, 6)).astype(np.float32) for _ in range(2))
    attach_features(protocol.method, AlignedFeatures("t", {"visual": fv, "textual": ft}))
    return protocol, ft, fv


def run(setup, reg_weight, *, patience=2, max_epochs=40):
    ours, ref, batches, opt, sched = vbpr_pair(setup, reg_weight, epochs=max_epochs, batch=BATCH, lr=0.05)
    protocol = setup[0]
    return P.run_paired(ours, ref, opt, sched, batches, L.PARAMETERS["VBPR"], protocol, max_epochs=max_epochs,
                        patience=patience, users=np.arange(protocol.train_set.num_users, dtype=np.int64))


def test_the_same_model_has_the_same_curve_best_epoch_and_test_recall(setup):
    result, curve, steps = run(setup, reg_weight=0.01)
    assert np.allclose(curve["val_ours"], curve["val_mmrec"], atol=1e-9)
    assert result["best_epoch_ours"] == result["best_epoch_mmrec"]
    assert result["test_ours"] == pytest.approx(result["test_mmrec"], abs=1e-9)
    assert result["test_ours_at_mmrec_best"] == pytest.approx(result["test_mmrec"], abs=1e-9)
    assert result["param_max_diff_at_mmrec_best"] < 1e-4
    # both stopped: the loop ran to the later stop, not to max_epochs
    assert result["epochs"] == max(result["stopped_ours"], result["stopped_mmrec"]) < 40
    assert len(curve) == result["epochs"] == steps["epoch"].max()
    # each side's best epoch is its curve's first maximum
    assert result["best_epoch_mmrec"] == int(curve.loc[curve["val_mmrec"].idxmax(), "epoch"])


def test_a_different_model_on_one_side_shows_in_the_curves(setup):
    # MMRec's side regularised 50 times harder: same batches, different trajectories
    result, curve, _ = run(setup, reg_weight=0.5)
    assert (curve["val_ours"] - curve["val_mmrec"]).abs().max() > 1e-3
    assert result["param_max_diff_at_mmrec_best"] > 1e-3


def test_a_side_that_never_stops_runs_to_max_epochs(setup):
    result, curve, _ = run(setup, reg_weight=0.01, patience=1000, max_epochs=5)
    assert result["epochs"] == 5 and len(curve) == 5
    assert result["stopped_ours"] is None and result["stopped_mmrec"] is None


@pytest.mark.parametrize("fused", [False, True])
def test_mmrec_scorer_runs_forward_once_per_model_state(setup, fused):
    """Chunks and splits scored between two steps share one ``forward``; the scores are
    ``full_sort_predict``'s own, before and after a step (a fused Adam's too: it leaves the
    version counters alone); the model's own ``forward`` is back afterwards."""
    import torch

    _, ref, batches, _, _ = vbpr_pair(setup, 0.01, epochs=1, batch=BATCH, lr=0.05)
    scorer = F.MMRecScorer(ref)
    users = np.arange(setup[0].train_set.num_users, dtype=np.int64)

    def direct(us):
        with torch.no_grad():
            return ref.full_sort_predict((torch.from_numpy(us),)).numpy()

    parts = [users[s:s + 7] for s in range(0, len(users), 7)]
    before = [direct(us) for us in parts]
    chunks = [scorer.score_users(us) for us in parts]
    assert scorer.forward_calls == 1
    for got, want in zip(chunks, before):
        np.testing.assert_array_equal(got, want)
    assert "forward" not in ref.__dict__

    opt = torch.optim.Adam(ref.parameters(), lr=0.05, fused=fused)
    ref.train()
    ref.calculate_loss(batches()[0]).backward()
    opt.step()
    after = scorer.score_users(users)
    assert scorer.forward_calls == 2
    np.testing.assert_array_equal(after, direct(users))
    assert np.abs(after - np.vstack(before)).max() > 1e-3  # the step changed the scores, and they were recomputed
