"""Random: seeded uniform scores, the floor every recommender must beat.

A user's scores come from ``numpy.random.default_rng([seed, user_idx])``, so they do not
depend on which other users are scored or in what order."""

from __future__ import annotations

import numpy as np

from mmrepr.models.base import MMReprRecommender
from mmrepr.models.spec import ModelSpec, embedding_build


class Random(MMReprRecommender):
    scores_cold_items = True  # chance for every item, cold ones included: the floor

    def __init__(
        self,
        name: str = "Random",
        k: int = 64,
        learning_rate: float = 0.0,
        lambda_reg: float = 0.0,
        n_epochs: int = 1,
        batch_size: int = 1024,
        seed: int = 123,
        verbose: bool = False,
        device: str = "auto",
        trainable: bool = True,
    ):
        super().__init__(name, k, learning_rate, lambda_reg, n_epochs, batch_size, seed, verbose, device, trainable)

    def _fit(self, train_set, val_set):
        self._seed_used = 0 if self.seed is None else self.seed
        self._after_epoch(1)

    def _score_block(self, users):
        return np.stack(
            [np.random.default_rng([self._seed_used, int(u)]).random(self.num_items, dtype=np.float32) for u in users]
        ) if len(users) else np.zeros((0, self.num_items), np.float32)

    def _state(self):
        return {"epoch": self.epochs_run, "seed": self._seed_used}

    def _set_state(self, state):
        self._seed_used = state["seed"]
        self.epochs_run = state["epoch"]


# Scores do not depend on training: fitted once, nothing to select.
SPEC = ModelSpec("Random", "baseline", embedding_build(Random), epochwise=False)
