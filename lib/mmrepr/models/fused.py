"""Training losses with hand-written backward passes (CPU speed, same values).

Autograd runs each small tensor operation of a loss, and its backward, as its own kernel
with its own allocation: on a 2048-row batch of 64-d rows that is ~40-80 kernels of
20-60 µs each, a large share of a CPU step (issue #11's speed target). Each function here
computes one model's loss terms with their gradients written out: the same values, and
gradients equal to autograd's up to float rounding (``tests/test_fused_losses.py`` checks
them against the autograd formulas). The formulas are the references' (MMRec):

- BPR: ``mean φ(x_b)`` with ``x_b = u_b . (p_b - n_b)`` and ``φ`` one of
  ``softplus(-x)`` = ``-log σ(x)`` (LightGCN, FREEDOM) or ``-log(γ + σ(x))`` with
  ``γ = 1e-10`` (MMRec's ``BPRLoss``, VBPR);
- regularisers on the batch rows: ``½ (|u|² + |p|² + |n|²) / B`` (LightGCN's, Cornac) or
  MMRec's ``EmbLoss`` ``(‖U‖_F + ‖P‖_F + ‖N‖_F) / B`` (VBPR);
- BM3's ``1 - mean cos(a_b, t_b)`` against a constant target ``t``.
"""

from __future__ import annotations

import torch

BPR_KINDS = ("logsigmoid", "log_gamma")
REG_KINDS = ("none", "half_squared", "frobenius")
GAMMA = 1e-10  # MMRec BPRLoss


def bpr_value_and_slope(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean φ(x), φ'(x)) for the BPR kinds."""
    if kind == "logsigmoid":  # -log σ(x) = softplus(-x); φ' = -σ(-x)
        value = torch.nn.functional.softplus(-x).mean()
        slope = torch.sigmoid(-x).neg_()
    elif kind == "log_gamma":  # -log(γ + σ(x)); φ' = -σ(x)(1 - σ(x)) / (γ + σ(x))
        s = torch.sigmoid(x)
        value = -torch.log(s + GAMMA).mean()
        slope = -(s * (1 - s)) / (s + GAMMA)
    else:  # pragma: no cover - guarded by bpr_rows
        raise ValueError(kind)
    return value, slope


class _BPRRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ue, ie, ui, pi, ni, kind, reg, lam, extra_weight, *extra):
        eu, ep, en = ue.index_select(0, ui), ie.index_select(0, pi), ie.index_select(0, ni)
        diff = ep - en
        x = (eu * diff).sum(1)
        b = x.shape[0]
        value, slope = bpr_value_and_slope(x, kind)
        extra_slopes = []
        for z in extra:  # further BPR terms of the same user rows: mean φ(u . z)
            v, s = bpr_value_and_slope((eu * z).sum(1), kind)
            value = value + extra_weight * v
            extra_slopes.append(s)
        norms = None
        if reg == "half_squared":
            value = value + lam * 0.5 * (eu.pow(2).sum() + ep.pow(2).sum() + en.pow(2).sum()) / b
        elif reg == "frobenius":
            norms = (torch.linalg.norm(eu), torch.linalg.norm(ep), torch.linalg.norm(en))
            value = value + lam * (norms[0] + norms[1] + norms[2]) / b
        ctx.save_for_backward(ui, pi, ni, eu, ep, en, diff, slope, *extra, *extra_slopes)
        ctx.meta = (reg, lam, norms, ue.shape, ie.shape, extra_weight, len(extra))
        return value

    @staticmethod
    def backward(ctx, g):
        ui, pi, ni, eu, ep, en, diff, slope, *rest = ctx.saved_tensors
        reg, lam, norms, ushape, ishape, extra_weight, n_extra = ctx.meta
        extra, extra_slopes = rest[:n_extra], rest[n_extra:]
        b = slope.shape[0]
        dx = (slope * (g / b)).unsqueeze(1)
        deu, dep = dx * diff, dx * eu
        den = dep.neg()
        dextra = []
        for z, s in zip(extra, extra_slopes):
            dz = (s * (g * extra_weight / b)).unsqueeze(1)
            deu.addcmul_(dz, z)
            dextra.append(dz * eu)
        if reg == "half_squared":
            c = g * lam / b
            deu.add_(eu, alpha=c)
            dep.add_(ep, alpha=c)
            den.add_(en, alpha=c)
        elif reg == "frobenius":
            c = g * lam / b
            for d, e, n in ((deu, eu, norms[0]), (dep, ep, norms[1]), (den, en, norms[2])):
                d.add_(e * (c / n))
        due = torch.zeros(ushape, dtype=deu.dtype).index_add_(0, ui, deu) if ctx.needs_input_grad[0] else None
        die = None
        if ctx.needs_input_grad[1]:
            die = torch.zeros(ishape, dtype=dep.dtype).index_add_(0, pi, dep).index_add_(0, ni, den)
        return (due, die, None, None, None, None, None, None, None, *dextra)


def bpr_rows(ue: torch.Tensor, ie: torch.Tensor, ui: torch.Tensor, pi: torch.Tensor, ni: torch.Tensor, *,
             kind: str = "logsigmoid", reg: str = "none", lam: float = 0.0,
             extra: tuple[torch.Tensor, ...] = (), extra_weight: float = 0.0) -> torch.Tensor:
    """BPR loss (plus a regulariser) of the rows ``u = ue[ui]``, ``p = ie[pi]``, ``n = ie[ni]``:
    ``mean φ(u . (p - n)) + lam * R(u, p, n) + extra_weight * Σ_z mean φ(u . z)`` (``kind``,
    ``reg``: module docstring; ``extra``: score differences already formed per row, FREEDOM's
    projected feature differences), with gradients to ``ue``, ``ie`` and each ``z``."""
    if kind not in BPR_KINDS or reg not in REG_KINDS:
        raise ValueError(f"bpr_rows: kind {kind!r} (one of {BPR_KINDS}), reg {reg!r} (one of {REG_KINDS})")
    return _BPRRows.apply(ue, ie, ui, pi, ni, kind, reg, float(lam), float(extra_weight), *extra)
