"""The study's models, built from their declarations (:class:`~mmrepr.models.spec.ModelSpec`).

Adding a model = one file declaring ``SPEC = ModelSpec(...)`` (or ``SPECS = [...]``) next
to its class + one line in :data:`MODELS` below. Modules are imported lazily, the first
time a model is asked for: a module that fails to import (a missing optional dependency)
disables only its models, and :func:`unavailable_reason` says why.

Hyperparameters: multimodal models take the ``train.grid`` (``lr``, ``factors``, ``reg``);
baselines a tree-structured Parzen search over :func:`search_space` (STUDY.md's ranges).
"""

from __future__ import annotations

import importlib
from typing import Any

from mmrepr.models.spec import ModelSpec

# One line per model: name -> the module that declares it.
MODELS: dict[str, str] = {
    "VBPR": "mmrepr.models.vbpr",
    "VBPR_Cornac": "mmrepr.models.cornac_models",
    "LATTICE": "mmrepr.models.lattice",
    "FREEDOM": "mmrepr.models.freedom",
    "BM3": "mmrepr.models.bm3",
    "Random": "mmrepr.models.random_rec",
    "MostPop": "mmrepr.models.cornac_models",
    "ItemKNN": "mmrepr.models.cornac_models",
    "ElliotItemKNN": "mmrepr.models.attribute_knn",
    "AttributeItemKNN": "mmrepr.models.attribute_knn",
    "BPR": "mmrepr.models.cornac_models",
    "LightGCN": "mmrepr.models.lightgcn",
}

_SPECS: dict[str, ModelSpec] = {}  # loaded or registered declarations
_FAILED: dict[str, str] = {}  # name -> why its module could not be loaded


class ModelUnavailable(ImportError):
    pass


def register(spec: ModelSpec) -> ModelSpec:
    """Add (or replace) a model declared outside :data:`MODELS` (a plug-in, a test's toy model)."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"register() takes a ModelSpec, got {type(spec).__name__}")
    _SPECS[spec.name] = spec
    _FAILED.pop(spec.name, None)
    return spec


def unregister(name: str) -> None:
    _SPECS.pop(name, None)


def _module_specs(module) -> list[ModelSpec]:
    out = list(getattr(module, "SPECS", []) or [])
    if getattr(module, "SPEC", None) is not None:
        out.append(module.SPEC)
    return out


def _load(name: str) -> ModelSpec | None:
    if name in _SPECS:
        return _SPECS[name]
    if name not in MODELS or name in _FAILED:
        return None
    module_name = MODELS[name]
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure disables the model, with its reason
        _FAILED[name] = f"cannot import {module_name} ({type(exc).__name__}: {exc})"
        return None
    found = {s.name: s for s in _module_specs(module)}
    if name not in found:
        _FAILED[name] = f"{module_name} declares no ModelSpec named {name!r} (it declares {sorted(found) or 'none'})"
        return None
    _SPECS[name] = found[name]
    return _SPECS[name]


def _all_names() -> list[str]:
    return list(MODELS) + [n for n in _SPECS if n not in MODELS]


def names(family: str | None = None, *, needs: str | None = None) -> list[str]:
    """Available models in registration order, optionally of one family ("multimodal" | "baseline")
    and/or one need ("features" | "attributes")."""
    out = []
    for n in _all_names():
        s = _load(n)
        if s is None or (family is not None and s.family != family) or (needs is not None and s.needs != needs):
            continue
        out.append(n)
    return out


def known(name: str) -> bool:
    return name in MODELS or name in _SPECS


def available(name: str) -> bool:
    return _load(name) is not None


def unavailable_reason(name: str) -> str | None:
    """Why ``name`` cannot be used (None when it can)."""
    if _load(name) is not None:
        return None
    if not known(name):
        return f"unknown model {name!r}; known: {', '.join(_all_names())}"
    return f"model {name}: {_FAILED.get(name, 'not loaded')}"


def get_spec(name: str) -> ModelSpec:
    spec = _load(name)
    if spec is None:
        reason = unavailable_reason(name)
        raise (KeyError if not known(name) else ModelUnavailable)(reason)
    return spec


def build_model(name: str, hp: dict[str, Any], *, seed: int, n_epochs: int = 200, batch_size: int = 1024,
                verbose: bool = False, extra: dict[str, Any] | None = None):
    """A fresh, unfitted Cornac ``Recommender`` for ``name`` with hyperparameters ``hp``."""
    spec = get_spec(name)
    common = dict(name=name, seed=seed, n_epochs=n_epochs, batch_size=batch_size, verbose=verbose,
                  extra=dict(extra or {}))
    return spec.build(dict(hp), common)


def search_space(name: str) -> dict[str, tuple]:
    """The baseline's search space (empty: a single default configuration)."""
    return dict(get_spec(name).space)


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


def spec_of(model) -> ModelSpec | None:
    """The declaration of a built model (by its ``name``), None when it is not registered."""
    name = getattr(model, "name", None)
    return _load(name) if isinstance(name, str) and known(name) else None
