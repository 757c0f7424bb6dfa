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
        if self._device.type != "cpu" or self.net.user.dtype != torch.float32:
            return self._batch_loss_autograd(batch)
        users, items = batch
        u_ori, i_ori = self._forward()
        net = self.net
        proj = [p for m in self.modalities for p in (getattr(net, f"{m}_trs").weight, getattr(net, f"{m}_trs").bias)]
        return _BM3Loss.apply(u_ori, i_ori, net.predictor.weight, net.predictor.bias, self, users, items, *proj)

    def _batch_loss_autograd(self, batch):
        """The loss through autograd (any device; the reference the fused CPU loss is tested against)."""
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


def _unit_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x / n, n)`` with ``n`` the rows' norms clamped at 1e-8 (``F.cosine_similarity``'s)."""
    n = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(1e-8)
    return x / n, n


class _BM3Loss(torch.autograd.Function):
    """BM3's loss from the online embeddings ``u_ori``, ``i_ori`` with its gradient written out
    (``mmrepr.models.fused``): the same terms, target dropout draws and values as
    :meth:`BM3._batch_loss_autograd`, gradients equal to float rounding
    (``tests/test_fused_losses.py``). The predictor is applied once to the stacked user, item
    and projected-feature rows; the feature tables' gradients go into their ``RowGradTable``
    buffers. For ``1 - cos(a, t)`` with a constant target: ``d/da = -(t/|t| - cos a/|a|) / |a|``."""

    @staticmethod
    def forward(ctx, u_ori, i_ori, wp, bp, model, users, items, *proj):
        b, p = len(users), model.dropout
        ub, ib = u_ori.index_select(0, users), i_ori.index_select(0, items)
        u_t, i_t = target_dropout(ub, p), target_dropout(ib, p)  # the autograd path's draw order
        feats, fs, f_targets = [], [], []
        if model.modalities:  # each distinct item projected once; rows repeat as in the autograd path
            uniq, inverse = torch.unique(items, return_inverse=True)
        for m, table in enumerate(model._row_grad_tables):
            fu = table.param.index_select(0, uniq)
            f = torch.addmm(proj[2 * m + 1], fu, proj[2 * m].t()).index_select(0, inverse)
            f_targets.append(target_dropout(f, p))
            feats.append(fu)
            fs.append(f)
        x = torch.cat([ub, ib, *fs])
        online = torch.addmm(bp, x, wp.t())  # pred(u), pred(i), pred(f_m)...
        on_hat, on_norm = _unit_rows(online)
        it_hat, _ = _unit_rows(i_t)
        ut_hat, _ = _unit_rows(u_t)
        targets = [it_hat, ut_hat]  # of pred(u) and pred(i)
        for ft in f_targets:
            targets.append(_unit_rows(ft)[0])
        cos_ui = (on_hat[:b] * it_hat).sum(1)
        cos_iu = (on_hat[b : 2 * b] * ut_hat).sum(1)
        value = (1 - cos_ui.mean()) + (1 - cos_iu.mean())
        cos_f = []
        for m in range(len(f_targets)):
            h = on_hat[(2 + m) * b : (3 + m) * b]
            c_fi, c_ff = (h * it_hat).sum(1), (h * targets[2 + m]).sum(1)
            cos_f.append((c_fi, c_ff))
            value = value + model.cl_weight * ((1 - c_fi.mean()) + (1 - c_ff.mean()))
        nu, ni = torch.linalg.norm(u_ori), torch.linalg.norm(i_ori)
        value = value + model.lambda_reg * (nu + ni) / model._n_warm
        ctx.save_for_backward(u_ori, i_ori, wp, users, items, x, on_hat, on_norm, it_hat, ut_hat, cos_ui, cos_iu,
                              *proj)
        ctx.model, ctx.norms, ctx.feats, ctx.f_hats, ctx.cos_f = model, (nu, ni), feats, targets[2:], cos_f
        ctx.uniq_inverse = (uniq, inverse) if model.modalities else None
        return value

    @staticmethod
    def backward(ctx, g):
        u_ori, i_ori, wp, users, items, x, on_hat, on_norm, it_hat, ut_hat, cos_ui, cos_iu, *proj = ctx.saved_tensors
        model = ctx.model
        b = len(users)
        c = g / b
        # d(1 - mean cos(a, t))/da for every online row, stacked like ``online``
        d_on = torch.empty_like(on_hat)
        d_on[:b] = (it_hat - cos_ui.unsqueeze(1) * on_hat[:b]).mul_(-c)
        d_on[b : 2 * b] = (ut_hat - cos_iu.unsqueeze(1) * on_hat[b : 2 * b]).mul_(-c)
        for m, ((c_fi, c_ff), ft_hat) in enumerate(zip(ctx.cos_f, ctx.f_hats)):
            h = on_hat[(2 + m) * b : (3 + m) * b]
            d = (it_hat - c_fi.unsqueeze(1) * h) + (ft_hat - c_ff.unsqueeze(1) * h)
            d_on[(2 + m) * b : (3 + m) * b] = d.mul_(-c * model.cl_weight)
        d_on.div_(on_norm)
        dwp, dbp = d_on.t().mm(x), d_on.sum(0)
        dx = d_on.mm(wp)
        scale = g * model.lambda_reg / model._n_warm
        du = u_ori * (scale / ctx.norms[0])
        du.index_add_(0, users, dx[:b])
        di = i_ori * (scale / ctx.norms[1])
        di.index_add_(0, items, dx[b : 2 * b])
        dproj = []
        if ctx.uniq_inverse is not None:
            uniq, inverse = ctx.uniq_inverse
            for m, (table, fu) in enumerate(zip(model._row_grad_tables, ctx.feats)):
                dz = torch.zeros((len(uniq), dx.shape[1]), dtype=dx.dtype)
                dz.index_add_(0, inverse, dx[(2 + m) * b : (3 + m) * b])
                table.accumulate(uniq, dz.mm(proj[2 * m]))
                dproj += [dz.t().mm(fu), dz.sum(0)]
        return (du, di, dwp, dbp, None, None, None, *dproj)


SPEC = ModelSpec("BM3", "multimodal", embedding_build(BM3), needs="features")
