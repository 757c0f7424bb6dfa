import numpy as np
import pandas as pd
import pytest

from mmrepr.data.kcore import k_core
from mmrepr.data.split import holdout_sizes, split_per_user


def frame(pairs):
    return pd.DataFrame(pairs, columns=["user", "item"]).assign(rating=5.0, timestamp=0)


def test_k_core_hand_computed_cascade():
    # u3 has 1 interaction -> removed; that leaves i3 with 1 -> removed; that leaves u2 with 1 -> removed.
    df = frame([("u1", "i1"), ("u1", "i2"), ("u2", "i2"), ("u2", "i3"), ("u3", "i3"),
                ("u4", "i1"), ("u4", "i2")])
    out, passes = k_core(df, 2)
    assert sorted(map(tuple, out[["user", "item"]].values)) == [("u1", "i1"), ("u1", "i2"), ("u4", "i1"), ("u4", "i2")]
    assert passes >= 3  # the removal cascades over several passes
    counts_u = out.groupby("user").size()
    counts_i = out.groupby("item").size()
    assert counts_u.min() >= 2 and counts_i.min() >= 2


def test_k_core_fixed_point_and_noop():
    rng = np.random.default_rng(0)
    df = frame([(f"u{rng.integers(30)}", f"i{rng.integers(40)}") for _ in range(400)]).drop_duplicates(["user", "item"])
    out, _ = k_core(df, 5)
    again, passes = k_core(out, 5)
    assert len(again) == len(out) and passes == 1
    assert out.groupby("user").size().min() >= 5 and out.groupby("item").size().min() >= 5
    same, passes0 = k_core(df, 0)
    assert len(same) == len(df) and passes0 == 0


def test_k_core_can_empty():
    out, _ = k_core(frame([("u1", "i1"), ("u2", "i2")]), 2)
    assert out.empty


@pytest.mark.parametrize("n,expected", [(1, (0, 0)), (2, (0, 1)), (3, (1, 1)), (9, (1, 1)), (10, (1, 1)),
                                        (14, (1, 1)), (15, (1, 2)), (20, (2, 2)), (27, (2, 3)), (100, (10, 10))])
def test_holdout_sizes(n, expected):
    assert holdout_sizes(n) == expected


def test_split_counts_and_partition():
    rows = [(f"u{u}", f"i{i}") for u, n in enumerate([1, 2, 5, 9, 10, 27]) for i in range(n)]
    df = frame(rows)
    out = split_per_user(df, seed=1)
    assert len(out) == len(df)
    assert set(map(tuple, out[["user", "item"]].values)) == set(rows)
    counts = out.groupby(["user", "split"]).size().unstack(fill_value=0)
    for u, n in enumerate([1, 2, 5, 9, 10, 27]):
        v, t = holdout_sizes(n)
        assert counts.loc[f"u{u}", "val"] == v if "val" in counts else v == 0
        assert counts.loc[f"u{u}", "test"] == t if "test" in counts else t == 0
        assert counts.loc[f"u{u}"].sum() - v - t == n - v - t


def test_split_seeded_and_order_independent():
    rows = [(f"u{u}", f"i{i}") for u in range(20) for i in range(12)]
    df = frame(rows)
    a = split_per_user(df, seed=3)
    b = split_per_user(df.sample(frac=1.0, random_state=0), seed=3)
    c = split_per_user(df, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a[["user", "item"]].equals(c[["user", "item"]])  # another seed holds out other items
    assert list(a["split"].drop_duplicates()) == ["train", "val", "test"]  # sorted by split
