"""``python -m mmrepr.bench speed [--models ...] [--epochs 5] [--threads 1] [--reference MMREC_SRC]``

Seconds per training epoch of VBPR, LATTICE, FREEDOM, BM3 and LightGCN on the Allrecipes
training split (embedding 64, batch 2048, lr 1e-3; content: N(0,1) features of MiniLM's
shape, 384, as both modalities, or ``--content real``). An epoch is what the model's
``epoch_seconds`` counts: the per-epoch graph work (FREEDOM's edge pruning, LATTICE's
item-graph rebuild), sampling, every 2048-batch's forward, loss, backward and Adam step,
the scheduler step. No evaluation.

``--reference DIR``: DIR is the ``src`` folder of an MMRec checkout (GitHub enoche/MMRec;
it needs ``models/<model>.py``, ``common/{abstract_recommender,loss,init,trainer}.py``,
``utils/{utils,dataloader}.py``). MMRec's own classes are then trained on the same split and
features (same user/item indices: only the training items, as ours; ``--reference-items
all``: every item of the dataset, MMRec's own item space, as ``bench fidelity --reference``
runs it and as the reference figures of docs/fidelity.md were trained), and the two are timed
**interleaved in one process**: ours epoch 1, reference epoch 1, ours epoch 2, ... (the
reference epoch runs inside our ``epoch_callback``, outside our epoch's timer), so that the
load of a shared machine hits both alike. The reference epoch is MMRec's own: the model's
``pre_epoch_processing``, ``Trainer._train_epoch`` over MMRec's ``TrainDataLoader``
(shuffle + per-interaction Python negative sampling, as MMRec does), the LR scheduler step,
which is what MMRec's ``Trainer.fit`` times as "training". Printed: best and median of the
epochs per side and the ratio of the bests (ours / reference). The interleaving shares the
global torch RNG, so the models' numbers are not those of separate runs: only times count here.

Only glue is written here (a config dict, a dataset object with the attributes MMRec's
dataloader reads, LATTICE's ``.cuda()`` calls made no-ops on a machine without CUDA, and
SciPy's removed ``dok_matrix._update`` restored for MMRec's graph construction);
no MMRec code is part of this project.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mmrepr.bench.fidelity import (
    MMREC_MODEL, MODELS, MULTIMODAL, Protocol, attach, build_ours, minilm_features, model_list,
)

# MMRec's overall.yaml for this protocol; the per-model settings, MMRec's and ours, are
# ``fidelity.MMREC_MODEL`` / ``fidelity.OURS``.
MMREC_OVERALL = {
    "USER_ID_FIELD": "userID", "ITEM_ID_FIELD": "itemID", "NEG_PREFIX": "neg__", "embedding_size": 64,
    "train_batch_size": 2048, "learning_rate": 1e-3, "learning_rate_scheduler": [1.0, 50], "weight_decay": 0.0,
    "use_neg_sampling": True, "use_full_sampling": False, "use_neighborhood_loss": False, "end2end": False,
    "is_multimodal_model": True, "vision_feature_file": "image_feat.npy", "text_feature_file": "text_feat.npy",
    "device": "cpu",
}


class _RefDataset:
    """What MMRec's ``TrainDataLoader``/``GeneralRecommender`` read of its ``RecDataset``:
    the interactions frame, field names, counts, ``copy``, ``shuffle`` (a full-frame
    ``sample(frac=1)``, as MMRec's) and row slicing by position."""

    def __init__(self, df, n_users: int, n_items: int):
        self.df, self.user_num, self.item_num = df, n_users, n_items
        self.uid_field, self.iid_field = "userID", "itemID"
        self.inter_num = len(df)

    def copy(self, df):
        return _RefDataset(df, self.user_num, self.item_num)

    def shuffle(self):
        self.df = self.df.sample(frac=1, replace=False).reset_index(drop=True)

    def get_user_num(self):
        return self.user_num

    def get_item_num(self):
        return self.item_num

    def __len__(self):
        return len(self.df)

    def __getitem__(self, idx):
        return self.df.iloc[idx]


@contextlib.contextmanager
def _cuda_is_identity():
    """MMRec's LATTICE calls ``.cuda()`` on its original graphs; without CUDA, keep them on CPU."""
    import torch

    if torch.cuda.is_available():
        yield
        return
    saved = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = saved


def _scipy_compat() -> None:
    """MMRec builds its adjacency with ``dok_matrix._update`` (a dict update), which SciPy
    1.13 removed; give it back as the same bulk update of the matrix's dict (graph
    construction only, outside the timed epochs)."""
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):
        def _update(self, data):
            self._dict.update(data)

        sp.dok_matrix._update = _update


def normalized_laplacian_by_scaling(adj):
    """MMRec's ``compute_normalized_laplacian`` (``D^-1/2 A D^-1/2``, D the row sums, inf -> 0)
    as a row and a column scaling instead of two dense n^3 products with ``diagflat(D^-1/2)``.
    Every entry is the same two products in the same order, ``(d_i a_ij) d_j`` (the dense
    products add only exact zeros to them), so the values are equal; gradients agree to float
    rounding. Used by ``bench fidelity --reference`` for LATTICE (``--reference-laplacian
    scaled``): MMRec's dense version costs ~146 s per rebuild of allrecipes' 7,506-item graph
    here, which makes a converged reference run impossible on this machine."""
    import torch

    d = torch.pow(torch.sum(adj, -1), -0.5)
    d[torch.isinf(d)] = 0.0
    return d[:, None] * adj * d[None, :]


def use_laplacian(module, scaled: bool) -> None:
    """Give ``module`` (MMRec's ``models.lattice``, which imported ``compute_normalized_laplacian``
    by name) the scaled normalisation or MMRec's own, whichever this Reference asks for: the
    module is shared by every Reference of the process, so each one sets it, and MMRec's own
    function is kept to be put back. Modules without the name are left alone."""
    if not hasattr(module, "compute_normalized_laplacian"):
        return
    if not hasattr(module, "_mmrec_compute_normalized_laplacian"):
        module._mmrec_compute_normalized_laplacian = module.compute_normalized_laplacian
    module.compute_normalized_laplacian = (normalized_laplacian_by_scaling if scaled
                                           else module._mmrec_compute_normalized_laplacian)


class Reference:
    """One MMRec model with its optimiser, scheduler and data loader, stepping one epoch at a time."""

    def __init__(self, src: Path, name: str, csr, feats: np.ndarray | None, seed: int, workdir: Path,
                 scaled_laplacian: bool = False, overrides: dict | None = None):
        import pandas as pd
        import torch

        src = Path(src).resolve()
        if not (src / "models" / f"{name.lower()}.py").is_file():
            raise FileNotFoundError(f"--reference {src}: no models/{name.lower()}.py (give MMRec's src folder)")
        if str(src) not in sys.path:
            sys.path.insert(0, str(src))
        mods = {m: importlib.import_module(m) for m in
                ("utils.dataloader", "common.trainer", "utils.utils", f"models.{name.lower()}")}
        foreign = [m for m, mod in mods.items() if not str(Path(mod.__file__).resolve()).startswith(str(src))]
        if foreign:  # MMRec's top-level package names are generic: make sure they are its own
            raise ImportError(f"--reference {src}: {foreign} were imported from elsewhere "
                              f"({[mods[m].__file__ for m in foreign]}); run the bench in a fresh process")
        TrainDataLoader = mods["utils.dataloader"].TrainDataLoader
        self._trainer = mods["common.trainer"].Trainer
        init_seed = mods["utils.utils"].init_seed
        cls = getattr(mods[f"models.{name.lower()}"], name)
        use_laplacian(mods[f"models.{name.lower()}"], scaled_laplacian)

        config = {**MMREC_OVERALL, **MMREC_MODEL[name], **(overrides or {}), "dataset": "bench",
                  "data_path": str(workdir) + "/"}
        (workdir / "bench").mkdir(parents=True, exist_ok=True)
        if feats is not None:
            for f in ("image_feat.npy", "text_feat.npy"):
                np.save(workdir / "bench" / f, feats)
        coo = csr.tocoo()
        df = pd.DataFrame({"userID": coo.row.astype(np.int64), "itemID": coo.col.astype(np.int64)})
        _scipy_compat()
        init_seed(seed)
        self.loader = TrainDataLoader(config, _RefDataset(df, csr.shape[0], csr.shape[1]),
                                      batch_size=config["train_batch_size"], shuffle=True)
        with _cuda_is_identity():
            self.model = cls(config, self.loader)
        self.loader.pretrain_setup()  # as MMRec's quick_start does before training
        opt = torch.optim.Adam(self.model.parameters(), lr=config["learning_rate"], weight_decay=0.0)
        base, step = config["learning_rate_scheduler"]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda e: base ** (e / step))
        self.ns = SimpleNamespace(req_training=True, model=self.model, optimizer=opt, mg=False, clip_grad_norm=None,
                                  logger=logging.getLogger("mmrec-reference"))
        self.ns._check_nan = lambda loss: self._trainer._check_nan(self.ns, loss)
        self.epoch = 0
        self.seconds: list[float] = []

    def run_epoch(self) -> float:
        t0 = time.perf_counter()
        self.model.pre_epoch_processing()
        loss, _ = self._trainer._train_epoch(self.ns, self.loader, self.epoch)
        self.scheduler.step()
        dt = time.perf_counter() - t0
        self.seconds.append(dt)
        self.epoch += 1
        return float(loss)


def time_model(name: str, protocol: Protocol, *, epochs: int, seed: int, reference: Path | None,
               feats: np.ndarray | None, workdir: Path, reference_items: str = "train") -> dict:
    """``feats``: one row per item of train ∪ val ∪ test (training items first, as
    ``Protocol``), or only the training items' rows. ``reference_items``: ``train`` (MMRec
    on our index space: the training items) or ``all`` (MMRec's own: every item of the
    dataset, as ``bench fidelity --reference`` runs it)."""
    ref = None
    n_train = protocol.train_set.num_items
    if reference is not None:
        csr = protocol.train_all.tocsr() if reference_items == "all" else protocol.train_set.csr_matrix
        ref_feats = None
        if name in MULTIMODAL and feats is not None:
            if reference_items == "all" and feats.shape[0] != protocol.n_items_all:
                raise ValueError(f"--reference-items all needs features for all {protocol.n_items_all} items")
            ref_feats = feats if reference_items == "all" else feats[:n_train]
        ref = Reference(reference, name, csr, ref_feats, seed, workdir / name)
    model = build_ours(name, seed=seed, n_epochs=epochs)
    if ref is not None:
        model.epoch_callback = lambda m, e: (ref.run_epoch(), False)[1]
    model.fit(protocol.train_set)
    ours = list(model.epoch_seconds)
    row = {"model": name, "epochs": epochs, "ours_best": min(ours), "ours_median": statistics.median(ours),
           "ours_all": [round(s, 4) for s in ours]}
    if ref is not None:
        row.update(ref_best=min(ref.seconds), ref_median=statistics.median(ref.seconds),
                   ref_all=[round(s, 4) for s in ref.seconds], ratio_best=min(ours) / min(ref.seconds),
                   ratio_median=statistics.median(ours) / statistics.median(ref.seconds))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmrepr.bench speed", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--epochs", type=int, default=5, help="epochs timed per model (best and median reported)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time each model this many times (fresh models each time) and report the median of the "
                         "repeats' ratios: the machine's speed drifts by ~10%% between minutes, not within one run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both (0: all cores)")
    ap.add_argument("--reference-items", choices=("train", "all"), default="train",
                    help="MMRec's items: train (ours: the training items) or all (MMRec's own item space, "
                         "train ∪ val ∪ test with the val/test-only items' feature rows, as bench fidelity "
                         "--reference runs it)")
    ap.add_argument("--content", choices=("noise", "real"), default="noise",
                    help="noise: N(0,1) of shape (items, 384); real: MiniLM of the Qwen2-VL-7B answers (cached)")
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--reference", default=None, help="MMRec's src folder: time its models interleaved with ours")
    ap.add_argument("--data", default=None, help="folder with {train,val,test}.tsv (default: shared allrecipes)")
    ap.add_argument("--cache", default="cache/fidelity")
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args(argv)

    import torch

    from mmrepr.models.base import set_torch_threads
    from mmrepr.paths import shared_data_dir
    from mmrepr.training.data import SplitTriples

    models = model_list(ap, a.models)
    if a.epochs < 1 or a.repeat < 1:
        ap.error("--epochs and --repeat must be >= 1")
    threads = set_torch_threads(a.threads)
    folder = Path(a.data) if a.data else shared_data_dir() / "allrecipes"
    protocol = Protocol(SplitTriples.from_tsv_folder(folder))
    ts = protocol.train_set
    # features of every item (training items first); ours get the training items' rows (the
    # noise draws of those rows are the same whatever the number of rows after them)
    if a.content == "real":
        feats = minilm_features(list(protocol.item_ids) + list(protocol.extra_item_ids), Path(a.cache))
    else:
        feats = np.random.default_rng(a.seed).standard_normal((protocol.n_items_all, 384)).astype(np.float32)
    attach(protocol, feats[: ts.num_items])
    print(f"{folder}: {ts.num_users} users x {ts.num_items} items, {ts.csr_matrix.nnz} training interactions, "
          f"batch 2048 -> {-(-ts.csr_matrix.nnz // 2048)} steps/epoch; content {a.content} {feats.shape}; "
          f"torch {torch.__version__}, {threads} thread(s); reference: {a.reference or 'none'}"
          f"{' (items: ' + a.reference_items + ')' if a.reference else ''}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmrepr-speed-") as tmp:
        for name in models:
            reps = []
            for rep in range(a.repeat):
                r = time_model(name, protocol, epochs=a.epochs, seed=a.seed,
                               reference=Path(a.reference) if a.reference else None, feats=feats,
                               workdir=Path(tmp) / f"r{rep}", reference_items=a.reference_items)
                r["repeat"] = rep
                reps.append(r)
                rows.append(r)
                line = f"  {name:8s} ours {r['ours_best']:.3f} s/epoch best, {r['ours_median']:.3f} median"
                if "ref_best" in r:
                    line += (f" | MMRec {r['ref_best']:.3f} best, {r['ref_median']:.3f} median"
                             f" | ratio {r['ratio_best']:.3f} (best), {r['ratio_median']:.3f} (median)")
                print(line + (f"  [repeat {rep + 1}/{a.repeat}]" if a.repeat > 1 else ""), flush=True)
            if a.repeat > 1 and "ratio_best" in reps[0]:
                rb = [x["ratio_best"] for x in reps]
                rm = [x["ratio_median"] for x in reps]
                print(f"  {name:8s} over {a.repeat} repeats: ratio of bests median {statistics.median(rb):.3f} "
                      f"(range {min(rb):.3f}-{max(rb):.3f}); ratio of medians median {statistics.median(rm):.3f}",
                      flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"threads": threads, "content": a.content, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
