"""Where cells run: in this process (default) or as Ray tasks, on this machine or a cluster.

Both executors run the same :func:`mmrepr.training.cells.run_cell_safely`: a cell's files
are written by whoever trained it, atomically, JSON last, so a killed run resumes the same
way whichever executor wrote its cells. Ray is the scheduler; nothing here queues or
balances work beyond submitting tasks and ``ray.wait``-ing for them.

``train.executor: ray``: ``train.ray.address`` (or the ``RAY_ADDRESS`` environment variable)
joins an existing cluster; without one a local Ray starts with ``train.ray.num_workers``
CPUs (default: all). Every worker needs the project installed (same code) and the run
folder on a shared filesystem (the workers read ``runs/<profile>/data``/``features`` and
write ``train/cells``).
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Iterator

from mmrepr.training.cells import Context, run_cell_safely, worker_context
from mmrepr.training.plan import Cell

log = logging.getLogger(__name__)

Outcome = tuple[Cell, "dict | None", "dict | None", bool]  # (cell, meta, error, trained here)


class InProcessExecutor:
    name = "inprocess"

    def __init__(self, ctx: Context, raise_errors: bool = False, torch_threads: int | None = None):
        import torch

        from mmrepr.models.base import set_torch_threads

        self.ctx, self.raise_errors = ctx, raise_errors
        # once, for every cell of this process; close() gives the process its setting back, so
        # stages run after this one in the same process (a notebook, `mmrepr run`) are unaffected
        self._threads_before = torch.get_num_threads()
        self.threads = set_torch_threads(torch_threads)

    def run(self, cells: Iterable[Cell]) -> Iterator[Outcome]:
        for cell in cells:
            yield (cell, *run_cell_safely(self.ctx, cell, self.raise_errors))

    def close(self) -> None:
        import torch

        if torch.get_num_threads() != self._threads_before:
            torch.set_num_threads(self._threads_before)


def _ray_cell(P, cell: Cell, raise_errors: bool, threads: int):
    """A Ray task: one cell on a worker, with the worker's cached Context."""
    from mmrepr.models.base import set_torch_threads

    set_torch_threads(max(1, int(threads)))  # a no-op after the worker's first cell
    ctx = worker_context(P)
    return run_cell_safely(ctx, cell, raise_errors)


class RayExecutor:
    name = "ray"

    def __init__(self, P, ctx: Context | None = None, raise_errors: bool = False):
        import ray

        R = P.train.ray
        self.P, self.raise_errors = P, raise_errors
        self.cpus = R.threads_per_worker  # what Ray reserves per task
        self.threads = getattr(P.train, "torch_threads", None) or R.threads_per_worker
        self.ctx = ctx
        address = R.address or os.environ.get("RAY_ADDRESS") or None
        self._started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
                log.info("Ray: joined the cluster at %s", address)
            else:
                self._start_local(ray, R.num_workers or os.cpu_count())
            self._started = True
        self._task = ray.remote(num_cpus=self.cpus, max_retries=0)(_ray_cell)

    @staticmethod
    def _start_local(ray, n: int, attempts: int = 3) -> None:
        # Ray waits a fixed 30 s for its raylet to register; on a loaded small machine that can
        # time out. Starting again is the documented remedy; a third failure is reported.
        for attempt in range(1, attempts + 1):
            try:
                ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False, configure_logging=False)
                log.info("Ray: local, %s workers", n)
                return
            except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this
                ray.shutdown()
                if "timed out during startup" not in str(exc) or attempt == attempts:
                    raise RuntimeError(f"train.executor ray: a local Ray with {n} CPUs did not start "
                                       f"({attempt} attempt(s)): {exc}") from exc
                log.warning("Ray: local start timed out (attempt %d of %d); starting again", attempt, attempts)

    def run(self, cells: Iterable[Cell]) -> Iterator[Outcome]:
        import ray

        cells = list(cells)
        if not cells:
            return
        # Cells already finished are answered here: no task, no data preparation on a worker.
        todo = []
        for cell in cells:
            meta = None
            if self.ctx is not None:
                from mmrepr.training.cells import load_cell

                meta = load_cell(self.ctx, cell)
            if meta is not None:
                yield cell, meta, None, False
            else:
                todo.append(cell)
        refs = {self._task.remote(self.P, c, self.raise_errors, self.threads): c for c in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                yield (refs[ref], *ray.get(ref))  # ray.get raises the cell's error when raise_errors

    def close(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()


def make_executor(P, ctx: Context, raise_errors: bool = False):
    kind = getattr(P.train, "executor", "inprocess")
    if kind == "inprocess":
        return InProcessExecutor(ctx, raise_errors, getattr(P.train, "torch_threads", None))
    if kind == "ray":
        return RayExecutor(P, ctx, raise_errors)
    raise ValueError(f"train.executor: {kind!r} is not one of inprocess, ray")
