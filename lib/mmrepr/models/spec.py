"""One declaration per model: everything the study needs to know about a recommender.

A model module states its model(s) with a module-level ``SPEC = ModelSpec(...)`` (or a
list ``SPECS``) next to the class; :mod:`mmrepr.models.registry` collects them from one
registration line per model. Nothing else in the package keys on model names.

``build(hp, common) -> Recommender``: ``hp`` are the study's hyperparameters of one cell
(grid: ``lr``, ``factors``, ``reg``; kNN search: ``neighbours``, ``similarity``,
``weighting``), ``common`` the settings every model receives (``name``, ``seed``,
``n_epochs``, ``batch_size``, ``verbose``) merged with the caller's ``extra`` kwargs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Family = Literal["multimodal", "baseline"]
Needs = Literal["features", "attributes"]
# Optuna search space: name -> ("int", lo, hi, log) | ("float", lo, hi, log) | ("cat", [..]).
Space = dict[str, tuple]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: Family
    build: Callable[[dict[str, Any], dict[str, Any]], Any]
    # "features": trained per feature set (multimodal); "attributes": per attribute set; None: once.
    needs: Needs | None = None
    # True: trains by epochs (evaluated every ``eval_every``); False: fitted once, evaluated at epoch 0.
    epochwise: bool = True
    # Baselines: searched with TPE over this space (empty: one default configuration).
    # Multimodal models use ``train.grid`` instead.
    space: Space = field(default_factory=dict)
    # The model reads one matrix (item_image): visual and textual are concatenated.
    concat_modalities: bool = False
    # Batched scorer ``(model, users) -> (len(users), n_items)`` for classes without ``score_users``.
    score: Callable[[Any, Any], Any] | None = None
    # Best-epoch snapshot for classes without ``get_state``/``set_state``.
    get_state: Callable[[Any], Any] | None = None
    set_state: Callable[[Any, Any], None] | None = None
    # Cornac models trained by warm-started increments: the attribute that sets how many
    # epochs one ``fit`` call runs (e.g. ``max_iter``). None: the class calls ``epoch_callback``.
    epoch_attr: str | None = None
    # Words for tables and the report.
    label: str = ""
    # Reference for the attribute (keyword) models: lower is preferred; None: not a reference.
    keyword_reference: int | None = None
    # Which items the model is trained over: "all" (the whole catalogue, cold items appended
    # after the warm ones; an MMReprRecommender masks the cold items itself) or "warm" (the
    # training items only: a model whose own sampler would draw cold items as negatives,
    # e.g. Cornac's BPR/VBPR; it scores n_warm items, the evaluator gives the rest the
    # user's lowest score unless its scorer extends itself). docs/models.md, "Cold items".
    item_scope: Literal["all", "warm"] = "all"

    def __post_init__(self):
        if self.family not in ("multimodal", "baseline"):
            raise ValueError(f"model {self.name}: family must be 'multimodal' or 'baseline', got {self.family!r}")
        if self.needs not in (None, "features", "attributes"):
            raise ValueError(f"model {self.name}: needs must be None, 'features' or 'attributes', got {self.needs!r}")
        if self.item_scope not in ("all", "warm"):
            raise ValueError(f"model {self.name}: item_scope must be 'all' or 'warm', got {self.item_scope!r}")
        if self.family == "multimodal" and self.needs != "features":
            raise ValueError(f"model {self.name}: a multimodal model needs 'features'")
        for k, v in self.space.items():
            if not (isinstance(v, tuple) and v and v[0] in ("int", "float", "cat")):
                raise ValueError(f"model {self.name}: search-space entry {k!r}={v!r} must be ('int'|'float'|'cat', ...)")

    @property
    def display(self) -> str:
        return self.label or self.name


def accepted_kwargs(cls, wanted: dict[str, Any]) -> dict[str, Any]:
    """Only the kwargs the constructor accepts (model-specific extras are optional)."""
    sig = inspect.signature(cls.__init__)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return wanted
    return {k: v for k, v in wanted.items() if k in sig.parameters}


def embedding_build(cls, **fixed) -> Callable[[dict, dict], Any]:
    """``build`` for an :class:`~mmrepr.models.base.MMReprRecommender` trained with the
    grid/BPR hyperparameters: ``lr`` -> ``learning_rate``, ``factors`` -> ``k``,
    ``reg`` -> ``lambda_reg``; ``fixed`` kwargs (e.g. ``n_layers=3``) before ``extra``."""

    def build(hp: dict, common: dict):
        wanted = {k: v for k, v in common.items() if k != "extra"}
        if "lr" in hp:
            wanted.update(learning_rate=float(hp["lr"]), k=int(hp["factors"]), lambda_reg=float(hp["reg"]))
        wanted.update(fixed)
        wanted.update(common.get("extra") or {})
        return cls(**accepted_kwargs(cls, wanted))

    return build


def knn_build(cls, **fixed) -> Callable[[dict, dict], Any]:
    """``build`` for a kNN class taking ``k``, ``similarity`` and (optionally) ``weighting``."""

    def build(hp: dict, common: dict):
        wanted = {k: v for k, v in common.items() if k != "extra"}
        wanted.update(k=int(hp.get("neighbours", 20)), similarity=hp.get("similarity", "cosine"))
        if "weighting" in hp:
            wanted["weighting"] = hp["weighting"]
        wanted.update(fixed)
        wanted.update(common.get("extra") or {})
        return cls(**accepted_kwargs(cls, wanted))

    return build


BPR_SPACE: Space = {
    "factors": ("cat", [64, 128, 256]),
    "lr": ("float", 1e-5, 1.0, True),
    "reg": ("float", 1e-5, 0.1, True),
}
