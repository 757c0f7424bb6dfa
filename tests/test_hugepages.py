"""Large training tables on transparent huge pages (models/hugepages.py): the same values to the
last bit, only the page size differs; where the kernel refuses, nothing moves."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mmrepr.models import FREEDOM
from mmrepr.models import hugepages as hp

from conftest import tiny_split

needs_thp = pytest.mark.skipif(not hp.huge_pages_available(), reason="the kernel gives no huge pages on request")
# placing tables (aligned mappings advised for huge pages) works wherever madvise accepts the
# advice, even where the kernel then grants no huge pages
needs_madvise = pytest.mark.skipif(not hp.madvise_accepted(), reason="madvise(MADV_HUGEPAGE) is refused here")


def _anon_huge_kb(ptr: int) -> int:
    """AnonHugePages of the mapping holding address ``ptr`` (/proc/self/smaps)."""
    inside, kb = False, None
    for line in open("/proc/self/smaps"):
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if head:
            inside = int(head.group(1), 16) <= ptr < int(head.group(2), 16)
        elif inside and line.startswith("AnonHugePages:"):
            kb = int(line.split()[1])
    assert kb is not None, f"no mapping holds {ptr:#x}"
    return kb


@needs_madvise
def test_a_moved_table_is_an_aligned_independent_copy_and_small_or_refused_ones_stay():
    t = torch.randn(2000, 384)  # 2.9 MB
    moved = hp.on_huge_pages(t, available=True)
    assert moved is not t and torch.equal(moved, t)
    assert moved.data_ptr() % hp.HUGE_PAGE == 0 and hp.is_on_huge_pages(moved) and not hp.is_on_huge_pages(t)
    moved.add_(1.0)
    assert not torch.equal(moved, t)  # its own memory
    assert hp.on_huge_pages(moved, available=True) is moved  # not moved twice
    small = torch.randn(100, 384)
    assert hp.on_huge_pages(small, available=True) is small
    assert hp.on_huge_pages(t, available=False) is t


@needs_thp
def test_the_kernel_backs_a_moved_table_with_huge_pages():
    moved = hp.on_huge_pages(torch.zeros(3 * hp.HUGE_PAGE // 4), available=True)
    moved.fill_(1.0)  # fault the pages in
    assert _anon_huge_kb(moved.data_ptr()) >= 2048


@needs_madvise
def test_adam_moments_move_after_the_first_step_and_the_updates_are_unchanged():
    torch.manual_seed(0)
    init = torch.randn(1500, 384)
    runs = {}
    for move in (False, True):
        p = torch.nn.Parameter(hp.on_huge_pages(init.clone(), available=True) if move else init.clone())
        opt = torch.optim.Adam([p], lr=0.01, fused=True)
        if move:
            hp.move_optimizer_state_after_first_step(opt, [p], available=True)
        g = torch.Generator().manual_seed(1)
        for _ in range(4):
            p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        runs[move] = (p.detach().clone(), opt.state[p])
    (plain, _), (moved, state) = runs[False], runs[True]
    assert torch.equal(plain, moved)
    assert hp.is_on_huge_pages(state["exp_avg"]) and hp.is_on_huge_pages(state["exp_avg_sq"])
    assert torch.equal(state["exp_avg"], runs[False][1]["exp_avg"])


@needs_madvise
def test_moments_created_at_a_later_step_are_moved_then():
    a = torch.nn.Parameter(hp.on_huge_pages(torch.randn(1500, 384), available=True))
    b = torch.nn.Parameter(hp.on_huge_pages(torch.randn(1500, 384), available=True))
    opt = torch.optim.Adam([a, b], lr=0.01)
    hp.move_optimizer_state_after_first_step(opt, [a, b], available=True)
    a.grad = torch.ones_like(a)
    opt.step()  # b has no gradient yet: Adam creates no state for it
    assert hp.is_on_huge_pages(opt.state[a]["exp_avg"]) and not opt.state[b]
    b.grad = torch.ones_like(b)
    opt.step()
    assert hp.is_on_huge_pages(opt.state[b]["exp_avg"]) and hp.is_on_huge_pages(opt.state[b]["exp_avg_sq"])


def _method(n_items: int = 1500, dim: int = 384):
    from cornac.data import ImageModality, TextModality
    from cornac.eval_methods import BaseMethod

    split = tiny_split(600, n_items, 8, seed=4)
    ids = [f"i{i}" for i in range(n_items)]
    rng = np.random.default_rng(5)
    vis, txt = (rng.standard_normal((n_items, dim)).astype(np.float32) for _ in range(2))
    return BaseMethod.from_splits(train_data=split.train, test_data=split.test, exclude_unknowns=True, seed=0,
                                  item_image=ImageModality(features=vis, ids=ids),
                                  item_text=TextModality(features=txt, ids=ids))


@needs_madvise
def test_freedom_trains_to_the_same_bits_with_and_without_huge_pages(monkeypatch):
    monkeypatch.setattr(hp, "huge_pages_available", lambda: True)  # place them even where the kernel would not
    ts = _method().train_set
    fitted = {}
    for huge in (False, True):
        m = FREEDOM(k=8, n_epochs=2, batch_size=256, seed=3, device="cpu", top_k=5)
        m.huge_pages = huge
        fitted[huge] = m.fit(ts)
    plain, moved = fitted[False], fitted[True]
    assert ts.num_items * 384 * 4 >= hp.HUGE_PAGE  # the feature tables are large enough to move
    assert {tuple(p.shape) for p in moved._huge_params} == {(ts.num_items, 384)}
    assert all(hp.is_on_huge_pages(p.data) for p in moved._huge_params)
    assert all(hp.is_on_huge_pages(t.buf) for t in moved._row_grad_tables)
    assert plain._huge_params == [] and not any(hp.is_on_huge_pages(t.buf) for t in plain._row_grad_tables)
    for (name, a), (_, b) in zip(plain.net.named_parameters(), moved.net.named_parameters()):
        assert torch.equal(a, b), name
    assert np.array_equal(plain.score_users(np.arange(5)), moved.score_users(np.arange(5)))


def test_nothing_moves_where_the_kernel_grants_no_huge_pages(monkeypatch):
    monkeypatch.setattr(hp, "huge_pages_available", lambda: False)
    m = FREEDOM(k=8, n_epochs=1, batch_size=256, seed=3, device="cpu", top_k=5).fit(_method().train_set)
    assert m.huge_pages and m._huge_params == []
    assert not any(hp.is_on_huge_pages(p.data) for p in m.net.parameters())
    assert not any(hp.is_on_huge_pages(t.buf) for t in m._row_grad_tables)
