"""Recommenders: Cornac's own plus LATTICE, FREEDOM, BM3, LightGCN, Attribute Item-kNN,
Elliot-style Item-kNN and Random.

The ones implemented here are Cornac ``Recommender`` subclasses with one extra contract
(``score_users``, ``epoch_callback``, ``get_state``/``set_state``); see docs/models.md.
Importing this package does not import torch-heavy modules until a model is used.
"""

from __future__ import annotations

_LAZY = {
    "LATTICE": "mmrepr.models.lattice",
    "FREEDOM": "mmrepr.models.freedom",
    "BM3": "mmrepr.models.bm3",
    "LightGCN": "mmrepr.models.lightgcn",
    "AttributeItemKNN": "mmrepr.models.attribute_knn",
    "ElliotItemKNN": "mmrepr.models.attribute_knn",
    "Random": "mmrepr.models.random_rec",
    "ModalityError": "mmrepr.models.base",
    "item_modality_matrix": "mmrepr.models.base",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmrepr.models' has no attribute {name!r}")
