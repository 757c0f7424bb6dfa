"""Params of stage 4 (``train:`` in a profile)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mmrepr.training.results import METRIC_PATTERN


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Grid(Strict):
    lr: list[float] = [0.0001, 0.0005, 0.001, 0.005, 0.01]
    factors: list[int] = [64, 128, 256]
    reg: list[float] = [0.01, 0.1]


class RayParams(Strict):
    # An existing cluster (``ray://host:10001`` or ``host:6379``); None: the RAY_ADDRESS
    # environment variable, else a local Ray on this machine.
    address: str | None = None
    # Local Ray only: how many cells run at once (default: every CPU).
    num_workers: int | None = Field(None, ge=1)
    # CPUs (and torch threads) each cell's task takes.
    threads_per_worker: int = Field(1, ge=1)


class PruningParams(Strict):
    """Synchronous successive halving over the grid (docs/protocol.md, "Pruned search").

    Rung r trains every surviving grid point for ``min_epochs * eta**r`` epochs (while ``eta``
    times that still fits in ``train.epochs``), keeps the best ``1/eta`` by validation value (at least one; ties
    by grid order); the last rung trains the survivors to ``train.epochs``. ``none``: every
    grid point trains to ``train.epochs``."""

    kind: Literal["none", "successive_halving"] = "none"
    eta: int = Field(3, ge=2)
    min_epochs: int = Field(20, ge=1)


class TrainParams(Strict):
    # Models by registered name (mmrepr.models.registry); None: every registered model of
    # that family (resolved when stage 4 plans its cells, so params import no model code).
    multimodal_models: list[str] | None = None
    baselines: list[str] | None = None
    # Feature sets (by name, from stages 2 and 3) each multimodal model is trained on.
    feature_sets: list[str] = Field(default_factory=list)
    # One-hot attribute sets (LVLM keywords) for Attribute Item-kNN.
    attribute_feature_sets: list[str] = Field(default_factory=list)
    grid: Grid = Grid()
    max_grid_points: int | None = Field(None, ge=1)  # subsample the grid (seeded) for small budgets
    epochs: int = Field(200, ge=1)
    eval_every: int = Field(10, ge=1)
    early_stop_patience: int | None = Field(None, ge=1)
    batch_size: int = Field(1024, ge=1)
    baseline_trials: int = Field(30, ge=1)
    seeds: list[int] = Field(default_factory=lambda: [123])  # non-empty, distinct: mmrepr.validation
    # retrain_selected: the search (grid / TPE, pruned or not) runs with the first seed; the
    # configuration it selects per (model, feature set) is retrained with every other seed.
    # search_each: the whole search is repeated per seed (each seed selects its own).
    seed_policy: Literal["retrain_selected", "search_each"] = "retrain_selected"
    pruning: PruningParams = PruningParams()
    rating_threshold: float = 4.0
    cutoffs: list[int] = Field(default_factory=lambda: [20])
    selection_metric: str = Field("Recall@20", pattern=METRIC_PATTERN)
    # Which training items leave the candidate list: "positives" (rating >= threshold; what
    # Cornac's ranking_eval does, our reference) or "all" training interactions (Elliot).
    mask_train: Literal["positives", "all"] = "positives"
    # Users scored per block by the evaluator (memory ~ eval_chunk_size x n_items x 8 bytes).
    eval_chunk_size: int = Field(1024, ge=1)
    # Where cells run: "inprocess" (this process, one after another) or "ray" (Ray tasks,
    # local or on a cluster; see docs/cluster.md). Results are the same either way.
    executor: Literal["inprocess", "ray"] = "inprocess"
    ray: RayParams = RayParams()
    # torch intra-op threads where cells train, set once per process: in-process, this
    # process for stage 4, restored after it (None: every core it may use); on Ray, each
    # worker (None: the task's CPUs, ``ray.threads_per_worker``). Not part of a cell's
    # fingerprint. On a machine shared with other jobs 1 is often much faster than all
    # cores (docs/fidelity.md).
    torch_threads: int | None = Field(None, ge=1)
