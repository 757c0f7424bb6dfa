"""FREEDOM (Zhou & Shen, ACM MM'23), following MMRec's ``models/freedom.py``.

A frozen item-item graph: per-modality binary top-k cosine graphs from the raw features,
each symmetrically normalised (every value 1/k), mixed ``mm_image_weight * visual +
(1 - mm_image_weight) * textual``. The user-item graph is pruned every epoch by
degree-sensitive edge dropout: ``int(E * (1 - dropout))`` edges are sampled without
replacement with probability proportional to 1/sqrt(d_u d_i) and the kept graph is
re-normalised; scoring uses the full graph. Item embeddings = LightGCN output +
item-graph output. Loss: BPR + ``lambda_reg`` * (BPR of users against projected textual
features + the same for visual) (MMRec ``reg_weight``), no L2 term.

A modality whose matrix is all zeros (a zeroed modality ablation) is treated as absent, as
MMRec treats a missing feature file: no graph, no projection loss, the other modality's graph
alone (weight 1). Otherwise its top-k would be arbitrary ties (a hub graph) and the fixed
``mm_image_weight`` would shrink the remaining graph (docs/protocol.md, "Modality ablation").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrepr.models.base import EmbeddingRecommender, RowGradTable, effective_top_k, multimodal_features, rows
from mmrepr.models.fused import bpr_rows
from mmrepr.models.graphs import (
    FixedSparse,
    edge_normalised_values,
    freedom_knn_graph,
    propagate_mean_rows,
    pad_item_block,
    propagate_mean_split,
    rows_operator_product,
    RowsOperator,
    scipy_to_torch,
    spmm,
    spmm_rows,
    sym_norm_adjacency,
    to_sparse,
)
from mmrepr.models.spec import ModelSpec, embedding_build


class FREEDOM(EmbeddingRecommender):
    scores_cold_items = True  # through its warm content neighbours

    def __init__(
        self,
        name: str = "FREEDOM",
        k: int = 64,
        learning_rate: float = 0.001,
        lambda_reg: float = 0.01,
        n_epochs: int = 200,
        batch_size: int = 1024,
        seed: int = 123,
        verbose: bool = False,
        device: str = "auto",
        top_k: int = 10,
        mm_image_weight: float = 0.1,
        dropout: float = 0.8,
        n_mm_layers: int = 1,
        n_ui_layers: int = 2,
        trainable: bool = True,
    ):
        super().__init__(name, k, learning_rate, lambda_reg, n_epochs, batch_size, seed, verbose, device, trainable)
        self.top_k = int(top_k)
        self.mm_image_weight = float(mm_image_weight)
        self.dropout = float(dropout)
        self.n_mm_layers = int(n_mm_layers)
        self.n_ui_layers = int(n_ui_layers)

    def _build(self, train_set):
        v, t = multimodal_features(train_set, self.name)
        dev, n = self._device, self.num_items
        cand = torch.from_numpy(np.flatnonzero(self.warm_items)).to(dev)  # possible neighbours: warm items
        self._top_k = effective_top_k(self.top_k, len(cand), self.name)
        net = nn.Module()
        net.user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.num_users, self.k)))
        net.item = self._id_table(self.k)
        self.modalities, graphs = [], {}
        for key, feats in (("v", v), ("t", t)):
            # An all-zero modality (an ablation's zeroed role) carries nothing: it is absent, as
            # in MMRec without that feature file (no graph, no projection loss; the other graph
            # gets the whole weight instead of being shrunk by the fixed mixing weight).
            if feats is None or not feats.any():
                continue
            x = torch.from_numpy(feats).to(dev)
            setattr(net, f"{key}_feat", nn.Parameter(x.clone()))  # from_pretrained(freeze=False)
            self._row_grad_tables.append(RowGradTable(getattr(net, f"{key}_feat")))
            setattr(net, f"{key}_trs", nn.Linear(x.shape[1], self.k))
            graphs[key] = freedom_knn_graph(x, self._top_k, cand)
            self.modalities.append(key)
        self.net = net
        if len(graphs) == 2:
            wv = self.mm_image_weight
            (rv, cv, vv), (rt, ct, vt) = graphs["v"], graphs["t"]
            rows, cols, vals = torch.cat([rv, rt]), torch.cat([cv, ct]), torch.cat([wv * vv, (1 - wv) * vt])
        elif graphs:
            rows, cols, vals = next(iter(graphs.values()))
        else:  # both modalities all zero: no item graph (the ID/LightGCN part alone)
            rows = cols = torch.zeros(0, dtype=torch.long, device=dev)
            vals = torch.zeros(0, dtype=torch.float32, device=dev)
        self.mm_adj = FixedSparse(to_sparse(rows, cols, vals, n))
        self.norm_adj = FixedSparse(scipy_to_torch(sym_norm_adjacency(self._train_csr), dev), symmetric=True)
        coo = self._train_csr.tocoo()
        self.edge_users = torch.from_numpy(coo.row.astype("int64")).to(dev)
        self.edge_items = torch.from_numpy(coo.col.astype("int64")).to(dev)
        self.edge_values = edge_normalised_values(self.edge_users, self.edge_items, self.num_users, n)
        self.masked_adj = self.norm_adj
        self._mm_power = self._rows_op = None

    def _pre_epoch(self):
        self._rows_op = None
        if self.dropout <= 0.0:
            self.masked_adj = self.norm_adj
            self._set_rows_operator()
            return
        keep = self.kept_edges()
        idx = torch.multinomial(self.edge_values.cpu(), keep, replacement=False, generator=self._torch_gen)
        idx = idx.to(self._device)
        ku, ki = self.edge_users[idx], self.edge_items[idx]
        vals = edge_normalised_values(ku, ki, self.num_users, self.num_items)
        ki = ki + self.num_users
        nn_ = self.num_users + self.num_items
        self.masked_adj = FixedSparse(
            to_sparse(torch.cat([ku, ki]), torch.cat([ki, ku]), torch.cat([vals, vals]), nn_), symmetric=True
        )
        self._set_rows_operator()

    def kept_edges(self) -> int:
        """Edges each epoch's pruning keeps: ``int(E * (1 - dropout))`` (MMRec's), at least one."""
        return max(1, int(self.edge_values.shape[0] * (1.0 - self.dropout)))

    def _set_rows_operator(self):
        """The step's graph work as one sparse operator (``RowsOperator``) when it stays
        sparse: the epoch's pruned user-item graph's layer mean plus the frozen item graph
        (to the power ``n_mm_layers``, computed once)."""
        self._rows_op = None
        if self.masked_adj.sa is None:  # not on CPU: the layer-by-layer path
            return
        if self._mm_power is None:
            m = sp.identity(self.num_items, dtype=np.float32, format="csr")
            for _ in range(self.n_mm_layers):
                m = self.mm_adj.sa @ m
            self._mm_power = pad_item_block(m, self.num_users)  # padded once, added every epoch
        op = RowsOperator(self.masked_adj.sa, self.n_ui_layers, self.num_users, self._mm_power)
        self._rows_op = op if op.worthwhile() else None

    def _forward(self, adj):
        item = self._ids(self.net.item)  # cold rows zeroed
        h = item
        for _ in range(self.n_mm_layers):
            h = spmm(self.mm_adj, h)
        ue, ie = propagate_mean_split(adj, self.net.user, item, self.n_ui_layers)
        return ue, ie + h

    def _batch_loss(self, batch):
        u, i, j = batch
        # The loss reads only the batch's distinct users and items: only their rows leave the
        # graph work (the rows operator, or the last layer restricted to them). Same values;
        # gradients equal to float rounding.
        users, u_inv = torch.unique(u, return_inverse=True)
        items, inverse = torch.unique(torch.cat([i, j]), return_inverse=True)
        if self._rows_op is not None:
            ue, ie = rows_operator_product(self._rows_op, self.net.user, self.net.item, users, items)
        else:
            ue, ie = propagate_mean_rows(self.masked_adj, self.net.user, self.net.item, self.n_ui_layers, users,
                                         items)
            h = self.net.item
            for layer in range(self.n_mm_layers):
                h = spmm_rows(self.mm_adj, h, items) if layer == self.n_mm_layers - 1 else spmm(self.mm_adj, h)
            ie = ie + (h if self.n_mm_layers else rows(h, items))
        # BPR of the projected features: u.(W f_i + b) - u.(W f_j + b) = u.W (f_i - f_j). The
        # bias cancels (its gradient is exactly zero), and the batch's differences are projected
        # instead of each distinct item: fewer rows in all three GEMMs (forward, W's gradient,
        # the feature rows' gradient). Same loss; gradients equal to float rounding.
        ii, jj = inverse[: len(i)], inverse[len(i) :]
        z = [F.linear(table.row_difference(i, j), getattr(self.net, f"{m}_trs").weight)
             for m, table in zip(self.modalities, self._row_grad_tables)]
        return bpr_rows(ue, ie, u_inv, ii, jj, kind="logsigmoid", extra=tuple(z), extra_weight=self.lambda_reg)

    def _final_embeddings(self):
        return self._forward(self.norm_adj)


SPEC = ModelSpec("FREEDOM", "multimodal", embedding_build(FREEDOM), needs="features")
