"""Stage 4 search: feature checks, best-epoch/config selection, resume without redoing cells."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmrepr.config import params_from_dict
from mmrepr.features.store import FeatureSet, FeatureSetError
from mmrepr.models import adapters
from mmrepr.training import cells, search
from mmrepr.training.data import align_feature_set
from mmrepr.training.toy import make_toy_run

torch.set_num_threads(1)


def _params(tmp_path, **train):
    base = dict(multimodal_models=["VBPR"], baselines=["MostPop", "BPR"], feature_sets=["real", "text_only"],
                attribute_feature_sets=[], grid=dict(lr=[0.01, 0.05], factors=[8], reg=[0.01]), epochs=4,
                eval_every=2, baseline_trials=2, batch_size=128, torch_threads=1)
    base.update(train)
    return params_from_dict(dict(
        profile="toy", runs_dir=str(tmp_path), seed=5,
        data=dict(source="synthetic", k_core=0, synthetic=dict(n_users=10, n_items=10, interactions_per_user=3,
                                                                image_size=8)),
        train=base,
    ))


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    P = _params(tmp)
    make_toy_run(P.run_dir)
    report = search.run_search(P, progress=False, raise_errors=True)
    return P, report


def test_outputs_follow_the_contract(searched):
    P, report = searched
    out = P.run_dir / "train"
    res = pd.read_parquet(out / "results.parquet")
    assert list(res.columns) == search.RESULT_COLUMNS
    assert set(res["metric"]) == {"Recall", "nDCG", "HR", "nDCG_graded"}
    # the toy run has one cold item (test only): all three test slices
    assert set(res["split"]) == {"val", "test", "test_cold", "test_all"}
    assert set(res.loc[res["model"] == "MostPop", "feature_set"]) == {""}
    assert {json.loads(p)["lr"] for p in res.loc[res["model"] == "VBPR", "params"]} == {0.01, 0.05}
    best = pd.read_parquet(out / "best.parquet")
    # One selected configuration per (model, feature set, seed).
    assert best.groupby(["model", "feature_set", "seed"])["config_id"].nunique().eq(1).all()
    assert len(best.groupby(["model", "feature_set"])) == 2 + 2  # VBPR x 2 sets, MostPop, BPR
    for f in ("VBPR__real__seed123", "MostPop__none__seed123", "BPR__none__seed123"):
        pu = pd.read_parquet(out / "per_user" / f"{f}.parquet")
        assert list(pu.columns) == ["user", "metric", "k", "value"]
        # per-user means reproduce the test value in best.parquet
        model, fs = f.split("__")[:2]
        want = best[(best.model == model) & (best.feature_set == ("" if fs == "none" else fs))
                    & (best.split == "test") & (best.metric == "Recall")]["value"].item()
        assert pu[pu.metric == "Recall"]["value"].mean() == pytest.approx(want)
    curves = pd.read_parquet(out / "curves.parquet")
    assert sorted(curves.loc[curves.model == "VBPR", "epoch"].unique()) == [2, 4]
    unk = pd.read_csv(out / "unknowns.csv").set_index("split")
    assert unk.loc["test", "rows_excluded"] == 2 and unk.loc["val", "rows_excluded"] == 1
    # slices: the cold item's one test row (user u0000, rating 5) is test_cold's only relevant row
    sl = pd.read_csv(out / "slices.csv").set_index("split")
    assert sl.loc["test_cold", ["candidates", "users", "relevant"]].tolist() == [1, 1, 1]
    assert sl.loc["test_all", "candidates"] == sl.loc["test", "candidates"] + 1 == 61
    assert sl.loc["test_all", "relevant"] == sl.loc["test", "relevant"] + 1
    for split in ("test_cold", "test_all"):
        for f in ("VBPR__real__seed123", "MostPop__none__seed123"):
            pu = pd.read_parquet(out / "per_user" / f"{f}__{split}.parquet")
            model, fs = f.split("__")[:2]
            want = best[(best.model == model) & (best.feature_set == ("" if fs == "none" else fs))
                        & (best.split == split) & (best.metric == "Recall")]["value"].item()
            assert pu[pu.metric == "Recall"]["value"].mean() == pytest.approx(want)
            assert pu["user"].nunique() == sl.loc[split, "users"]


def test_stage4_refuses_a_threshold_above_every_rating(tmp_path):
    """Stage 4 checks the threshold against the ratings it loaded, naming the file and key."""
    from mmrepr.data.checks import RatingThresholdError

    P = _params(tmp_path, rating_threshold=6.0)
    make_toy_run(P.run_dir)
    with pytest.raises(RatingThresholdError) as err:
        search.prepare(P)
    msg = str(err.value)
    assert "interactions.parquet" in msg and "'train.rating_threshold' = 6.0" in msg and "(1 to 5)" in msg
    assert not (P.run_dir / "train" / "unknowns.csv").exists()  # refused before anything is written
    search.prepare(_params(tmp_path, rating_threshold=5.0))  # the top rating is allowed


def test_unknowns_report_counts_the_evaluators_cold_users(tmp_path, monkeypatch):
    """unknowns.csv carries EvalSplit.n_cold_users / n_cold_evaluated for val and test."""
    P = _params(tmp_path)
    make_toy_run(P.run_dir)
    real = cells.split_from_cornac
    cold = {"val": (3, 1), "test": (4, 2)}  # Cornac drops unknown users, so make some visible

    def with_cold(name, *a, **kw):
        s = real(name, *a, **kw)
        s.n_cold_users, s.n_cold_evaluated = cold[name]
        return s

    monkeypatch.setattr(cells, "split_from_cornac", with_cold)
    ctx = search.prepare(P)
    unk = pd.read_csv(P.run_dir / "train" / "unknowns.csv").set_index("split")
    assert unk.loc[["train", "val", "test"], "users_cold"].tolist() == [0, 3, 4]
    assert unk.loc[["train", "val", "test"], "users_cold_evaluated"].tolist() == [0, 1, 2]
    assert ctx.unknowns["users_cold"].tolist() == [0, 3, 4]  # what notebook 04 shows


def test_selection_is_by_validation(searched):
    P, _ = searched
    out = P.run_dir / "train"
    res = pd.read_parquet(out / "results.parquet")
    best = pd.read_parquet(out / "best.parquet")
    sel = lambda d: d[(d.split == "val") & (d.metric == "Recall") & (d.k == 20)]  # noqa: E731
    for (model, fs), grp in sel(res).groupby(["model", "feature_set"]):
        top = grp["value"].max()
        chosen = sel(best)[(sel(best).model == model) & (sel(best).feature_set == fs)]
        assert chosen["value"].item() == pytest.approx(top)
        # the test rows are at the chosen epoch
        t = best[(best.model == model) & (best.feature_set == fs) & (best.split == "test")]
        assert set(t["epoch"]) == set(chosen["epoch"])


class _Scripted:
    """An epoch-wise model whose validation value follows a script; state = its epoch."""

    def __init__(self, script):
        self.script, self.epoch, self.n_epochs, self.epoch_callback = script, 0, 0, None

    def fit(self, train_set, val_set=None):
        for e in range(1, self.n_epochs + 1):
            self.epoch = e
            if self.epoch_callback is not None and self.epoch_callback(self, e):
                break
        return self

    def get_state(self):
        return {"epoch": self.epoch}

    def set_state(self, s):
        self.epoch = s["epoch"]


def test_train_epochwise_keeps_best_epoch_and_stops_early():
    m = _Scripted({2: 0.1, 4: 0.5, 6: 0.3, 8: 0.2, 10: 0.9})
    ev = lambda model: (m.script[model.epoch], {"v": m.script[model.epoch]})  # noqa: E731
    log = adapters.train_epochwise(m, None, None, ev, n_epochs=10, eval_every=2, patience=2)
    assert log.best_epoch == 4 and log.stopped_early
    assert [e for e, _ in log.evaluations] == [2, 4, 6, 8]
    assert m.epoch == 4  # restored to the best snapshot
    m2 = _Scripted({2: 0.1, 4: 0.5, 6: 0.3, 8: 0.2, 10: 0.9})
    log2 = adapters.train_epochwise(m2, None, None, lambda mm: (mm.script[mm.epoch], {}), 10, 2, None)
    assert log2.best_epoch == 10 and m2.epoch == 10


def test_killed_search_resumes_without_redoing_cells(searched, spy_trained):
    P, first = searched
    cells_dir = P.run_dir / "train" / "cells"
    before = pd.read_parquet(P.run_dir / "train" / "results.parquet")
    # Simulate a kill during two cells: their completion markers were never written.
    lost = [c for c in first.cells if c.model in ("VBPR", "BPR")][:1] + [first.cells[-1]]
    for c in lost:
        (cells_dir / f"{c.key}.json").unlink()
    trained = spy_trained()
    again = search.run_search(P, progress=False, raise_errors=True)
    assert sorted(trained) == sorted(c.key for c in lost)
    assert [c.key for c in again.cells] == [c.key for c in first.cells]  # TPE replays the same trials
    after = pd.read_parquet(P.run_dir / "train" / "results.parquet")
    pd.testing.assert_frame_equal(before, after)  # seeded: the redone cells give the same numbers


def _fs(**kw):
    base = dict(name="bad", item_ids=["a", "b", "c"], matrices={"visual": np.ones((3, 2), np.float32)}, meta={})
    base.update(kw)
    return FeatureSet(**base)


def test_bad_feature_matrices_are_clear_errors():
    with pytest.raises(FeatureSetError, match="'bad'.*shape"):
        _fs(matrices={"visual": np.ones((2, 2), np.float32)})
    with pytest.raises(FeatureSetError, match="'bad'.*NaN"):
        _fs(matrices={"visual": np.array([[1, np.nan], [0, 0], [1, 1]], np.float32)})
    fs = _fs()
    with pytest.raises(FeatureSetError, match="'bad'.*no row.*'zz'"):
        align_feature_set(fs, ["a", "zz", "c"])
    # Bypassing FeatureSet's own checks (matrices changed afterwards) is still caught here.
    fs.matrices["visual"] = np.ones((4, 2), np.float32)
    with pytest.raises(FeatureSetError, match="shape"):
        align_feature_set(fs, ["a", "b"])
    fs.matrices["visual"] = np.array([[np.inf, 0], [0, 0], [0, 0]], np.float32)
    with pytest.raises(FeatureSetError, match="NaN/inf.*'a'"):
        align_feature_set(fs, ["a", "b"])
    # stage 2's missing_policy=drop: missing items get zero rows, counted.
    ok = align_feature_set(_fs(meta={"missing_policy": "drop"}), ["a", "zz"])
    assert ok.n_missing_zeroed == 1 and not ok.matrices["visual"][1].any()


@pytest.mark.slow
def test_notebook_04_runs_on_a_toy_run(tmp_path, monkeypatch):
    import nbformat
    import papermill as pm

    P = _params(tmp_path, multimodal_models=["VBPR", "FREEDOM"], baselines=["MostPop", "AttributeItemKNN"],
                feature_sets=["real", "noise_gaussian_real"], attribute_feature_sets=["attrs"])
    make_toy_run(P.run_dir)
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "04.ipynb"
    # ipykernel captures fd 2 into the notebook except under pytest: capture as in a real run.
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    pm.execute_notebook(str(root / "notebooks" / "04_train.ipynb"), str(out), cwd=str(root / "notebooks"),
                        parameters=dict(params_file="toy", params=P.model_dump(mode="json")), progress_bar=False)
    outs = [o for c in nbformat.read(out, 4).cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outs)
    assert "noise_gaussian_real" in text and "control - real" in text  # the controls table from analysis
    stderr = "".join(str(o.get("text", "")) for o in outs if o.get("name") == "stderr")
    assert "train cells" not in stderr and "it/s" not in stderr and "IProgress" not in stderr  # no tqdm noise
    assert (P.run_dir / "train" / "best.parquet").is_file()


def test_saved_cells_are_reused_only_while_data_features_and_code_are_unchanged(tmp_path, monkeypatch,
                                                                                  spy_trained):
    from mmrepr.features.store import load_feature_set, save_feature_set

    P = _params(tmp_path, baselines=["MostPop"], grid=dict(lr=[0.01], factors=[8], reg=[0.01]), epochs=2)
    make_toy_run(P.run_dir)
    search.run_search(P, progress=False, raise_errors=True)
    trained = spy_trained()
    search.run_search(P, progress=False, raise_errors=True)
    assert trained == []  # nothing changed: every cell reused
    fs = load_feature_set(P.run_dir, "real")  # same name, new content
    save_feature_set(P.run_dir, type(fs)(fs.name, fs.item_ids, {r: m[::-1].copy() for r, m in fs.matrices.items()},
                                         fs.meta))
    search.run_search(P, progress=False, raise_errors=True)
    assert trained == ["VBPR__real__grid00__seed123"]
    trained.clear()
    monkeypatch.setattr(cells, "training_code_hash", lambda: "edited code")
    search.run_search(P, progress=False, raise_errors=True)
    assert sorted(trained) == sorted(["VBPR__real__grid00__seed123", "VBPR__text_only__grid00__seed123",
                                      "MostPop__none__default__seed123"])
