"""LightGCN (He et al., SIGIR'20) in plain torch: Cornac's own needs DGL.

Follows Cornac 3.0.1's ``LightGCN`` (the study's baseline): Xavier-uniform embeddings,
symmetric-normalised user-item adjacency without self loops, the mean of the layer-0..L
embeddings, BPR (softplus) + ``lambda_reg`` * 1/2 (|u|^2 + |i+|^2 + |i-|^2) / batch on the
propagated embeddings of the batch, Adam.

Cold items: ID only, so it cannot rank them; their ID rows are zeroed before propagation
(``_ids``) and the base class gives them the user's lowest warm score.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from mmrepr.models.base import EmbeddingRecommender
from mmrepr.models.fused import bpr_rows
from mmrepr.models.graphs import (
    FixedSparse,
    propagate_mean_rows,
    propagate_mean_split,
    scipy_to_torch,
    sym_norm_adjacency,
)
from mmrepr.models.spec import BPR_SPACE, ModelSpec, embedding_build


class LightGCN(EmbeddingRecommender):
    def __init__(
        self,
        name: str = "LightGCN",
        k: int = 64,
        learning_rate: float = 0.001,
        lambda_reg: float = 1e-4,
        n_epochs: int = 200,
        batch_size: int = 1024,
        seed: int = 123,
        verbose: bool = False,
        device: str = "auto",
        n_layers: int = 3,
        trainable: bool = True,
    ):
        super().__init__(name, k, learning_rate, lambda_reg, n_epochs, batch_size, seed, verbose, device, trainable)
        self.n_layers = int(n_layers)

    def _build(self, train_set):
        self.adj = FixedSparse(scipy_to_torch(sym_norm_adjacency(self._train_csr), self._device), symmetric=True)
        self.net = nn.Module()
        self.net.user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.num_users, self.k)))
        self.net.item = self._id_table(self.k)

    def _forward(self):
        return propagate_mean_split(self.adj, self.net.user, self._ids(self.net.item), self.n_layers)

    def _batch_loss(self, batch):
        u, i, j = batch
        # only the batch's distinct users and items are propagated in the last layer (and
        # the backward starts from their columns): same values, ~20 % fewer graph products
        users, u_inv = torch.unique(u, return_inverse=True)
        items, it_inv = torch.unique(torch.cat([i, j]), return_inverse=True)
        ue, ie = propagate_mean_rows(self.adj, self.net.user, self.net.item, self.n_layers, users, items)
        # softplus(n - p) + lambda * 1/2 (|u|^2 + |p|^2 + |n|^2) / B with its gradient written out
        return bpr_rows(ue, ie, u_inv, it_inv[: len(i)], it_inv[len(i) :], kind="logsigmoid",
                        reg="half_squared", lam=self.lambda_reg)

    def _final_embeddings(self):
        return self._forward()


SPEC = ModelSpec("LightGCN", "baseline", embedding_build(LightGCN, n_layers=3), space=BPR_SPACE)
