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
