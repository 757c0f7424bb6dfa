import shutil

import pytest

from mmrepr.data.allrecipes import AllrecipesFormatError, load_allrecipes, read_split_file
from mmrepr.data.release import RELEASE_FILES, ReleaseFileError, fetch_release_file

BASE = "http://127.0.0.1:9/never-used"  # offline: the mirror must be used, never this URL


def test_released_split_counts(shared_data, tmp_path):
    inter, items, quality = load_allrecipes(shared_data, tmp_path, BASE)
    sizes = inter.groupby("split").size().to_dict()
    # The counts the data README states for the released files.
    assert sizes == {"train": 23719, "val": 13306, "test": 21512}
    assert len(items) == 9581 and inter["user"].nunique() == 18092
    assert inter["rating"].between(1, 5).all()
    cold = [q for q in quality if q["step"].startswith("cold users")]
    assert len(cold) == 2 and all("users" in q["reason"] for q in cold)
    train_users = set(inter.loc[inter.split == "train", "user"])
    n_cold_test = inter.loc[(inter.split == "test") & ~inter.user.isin(train_users), "user"].nunique()
    assert f"{n_cold_test} users" in cold[1]["reason"] and n_cold_test > 0


def test_mirror_checksum_is_checked(shared_data, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "allrecipes").mkdir(parents=True)
    shutil.copy(shared_data / "allrecipes" / "train.tsv", mirror / "allrecipes" / "train.tsv")
    assert fetch_release_file("allrecipes/train.tsv", mirror, tmp_path, BASE) == mirror / "allrecipes" / "train.tsv"
    with open(mirror / "allrecipes" / "train.tsv", "a") as fh:
        fh.write("u\ti\t5\n")
    with pytest.raises(ReleaseFileError, match="sha256"):
        fetch_release_file("allrecipes/train.tsv", mirror, tmp_path, BASE)
    with pytest.raises(ReleaseFileError, match="not a released file"):
        fetch_release_file("allrecipes/extra.tsv", mirror, tmp_path, BASE)


def test_release_table_matches_mirror_sizes(shared_data):
    for rel, (_, size, _) in RELEASE_FILES.items():
        assert (shared_data / rel).stat().st_size == size, rel


def test_bad_rows_name_file_and_line(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_text("u1\ti1\t5\nu2\ti2\n")
    with pytest.raises(AllrecipesFormatError, match=r"train\.tsv:2: expected 3"):
        read_split_file(p, "train")
    p.write_text("u1\ti1\tfive\n")
    with pytest.raises(AllrecipesFormatError, match=r"train\.tsv:1: rating 'five'"):
        read_split_file(p, "train")
    p.write_text("u1\ti1\t9\n")
    with pytest.raises(AllrecipesFormatError, match="outside 1..5"):
        read_split_file(p, "train")
