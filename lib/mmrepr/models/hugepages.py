"""Large CPU training tables on transparent huge pages (Linux).

FREEDOM's and BM3's feature tables (items x 384 floats, 11.5 MB each on allrecipes) are read
and written row by row at random rows every step: ~4,000 gathered and ~4,000 scattered rows
per table, each on its own 4 KB page. On this VM a TLB miss costs a nested page walk, and the
gathers run at ~1 us a row once Adam's pass over ~190 MB has evicted everything. With 2 MB
pages the same tables span 6 pages instead of 2,800. PyTorch can advise huge pages for every
allocation of 2 MB or more (``THP_MEM_ALLOC_ENABLE=1``, read once at startup), but that takes
in the step's short-lived temporaries and the reference's own tables too (measured: LightGCN's
and BM3's epochs a little slower, docs/fidelity.md); here only the long-lived tables are moved:
the parameters, their persistent gradient buffers and Adam's moments.

Only where the kernel grants them on request (``/sys/kernel/mm/transparent_hugepage/enabled``
``[madvise]`` or ``[always]``); otherwise, and off Linux or off CPU, tensors stay where they
are. Values are copied bit for bit: training is the same to the last bit (tested), only the
memory's page size differs.
"""

from __future__ import annotations

import functools
import mmap
from pathlib import Path

import torch

HUGE_PAGE = 2 << 20
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@functools.lru_cache(maxsize=1)
def madvise_accepted() -> bool:
    """Whether this Python and kernel accept ``madvise(MADV_HUGEPAGE)`` on an anonymous
    mapping (not: whether pages will be granted)."""
    try:
        probe = mmap.mmap(-1, HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        probe.madvise(mmap.MADV_HUGEPAGE)
        probe.close()
        return True
    except (AttributeError, OSError, ValueError):  # no MADV_HUGEPAGE, no THP in the kernel, a filter
        return False


@functools.lru_cache(maxsize=1)
def huge_pages_available() -> bool:
    """Whether ``madvise(MADV_HUGEPAGE)`` can give this process huge pages."""
    try:
        setting = THP_SETTING.read_text()
    except OSError:
        return False
    return ("[madvise]" in setting or "[always]" in setting) and madvise_accepted()


def on_huge_pages(t: torch.Tensor, available: bool | None = None) -> torch.Tensor:
    """A copy of ``t`` in a private anonymous mapping advised for huge pages, starting on a
    2 MB boundary; ``t`` itself when it is smaller than one huge page, not on CPU, already
    moved, or huge pages are not available."""
    nbytes = t.numel() * t.element_size()
    if available is None:
        available = huge_pages_available()
    if not available or t.device.type != "cpu" or nbytes < HUGE_PAGE or is_on_huge_pages(t):
        return t
    # one huge page more than needed, so that the tensor can start on a 2 MB boundary
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE + HUGE_PAGE
    try:
        buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buf.madvise(mmap.MADV_HUGEPAGE)
    except (OSError, ValueError):  # refused (e.g. a seccomp filter): keep the ordinary pages
        return t
    start = torch.frombuffer(buf, dtype=torch.uint8, count=1).data_ptr()
    offset = -start % HUGE_PAGE
    out = torch.frombuffer(buf, dtype=t.dtype, count=t.numel(), offset=offset).view(t.shape)
    return out.copy_(t)  # the tensor keeps the mapping alive; unmapped when it is freed


def is_on_huge_pages(t: torch.Tensor) -> bool:
    """Whether ``t``'s memory was placed by :func:`on_huge_pages` (a 2 MB-aligned start in
    a buffer it does not own: ``torch.frombuffer``'s storage is not resizable)."""
    return (t.device.type == "cpu" and t.data_ptr() % HUGE_PAGE == 0
            and not t.untyped_storage().resizable())


def move_large_parameters(module: torch.nn.Module, available: bool | None = None) -> list[torch.nn.Parameter]:
    """Move every CPU parameter of ``module`` of 2 MB or more onto huge pages (its ``.data``:
    the same Parameter objects, so optimisers built afterwards see them). Returns those moved."""
    if available is None:
        available = huge_pages_available()
    moved = []
    for p in module.parameters():
        old = p.data  # a new Python object at each access: compare against this one
        new = on_huge_pages(old, available)
        if new is not old:
            p.data = new
            moved.append(p)
    return moved


def move_optimizer_state_after_first_step(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                                          available: bool | None = None) -> None:
    """Adam creates a parameter's moments at its first step with a gradient (``zeros_like``,
    ordinary pages): move those of ``params`` onto huge pages right after that step, and stop
    watching once all of them are moved."""
    if not params:
        return
    if available is None:
        available = huge_pages_available()
    if not available:
        return
    waiting = {id(p) for p in params}

    def hook(optimizer, args, kwargs):
        for p, state in optimizer.state.items():
            if id(p) in waiting and state:
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.shape == p.shape:
                        state[key] = on_huge_pages(value, True)
                waiting.discard(id(p))
        if not waiting:
            handle.remove()

    handle = opt.register_step_post_hook(hook)
