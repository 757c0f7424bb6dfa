"""``bench speed --reference``: MMRec's epochs run interleaved with ours, on the same data.

A stand-in for MMRec's ``src`` folder (the four modules the bench imports, with MMRec's
interfaces) is written to a temporary folder; no MMRec code is needed."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from mmrepr.bench import fidelity as F
from mmrepr.bench import speed as S
from mmrepr.training.data import SplitTriples

STUB = {
    "utils/utils.py": "def init_seed(seed):\n    pass\n",
    "utils/dataloader.py": (
        "class TrainDataLoader:\n"
        "    def __init__(self, config, dataset, batch_size=1, shuffle=False):\n"
        "        self.config, self.dataset, self.batch_size = config, dataset, batch_size\n"
        "    def pretrain_setup(self):\n        pass\n"
        "    def __iter__(self):\n        return iter(())\n"),
    "common/trainer.py": (
        "import speed_test_log\n"
        "class Trainer:\n"
        "    def _train_epoch(self, train_data, epoch_idx):\n"
        "        speed_test_log.events.append(('ref', epoch_idx))\n"
        "        return 0.0, []\n"
        "    def _check_nan(self, loss):\n        return False\n"),
    "models/lightgcn.py": (
        "import torch, speed_test_log\n"
        "class LightGCN(torch.nn.Module):\n"
        "    def __init__(self, config, dataset):\n"
        "        super().__init__()\n"
        "        speed_test_log.seen = (dataset.dataset.get_user_num(), dataset.dataset.get_item_num(),\n"
        "                     len(dataset.dataset), config['train_batch_size'], config['embedding_size'])\n"
        "        self.w = torch.nn.Parameter(torch.zeros(1))\n"
        "    def pre_epoch_processing(self):\n        pass\n"),
}


@pytest.fixture
def stub_src(tmp_path, monkeypatch):
    for rel, text in STUB.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    yield tmp_path
    for m in ("utils", "utils.utils", "utils.dataloader", "common", "common.trainer", "models", "models.lightgcn"):
        sys.modules.pop(m, None)
    if str(tmp_path.resolve()) in sys.path:
        sys.path.remove(str(tmp_path.resolve()))


def test_reference_epochs_interleave_with_ours_on_the_same_interactions(stub_src, tmp_path, monkeypatch):
    from mmrepr.models.base import MMReprRecommender

    rng = np.random.default_rng(0)
    train = [(f"u{u}", f"i{i}", 1.0) for u in range(12) for i in rng.choice(9, size=4, replace=False)]
    protocol = F.Protocol(SplitTriples(train, train[:3], train[3:6]))
    log = types.SimpleNamespace(events=[], seen=None)
    monkeypatch.setitem(sys.modules, "speed_test_log", log)
    after = MMReprRecommender._after_epoch

    def logged(self, epoch):
        log.events.append(("ours", epoch))
        return after(self, epoch)

    monkeypatch.setattr(MMReprRecommender, "_after_epoch", logged)
    row = S.time_model("LightGCN", protocol, epochs=3, seed=1, reference=stub_src, feats=None,
                       workdir=tmp_path / "work")
    # each epoch of ours is followed by one of MMRec's, inside the same process
    assert log.events == [("ours", 1), ("ref", 0), ("ours", 2), ("ref", 1), ("ours", 3), ("ref", 2)]
    assert len(row["ref_all"]) == len(row["ours_all"]) == 3 and row["ratio_best"] > 0
    ts = protocol.train_set  # the reference saw our split: users, items, interactions; batch, embedding
    assert log.seen == (ts.num_users, ts.num_items, ts.csr_matrix.nnz, 2048, 64)


def test_scaled_laplacian_equals_mmrecs_dense_diagonal_products():
    # bench fidelity --reference runs MMRec's LATTICE with its graph normalisation computed as
    # a row/column scaling; it must give MMRec's values (restated here: D^-1/2 A D^-1/2 with
    # D = diagflat of the row sums' -1/2 power, inf -> 0) and the same gradient.
    import torch

    from mmrepr.bench.speed import normalized_laplacian_by_scaling

    g = torch.Generator().manual_seed(3)
    a = torch.rand(40, 40, generator=g) * (torch.rand(40, 40, generator=g) < 0.3)
    a[7] = 0.0  # an item without neighbours: its -1/2 power is inf and becomes 0
    a1, a2 = a.clone().requires_grad_(), a.clone().requires_grad_()

    def dense(adj):
        d = torch.pow(torch.sum(adj, -1), -0.5)
        d[torch.isinf(d)] = 0.0
        dm = torch.diagflat(d)
        return torch.mm(torch.mm(dm, adj), dm)

    fast, ref = normalized_laplacian_by_scaling(a1), dense(a2)
    assert torch.equal(fast, ref)
    assert fast[7].abs().sum() == 0 and fast[:, 7].abs().sum() == 0
    w = torch.randn(40, 40, generator=g)
    (fast * w).sum().backward()
    (ref * w).sum().backward()
    # the empty row's gradient is NaN in both (0 * the inf derivative of x^-1/2 at 0), as in MMRec
    assert torch.isnan(a1.grad[7]).all() and torch.isnan(a2.grad[7]).all()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_each_reference_sets_the_lattice_normalisation_it_asks_for():
    # the MMRec module is shared by every Reference of a process: asking for MMRec's own
    # normalisation after a scaled one must put MMRec's function back
    def mmrec_own(adj):
        return adj

    mod = types.ModuleType("models.lattice")
    mod.compute_normalized_laplacian = mmrec_own
    S.use_laplacian(mod, True)
    assert mod.compute_normalized_laplacian is S.normalized_laplacian_by_scaling
    S.use_laplacian(mod, True)
    S.use_laplacian(mod, False)
    assert mod.compute_normalized_laplacian is mmrec_own
    other = types.ModuleType("models.vbpr")  # a model without the function is left alone
    S.use_laplacian(other, True)
    assert not hasattr(other, "compute_normalized_laplacian")


def test_repeat_times_each_model_afresh_and_reports_the_median_ratio(stub_src, tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    data.mkdir()
    rows = [(f"u{u}", f"i{i}", 5) for u in range(15) for i in rng.choice(10, size=4, replace=False)]
    for split, part in (("train", rows), ("val", rows[:10]), ("test", rows[10:20])):
        (data / f"{split}.tsv").write_text("".join(f"{u}\t{i}\t{r}\n" for u, i, r in part))
    log = types.SimpleNamespace(events=[], seen=None)
    monkeypatch.setitem(sys.modules, "speed_test_log", log)
    out = tmp_path / "speed.json"
    assert S.main(["--models", "LightGCN", "--epochs", "2", "--repeat", "3", "--reference", str(stub_src),
                   "--data", str(data), "--json", str(out)]) == 0
    import json

    got = json.loads(out.read_text())["rows"]
    assert [r["repeat"] for r in got] == [0, 1, 2]
    # three fresh pairs of models: every repeat interleaves its own two epochs with MMRec's
    assert [e for e in log.events if e[0] == "ref"] == [("ref", 0), ("ref", 1)] * 3
    printed = capsys.readouterr().out
    median = sorted(r["ratio_best"] for r in got)[1]
    assert f"over 3 repeats: ratio of bests median {median:.3f}" in printed


@pytest.mark.parametrize("items", ["train", "all"])
def test_reference_items_all_gives_mmrec_its_own_item_space(stub_src, tmp_path, monkeypatch, items):
    rng = np.random.default_rng(2)
    train = [(f"u{u}", f"i{i}", 1.0) for u in range(12) for i in rng.choice(9, size=4, replace=False)]
    val_only = [("u0", "new1", 1.0), ("u1", "new2", 1.0)]  # items never seen in training
    protocol = F.Protocol(SplitTriples(train, train[:3] + val_only, train[3:6]))
    assert protocol.n_unknown_items == 2
    log = types.SimpleNamespace(events=[], seen=None)
    monkeypatch.setitem(sys.modules, "speed_test_log", log)
    S.time_model("LightGCN", protocol, epochs=1, seed=1, reference=stub_src, feats=None,
                 workdir=tmp_path / "work", reference_items=items)
    ts = protocol.train_set
    n_items = protocol.n_items_all if items == "all" else ts.num_items
    assert log.seen == (ts.num_users, n_items, ts.csr_matrix.nnz, 2048, 64)
