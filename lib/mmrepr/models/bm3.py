"""BM3 (Zhou et al., WWW'23), following MMRec's ``models/bm3.py``.

No negative sampling: each batch is (user, positive item) pairs. An online network
(LightGCN over the symmetric user-item graph, item output + item ID embedding; per-modality
linear projections of the trainable features) passes through a shared ``predictor``; the
target is the online output itself, detached and perturbed by dropout. Loss =
(1 - cos(pred(u), drop(i))) + (1 - cos(pred(i), drop(u))) + ``lambda_reg`` * EmbLoss
(Frobenius norms / n_items) + ``cl_weight`` * Σ_m [(1 - cos(pred(f_m), drop(i))) +
(1 - cos(pred(f_m), drop(f_m)))]. Scores: pred(u) . pred(i).

Cold items (no training interaction): BM3 scores with ID-based item embeddings only, and a
cold item's is meaningless (its ID row is zeroed, ``_ids``; it has no graph edge). Its
representation is instead the mean over modalities of ``pred(proj_m(f_m))``, the projected
content that the loss's ``cl_weight`` term aligns (cosine) with the item's own online
embedding during training: the model's best guess at the item embedding from content.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrepr.models.base import EmbeddingRecommender, RowGradTable, multimodal_features, rows, target_dropout
from mmrepr.models.graphs import FixedSparse, propagate_mean_split, scipy_to_torch, sym_norm_adjacency
from mmrepr.models.spec import ModelSpec, embedding_build


def neg_cos(a, b):
    return 1.0 - F.cosine_similarity(a, b.detach(), dim=-1).mean()


class BM3(EmbeddingRecommender):
    uses_negatives = False
    scores_cold_items = True  # through the projected content (see the module docstring)

    def __init__(
        self,
        name: str = "BM3",
        k: int = 64,
        learning_rate: float = 0.001,
        lambda_reg: float = 0.01,
        n_epochs: int = 200,
        batch_size: int = 1024,
        seed: int = 123,
        verbose: bool = False,
        device: str = "auto",
        n_layers: int = 2,
        cl_weight: float = 2.0,
        dropout: float = 0.3,
        trainable: bool = True,
    ):
        super().__init__(name, k, learning_rate, lambda_reg, n_epochs, batch_size, seed, verbose, device, trainable)
        self.n_layers = int(n_layers)
        self.cl_weight = float(cl_weight)
        self.dropout = float(dropout)

    def _build(self, train_set):
        v, t = multimodal_features(train_set, self.name)
        dev = self._device
        net = nn.Module()
        net.user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.num_users, self.k)))
        net.item = self._id_table(self.k)
        net.predictor = nn.Linear(self.k, self.k)
        nn.init.xavier_normal_(net.predictor.weight)
        self.modalities = []
        for key, feats in (("v", v), ("t", t)):
            if feats is None:
                continue
            x = torch.from_numpy(feats).to(dev)
            setattr(net, f"{key}_feat", nn.Parameter(x.clone()))  # from_pretrained(freeze=False)
            self._row_grad_tables.append(RowGradTable(getattr(net, f"{key}_feat")))
            trs = nn.Linear(x.shape[1], self.k)
            nn.init.xavier_normal_(trs.weight)
            setattr(net, f"{key}_trs", trs)
            self.modalities.append(key)
        self.net = net
        self._n_warm = int(self.warm_items.sum())
        self._cold = torch.from_numpy(~self.warm_items).to(dev)
        self.adj = FixedSparse(scipy_to_torch(sym_norm_adjacency(self._train_csr), dev), symmetric=True)

    def _forward(self):
        item = self._ids(self.net.item)  # cold rows zeroed
        ue, ie = propagate_mean_split(self.adj, self.net.user, item, self.n_layers)
        return ue, ie + item

    def _batch_loss(self, batch):
        users, items = batch
        u_ori, i_ori = self._forward()
        pred = self.net.predictor
        with torch.no_grad():  # target network: detached, perturbed by dropout
            u_target = target_dropout(rows(u_ori, users), self.dropout)
            i_target = target_dropout(rows(i_ori, items), self.dropout)
        u_online, i_online = pred(rows(u_ori, users)), pred(rows(i_ori, items))
        cl = 0.0
        if self.modalities:  # each distinct item projected once; rows repeat as before
            uniq, inverse = torch.unique(items, return_inverse=True)
        for m, table in zip(self.modalities, self._row_grad_tables):
            f_online = rows(getattr(self.net, f"{m}_trs")(table.rows(uniq)), inverse)
            with torch.no_grad():
                f_target = target_dropout(f_online, self.dropout)
            f_online = pred(f_online)
            cl = cl + neg_cos(f_online, i_target) + neg_cos(f_online, f_target)
        loss_ui = neg_cos(u_online, i_target)
        loss_iu = neg_cos(i_online, u_target)
        # MMRec EmbLoss: sum of Frobenius norms of the *full* online matrices / n_items (the
        # training catalogue's: cold rows are zero and do not count)
        reg = (torch.linalg.norm(u_ori) + torch.linalg.norm(i_ori)) / self._n_warm
        return loss_ui + loss_iu + self.lambda_reg * reg + self.cl_weight * cl

    def _final_embeddings(self):
        u, i = self._forward()
        pu, pi = self.net.predictor(u), self.net.predictor(i)
        if self.modalities and bool(self._cold.any()):
            cold = self._cold.nonzero().ravel()
            content = torch.stack([self.net.predictor(self._modality(m, cold)) for m in self.modalities]).mean(0)
            pi = pi.index_copy(0, cold, content)
        return pu, pi

    def _modality(self, m, items):
        return getattr(self.net, f"{m}_trs")(rows(getattr(self.net, f"{m}_feat"), items))


SPEC = ModelSpec("BM3", "multimodal", embedding_build(BM3), needs="features")
