"""Build any recommender of the study by name: ``build_model("VBPR", {"lr": .., "factors": .., "reg": ..}, ...)``.

Cornac's own VBPR, MostPop, ItemKNN and BPR come from ``cornac.models``; LATTICE, FREEDOM,
BM3, LightGCN, AttributeItemKNN and Random from ``mmrepr.models.*`` (imported lazily, so
one missing module only disables that model).

Hyperparameters:
- multimodal models take the grid's ``lr``, ``factors``, ``reg``;
- baselines take a tree-structured Parzen search over :func:`search_space` (STUDY.md's
  ranges). Cornac's ItemKNN offers cosine/pearson similarity (not Elliot's jaccard, dot,
  asymmetric, tversky) and idf/bm25 weighting: we search what Cornac has. ElliotItemKNN
  (``mmrepr.models.attribute_knn``) is Item-kNN with STUDY.md's five similarities and
  Elliot's scoring, the same code as AttributeItemKNN on interaction vectors.
- VBPR: ``k = k2 = factors`` (Elliot's ``factors`` and ``factors_d``), and
  ``lambda_w = lambda_b = lambda_e = reg``.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

MULTIMODAL = ("VBPR", "LATTICE", "FREEDOM", "BM3")
BASELINES = ("Random", "MostPop", "ItemKNN", "ElliotItemKNN", "AttributeItemKNN", "BPR", "LightGCN")

# name -> (module, candidate class names) for the models written in this project.
OWN_MODELS = {
    "LATTICE": ("mmrepr.models.lattice", ("LATTICE", "Lattice")),
    "FREEDOM": ("mmrepr.models.freedom", ("FREEDOM", "Freedom")),
    "BM3": ("mmrepr.models.bm3", ("BM3",)),
    "LightGCN": ("mmrepr.models.lightgcn", ("LightGCN",)),
    "AttributeItemKNN": ("mmrepr.models.attribute_knn", ("AttributeItemKNN", "AttributeKNN")),
    "ElliotItemKNN": ("mmrepr.models.attribute_knn", ("ElliotItemKNN",)),
    "Random": ("mmrepr.models.random_rec", ("RandomRec", "Random", "RandomRecommender")),
}


class ModelUnavailable(ImportError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # "features": trained per feature set (multimodal); "attributes": per attribute set; None: once.
    needs: str | None = None
    # VBPR reads one matrix: concatenate the modalities into item_image.
    concat_modalities: bool = False
    # Optuna search space for baselines: name -> ("int", lo, hi, log) | ("float", lo, hi, log) | ("cat", [..]).
    space: dict[str, tuple] = field(default_factory=dict)


_BPR_SPACE = {
    "factors": ("cat", [64, 128, 256]),
    "lr": ("float", 1e-5, 1.0, True),
    "reg": ("float", 1e-5, 0.1, True),
}
_KNN_SPACE = {
    "neighbours": ("int", 5, 1000, True),
    "similarity": ("cat", ["cosine", "pearson"]),
    "weighting": ("cat", ["none", "idf", "bm25"]),
}

SPECS: dict[str, ModelSpec] = {
    "VBPR": ModelSpec("VBPR", needs="features", concat_modalities=True),
    "LATTICE": ModelSpec("LATTICE", needs="features"),
    "FREEDOM": ModelSpec("FREEDOM", needs="features"),
    "BM3": ModelSpec("BM3", needs="features"),
    "Random": ModelSpec("Random"),
    "MostPop": ModelSpec("MostPop"),
    "ItemKNN": ModelSpec("ItemKNN", space=_KNN_SPACE),
    "ElliotItemKNN": ModelSpec("ElliotItemKNN", space=_KNN_SPACE),
    "AttributeItemKNN": ModelSpec("AttributeItemKNN", needs="attributes", space=_KNN_SPACE),
    "BPR": ModelSpec("BPR", space=_BPR_SPACE),
    "LightGCN": ModelSpec("LightGCN", space=_BPR_SPACE),
}


def get_spec(name: str) -> ModelSpec:
    if name not in SPECS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name]


def _own_class(name: str):
    module_name, candidates = OWN_MODELS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelUnavailable(f"model {name}: cannot import {module_name} ({exc})") from exc
    for c in candidates:
        if hasattr(module, c):
            return getattr(module, c)
    raise ModelUnavailable(f"model {name}: {module_name} defines none of {candidates}")


def available(name: str) -> bool:
    if name in OWN_MODELS:
        try:
            _own_class(name)
        except ModelUnavailable:
            return False
    return name in SPECS


def _kwargs_for(cls, wanted: dict[str, Any]) -> dict[str, Any]:
    """Only the kwargs the constructor accepts (model-specific extras are optional)."""
    sig = inspect.signature(cls.__init__)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return wanted
    return {k: v for k, v in wanted.items() if k in sig.parameters}


def build_model(name: str, hp: dict[str, Any], *, seed: int, n_epochs: int = 200, batch_size: int = 1024,
                verbose: bool = False, extra: dict[str, Any] | None = None):
    """A fresh, unfitted Cornac ``Recommender`` for ``name`` with hyperparameters ``hp``."""
    get_spec(name)
    extra = dict(extra or {})
    if name == "VBPR":
        from cornac.models import VBPR

        f, reg = int(hp["factors"]), float(hp["reg"])
        return VBPR(name="VBPR", k=f, k2=f, n_epochs=n_epochs, batch_size=batch_size, learning_rate=float(hp["lr"]),
                    lambda_w=reg, lambda_b=reg, lambda_e=reg, use_gpu=False, verbose=verbose, seed=seed, **extra)
    if name == "BPR":
        from cornac.models import BPR

        return BPR(name="BPR", k=int(hp["factors"]), max_iter=n_epochs, learning_rate=float(hp["lr"]),
                   lambda_reg=float(hp["reg"]), verbose=verbose, seed=seed, **extra)
    if name == "MostPop":
        from cornac.models import MostPop

        return MostPop(name="MostPop")
    if name == "ItemKNN":
        from cornac.models import ItemKNN

        w = hp.get("weighting", "none")
        return ItemKNN(name="ItemKNN", k=int(hp.get("neighbours", 20)), similarity=hp.get("similarity", "cosine"),
                       weighting=None if w in (None, "none") else w, verbose=verbose, seed=seed, **extra)
    cls = _own_class(name)
    wanted: dict[str, Any] = dict(name=name, seed=seed, n_epochs=n_epochs, batch_size=batch_size, verbose=verbose)
    if "lr" in hp:
        wanted.update(learning_rate=float(hp["lr"]), k=int(hp["factors"]), lambda_reg=float(hp["reg"]))
    if name == "LightGCN":
        wanted["n_layers"] = 3
    if name in ("AttributeItemKNN", "ElliotItemKNN"):
        # Our knn hp names -> the class's (k = neighbours; similarity; feature weighting).
        wanted.update(k=int(hp.get("neighbours", 20)), similarity=hp.get("similarity", "cosine"))
        if "weighting" in hp:
            wanted["weighting"] = hp["weighting"]
            wanted["feature_weighting"] = hp["weighting"]
    wanted.update(extra)
    return cls(**_kwargs_for(cls, wanted))


def search_space(name: str, model_cls=None) -> dict[str, tuple]:
    """The baseline's search space (empty: a single default configuration)."""
    spec = get_spec(name)
    space = dict(spec.space)
    if name == "AttributeItemKNN":
        space = _attribute_knn_space(space)
    if name == "ElliotItemKNN":  # the same similarities, no feature weighting
        space = {k: v for k, v in _attribute_knn_space(space).items() if k != "weighting"}
    return space


def _attribute_knn_space(space: dict[str, tuple]) -> dict[str, tuple]:
    """Adapt the kNN space to what the AttributeItemKNN class accepts (similarities, weightings)."""
    try:
        cls = _own_class("AttributeItemKNN")
    except ModelUnavailable:
        return space
    sims = getattr(cls, "SIMILARITIES", None) or getattr(importlib.import_module(cls.__module__), "SIMILARITIES", None)
    if sims:
        space["similarity"] = ("cat", list(sims))
    weights = getattr(cls, "WEIGHTINGS", None) or getattr(importlib.import_module(cls.__module__), "WEIGHTINGS", None)
    if weights:
        space["weighting"] = ("cat", [w if w is not None else "none" for w in weights])
    else:
        space["weighting"] = ("cat", ["tfidf", "bm25", "none"])
    return space


def optuna_distributions(space: dict[str, tuple]):
    import optuna

    out = {}
    for k, spec in space.items():
        if spec[0] == "int":
            out[k] = optuna.distributions.IntDistribution(spec[1], spec[2], log=spec[3])
        elif spec[0] == "float":
            out[k] = optuna.distributions.FloatDistribution(spec[1], spec[2], log=spec[3])
        elif spec[0] == "cat":
            out[k] = optuna.distributions.CategoricalDistribution(list(spec[1]))
        else:
            raise ValueError(f"unknown search-space kind {spec[0]!r} for {k!r}")
    return out


ModelFactory = Callable[..., Any]
