"""LATTICE (Zhang et al., ACM MM'21), following MMRec's ``models/lattice.py`` with its
LightGCN backbone (``cf_model: lightgcn``).

Per modality: a frozen top-k cosine item graph from the raw features ("original") and a
learned one from the projected (trainable) features; the learned graphs are mixed with
softmax modality weights, normalised, and combined with the originals as
``(1 - lambda_coeff) * learned + lambda_coeff * original``. The item graph is rebuilt (with
gradients into the projections, features and modality weights) at the first batch of every
``graph_rebuild_every``-th epoch (default 1: every epoch, the reference's schedule) and held
fixed (detached) until the next rebuild; scoring always uses a freshly built graph, as the
reference's ``full_sort_predict`` does.
Item embeddings: LightGCN output over D^-1(A+I) plus L2-normalised item-graph output.
Cold items (no training interaction): the item graphs cover every item but a neighbour is
always a warm item (``knn_indices(candidates=warm)``); the ID rows are zeroed (``_ids``)
before both propagations, so a cold item's embedding is the normalised sum of its warm
content neighbours' ID embeddings (the user-item part is zero: it has no edge).
Projected content size ``feat_embed_dim`` = 64 whatever ``k`` is, as in both references.
Loss: BPR + ``lambda_reg`` * 1/2 (|u|^2+|i+|^2+|i-|^2) / batch_size (MMRec ``reg_weight``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrepr.models.base import EmbeddingRecommender, effective_top_k, multimodal_features, rows
from mmrepr.models.graphs import (
    EdgeGraph,
    FixedSparse,
    lattice_knn_graph,
    zero_rows,
    mean_norm_adjacency_self_loops,
    propagate_mean_split,
    scipy_to_torch,
    spmm,
    sym_normalise,
)
from mmrepr.models.spec import ModelSpec, embedding_build


class LATTICE(EmbeddingRecommender):
    scores_cold_items = True  # through its warm content neighbours
    lr_scheduler = (0.96, 50.0)  # MMRec LATTICE.yaml learning_rate_scheduler

    def __init__(
        self,
        name: str = "LATTICE",
        k: int = 64,
        learning_rate: float = 0.001,
        lambda_reg: float = 0.01,
        n_epochs: int = 200,
        batch_size: int = 1024,
        seed: int = 123,
        verbose: bool = False,
        device: str = "auto",
        top_k: int = 10,
        lambda_coeff: float = 0.7,
        n_layers: int = 1,
        n_ui_layers: int = 2,
        feat_embed_dim: int = 64,
        graph_rebuild_every: int = 1,
        trainable: bool = True,
    ):
        super().__init__(name, k, learning_rate, lambda_reg, n_epochs, batch_size, seed, verbose, device, trainable)
        self.top_k = int(top_k)
        self.lambda_coeff = float(lambda_coeff)
        self.n_layers = int(n_layers)
        self.n_ui_layers = int(n_ui_layers)
        # MMRec's yaml and the authors' Elliot configs (factors_multimod) both fix it at 64,
        # whatever the ID embedding size: the projections only choose graph neighbours
        self.feat_embed_dim = int(feat_embed_dim)
        self.graph_rebuild_every = int(graph_rebuild_every)
        if self.graph_rebuild_every < 1:
            raise ValueError(f"{name}: graph_rebuild_every must be >= 1 epochs, got {graph_rebuild_every}")

    def _build(self, train_set):
        v, t = multimodal_features(train_set, self.name)
        dev, n = self._device, self.num_items
        self._cand = torch.from_numpy(np.flatnonzero(self.warm_items)).to(dev)  # possible neighbours
        self._top_k = effective_top_k(self.top_k, len(self._cand), self.name)
        fd = self.feat_embed_dim
        net = nn.Module()
        net.user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.num_users, self.k)))
        net.item = self._id_table(self.k)
        self.modalities = []
        self.original = {}
        self._empty = {}
        for key, feats in (("v", v), ("t", t)):
            if feats is None:
                continue
            x = torch.from_numpy(feats).to(dev)
            # reference: nn.Embedding.from_pretrained(feat, freeze=False) -> features are trained
            setattr(net, f"{key}_feat", nn.Parameter(x.clone()))
            setattr(net, f"{key}_trs", nn.Linear(x.shape[1], fd))
            # items without content (all-zero rows) get no edges, in the learned graph too
            # (their projections are all the bias: equal, so top-k ties)
            self._empty[key] = zero_rows(x)
            with torch.no_grad():
                r, c, val = lattice_knn_graph(x, self._top_k, candidates=self._cand)
                self.original[key] = (r, c, sym_normalise(r, c, val, n))
            self.modalities.append(key)
        net.modal_weight = nn.Parameter(torch.tensor([0.5, 0.5]))
        self.net = net
        self.adj = FixedSparse(scipy_to_torch(mean_norm_adjacency_self_loops(self._train_csr), dev))
        self._item_adj = None
        self._build_graph = True
        self._epochs_started = 0
        self.graph_builds = 0  # training-time rebuilds (scoring builds its own)

    def modality_weights(self) -> dict[str, float]:
        """Softmax modality weights (only meaningful with both modalities)."""
        w = torch.softmax(self.net.modal_weight.detach(), 0).cpu().numpy()
        return {"visual": float(w[0]), "textual": float(w[1])}

    def item_graph(self) -> torch.Tensor:
        """(1-λ) * norm(Σ w_m learned_m) + λ * Σ w_m original_m, as an ``EdgeGraph``."""
        n = self.num_items
        w = torch.softmax(self.net.modal_weight, 0)
        scale = {"v": w[0], "t": w[1]} if len(self.modalities) == 2 else {m: 1.0 for m in self.modalities}
        lr, lc, lv, orr, oc, ov = [], [], [], [], [], []
        for m in self.modalities:
            feats = getattr(self.net, f"{m}_trs")(getattr(self.net, f"{m}_feat"))
            r, c, val = lattice_knn_graph(feats, self._top_k, candidates=self._cand, empty=self._empty[m])
            lr.append(r), lc.append(c), lv.append(scale[m] * val)
            r0, c0, v0 = self.original[m]
            orr.append(r0), oc.append(c0), ov.append(scale[m] * v0)
        lr, lc = torch.cat(lr), torch.cat(lc)
        learned = sym_normalise(lr, lc, torch.cat(lv), n)
        rows = torch.cat([lr, torch.cat(orr)])
        cols = torch.cat([lc, torch.cat(oc)])
        vals = torch.cat([(1 - self.lambda_coeff) * learned, self.lambda_coeff * torch.cat(ov)])
        return EdgeGraph(rows, cols, vals, n)

    def _pre_epoch(self):
        # epochs are counted from 0 here: the first epoch always builds the graph
        self._build_graph = self._epochs_started % self.graph_rebuild_every == 0 or self._item_adj is None
        self._epochs_started += 1
        if self._build_graph:
            self.graph_builds += 1

    def _forward(self, build: bool):
        if build or self._item_adj is None:
            self._item_adj = self.item_graph()
        elif not isinstance(self._item_adj, FixedSparse):
            # later batches: same graph, no gradient (reference: .detach())
            self._item_adj = FixedSparse(self._item_adj.to_coo())
        return self._propagate(self._item_adj)

    def _propagate(self, item_adj):
        item = self._ids(self.net.item)  # cold rows zeroed
        h = item
        for _ in range(self.n_layers):
            h = spmm(item_adj, h)
        ue, ie = propagate_mean_split(self.adj, self.net.user, item, self.n_ui_layers)
        return ue, ie + F.normalize(h, p=2, dim=1)

    def _batch_loss(self, batch):
        u, i, j = batch
        ue, ie = self._forward(self._build_graph)
        self._build_graph = False
        eu, ep, en = rows(ue, u), rows(ie, i), rows(ie, j)
        mf = -F.logsigmoid((eu * ep).sum(1) - (eu * en).sum(1)).mean()
        reg = 0.5 * (eu.pow(2).sum() + ep.pow(2).sum() + en.pow(2).sum()) / self.batch_size
        return mf + self.lambda_reg * reg

    def _final_embeddings(self):
        # reference full_sort_predict rebuilds the graph; the training graph is left alone
        return self._propagate(self.item_graph())


SPEC = ModelSpec("LATTICE", "multimodal", embedding_build(LATTICE), needs="features")
