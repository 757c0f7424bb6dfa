"""``bench fidelity``'s bookkeeping: epochs trained vs the best epoch, MMRec's stopping rule."""

from __future__ import annotations

import numpy as np
import pytest

from mmrepr.bench import fidelity as F
from mmrepr.bench.speed import MMREC_OVERALL

from conftest import tiny_split


@pytest.fixture(scope="module")
def protocol():
    return F.Protocol(tiny_split(30, 20, 5))


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


# MMRec config key -> our attribute of the same setting (weight_size: one entry per
# user-item layer; the LR scheduler is a class attribute on ours).
SAME_SETTING = {
    "reg_weight": "lambda_reg", "knn_k": "top_k", "lambda_coeff": "lambda_coeff", "n_layers": "n_layers",
    "n_mm_layers": "n_mm_layers", "n_ui_layers": "n_ui_layers", "feat_embed_dim": "feat_embed_dim",
    "mm_image_weight": "mm_image_weight", "dropout": "dropout", "cl_weight": "cl_weight",
}

# MMRec keys with no counterpart on our side, and why that is not a difference.
NO_COUNTERPART = {
    ("FREEDOM", "lambda_coeff"): "freedom.py reads it and never uses it",
    ("FREEDOM", "feat_embed_dim"): "its projections feed the BPR dot product with users: = embedding size (k)",
}


@pytest.mark.parametrize("name", F.MODELS)
def test_both_sides_run_the_same_settings(name):
    # Our LATTICE ran the fidelity protocol with the study's lambda_coeff 0.7 against
    # MMRec's 0.9 (issue #11's LATTICE-on-noise gap): every setting MMRec's side is given
    # must reach our model too, whatever our defaults are.
    ours, ref = F.build_ours(name, seed=1, n_epochs=1), F.MMREC_MODEL[name]
    compared = 0
    for key, attr in SAME_SETTING.items():
        if key in ref and (name, key) not in NO_COUNTERPART:
            assert getattr(ours, attr) == ref[key], (name, key)
            compared += 1
    if "weight_size" in ref:
        assert ours.n_ui_layers == len(ref["weight_size"])
    scheduler = ref.get("learning_rate_scheduler", MMREC_OVERALL["learning_rate_scheduler"])
    assert tuple(map(float, ours.lr_scheduler)) == tuple(map(float, scheduler))
    assert compared >= 1


FAKE_MMREC = {
    "utils/__init__.py": "",
    "common/__init__.py": "",
    "models/__init__.py": "",
    "utils/utils.py": "import torch\ndef init_seed(seed):\n    torch.manual_seed(seed)\n",
    "utils/dataloader.py": (
        "class TrainDataLoader:\n"
        "    def __init__(self, config, dataset, batch_size=1, shuffle=False):\n"
        "        self.dataset = dataset\n"
        "    def pretrain_setup(self):\n"
        "        pass\n"
    ),
    "common/trainer.py": (
        "import torch\n"
        "class Trainer:\n"
        "    def _train_epoch(self, train_data, epoch_idx):\n"
        "        self.model.w.data += 1  # one 'epoch' of training: w counts epochs\n"
        "        return 0.0, []\n"
        "    def _check_nan(self, loss):\n"
        "        return False\n"
    ),
    "models/lightgcn.py": (
        "import torch\n"
        "SEEN = []\n"
        "class LightGCN(torch.nn.Module):\n"
        "    def __init__(self, config, dataloader):\n"
        "        super().__init__()\n"
        "        self.n_items = dataloader.dataset.get_item_num()\n"
        "        SEEN.append((dataloader.dataset.get_user_num(), self.n_items, len(dataloader.dataset)))\n"
        "        self.w = torch.nn.Parameter(torch.zeros(()))\n"
        "    def pre_epoch_processing(self):\n"
        "        pass\n"
        "    def full_sort_predict(self, interaction):\n"
        "        return self.w.detach() * torch.ones(len(interaction[0]), self.n_items)\n"
    ),
}


def test_reference_training_stops_restores_the_best_epoch_and_uses_mmrecs_item_space(tmp_path, monkeypatch, protocol):
    # a stand-in for MMRec's src tree (no MMRec code here): only the glue is under test
    import sys

    src = tmp_path / "src"
    for rel, text in FAKE_MMREC.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    for m in [m for m in sys.modules if m.split(".")[0] in ("utils", "common", "models")]:
        monkeypatch.delitem(sys.modules, m)
    monkeypatch.syspath_prepend(str(src))
    vals = iter([0.1, 0.5, 0.2, 0.1, 0.0, 0.0])
    real = protocol.recall

    def recall(model, split, k=20):
        if split is protocol.val:
            return next(vals)
        return float(model.score_users(np.array([0]))[0, 0])  # the restored snapshot's w

    monkeypatch.setattr(protocol, "recall", recall)
    try:
        _check_reference_glue(src, tmp_path, monkeypatch, protocol, real)
    finally:  # the stand-in's modules must not shadow a real MMRec tree in later tests
        for m in [m for m, mod in sys.modules.items()
                  if str(getattr(mod, "__file__", "") or "").startswith(str(src))]:
            del sys.modules[m]


def _check_reference_glue(src, tmp_path, monkeypatch, protocol, real):
    import importlib

    r = F.train_reference(src, "LightGCN", protocol, None, 1, max_epochs=10, eval_every=1, patience=2,
                          items="all", workdir=tmp_path / "w")
    # best at epoch 2, stop at the 3rd validation without gain (epoch 5); test on epoch 2's weights
    assert (r["best_epoch"], r["epochs"], r["stopped_early"], r["test_recall20"]) == (2, 5, True, 2.0)
    seen = importlib.import_module("models.lightgcn").SEEN
    assert seen[-1] == (protocol.train_set.num_users, protocol.n_items_all, protocol.train_set.csr_matrix.nnz)
    monkeypatch.setattr(protocol, "recall", real)
    F.train_reference(src, "LightGCN", protocol, None, 1, max_epochs=1, eval_every=1, patience=2, items="train",
                      workdir=tmp_path / "w2")
    assert seen[-1][1] == protocol.train_set.num_items
    with pytest.raises(ValueError, match="one row per item"):
        F.train_reference(src, "VBPR", protocol, np.zeros((3, 2), np.float32), 1, max_epochs=1, eval_every=1,
                          patience=1, workdir=tmp_path / "w3")


def test_summary_shows_the_mean_of_every_reference_seed_and_mmrec_on_our_items_where_measured():
    import pandas as pd

    rows = [{"model": m, "content": c, "seed": s, "test_recall20": v, "best_epoch": 3, "epochs": 24,
             "diverged": False, "stopped_early": True, "s_per_epoch": 0.1}
            for m, c in (("VBPR", "real"), ("FREEDOM", "noise")) for s, v in ((999, 0.004), (1000, 0.006))]
    table = F.summary_table(pd.DataFrame(rows)).set_index("model")
    vbpr = [v for _, v in F.REFERENCE[("VBPR", "real")]]
    vbpr_train = [v for _, v in F.REFERENCE_TRAIN_ITEMS[("VBPR", "real")]]
    assert table.loc["VBPR", "reference"].startswith(f"{np.mean(vbpr):.4f} ± {np.std(vbpr, ddof=1):.4f}")
    assert table.loc["VBPR", "reference, MMRec on our items"].startswith(f"{np.mean(vbpr_train):.4f}")
    assert table.loc["FREEDOM", "reference, MMRec on our items"] == "–"
    assert table.loc["VBPR", "test R@20"] == "0.0050 ± 0.0014"
