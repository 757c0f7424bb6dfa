"""Which cells stage 4 trains: one (model, feature set, configuration, seed) each.

- Multimodal models: the ``train.grid`` (lr x factors x reg), optionally subsampled to
  ``max_grid_points`` (seeded), on every feature set of ``train.feature_sets``.
- Baselines: optuna's TPESampler (seeded per model/feature set/seed) proposes
  ``baseline_trials`` configurations over ``registry.search_space``; a model with an empty
  space runs once. Models that need attributes run once per ``train.attribute_feature_sets``.
- Pruning (``train.pruning``, successive halving): the grid's intermediate rungs are cells
  with a smaller epoch budget (``Cell.epochs``); only final cells (``epochs`` None: trained to
  ``train.epochs``) compete for selection. :func:`rung_budgets`, :func:`n_promoted`.
- Seeds (``train.seed_policy``): ``retrain_selected`` searches with the first seed and retrains
  the selected configuration with the others; ``search_each`` searches once per seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmrepr.io import read_json, sha256_json
from mmrepr.models import registry


@dataclass
class Cell:
    model: str
    feature_set: str  # "" for pure baselines; the attribute set for attribute models
    config_id: str
    params: dict[str, Any]
    seed: int
    # A pruning rung's epoch budget; None: ``train.epochs`` (a final cell, which may be selected).
    epochs: int | None = None
    # Bookkeeping only (never in the key or the fingerprint, so a cell trained in one role is
    # reused in another): the successive-halving rung (0 without pruning), whether the search
    # stopped this configuration here, and "search" or "retrain" (a selected config, other seed).
    rung: int = field(default=0, compare=False)
    pruned: bool = field(default=False, compare=False)
    phase: str = field(default="search", compare=False)

    @property
    def key(self) -> str:
        fs = self.feature_set or "none"
        budget = "" if self.epochs is None else f"__e{self.epochs}"
        return f"{self.model}__{fs}__{self.config_id}__seed{self.seed}{budget}"

    @property
    def final(self) -> bool:
        return self.epochs is None


def rung_budgets(train) -> list[int]:
    """Epoch budgets of successive halving's intermediate rungs: ``min_epochs * eta**r`` as long
    as the next rung's budget (``eta`` times it) still fits in ``train.epochs``; the last rung,
    at ``train.epochs``, is not listed ([] without pruning). 200 epochs, min 20, eta 3: [20, 60]."""
    pr = getattr(train, "pruning", None)
    if pr is None or pr.kind == "none":
        return []
    out, b = [], pr.min_epochs
    while b * pr.eta <= train.epochs:
        out.append(b)
        b *= pr.eta
    return out


def n_promoted(n: int, eta: int) -> int:
    """How many of ``n`` configurations a rung keeps: the best 1/eta, at least one."""
    return max(1, n // eta)


def rung_sizes(n_points: int, train) -> list[int]:
    """Cells per rung for a grid of ``n_points`` (the last entry: the final rung). A group
    with one configuration left goes straight to the final rung."""
    sizes, n = [], n_points
    for _ in rung_budgets(train):
        if n <= 1:
            break
        sizes.append(n)
        n = n_promoted(n, train.pruning.eta)
    return sizes + [n]


def rank_configs(values: list[float | None]) -> list[int]:
    """Indices of ``values`` best first (None, a failed cell: last); ties keep list order."""
    return sorted(range(len(values)), key=lambda i: (values[i] is None, -(values[i] or 0.0), i))


def grid_configs(train, seed: int) -> list[tuple[str, dict]]:
    g = train.grid
    full = [dict(lr=lr, factors=f, reg=r) for lr, f, r in itertools.product(g.lr, g.factors, g.reg)]
    idx = list(range(len(full)))
    if train.max_grid_points is not None and train.max_grid_points < len(full):
        rng = np.random.default_rng(seed)
        idx = sorted(rng.choice(len(full), size=train.max_grid_points, replace=False).tolist())
    return [(f"grid{i:02d}", full[i]) for i in idx]


def planned_models(train) -> tuple[list[str], list[str], list[str]]:
    """(multimodal, baselines, unavailable) among those the params ask for (None: every
    registered model of that family)."""
    mm, bl, missing = [], [], []
    wanted_mm = registry.names("multimodal") if train.multimodal_models is None else train.multimodal_models
    wanted_bl = registry.names("baseline") if train.baselines is None else train.baselines
    for name in wanted_mm:
        (mm if registry.available(name) else missing).append(name)
    for name in wanted_bl:
        (bl if registry.available(name) else missing).append(name)
    return mm, bl, missing


def baseline_sets(train, model: str) -> list[str]:
    """The feature sets a baseline is trained on: its attribute sets, or [""] (none)."""
    return list(train.attribute_feature_sets) if registry.get_spec(model).needs == "attributes" else [""]


def search_seeds(train) -> list[int]:
    """The seeds the search runs with (the others only retrain the selected configuration)."""
    return list(train.seeds) if train.seed_policy == "search_each" else list(train.seeds[:1])


def count_cells(train, seed: int, models: set[str] | None = None) -> int:
    """How many cells the search trains or reads back (intermediate rungs included)."""
    mm, bl, _ = planned_models(train)
    grid = grid_configs(train, seed)
    n_mm = len([m for m in mm if models is None or m in models]) * len(train.feature_sets)
    bl_groups = [(b, len(baseline_sets(train, b))) for b in bl if models is None or b in models]
    per_seed = n_mm * sum(rung_sizes(len(grid), train)) if grid else 0
    per_seed += sum(n * (train.baseline_trials if registry.search_space(b) else 1) for b, n in bl_groups)
    n_groups = (n_mm if grid else 0) + sum(n for _, n in bl_groups)
    n_search = len(search_seeds(train))
    return per_seed * n_search + n_groups * (len(train.seeds) - n_search)


class TPEStudy:
    """One baseline's seeded search: :meth:`ask` proposes the next cell, :meth:`tell` records
    its validation value (None: failed). Trials are told in the order they were asked, so the
    sequence of cells depends only on the seed and the values, not on who trained them."""

    def __init__(self, model: str, feature_set: str, seed: int, n_trials: int):
        self.model, self.feature_set, self.seed = model, feature_set, seed
        space = registry.search_space(model)
        self.n_trials = n_trials if space else 1
        self.cells: list[Cell] = []
        self._pending = None
        self.study = None
        if space:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self.dists = registry.optuna_distributions(space)
            offset = int(sha256_json([model, feature_set])[:6], 16)
            sampler = optuna.samplers.TPESampler(seed=(seed * 7919 + offset) % (2**31))
            self.study = optuna.create_study(direction="maximize", sampler=sampler)

    @property
    def done(self) -> bool:
        return len(self.cells) >= self.n_trials and self._pending is None

    def ask(self) -> Cell:
        if self._pending is not None:
            raise RuntimeError("tell() the previous trial first")
        t = len(self.cells)
        if self.study is None:
            cell = Cell(self.model, self.feature_set, "default", {}, self.seed)
            self._pending = ("default", None)
        else:
            trial = self.study.ask(self.dists)
            params = {k: (v.item() if hasattr(v, "item") else v) for k, v in trial.params.items()}
            cell = Cell(self.model, self.feature_set, f"tpe{t:02d}", params, self.seed)
            self._pending = ("trial", trial)
        self.cells.append(cell)
        return cell

    def tell(self, meta: dict | None) -> None:
        kind, trial = self._pending
        self._pending = None
        if trial is None:
            return
        import optuna

        if meta is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, float(meta["best_val"]))


def missing_inputs(P) -> list[str]:
    """Feature sets the params name that stages 2/3 have not (completely) written."""
    from mmrepr.features.store import list_feature_sets

    have = set(list_feature_sets(P.run_dir))
    wanted = list(P.train.feature_sets) + list(P.train.attribute_feature_sets)
    return [n for n in wanted if n not in have]


def control_pairs(P) -> dict[str, list[str]]:
    """real feature set -> the control sets (noise, shuffled) made from it, among train.feature_sets."""
    from mmrepr.features.store import features_dir

    out: dict[str, list[str]] = {}
    for name in P.train.feature_sets:
        meta_p = features_dir(P.run_dir) / name / "meta.json"
        if not meta_p.is_file():
            continue
        meta = read_json(meta_p)
        ref = meta.get("reference")
        if meta.get("kind", "real") != "real" and ref in P.train.feature_sets:
            out.setdefault(ref, []).append(name)
    return out
