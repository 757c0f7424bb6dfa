"""VBPR as the study used it: Elliot's external VBPR / MMRec's ``models/vbpr.py`` family.

Not He & McAuley's original formula (that one is Cornac's ``VBPR``, kept as ``VBPR_Cornac``):
there are no biases and no separate visual user factors. Each item is represented by

    item_i = [ e_i ; W f_i + b ]         (e_i: k-d ID embedding, f_i: concatenated features)

and each user by one 2k-d embedding ``p_u``; score(u, i) = p_u . item_i. Loss per batch:
``BPR`` (``-mean log(1e-10 + sigmoid(s+ - s-))``) + ``lambda_reg`` * (|p_u|_F + |item_i+|_F +
|item_i-|_F) / batch (MMRec ``EmbLoss``: Frobenius norms, not squared), Adam. Features are
constant (not trained); textual then visual are concatenated, as in the reference.

Cold items (no training interaction): ``e_i`` is zeroed (``_ids``), so a cold item is
``[0 ; W f_i + b]`` and its score is the content part ``p_u[k:] . (W f_i + b)``.

Hyperparameters of the study's grid: ``lr`` -> ``learning_rate``, ``factors`` -> ``k`` (the
ID embedding and the projection are each ``k``-d, the user vector ``2k``), ``reg`` ->
``lambda_reg`` (MMRec ``reg_weight``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrepr.models.base import EmbeddingRecommender, RowGradTable, multimodal_features, rows
from mmrepr.models.fused import bpr_value_and_slope
from mmrepr.models.spec import ModelSpec, embedding_build


def bpr_loss_mmrec(pos: torch.Tensor, neg: torch.Tensor, gamma: float = 1e-10) -> torch.Tensor:
    """MMRec's ``BPRLoss``: -mean log(gamma + sigmoid(pos - neg))."""
    return -torch.log(gamma + torch.sigmoid(pos - neg)).mean()


def emb_loss_mmrec(*embeddings: torch.Tensor) -> torch.Tensor:
    """MMRec's ``EmbLoss``: sum of the matrices' Frobenius norms / rows of the last one."""
    return sum(torch.linalg.norm(e) for e in embeddings) / embeddings[-1].shape[0]


class VBPR(EmbeddingRecommender):
    scores_cold_items = True  # through W f_i + b

    def __init__(
        self,
        name: str = "VBPR",
        k: int = 64,
        learning_rate: float = 0.001,
        lambda_reg: float = 0.01,
        n_epochs: int = 200,
        batch_size: int = 1024,
        seed: int = 123,
        verbose: bool = False,
        device: str = "auto",
        trainable: bool = True,
    ):
        super().__init__(name, k, learning_rate, lambda_reg, n_epochs, batch_size, seed, verbose, device, trainable)

    def _build(self, train_set):
        v, t = multimodal_features(train_set, self.name)
        feats = [m for m in (t, v) if m is not None]  # reference order: textual, visual
        # The same matrix as both modalities (the fidelity protocol's setting, and the study's
        # wherever one feature set fills both slots): W [x; x] = (W_t + W_v) x, so project x
        # once with the summed halves; half the projection's multiply-adds forward and for
        # the weight gradient (which is G^T x for both halves). Same parameters, same
        # initialisation; values equal to float rounding.
        self.shared_modalities = len(feats) == 2 and feats[0].shape == feats[1].shape \
            and np.array_equal(feats[0], feats[1])
        x = torch.from_numpy(np.concatenate(feats, axis=1) if len(feats) > 1 else feats[0])
        net = nn.Module()
        net.user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.num_users, 2 * self.k)))
        net.item = self._id_table(self.k)
        net.item_linear = nn.Linear(x.shape[1], self.k)
        nn.init.xavier_normal_(net.item_linear.weight)  # MMRec xavier_normal_initialization
        nn.init.zeros_(net.item_linear.bias)
        self.net = net
        self.features = x.to(self._device).contiguous()  # constant: a buffer, not a parameter
        if self.shared_modalities:
            self.features = torch.from_numpy(feats[0]).to(self._device).contiguous()
        # the user and ID tables are read only through the batch's rows while training: their
        # gradients accumulate in place (no table-sized zero-filled gradient per step)
        self._user_rows, self._item_rows = RowGradTable(net.user), RowGradTable(net.item)
        self._row_grad_tables += [self._user_rows, self._item_rows]
        self._feat_buf = torch.empty_like(self.features)  # the batch's feature rows, reused

    def _project(self, f: torch.Tensor) -> torch.Tensor:
        """W f + b, with W's two halves summed when both modalities are one matrix."""
        lin = self.net.item_linear
        if self.shared_modalities:
            d = self.features.shape[1]
            return F.linear(f, lin.weight[:, :d] + lin.weight[:, d:], lin.bias)
        return lin(f)

    def item_representations(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """[e_i ; W f_i + b] for the given items (all when None)."""
        if items is None:
            return torch.cat([self._ids(self.net.item), self._project(self.features)], 1)
        # only the batch's rows: the same values and gradients as projecting every item
        return torch.cat([self._ids(self.net.item, items), self._project(rows(self.features, items))], 1)

    def _batch_loss(self, batch):
        if self._device.type == "cpu" and self.net.user.dtype == torch.float32:
            return _VBPRStep.apply(self.net.user, self.net.item, self.net.item_linear.weight,
                                   self.net.item_linear.bias, self, *batch)
        return self._batch_loss_autograd(batch)

    def _batch_loss_autograd(self, batch):
        """The loss through autograd (any device; the reference the fused CPU step is tested against)."""
        u, i, j = batch
        pu = self._user_rows.rows(u)
        # project each distinct item of the batch once (~3.1k of the 4096 rows on allrecipes):
        # the projection is the step's main cost; same values and gradients. The feature rows
        # are gathered into a reused buffer (a fresh 3.1k x 768 array page-faults every step).
        items, inverse = torch.unique(torch.cat([i, j]), return_inverse=True)
        f = torch.index_select(self.features, 0, items, out=self._feat_buf[: len(items)])
        # a batch holds warm items only (warm-only negatives), so the ID rows need no cold mask
        rep = torch.cat([self._item_rows.rows(items), self._project(f)], 1)
        q = rows(rep, inverse)
        qi, qj = q[: len(i)], q[len(i) :]
        loss = bpr_loss_mmrec((pu * qi).sum(1), (pu * qj).sum(1))
        return loss + self.lambda_reg * emb_loss_mmrec(pu, qi, qj)

    def _final_embeddings(self):
        return self.net.user, self.item_representations()


class _VBPRStep(torch.autograd.Function):
    """VBPR's batch loss with its gradient written out (``mmrepr.models.fused``): the same
    values as :meth:`VBPR._batch_loss_autograd`, gradients equal to float rounding
    (``tests/test_fused_losses.py``), a handful of kernels instead of autograd's ~60. The
    user and ID tables' gradients go into their ``RowGradTable`` buffers (rows only)."""

    @staticmethod
    def forward(ctx, user, item, weight, bias, model, u, i, j):
        b = len(u)
        items, inverse = torch.unique(torch.cat([i, j]), return_inverse=True)
        f = torch.index_select(model.features, 0, items, out=model._feat_buf[: len(items)])
        d = model.features.shape[1]
        w = weight[:, :d] + weight[:, d:] if model.shared_modalities else weight
        k = item.shape[1]
        q = torch.empty((len(items), k + w.shape[0]), dtype=user.dtype)  # [e_i ; W f_i + b]
        torch.index_select(item, 0, items, out=q[:, :k])
        torch.addmm(bias, f, w.t(), out=q[:, k:])
        pu = user.index_select(0, u)
        qi, qj = q.index_select(0, inverse[:b]), q.index_select(0, inverse[b:])
        diff = qi - qj
        value, slope = bpr_value_and_slope((pu * diff).sum(1), "log_gamma")
        norms = torch.stack([torch.linalg.norm(pu), torch.linalg.norm(qi), torch.linalg.norm(qj)])
        lam = model.lambda_reg
        ctx.save_for_backward(u, items, inverse, f, pu, qi, qj, diff, slope, norms)
        ctx.model, ctx.k = model, k
        return value + lam * norms.sum() / b

    @staticmethod
    def backward(ctx, g):
        u, items, inverse, f, pu, qi, qj, diff, slope, norms = ctx.saved_tensors
        model, k = ctx.model, ctx.k
        b = len(u)
        c = g * model.lambda_reg / b
        dx = (slope * (g / b)).unsqueeze(1)
        dpu = (dx * diff).add_(pu, alpha=float(c / norms[0]))
        dqi = (dx * pu).add_(qi, alpha=float(c / norms[1]))
        dqj = (dx * pu).neg_().add_(qj, alpha=float(c / norms[2]))
        dq = torch.zeros((len(items), qi.shape[1]), dtype=qi.dtype)
        dq.index_add_(0, inverse[:b], dqi).index_add_(0, inverse[b:], dqj)
        dz = dq[:, k:]
        dw = dz.t().mm(f)
        if model.shared_modalities:  # W [x; x]: both halves get the same gradient
            dw = torch.cat([dw, dw], 1)
        model._user_rows.accumulate(u, dpu)
        model._item_rows.accumulate(items, dq[:, :k])
        return None, None, dw, dz.sum(0), None, None, None, None


# Reads item_image and item_text itself (textual then visual, as the reference): no concatenation upstream.
SPEC = ModelSpec("VBPR", "multimodal", embedding_build(VBPR), needs="features",
                 label="VBPR (Elliot/MMRec: ID embedding + projected features)")
