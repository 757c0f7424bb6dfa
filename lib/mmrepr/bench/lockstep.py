"""``python -m mmrepr.bench lockstep --reference MMREC_SRC [--models LightGCN,VBPR,LATTICE,FREEDOM,BM3] [--epochs 2] [--content noise] [--seed 999] [--dropout-draws 0] [--out CSV]``

Our model and MMRec's own class trained **in lockstep**: MMRec's initial weights copied into
ours, the same batches (MMRec's ``TrainDataLoader``, its shuffle and negatives), each side
stepping its own Adam and LR schedule. Printed per epoch: the largest loss difference over
the steps, the largest gradient difference (relative to that gradient's largest entry, over
every parameter and step; the first step's on its own), the largest gradient entry of a
parameter that has a gradient on one side only, the largest parameter difference at
the epoch's end and the largest difference of the scores of 512 users (relative to the
largest score). Allrecipes' training split, our training items on both sides (MMRec's item
space would add rows ours do not have).

What it shows: a formula difference (a loss term, a normalisation, which embeddings score,
where gradients flow) appears at the first step, far above float rounding (~1e-7 relative).
Exact agreement after that is not expected: summation orders differ (sparse kernels, fused
Adam), and where a model re-selects kNN neighbours from trained values (LATTICE's learned
item graph, every epoch) a last-bit difference can flip a near tie, after which the two runs
drift apart as two seeds would.

FREEDOM: each epoch's pruned user-item graph is MMRec's, copied into ours (each side draws
it from its own RNG); what the two draws are drawn from (each edge's weight, the number
kept) is compared once (:func:`freedom_edge_sampling`). BM3 runs with its target dropout at
0 on both sides (``SETTINGS``): the masks are drawn inside the step from torch's global RNG,
on whole tables in MMRec and on the batch's rows in ours, so no two masks could be equal;
everything else of its loss is compared. ``--dropout-draws N`` then compares the dropout
itself **in expectation**: from MMRec's initial weights (copied into ours) and its first
batch, each side at the model's own dropout computes loss and gradients N times, each with
fresh masks and no step; per parameter the difference of the two mean gradients is set
against the Monte Carlo noise of the means (:func:`dropout_expectation`). Same expectation: the ratio is ~1; a dropout
placed or scaled differently moves the mean and the ratio grows with N.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from mmrepr.bench.fidelity import Protocol, attach, build_ours, minilm_features, model_list, noise_features

# our parameter name -> MMRec's, per model. Every parameter on both sides must be listed.
PARAMETERS = {
    "LightGCN": {"user": "embedding_dict.user_emb", "item": "embedding_dict.item_emb"},
    "VBPR": {"user": "u_embedding", "item": "i_embedding", "item_linear.weight": "item_linear.weight",
             "item_linear.bias": "item_linear.bias"},
    "LATTICE": {"user": "user_embedding.weight", "item": "item_id_embedding.weight",
                "v_feat": "image_embedding.weight", "t_feat": "text_embedding.weight",
                "v_trs.weight": "image_trs.weight", "v_trs.bias": "image_trs.bias",
                "t_trs.weight": "text_trs.weight", "t_trs.bias": "text_trs.bias", "modal_weight": "modal_weight"},
    "FREEDOM": {"user": "user_embedding.weight", "item": "item_id_embedding.weight",
                "v_feat": "image_embedding.weight", "t_feat": "text_embedding.weight",
                "v_trs.weight": "image_trs.weight", "v_trs.bias": "image_trs.bias",
                "t_trs.weight": "text_trs.weight", "t_trs.bias": "text_trs.bias"},
}
PARAMETERS["BM3"] = {"user": "user_embedding.weight", "item": "item_id_embedding.weight",
                     "predictor.weight": "predictor.weight", "predictor.bias": "predictor.bias",
                     **{k: v for k, v in PARAMETERS["FREEDOM"].items() if k[0] in "vt"}}
MODELS = tuple(PARAMETERS)
# settings changed on both sides for the comparison: (MMRec config, our constructor)
SETTINGS = {"BM3": ({"dropout": 0.0}, {"dropout": 0.0})}


def _freedom_sync(ours, ref_model) -> None:
    """The epoch's pruned user-item graph: MMRec's, drawn by its ``pre_epoch_processing``."""
    from mmrepr.models.graphs import FixedSparse

    ours.masked_adj = FixedSparse(ref_model.masked_adj.coalesce(), symmetric=True)
    ours._set_rows_operator()


EPOCH_SYNC: dict[str, Callable] = {"FREEDOM": _freedom_sync}


def freedom_edge_sampling(ours, ref_model) -> dict:
    """What FREEDOM's per-epoch edge pruning draws from, on both sides (the sync above copies
    MMRec's draw, so it is compared here instead): each training edge's sampling weight
    1/sqrt(d_u d_i), matched by (user, item), and the number of edges kept. Both sides draw
    with ``torch.multinomial(weights, kept, replacement=False)``, so equal weights and counts
    mean the same distribution of pruned graphs."""
    n_items = ours.num_items
    mine = dict(zip((ours.edge_users * n_items + ours.edge_items).tolist(), ours.edge_values.tolist()))
    ref_keys = (ref_model.edge_indices[0] * n_items + ref_model.edge_indices[1]).tolist()
    theirs = dict(zip(ref_keys, ref_model.edge_values.tolist()))
    if set(mine) != set(theirs):
        raise ValueError(f"FREEDOM: {len(set(mine) ^ set(theirs))} training edges on one side only")
    e = len(mine)
    return {"edges": e, "weight_max_rel_diff": max(abs(mine[k] - theirs[k]) / theirs[k] for k in mine),
            "kept_ours": ours.kept_edges(), "kept_ref": int(e * (1.0 - ref_model.dropout))}


def copy_weights(ours, ref_model: torch.nn.Module, mapping: dict[str, str]) -> None:
    """Set our parameters to the reference's (``mapping``: ours -> reference name)."""
    mine, theirs = dict(ours.net.named_parameters()), dict(ref_model.named_parameters())
    if set(mine) != set(mapping) or not set(mapping.values()) <= set(theirs):
        raise ValueError(f"{ours.name}: parameters ours {sorted(mine)}, reference {sorted(theirs)}; "
                         f"mapping {mapping}: update lockstep.PARAMETERS")
    with torch.no_grad():
        for name, ref_name in mapping.items():
            if mine[name].shape != theirs[ref_name].shape:
                raise ValueError(f"{ours.name}: {name} {tuple(mine[name].shape)} vs reference {ref_name} "
                                 f"{tuple(theirs[ref_name].shape)}")
            mine[name].copy_(theirs[ref_name])


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = float(b.abs().max())
    return float((a - b).abs().max()) / scale if scale > 0 else float((a - b).abs().max())


def run_lockstep(ours, ref_model: torch.nn.Module, ref_opt, ref_sched, epoch_batches: Callable[[], Iterable],
                 mapping: dict[str, str], *, epochs: int, ref_scores: Callable, users: np.ndarray,
                 sync: Callable | None = None, epoch_end: Callable[[int], bool] | None = None) -> pd.DataFrame:
    """Train ``ours`` (prepared, weights already copied) and ``ref_model`` side by side.

    ``epoch_batches()``: one epoch's batches, each ``(users, items[, negatives])`` tensors;
    ``ref_scores(users)``: the reference's score matrix for ``users``. Returns one row per
    step (epoch, step, losses, their difference, the largest relative gradient difference
    and its parameter, the largest gradient entry of a parameter with a gradient on one side
    only, and their names) and one per epoch end (``step == -1``: parameter and score
    differences). ``epoch_end(epoch)``, after each epoch's end row: True stops before
    ``epochs`` (``bench paired``: both sides' stopping rules)."""
    mine, theirs = dict(ours.net.named_parameters()), dict(ref_model.named_parameters())
    opt, sched = ours._optimizer()
    rows = []
    for epoch in range(epochs):
        if hasattr(ref_model, "pre_epoch_processing"):
            ref_model.pre_epoch_processing()
        ours._pre_epoch()
        if sync is not None:
            sync(ours, ref_model)
        ref_model.train()
        ours.net.train()
        for step, batch in enumerate(epoch_batches()):
            ref_opt.zero_grad(set_to_none=True)
            ours._zero_grad(opt)
            loss_ref = ref_model.calculate_loss(torch.stack(batch))
            if isinstance(loss_ref, tuple):  # MMRec's trainer sums a tuple of losses
                loss_ref = sum(loss_ref)
            loss_ours = ours._batch_loss(tuple(batch))
            loss_ref.backward()
            loss_ours.backward()
            worst, worst_name, one_sided, one_sided_names = 0.0, "", 0.0, []
            for name, ref_name in mapping.items():
                g, gr = mine[name].grad, theirs[ref_name].grad
                if g is None and gr is None:
                    continue
                if g is None or gr is None:
                    # a gradient on one side only: reported as its size, not as a relative
                    # difference (FREEDOM's projection bias cancels in u.(W f_i + b) - u.(W f_j + b):
                    # MMRec's gradient is rounding noise around 0, ours is not computed)
                    one_sided = max(one_sided, float((g if g is not None else gr).abs().max()))
                    one_sided_names.append(name)
                    continue
                diff = _relative(g, gr)
                if diff > worst or not worst_name:
                    worst, worst_name = diff, name
            ref_opt.step()
            opt.step()
            rows.append({"epoch": epoch + 1, "step": step + 1, "loss_ref": float(loss_ref.detach()),
                         "loss_ours": float(loss_ours.detach()),
                         "loss_diff": abs(float(loss_ref.detach()) - float(loss_ours.detach())),
                         "grad_rel_diff": worst, "grad_worst": worst_name,
                         "one_sided_grad_max": one_sided, "one_sided": ",".join(one_sided_names)})
        ref_sched.step()
        sched.step()
        ours._U = ours._V = None
        with torch.no_grad():
            param = max(float((mine[n] - theirs[r]).abs().max()) for n, r in mapping.items())
            ours.net.eval()
            ue, ie = ours._final_embeddings()
            mine_scores = ue[torch.from_numpy(users)] @ ie.T
            ref_model.eval()
            score = _relative(mine_scores, ref_scores(users))
        rows.append({"epoch": epoch + 1, "step": -1, "param_max_diff": param, "score_rel_diff": score})
        if epoch_end is not None and epoch_end(epoch + 1):
            break
    return pd.DataFrame(rows)


def dropout_expectation(ours: Callable[[], tuple], ref: Callable[[], tuple], draws: int) -> pd.DataFrame:
    """Loss and gradients of two stochastic losses compared in expectation.

    ``ours()`` / ``ref()``: one draw each, ``(loss, {parameter name: gradient})`` with the same
    names on both sides. Per parameter: ``mean_diff`` = ‖m_ours − m_ref‖ (m: the mean gradient
    over ``draws`` draws), ``relative`` = that over ‖m_ref‖, and ``noise_ratio`` = that over
    sqrt((tr Σ_ours + tr Σ_ref) / draws), the size the difference has when both expectations
    are equal (Σ: each side's per-entry variance over its draws). E‖m_ours − m_ref‖² =
    ‖μ_ours − μ_ref‖² + that noise², so equal expectations give a ratio near 1 whatever the
    masks' correlations, and a real difference a ratio that grows like sqrt(draws). The first
    row (``parameter`` "loss") gives the same for the loss values (``mean_*``: their size)."""
    if draws < 2:
        raise ValueError("dropout_expectation: draws must be >= 2")
    stats = []
    for side in (ours, ref):
        total, total_sq = {}, {}
        for _ in range(draws):
            loss, grads = side()
            # the loss is one more "parameter": the same statistic, of a one-entry value
            for name, g in {"loss": torch.tensor([float(loss)]), **grads}.items():
                g = g.detach().double()
                total[name] = total[name] + g if name in total else g.clone()
                total_sq[name] = total_sq[name] + g * g if name in total_sq else g * g
        stats.append((total, total_sq))
    (to, so), (tr, sr) = stats
    if set(to) != set(tr):
        raise ValueError(f"dropout_expectation: gradients of {sorted(to)} on one side, {sorted(tr)} on the other")
    rows = []
    for name in to:
        mo, mr = to[name] / draws, tr[name] / draws
        var = (so[name] - draws * mo * mo).sum() / (draws - 1) + (sr[name] - draws * mr * mr).sum() / (draws - 1)
        diff = float(torch.linalg.vector_norm(mo - mr))
        noise = float(var.clamp_min(0) / draws) ** 0.5
        norm_ref = float(torch.linalg.vector_norm(mr))
        rows.append({"parameter": name, "mean_ours": float(torch.linalg.vector_norm(mo)), "mean_ref": norm_ref,
                     "mean_diff": diff, "relative": diff / norm_ref,
                     "noise_ratio": diff / noise if noise > 0 else np.inf})
    return pd.DataFrame(rows)


def _one_draw(loss_fn: Callable, params: dict[str, torch.nn.Parameter], zero: Callable) -> Callable[[], tuple]:
    """A draw for :func:`dropout_expectation`: zero the gradients, loss, backward, the gradients."""

    def draw():
        zero()
        loss = loss_fn()
        if isinstance(loss, tuple):
            loss = sum(loss)
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in params.items() if p.grad is not None}

    return draw


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per epoch: largest loss and gradient differences over its steps, the first step's, the
    end-of-epoch parameter and score differences."""
    out = []
    for epoch, g in df.groupby("epoch"):
        steps, end = g[g["step"] > 0], g[g["step"] == -1].iloc[0]
        first = steps[steps["step"] == 1].iloc[0]
        worst = steps.loc[steps["grad_rel_diff"].idxmax()]
        out.append({"epoch": epoch, "steps": len(steps), "loss diff, step 1": first["loss_diff"],
                    "grad rel diff, step 1": first["grad_rel_diff"], "max loss diff": steps["loss_diff"].max(),
                    "max grad rel diff": worst["grad_rel_diff"], "(parameter)": worst["grad_worst"],
                    "one-sided grad max": steps["one_sided_grad_max"].max(),
                    "param max diff": end["param_max_diff"], "score rel diff": end["score_rel_diff"]})
    return pd.DataFrame(out)


def _both_sides(name: str, reference: Path, ts, feats, seed: int, workdir: Path, *, epochs: int = 1,
                ref_settings: dict | None = None, our_settings: dict | None = None):
    """MMRec's ``name`` (``speed.Reference``) and ours, prepared, MMRec's initial weights copied
    into ours."""
    from mmrepr.bench.speed import Reference

    ref = Reference(reference, name, ts.csr_matrix, feats if name != "LightGCN" else None, seed, workdir,
                    scaled_laplacian=True, overrides=ref_settings or {})
    ours = build_ours(name, seed=seed, n_epochs=epochs, **(our_settings or {}))
    ours.prepare(ts)
    copy_weights(ours, ref.model, PARAMETERS[name])
    return ref, ours


def _dropout_check(name: str, reference: Path, ts, feats, seed: int, draws: int) -> pd.DataFrame:
    """Both sides at the model's own settings (dropout included), MMRec's initial weights in
    ours, MMRec's first batch: :func:`dropout_expectation`."""
    mapping = PARAMETERS[name]
    with tempfile.TemporaryDirectory(prefix="mmrepr-lockstep-") as tmp:
        ref, ours = _both_sides(name, reference, ts, feats, seed, Path(tmp))
        batch = tuple(next(iter(ref.loader)))
        opt, _ = ours._optimizer()
        for m in (ours.net, ref.model):
            m.train()
        mine, theirs = dict(ours.net.named_parameters()), dict(ref.model.named_parameters())
        return dropout_expectation(
            _one_draw(lambda: ours._batch_loss(batch), mine, lambda: ours._zero_grad(opt)),
            _one_draw(lambda: ref.model.calculate_loss(torch.stack(batch)), {n: theirs[r] for n, r in mapping.items()},
                      lambda: ref.ns.optimizer.zero_grad(set_to_none=True)),
            draws)


def add_input_arguments(ap: argparse.ArgumentParser) -> None:
    """What :func:`load_inputs` reads, and the threads: ``--noise-seed``, ``--threads``, ``--data``, ``--cache``."""
    ap.add_argument("--noise-seed", type=int, default=999)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=None, help="folder with {train,val,test}.tsv (default: shared allrecipes)")
    ap.add_argument("--cache", default="cache/fidelity", help="MiniLM encodings (--content real) are cached here")


def load_inputs(data: str | None, content: str, noise_seed: int, cache: str) -> tuple[Protocol, np.ndarray]:
    """The split (``data``: a folder with {train,val,test}.tsv; default the shared allrecipes)
    and the content rows of our training items, attached to the protocol's training set."""
    from mmrepr.paths import shared_data_dir
    from mmrepr.training.data import SplitTriples

    folder = Path(data) if data else shared_data_dir() / "allrecipes"
    protocol = Protocol(SplitTriples.from_tsv_folder(folder))
    n = protocol.train_set.num_items
    if content == "real":
        feats = minilm_features(list(protocol.item_ids), Path(cache))
    else:  # the rows fidelity gives ours: the first n of the all-items noise matrix
        feats = noise_features((protocol.n_items_all, 384), noise_seed)[:n]  # 384: MiniLM's size
    attach(protocol, feats)
    return protocol, feats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmrepr.bench lockstep", description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="MMRec's src folder")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--content", choices=("real", "noise"), default="noise")
    ap.add_argument("--seed", type=int, default=999)
    add_input_arguments(ap)
    ap.add_argument("--out", default=None, help="every step's row here (CSV; the dropout comparison: "
                                                  "<stem>_dropout.csv beside it)")
    ap.add_argument("--dropout-draws", type=int, default=0,
                    help="models run without their dropout (BM3): also compare it in expectation over this many "
                         "draws per side (0: skip)")
    args = ap.parse_args(argv)

    from mmrepr.models.base import set_torch_threads

    models = model_list(ap, args.models, MODELS)
    set_torch_threads(args.threads)
    protocol, feats = load_inputs(args.data, args.content, args.noise_seed, args.cache)
    ts = protocol.train_set
    users = np.arange(min(512, ts.num_users), dtype=np.int64)
    frames, dropout_frames = [], []
    for name in models:
        ref_settings, our_settings = SETTINGS.get(name, ({}, {}))
        with tempfile.TemporaryDirectory(prefix="mmrepr-lockstep-") as tmp:
            ref, ours = _both_sides(name, Path(args.reference), ts, feats, args.seed, Path(tmp), epochs=args.epochs,
                                    ref_settings=ref_settings, our_settings=our_settings)

            def ref_scores(us, model=ref.model):
                return model.full_sort_predict((torch.from_numpy(us),))

            if name == "FREEDOM":
                print(f"FREEDOM edge pruning, what each side samples from: {freedom_edge_sampling(ours, ref.model)}")
            df = run_lockstep(ours, ref.model, ref.ns.optimizer, ref.scheduler,
                              lambda loader=ref.loader: (tuple(b) for b in loader), PARAMETERS[name],
                              epochs=args.epochs, ref_scores=ref_scores, users=users, sync=EPOCH_SYNC.get(name))
        df.insert(0, "model", name)
        frames.append(df)
        changed = ", ".join(f"{k} {v}" for k, v in ref_settings.items())
        print(f"{name} ({args.content}, seed {args.seed}{', both sides with ' + changed if changed else ''}):")
        print(summary(df).to_string(index=False, float_format=lambda v: f"{v:.1e}"), flush=True)
        if args.dropout_draws and name in SETTINGS:
            ex = _dropout_check(name, Path(args.reference), ts, feats, args.seed, args.dropout_draws)
            print(f"{name} at its own dropout, in expectation over {args.dropout_draws} draws per side "
                  "(noise_ratio ~1: the same expectation):")
            print(ex.to_string(index=False, float_format=lambda v: f"{v:.2e}"), flush=True)
            dropout_frames.append(ex.assign(model=name))
    if args.out:
        from mmrepr.io import write_csv

        write_csv(pd.concat(frames, ignore_index=True), Path(args.out))
        if dropout_frames:  # its own table: one row per parameter, not per step
            out = Path(args.out)
            write_csv(pd.concat(dropout_frames, ignore_index=True), out.with_name(out.stem + "_dropout.csv"))
    return 0
