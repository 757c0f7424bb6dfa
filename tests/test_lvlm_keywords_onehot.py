"""Normalising, clustering and one-hot encoding on small hand-checked inputs; dense encodings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmrepr.lvlm.keywords import OTHER, build_onehot, cluster_values, normalise_value

LABELS = ["Dish Type", "Cuisine", "Primary Ingredient", "Flavor Profile", "Meal Type"]


def fake_embed(table: dict[str, list[float]]):
    """Embedding by lookup, so the expected clusters can be worked out by hand."""
    def embed(values):
        return np.array([table[v] for v in values], dtype=np.float64)
    return embed


def test_normalise_value():
    assert normalise_value("Potatoes") == "potato"
    assert normalise_value("  Sweet & Sour. ") == "sweet and sour"
    assert normalise_value("Chocolate-Chip Cookies") == "chocolate-chip cookie"
    assert normalise_value("Potatoes", "none") == "potatoes"
    assert normalise_value(None) is None
    assert normalise_value("!!!") is None
    with pytest.raises(ValueError):
        normalise_value("x", "wordnet")


def test_cluster_values_cosine_average_threshold():
    # Angles on the unit circle: cosine distance = 1 - cos(angle between).
    # a-b: 0.015; d is 0.74 from a and 0.58 from b (average 0.66); c is opposite a (2.0), 1.26 from d.
    ang = {"a": 0, "b": 10, "c": 180, "d": 75}
    table = {k: [np.cos(np.radians(v)), np.sin(np.radians(v))] for k, v in ang.items()}
    cl = cluster_values(["a", "b", "a", "c", "d"], fake_embed(table), threshold=0.45)
    assert cl["a"] == cl["b"]
    assert len({cl["a"], cl["c"], cl["d"]}) == 3
    cl = cluster_values(["a", "b", "c", "d"], fake_embed(table), threshold=0.7)
    assert cl["a"] == cl["b"] == cl["d"] != cl["c"]  # average linkage: 0.66 < 0.7 (complete linkage, 0.74, would not merge)
    assert cluster_values([], fake_embed(table), 0.45) == {}
    assert cluster_values(["a", "a"], fake_embed(table), 0.45) == {"a": 0}


def _parsed(rows):
    return pd.DataFrame(rows, columns=["asin", *LABELS])


def test_onehot_hand_checked():
    # Dish Type: pie (x2, incl. "Pies" via the lemmatiser) and tart merge; soup alone.
    table = {"pie": [1, 0], "tart": [0.99, 0.14], "soup": [0, 1],
             "italian": [1, 0], "mexican": [0, 1],
             "cheese": [1, 0], "sweet": [1, 0], "dinner": [1, 0]}
    parsed = _parsed([
        ["i1", "Pie", "Italian", "Cheese", "Sweet", "Dinner"],
        ["i2", "Pies", "Mexican", "Cheese", "Sweet", None],
        ["i3", "Tart", "Mexican", "Cheese", "Sweet", "Dinner"],
        ["i4", "Soup", "Italian", "Cheese", "Sweet", "Dinner"],
        ["zz", "Soup", "Italian", "Cheese", "Sweet", "Dinner"],  # not a dataset item: not used
    ])
    items = ["i1", "i2", "i3", "i4", "i5"]  # i5 has no answer
    oh = build_onehot(parsed, LABELS, items, fake_embed(table), threshold=0.45, top_k=50)
    assert oh.columns == ["Dish Type=pie", "Dish Type=soup", "Cuisine=italian", "Cuisine=mexican",
                          "Primary Ingredient=cheese", "Flavor Profile=sweet", "Meal Type=dinner"]
    expected = np.array([
        [1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 1, 1, 1, 0],
        [1, 0, 0, 1, 1, 1, 1],
        [0, 1, 1, 0, 1, 1, 1],
        [0, 0, 0, 0, 0, 0, 0],
    ], dtype=np.float32)
    np.testing.assert_array_equal(oh.matrix, expected)
    voc = oh.vocabulary.set_index(["slot", "label"])
    assert voc.loc[("Dish Type", "pie"), "members"] == "pie|tart"
    assert voc.loc[("Dish Type", "pie"), "count"] == 3
    assert "zz" not in set(oh.assignments["asin"])


def test_onehot_top_k_other():
    # six distinct, far-apart dish types; top_k=2 keeps the two most frequent.
    names = ["a", "b", "c", "d", "e", "f"]
    table = {n: np.eye(6)[i].tolist() for i, n in enumerate(names)}
    table.update({"x": [1, 0, 0, 0, 0, 0]})
    counts = {"a": 4, "b": 3, "c": 1, "d": 1, "e": 1, "f": 1}
    rows, k = [], 0
    for n, c in counts.items():
        for _ in range(c):
            rows.append([f"i{k}", n, "x", "x", "x", "x"])
            k += 1
    parsed = _parsed(rows)
    oh = build_onehot(parsed, LABELS, parsed["asin"].tolist(), fake_embed(table), 0.45, top_k=2, lemmatizer="none")
    dish = [c for c in oh.columns if c.startswith("Dish Type=")]
    assert dish == ["Dish Type=a", "Dish Type=b", f"Dish Type={OTHER}"]
    j = oh.columns.index(f"Dish Type={OTHER}")
    assert oh.matrix[:, j].sum() == 4
    assert (oh.matrix[:, : len(dish)].sum(axis=1) == 1).all()  # exactly one per slot
    assert len(oh.columns) <= 5 * 3


def test_real_minilm_clusters():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from mmrepr.lvlm.dense import EncodingCache

    embed = EncodingCache(None)
    cl = cluster_values(["dinner", "supper", "italian", "mexican", "spicy", "hot and spicy"], embed, 0.45)
    assert cl["dinner"] == cl["supper"]
    assert cl["spicy"] == cl["hot and spicy"]
    assert cl["italian"] != cl["mexican"] != cl["dinner"]


def test_dense_cache_and_zero_rows(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from mmrepr.lvlm.dense import EncodingCache, build_dense, dense_texts

    parsed = _parsed([["i1", "Pie", "American", "Apple", "Sweet", "Dessert"],
                      ["i2", None, None, None, None, None]])
    texts = dense_texts(None, parsed, LABELS)
    assert texts["i1"] == "Dish Type: Pie; Cuisine: American; Primary Ingredient: Apple; Flavor Profile: Sweet; Meal Type: Dessert"
    assert texts["i2"] is None
    cache = EncodingCache(tmp_path / "c.npz")
    m, stats = build_dense(texts, ["i1", "i2", "i3"], cache)
    assert m.shape == (3, 384) and np.abs(m[0]).sum() > 0
    assert (m[1:] == 0).all() and stats["zero_rows"] == 2 and stats["newly_encoded"] == 1
    again = EncodingCache(tmp_path / "c.npz")
    m2, stats2 = build_dense(texts, ["i1", "i2", "i3"], again)
    assert stats2["newly_encoded"] == 0 and stats2["cache_hits"] == 1
    np.testing.assert_array_equal(m, m2)
    assert stats["distinct_rows"] == 2  # i1's vector and the zero rows of i2, i3
    # the same answer for two items: one vector, counted once
    same = pd.Series({"i1": texts["i1"], "i2": None, "i3": texts["i1"]})
    _, stats3 = build_dense(same, ["i1", "i2", "i3"], again)
    assert stats3["encoded_rows"] == 2 and stats3["distinct_rows"] == 2
