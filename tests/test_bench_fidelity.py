"""``bench fidelity``'s bookkeeping: epochs trained vs the best epoch, MMRec's stopping rule."""

from __future__ import annotations

import numpy as np
import pytest

from mmrepr.bench import fidelity as F
from mmrepr.training.data import SplitTriples


@pytest.fixture(scope="module")
def protocol():
    rng = np.random.default_rng(0)
    train, val, test = [], [], []
    for u in range(30):
        items = rng.choice(20, size=7, replace=False)
        train += [(f"u{u}", f"i{i}", 1.0) for i in items[:5]]
        val.append((f"u{u}", f"i{items[5]}", 1.0))
        test.append((f"u{u}", f"i{items[6]}", 1.0))
    return F.Protocol(SplitTriples(train, val, test))


def scripted_validation(monkeypatch, protocol, values):
    """Validation Recall@20 follows ``values`` (one per evaluation); test is computed for real."""
    it = iter(values)
    real = protocol.recall

    def recall(model, split, k=20):
        return next(it) if split is protocol.val else real(model, split, k)

    monkeypatch.setattr(protocol, "recall", recall)


def test_epochs_counts_epochs_trained_not_the_restored_best_epoch(monkeypatch, protocol):
    # The quick bench's FREEDOM row said "best epoch 5, epochs 5" for a 10-epoch run: the
    # restored snapshot's epoch counter was reported as the number of epochs trained.
    scripted_validation(monkeypatch, protocol, [0.5, 0.1])
    r = F.train_one("LightGCN", protocol, 1, max_epochs=4, eval_every=2, patience=20, batch_size=64)
    assert (r["best_epoch"], r["epochs"], r["stopped_early"], r["diverged"]) == (2, 4, False, False)
    assert r["val_recall20"] == 0.5


def test_early_stop_at_the_validation_after_patience_runs_out(monkeypatch, protocol):
    # MMRec's early_stopping: stop when cur_step > stopping_step, i.e. at the (patience+1)-th
    # evaluation without improvement after the best.
    scripted_validation(monkeypatch, protocol, [0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    r = F.train_one("LightGCN", protocol, 1, max_epochs=6, eval_every=1, patience=2, batch_size=64)
    assert (r["best_epoch"], r["epochs"], r["stopped_early"]) == (1, 4, True)
