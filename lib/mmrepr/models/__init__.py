"""Recommenders: Cornac's own plus the ones written here, each declared by a
:class:`~mmrepr.models.spec.ModelSpec` in its own module and listed in
:mod:`mmrepr.models.registry`.

The ones implemented here are Cornac ``Recommender`` subclasses with one extra contract
(``score_users``, ``epoch_callback``, ``get_state``/``set_state``); see docs/models.md.
Importing this package does not import torch-heavy modules until a model is used:
``from mmrepr.models import <ModelClass>`` imports the module that registers that name.
"""

from __future__ import annotations

_BASE = ("ModalityError", "item_modality_matrix")


def __getattr__(name: str):
    import importlib

    if name in _BASE:
        return getattr(importlib.import_module("mmrepr.models.base"), name)
    from mmrepr.models.registry import MODELS

    if name in MODELS:
        module = importlib.import_module(MODELS[name])
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'mmrepr.models' has no attribute {name!r}")
