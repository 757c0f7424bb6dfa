"""Stage 4's search policies: the selected configuration retrained with the other seeds;
synchronous successive halving over the grid (right survivors, resumable, pruned cells never
selected); the converged criterion."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mmrepr.config import params_from_dict
from mmrepr.models import registry
from mmrepr.models.base import MMReprRecommender
from mmrepr.models.spec import ModelSpec, embedding_build
from mmrepr.training import cells, plan, results, search
from mmrepr.training.toy import make_toy_run

torch.set_num_threads(1)

PLANTED_LR = 0.004  # the one configuration that ranks by co-occurrence; every other one ranks noise


class Planted(MMReprRecommender):
    """Scores = item co-occurrence with the user's training items, plus seeded noise that
    drowns it for every learning rate but :data:`PLANTED_LR`; the noise fades over epochs
    (so budgets matter), the planted configuration improves until epoch 4 then stays."""

    def _fit(self, train_set, val_set):
        csr = self._train_csr
        self.co = np.asarray((csr @ (csr.T @ csr)).todense(), dtype=np.float32)
        self.co /= max(float(self.co.max()), 1.0)
        planted = abs(self.learning_rate - PLANTED_LR) < 1e-12
        rng = np.random.default_rng([int(self.seed), int(round(self.learning_rate * 1e6))])
        # noise over the warm items (the columns validation ranks); cold items get the base
        # class's floor anyway
        noise = rng.standard_normal((self.co.shape[0], int(self.warm_items.sum()))).astype(np.float32)
        self.noise = np.zeros_like(self.co)
        self.noise[:, self.warm_items] = noise
        self.sigma0 = 0.3 if planted else 50.0
        for epoch in range(1, self.n_epochs + 1):
            self.epochs_run = epoch
            if self._after_epoch(epoch):
                break

    def _score_block(self, users):
        sigma = self.sigma0 / min(self.epochs_run, 4)
        return self.co[users] + sigma * self.noise[users]

    def _state(self):
        return {"epoch": self.epochs_run}

    def _set_state(self, state):
        self.epochs_run = state["epoch"]


@pytest.fixture
def planted_model():
    registry.register(ModelSpec("Planted", "multimodal", embedding_build(Planted), needs="features"))
    yield "Planted"
    registry.unregister("Planted")


def _params(tmp_path, **train):
    base = dict(multimodal_models=["VBPR"], baselines=["MostPop", "BPR"], feature_sets=["real"],
                attribute_feature_sets=[], grid=dict(lr=[0.01, 0.05], factors=[8], reg=[0.01]), epochs=4,
                eval_every=2, baseline_trials=2, batch_size=128, seeds=[7, 8, 9])
    base.update(train)
    return params_from_dict(dict(profile="toy", runs_dir=str(tmp_path), seed=5,
                                 data=dict(source="synthetic", k_core=0,
                                           synthetic=dict(n_users=10, n_items=10, interactions_per_user=3,
                                                          image_size=8)),
                                 train=base))


def test_other_seeds_retrain_only_the_configuration_selected_under_the_first(tmp_path, spy_trained):
    P = _params(tmp_path)
    make_toy_run(P.run_dir)
    trained = spy_trained()
    rep = search.run_search(P, progress=False, raise_errors=True)
    assert len(rep.cells) == plan.count_cells(P.train, P.seed)
    summary = rep.outputs["summary"]
    first = summary[summary["seed"] == 7]
    assert set(first["phase"]) == {"search"}
    assert len(first[first["model"] == "VBPR"]) == 2 and len(first[first["model"] == "BPR"]) == 2
    for model, fs in (("VBPR", "real"), ("BPR", ""), ("MostPop", "")):
        g = first[(first["model"] == model) & (first["feature_set"].fillna("") == fs)]
        chosen = g.loc[g["best_val"].idxmax(), "config_id"]  # first maximum: plan order on ties
        for seed in (8, 9):
            keys = [k for k in trained if k.startswith(f"{model}__{fs or 'none'}__") and k.endswith(f"seed{seed}")]
            assert keys == [f"{model}__{fs or 'none'}__{chosen}__seed{seed}"], (model, seed, keys)
    other = summary[summary["seed"] != 7]
    assert set(other["phase"]) == {"retrain"} and other["selected"].all()
    # The contract stays per seed: best rows and per-user files for every seed.
    best = rep.outputs["best"]
    assert set(best["seed"]) == {7, 8, 9}
    assert best.groupby(["model", "feature_set"])["config_id"].nunique().eq(1).all()
    for seed in (7, 8, 9):
        assert results.per_user_path(P.run_dir, "VBPR", "real", seed).is_file()
    trained.clear()
    again = search.run_search(P, progress=False, raise_errors=True)
    assert trained == [] and again.trained == 0
    assert [c.key for c in again.cells] == [c.key for c in rep.cells]


def test_search_each_searches_every_seed(tmp_path):
    P = _params(tmp_path, seed_policy="search_each", seeds=[7, 8], baselines=["MostPop"])
    make_toy_run(P.run_dir)
    rep = search.run_search(P, progress=False, raise_errors=True)
    s = rep.outputs["summary"]
    assert (s[s["model"] == "VBPR"].groupby("seed").size() == 2).all() and set(s["phase"]) == {"search"}
    assert len(rep.cells) == plan.count_cells(P.train, P.seed)


def test_rung_plan():
    T = _params("/tmp", epochs=200, pruning=dict(kind="successive_halving", eta=3, min_epochs=20)).train
    assert plan.rung_budgets(T) == [20, 60]  # a rung of 180 would be nearly the final 200
    assert plan.rung_sizes(30, T) == [30, 10, 3]
    assert plan.rung_sizes(2, T) == [2, 1]  # 2 // 3 -> at least one survivor, then straight to the end
    assert plan.rung_budgets(_params("/tmp", epochs=200).train) == []
    assert plan.rank_configs([0.2, None, 0.5, 0.2]) == [2, 0, 3, 1]


def _pruned_params(tmp_path, **kw):
    return _params(tmp_path, multimodal_models=["Planted"], baselines=["MostPop"], seeds=[3],
                   grid=dict(lr=[0.001, 0.002, PLANTED_LR, 0.008, 0.016, 0.032], factors=[8], reg=[0.01]),
                   epochs=8, eval_every=1, pruning=dict(kind="successive_halving", eta=2, min_epochs=2), **kw)


def test_successive_halving_keeps_the_best_and_selects_only_final_cells(tmp_path, planted_model):
    P = _pruned_params(tmp_path)
    make_toy_run(P.run_dir)
    rep = search.run_search(P, progress=False, raise_errors=True)
    s = rep.outputs["summary"]
    s = s[s["model"] == "Planted"]
    # Rungs of 2 and 4 epochs, then the final rung at 8: 6 -> 3 -> 1 configurations.
    assert s.groupby("rung").size().to_dict() == {0: 6, 1: 3, 2: 1}
    assert s.groupby("rung")["epoch_budget"].unique().map(list).to_dict() == {0: [2], 1: [4], 2: [8]}
    for r in (0, 1):
        g = s[s["rung"] == r].reset_index(drop=True)
        v = g["best_val"].tolist()
        top = sorted(range(len(v)), key=lambda i: (-v[i], i))[:len(g) // 2]  # ties: grid order
        assert set(g.loc[~g["pruned"], "config_id"]) == set(g.loc[top, "config_id"])
        nxt = s[s["rung"] == r + 1]
        assert set(nxt["config_id"]) == set(g.loc[~g["pruned"], "config_id"])
    assert s["selected"].sum() == 1
    sel = s[s["selected"]].iloc[0]
    assert bool(sel["final"]) and json.loads(sel["params"])["lr"] == PLANTED_LR
    assert not s.loc[~s["final"].astype(bool), "selected"].any()
    # Intermediate rungs are not results: no test rows, no curves.
    res = rep.outputs["results"]
    assert set(res.loc[res["model"] == "Planted", "config_id"]) == {sel["config_id"]}


def test_selection_ignores_rung_cells_even_when_they_score_higher():
    mk = lambda cid, epochs: plan.Cell("M", "f", cid, {}, 1, epochs=epochs)  # noqa: E731
    rung, fin_a, fin_b = mk("g0", 2), mk("g1", None), mk("g2", None)
    metas = {rung.key: {"best_val": 0.9}, fin_a.key: {"best_val": 0.4}, fin_b.key: {"best_val": 0.5}}
    assert results.select_keys([rung, fin_a, fin_b], metas) == {("M", "f", 1): fin_b.key}


def test_pruned_search_resumes_after_an_error_mid_rung_without_retraining(tmp_path, planted_model, monkeypatch,
                                                                              spy_trained):
    ref = _pruned_params(tmp_path / "ref")
    make_toy_run(ref.run_dir)
    expected = search.run_search(ref, progress=False, raise_errors=True).outputs["summary"]

    P = _pruned_params(tmp_path / "run")
    make_toy_run(P.run_dir)
    real = cells.run_cell
    done: list[str] = []

    def dies_in_rung_1(ctx, cell):
        if cell.epochs == 4 and len([k for k in done if k.endswith("__e4")]) == 1:
            raise RuntimeError("killed")
        meta = real(ctx, cell)
        done.append(cell.key)
        return meta

    monkeypatch.setattr(cells, "run_cell", dies_in_rung_1)
    with pytest.raises(RuntimeError, match="killed"):
        search.run_search(P, progress=False, raise_errors=True)
    assert len([k for k in done if k.endswith("__e2")]) == 6 and len([k for k in done if k.endswith("__e4")]) == 1
    monkeypatch.setattr(cells, "run_cell", real)
    trained = spy_trained()
    rep = search.run_search(P, progress=False, raise_errors=True)
    assert not set(trained) & set(done)  # no finished cell trained again
    assert len(trained) == 2 + 1 + 1  # the rest of rung 1, the final cell, MostPop (not reached before)
    cols = ["key", "best_val", "best_epoch", "rung", "pruned", "selected"]
    pd.testing.assert_frame_equal(rep.outputs["summary"][cols], expected[cols])


def test_early_stopping_is_recorded_with_pruning_and_converged_is_computed(tmp_path, planted_model):
    P = _pruned_params(tmp_path, early_stop_patience=2)
    make_toy_run(P.run_dir)
    s = search.run_search(P, progress=False, raise_errors=True).outputs["summary"]
    fin = s[(s["model"] == "Planted") & s["final"].astype(bool)].iloc[0]
    # The planted config stops improving by epoch 4: with patience 2 it stops two evaluations later.
    last = json.loads(fin["epochs_evaluated"])[-1]
    assert bool(fin["stopped_early"]) and fin["best_epoch"] <= 4 and last == fin["best_epoch"] + 2 and last < 8
    assert bool(fin["converged"])
    assert results.converged({"stopped_early": False, "best_epoch": 10, "epochs_evaluated": [5, 10]}) is False
    assert results.converged({"stopped_early": False, "best_epoch": 5, "epochs_evaluated": [5, 10]}) is True
    assert results.converged({"stopped_early": True, "best_epoch": 10, "epochs_evaluated": [5, 10]}) is True
    assert results.converged({"stopped_early": False, "best_epoch": 0, "epochs_evaluated": [0]}) is True


def test_seeds_must_be_distinct():
    with pytest.raises(Exception, match=r"train\.seeds\.1.*listed twice"):
        _params("/tmp", seeds=[1, 1])
