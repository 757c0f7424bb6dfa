"""Bad files get one clear error naming the file (and line); the FITB parser keeps repeated labels
in their own slot; the evaluator counts cold users; disk-full/read-only writes say so."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import scipy.sparse as sp

from mmrepr.features.store import FeatureSet, FeatureSetError, load_feature_set, save_feature_set
from mmrepr.io import InputError, OutputError, read_json, save_npy, write_json
from mmrepr.lvlm.answers import AnswersError, read_answers


# ---- answers CSV -------------------------------------------------------------------------
def answers_file(tmp_path, body: bytes | str, name="a.csv"):
    p = tmp_path / name
    p.write_bytes(body if isinstance(body, bytes) else body.encode("utf-8"))
    return p


def test_unterminated_quote_is_not_merged(tmp_path):
    # valid CSV for the csv module (the quote closes at the end of line 4), but rows 3-4 would merge into 2
    p = answers_file(tmp_path, 'asin,result\nB000000001,"[A] {x}\nB000000002,[A] {y}\nB000000003,[A] {z}"\n'
                               'B000000004,[A] {w}\n')
    with pytest.raises(AnswersError) as e:
        read_answers(p)
    msg = str(e.value)
    assert str(p) in msg and "line 2" in msg and "unterminated quote" in msg and "B000000002" in msg, msg
    # a quote closed in the middle of a later row: the csv module's strict mode catches it
    p = answers_file(tmp_path, 'asin,result\n1,[A] {x}\n2,"[A] {y}\n3,"[A] {z}"\n', name="b.csv")
    with pytest.raises(AnswersError) as e:
        read_answers(p)
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and "unterminated quote" in msg, msg


def test_quote_never_closed_at_end_of_file(tmp_path):
    p = answers_file(tmp_path, 'asin,result\n1,[A] {x}\n2,"[A] {y}\n')
    with pytest.raises(AnswersError) as e:
        read_answers(p)
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and "never closed" in msg, msg


def test_legit_multiline_answer_is_kept(tmp_path):
    p = answers_file(tmp_path, 'asin,result\n1,"[A] {x}\nnote: blurry"\n2,[A] {y}\n')
    df, rep = read_answers(p)
    assert df["asin"].tolist() == ["1", "2"] and "\n" in df["result"][0]


def test_huge_field_names_file_and_line(tmp_path):
    big = "x" * (1 << 20)
    p = answers_file(tmp_path, f'asin,result\n1,ok\n2,"{big}"\n')
    with pytest.raises(AnswersError) as e:
        read_answers(p)
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and "field limit" in msg and len(msg) < 1000, msg[:300]


def test_non_utf8_names_file_and_line(tmp_path):
    p = answers_file(tmp_path, b"asin,result\n1,ok\n2,caf\xe9 {x}\n")
    with pytest.raises(AnswersError) as e:
        read_answers(p)
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and "not utf-8" in msg.lower() and "\\xe9" in msg, msg


def test_non_utf8_split_file_names_file_and_line(tmp_path):
    from mmrepr.data.allrecipes import AllrecipesFormatError, read_split_file

    p = tmp_path / "train.tsv"
    p.write_bytes(b"u1\t1\t5\nu2\t\xff\t4\n")
    with pytest.raises(AllrecipesFormatError) as e:
        read_split_file(p, "train")
    assert str(p) in str(e.value) and "line 2" in str(e.value)


# ---- feature sets ------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    fs = FeatureSet("s", ["a", "b", "c"], {"visual": np.arange(6, dtype=np.float32).reshape(3, 2)}, {"k": 1})
    save_feature_set(tmp_path, fs)
    return tmp_path, tmp_path / "features" / "s"


def test_truncated_npy_names_the_file(saved):
    run_dir, folder = saved
    data = (folder / "visual.npy").read_bytes()
    (folder / "visual.npy").write_bytes(data[: len(data) - 5])
    with pytest.raises(FeatureSetError) as e:
        load_feature_set(run_dir, "s")
    msg = str(e.value)
    assert str(folder / "visual.npy") in msg and "truncated" in msg, msg


def test_truncated_meta_names_file_and_line(saved):
    run_dir, folder = saved
    text = (folder / "meta.json").read_text()
    (folder / "meta.json").write_text(text[: len(text) // 2])
    with pytest.raises(FeatureSetError) as e:
        load_feature_set(run_dir, "s")
    msg = str(e.value)
    assert str(folder / "meta.json") in msg and "line" in msg and "not valid JSON" in msg, msg


def test_meta_without_roles_names_the_file(saved):
    run_dir, folder = saved
    meta = json.loads((folder / "meta.json").read_text())
    del meta["roles"]
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FeatureSetError) as e:
        load_feature_set(run_dir, "s")
    msg = str(e.value)
    assert str(folder / "meta.json") in msg and "'roles'" in msg, msg


def test_read_json_names_file_and_line(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{\n  "a": 1,\n  "b": \n')
    with pytest.raises(InputError, match=rf"{p}, line \d+"):
        read_json(p)


# ---- images past the pixel limit -----------------------------------------------------------
def test_decompression_bomb_is_a_recorded_failure(tmp_path, monkeypatch):
    from PIL import Image

    from mmrepr.data.amazon import _readable_image
    from mmrepr.features.content import decode_image

    p = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40 000 px > 2 x limit: DecompressionBombError
    assert _readable_image(p).startswith("image too large")
    assert decode_image(str(p)) == (None, "image_too_large")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30_000)  # between 1x and 2x: the warning
    assert _readable_image(p).startswith("image too large")


# ---- writers: disk full, read-only -----------------------------------------------------------
@pytest.mark.parametrize("err, words", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                        (errno.EACCES, "permission denied")])
def test_write_errors_say_why_and_name_the_file(tmp_path, monkeypatch, err, words):
    import mmrepr.io as mio

    def boom(*a, **k):
        raise OSError(err, "simulated")

    monkeypatch.setattr(mio.json, "dump", boom)
    target = tmp_path / "out" / "x.json"
    with pytest.raises(OutputError) as e:
        write_json(target, {"a": 1})
    assert str(target) in str(e.value) and words in str(e.value) and e.value.errno == err
    assert not list((tmp_path / "out").iterdir())  # no temporary left


def test_numpy_short_write_says_disk_full(tmp_path, monkeypatch):
    import mmrepr.io as mio

    def short(*a, **k):
        raise OSError("575488 requested and 378848 written")

    monkeypatch.setattr(mio.np, "save", short)
    with pytest.raises(OutputError) as e:
        save_npy(tmp_path / "m.npy", np.zeros(3))
    assert str(tmp_path / "m.npy") in str(e.value) and "disk is likely full" in str(e.value)


def test_read_only_folder_is_named(tmp_path, monkeypatch):
    import mmrepr.io as mio

    def ro(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(a[0]) if a else "")

    monkeypatch.setattr(mio.tempfile, "mkstemp", ro)
    with pytest.raises(OutputError) as e:
        write_json(tmp_path / "y.json", {})
    assert str(tmp_path / "y.json") in str(e.value) and "read-only" in str(e.value)


# ---- FITB: a repeated label keeps its own slot ------------------------------------------------
def test_repeated_label_keeps_its_slot():
    from mmrepr.lvlm.parse import COMPLETE, FitbParser

    p = FitbParser(["Category", "Color", "Pattern", "Material", "Style"])
    r = p.parse("[Category] {Mug}, [Category] {Mug}, [Pattern] {Striped}, [Material] {Ceramic}, [Style] {Modern}")
    assert r.values == ["Mug", None, "Striped", "Ceramic", "Modern"]
    assert r.status not in COMPLETE and "repeated_label" in r.notes and "Color" in r.reason
    r = p.parse("[Category] {Mug}, [Category] {Cup}, [Color] {Red}, [Pattern] {Striped}, [Material] {Ceramic}, "
                "[Style] {Modern}")
    assert r.values[:2] == ["Mug", "Red"] and "repeated_label" in r.notes  # first value wins


# ---- evaluator: cold users counted ------------------------------------------------------------
def test_cold_users_are_counted():
    from mmrepr.evaluation.ranking import build_split

    train = sp.csr_matrix(np.array([[5, 0, 0, 0], [0, 4, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0.0]]))
    test = sp.csr_matrix(np.array([[0, 0, 4, 0], [0, 0, 0, 5], [0, 5, 0, 0], [0, 0, 2, 0.0]]))
    s = build_split("test", train, test, threshold=4.0)
    assert s.n_cold_users == 2  # users 2 and 3 have no training interaction
    assert s.n_cold_evaluated == 1  # user 3's only test rating is below the threshold
    assert s.info["cold_users"] == 2 and s.info["cold_users_evaluated"] == 1
    # more target users than training rows (Cornac gives unknown users new, higher indices)
    s2 = build_split("test", train[:2], test, threshold=4.0)
    assert s2.n_cold_users == 2


def test_cold_users_through_cornac():
    from cornac.eval_methods import BaseMethod

    from mmrepr.evaluation.ranking import split_from_cornac

    train = [("u1", "i1", 5.0), ("u1", "i2", 4.0), ("u2", "i2", 5.0), ("u2", "i3", 4.0)]
    test = [("u1", "i3", 5.0), ("u3", "i1", 5.0), ("u4", "i2", 4.0)]
    m = BaseMethod.from_splits(train_data=train, test_data=test, exclude_unknowns=False, seed=1)
    s = split_from_cornac("test", m.train_set, m.test_set)
    assert s.n_cold_users == 2 and s.n_cold_evaluated == 2
