"""Stage 4 on Ray gives the in-process results; a toy model goes through search and report
by registration alone; cell fingerprints follow content, not bookkeeping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmrepr.config import params_from_dict
from mmrepr.training import cells, search
from mmrepr.training.toy import make_toy_run

torch.set_num_threads(1)


def _params(tmp_path, **train):
    base = dict(multimodal_models=["VBPR"], baselines=["MostPop", "BPR"], feature_sets=["real"],
                attribute_feature_sets=[], grid=dict(lr=[0.01, 0.05], factors=[8], reg=[0.01]), epochs=4,
                eval_every=2, baseline_trials=3, batch_size=128, torch_threads=1)
    base.update(train)
    return params_from_dict(dict(profile="toy", runs_dir=str(tmp_path), seed=5,
                                 data=dict(source="synthetic", k_core=0, synthetic=dict(n_users=10, n_items=10, interactions_per_user=3, image_size=8)), train=base))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(list(df.columns)).reset_index(drop=True)


@pytest.mark.slow
def test_ray_gives_the_inprocess_results_and_resumes_without_retraining(tmp_path):
    pytest.importorskip("ray")
    import ray

    # A pruned grid (3 points -> rung of 2 epochs -> 1 survivor at 4) and a second seed that
    # retrains the selected configurations: promotions and retrains must not depend on the executor.
    pruned = dict(grid=dict(lr=[0.01, 0.05, 0.1], factors=[8], reg=[0.01]), seeds=[123, 124],
                  pruning=dict(kind="successive_halving", eta=2, min_epochs=2))
    local = _params(tmp_path / "a", **pruned)
    make_toy_run(local.run_dir)
    ref = search.run_search(local, progress=False, raise_errors=True)
    remote = _params(tmp_path / "b", executor="ray", ray=dict(num_workers=2), **pruned)
    make_toy_run(remote.run_dir)
    # A run killed after the grid: only VBPR's cells are finished (3 + 1 with seed 123, 1 with 124).
    part = search.run_search(remote, progress=False, raise_errors=True, models=["VBPR"])
    assert part.executor == "ray" and part.trained == 5
    stamps = {p.name: p.stat().st_mtime_ns for p in (remote.run_dir / "train" / "cells").glob("*.json")}
    try:
        full = search.run_search(remote, progress=False, raise_errors=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert full.trained == len(ref.cells) - 5  # the finished cells were not retrained
    for name, t in stamps.items():
        assert (remote.run_dir / "train" / "cells" / name).stat().st_mtime_ns == t, name
    assert [c.key for c in full.cells] == [c.key for c in ref.cells]  # the same TPE trials
    a = pd.read_parquet(local.run_dir / "train" / "results.parquet")
    b = pd.read_parquet(remote.run_dir / "train" / "results.parquet")
    pd.testing.assert_frame_equal(_sorted(a), _sorted(b))
    assert (local.run_dir / "train" / "results.parquet").read_bytes() == \
        (remote.run_dir / "train" / "results.parquet").read_bytes()
    sa, sb = (pd.read_csv(p.run_dir / "train" / "cells_summary.csv") for p in (local, remote))
    cols = ["key", "best_val", "rung", "pruned", "final", "phase", "selected"]
    pd.testing.assert_frame_equal(sa[cols], sb[cols])


def test_a_registered_toy_model_runs_through_search_results_and_report(tmp_path):
    from mmrepr.analysis.load import load_inputs
    from mmrepr.analysis.run import run_analysis
    from mmrepr.models import registry
    from mmrepr.models.base import MMReprRecommender
    from mmrepr.models.spec import ModelSpec, embedding_build

    class ToyPop(MMReprRecommender):  # item popularity plus a seeded jitter
        def _fit(self, train_set, val_set):
            self.pop = np.asarray(self._train_csr.sum(axis=0)).ravel().astype(np.float32)
            self._after_epoch(1)

        def _score_block(self, users):
            return np.tile(self.pop, (len(users), 1))

        def _state(self):
            return {"epoch": self.epochs_run, "pop": self.pop}

        def _set_state(self, state):
            self.pop = state["pop"]

    registry.register(ModelSpec("ToyPop", "baseline", embedding_build(ToyPop), epochwise=False, label="Toy popularity"))
    try:
        P = _params(tmp_path, multimodal_models=["VBPR"], baselines=["ToyPop"], grid=dict(lr=[0.01], factors=[8],
                                                                                          reg=[0.01]))
        make_toy_run(P.run_dir)
        rep = search.run_search(P, progress=False, raise_errors=True)
        assert "ToyPop__none__default__seed123" in rep.metas
        models = rep.outputs["models"].set_index("model")
        assert models.loc["ToyPop", "family"] == "baseline" and models.loc["ToyPop", "label"] == "Toy popularity"
        inp = load_inputs(P.run_dir)
        assert not inp.is_multimodal("ToyPop") and inp.is_multimodal("VBPR")
        res = run_analysis(P)
        assert "ToyPop" in set(res.summary["model"])
        assert res.summary.set_index("model").loc["ToyPop", "family"] == "baseline"
    finally:
        registry.unregister("ToyPop")


def test_fingerprint_follows_matrices_not_bookkeeping(tmp_path):
    from mmrepr.features.store import features_dir, load_feature_set, save_feature_set
    from mmrepr.io import read_json, write_json

    P = _params(tmp_path)
    make_toy_run(P.run_dir)
    cell = search.Cell("VBPR", "real", "grid00", {"lr": 0.01, "factors": 8, "reg": 0.01}, 123)

    def fp():
        return cells.cell_fingerprint(cells.prepare(P), cell)

    first = fp()
    meta_p = features_dir(P.run_dir) / "real" / "meta.json"
    meta = read_json(meta_p)
    meta.update(items_per_second=123.4, peak_memory_mb=999, cache={"hits": 7}, path="/somewhere/else")
    write_json(meta_p, meta)
    assert fp() == first  # bookkeeping only
    fs = load_feature_set(P.run_dir, "real")
    m = {r: v.copy() for r, v in fs.matrices.items()}
    m["visual"][0, 0] += 1.0
    save_feature_set(P.run_dir, type(fs)(fs.name, fs.item_ids, m, fs.meta))
    assert fp() != first  # one value changed


def test_train_torch_threads_is_set_once_where_cells_run(monkeypatch, tmp_path):
    import os

    from mmrepr.training import executor as ex

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        inproc = ex.make_executor(_params(tmp_path, torch_threads=2), ctx=None)  # in-process: this process
        assert torch.get_num_threads() == 2
        inproc.close()  # later stages in this process get their setting back
        assert torch.get_num_threads() == 1
        ex.make_executor(_params(tmp_path, torch_threads=None), ctx=None)  # None: every core it may use
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))
        # a Ray task sets its worker's threads before training its cell
        torch.set_num_threads(1)
        monkeypatch.setattr(ex, "worker_context", lambda P: None)
        monkeypatch.setattr(ex, "run_cell_safely", lambda ctx, cell, raise_errors: (torch.get_num_threads(), None, True))
        assert ex._ray_cell(None, None, False, 2)[0] == 2
        # the driver passes train.torch_threads, else the task's CPUs (ray.threads_per_worker)
        ray = pytest.importorskip("ray")
        monkeypatch.setattr(ray, "is_initialized", lambda: True)
        monkeypatch.setattr(ray, "remote", lambda **kw: (lambda f: f))
        assert ex.RayExecutor(_params(tmp_path, torch_threads=2, ray=dict(threads_per_worker=3))).threads == 2
        assert ex.RayExecutor(_params(tmp_path, torch_threads=None, ray=dict(threads_per_worker=3))).threads == 3
    finally:
        torch.set_num_threads(before)
