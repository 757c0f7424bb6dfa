"""Planted-signal checks: the models learn, and the multimodal ones use their features.

Items fall into latent clusters visible (with noise) in both feature matrices and in a
one-hot attribute matrix; each user draws most of their items from one cluster. Held-out
Recall@10 is computed by Cornac's own ``ranking_eval`` (training items excluded).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cornac.data import FeatureModality, ImageModality, TextModality
from cornac.eval_methods import BaseMethod, ranking_eval
from cornac.metrics import Recall
from cornac.models import MostPop

from mmrepr.models import BM3, FREEDOM, LATTICE, AttributeItemKNN, ElliotItemKNN, LightGCN, Random

torch.set_num_threads(1)

N_USERS, N_ITEMS, N_CLUSTERS, N_TRAIN, N_TEST = 200, 300, 15, 4, 2


def planted(seed=0):
    rng = np.random.default_rng(seed)
    cl = np.arange(N_ITEMS) % N_CLUSTERS
    rng.shuffle(cl)
    vis = rng.normal(size=(N_CLUSTERS, 16))[cl] + 0.3 * rng.normal(size=(N_ITEMS, 16))
    txt = rng.normal(size=(N_CLUSTERS, 24))[cl] + 0.3 * rng.normal(size=(N_ITEMS, 24))
    attrs = np.zeros((N_ITEMS, N_CLUSTERS + 5), dtype=np.float32)
    attrs[np.arange(N_ITEMS), cl] = 1
    attrs[np.arange(N_ITEMS), N_CLUSTERS + rng.integers(0, 5, N_ITEMS)] = 1  # uninformative slot
    pref = rng.integers(0, N_CLUSTERS, size=N_USERS)
    train, test = [], []
    for u in range(N_USERS):
        items = rng.choice(np.flatnonzero(cl == pref[u]), N_TRAIN + N_TEST, replace=False)
        tr = items[:N_TRAIN].copy()
        off = rng.random(N_TRAIN) < 0.1  # some off-cluster noise in training
        tr[off] = rng.choice(N_ITEMS, off.sum())
        tr = np.unique(tr)
        train += [(f"u{u}", f"i{i}", 5.0) for i in tr]
        test += [(f"u{u}", f"i{i}", 5.0) for i in items[N_TRAIN:] if i not in tr]
    return train, test, vis.astype(np.float32), txt.astype(np.float32), attrs


def make_method(train, test, vis, txt, attrs):
    ids = [f"i{i}" for i in range(N_ITEMS)]
    perm = np.random.default_rng(1).permutation(N_ITEMS)  # rows deliberately not in Cornac's order
    pids = [ids[p] for p in perm]
    return BaseMethod.from_splits(
        train_data=train,
        test_data=test,
        exclude_unknowns=True,
        seed=0,
        item_image=ImageModality(features=vis[perm], ids=pids),
        item_text=TextModality(features=txt[perm], ids=pids),
        item_feature=FeatureModality(features=attrs[perm], ids=pids),
    )


@pytest.fixture(scope="module")
def data():
    train, test, vis, txt, attrs = planted()
    real = make_method(train, test, vis, txt, attrs)
    rng = np.random.default_rng(5)
    noise = make_method(
        train, test, rng.normal(size=vis.shape).astype(np.float32), rng.normal(size=txt.shape).astype(np.float32), attrs
    )
    return real, noise


def recall(model, method, k=10):
    return ranking_eval(model, [Recall(k=k)], method.train_set, method.test_set, exclude_unknowns=True)[0][0]


@pytest.fixture(scope="module")
def floors(data):
    real, _ = data
    return {
        "Random": recall(Random(seed=1).fit(real.train_set), real),
        "MostPop": recall(MostPop().fit(real.train_set), real),
    }


def model(cls, **kw):
    base = dict(k=32, n_epochs=20, batch_size=256, seed=1, device="cpu", learning_rate=0.01)
    base.update(kw)
    return cls(**base)


MODELS = {
    "LATTICE": lambda: model(LATTICE),
    "FREEDOM": lambda: model(FREEDOM),
    "BM3": lambda: model(BM3, n_epochs=30),
    "LightGCN": lambda: model(LightGCN),
    "AttributeItemKNN": lambda: AttributeItemKNN(k=20, similarity="cosine", weighting="tfidf"),
    "ElliotItemKNN": lambda: ElliotItemKNN(k=20, similarity="cosine"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_beats_random_and_mostpop(name, data, floors):
    real, _ = data
    m = MODELS[name]().fit(real.train_set)
    r = recall(m, real)
    # ceiling is ~0.6 (10 of ~16 unseen items of the user's cluster); floors are ~0.03
    assert r > 2 * max(floors.values()) and r > 0.3, (name, r, floors)
    s = m.score_users(np.arange(real.train_set.num_users))
    assert s.shape == (real.train_set.num_users, real.train_set.num_items)


@pytest.mark.parametrize("cls", [LATTICE, FREEDOM])
def test_informative_features_beat_gaussian_noise(cls, data):
    real, noise = data
    r_real = recall(model(cls).fit(real.train_set), real)
    r_noise = recall(model(cls).fit(noise.train_set), noise)
    assert r_real > r_noise + 0.03, (cls.__name__, r_real, r_noise)
