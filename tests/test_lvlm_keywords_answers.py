"""The answers reader: column-name variants, repeated headers, empties, duplicates; the real files."""

from __future__ import annotations

import pytest

from mmrepr.lvlm.answers import AnswersError, read_answers


def _write(tmp_path, text, name="a.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_repeated_headers_empty_and_duplicates(tmp_path):
    p = _write(tmp_path, (
        "asin,result\n"
        "1,[Dish Type] {Pie}\n"
        "asin,result\n"
        "2,\"[Dish Type] {Soup}, with a comma\"\n"
        "asin,result\n"
        "3,\n"
        "\n"
        "1,[Dish Type] {Cake}\n"
        "2,\"[Dish Type] {Soup}, with a comma\"\n"
    ))
    df, rep = read_answers(p)
    assert df["asin"].tolist() == ["1", "2", "3"]
    assert df.loc[1, "result"] == "[Dish Type] {Soup}, with a comma"
    assert df.loc[0, "result"] == "[Dish Type] {Pie}"  # first answer kept
    assert rep.repeated_headers == 2
    assert rep.empty_results == 1
    assert rep.duplicated_asin == 2 and rep.duplicated_conflicting == 1
    assert rep.rows_read == 7 and rep.rows_out == 3


@pytest.mark.parametrize("header", ["Image Name,Keywords", "asin,result", "parent_asin,answer", "ASIN , Result"])
def test_column_name_variants(tmp_path, header):
    p = _write(tmp_path, f"{header}\nB09BC2LJJD.jpg,\"[Category] {{Baby Care}}, [Age Group] {{Infant}}\"\nB00AGJFNCA,x\n")
    df, rep = read_answers(p)
    assert list(df.columns) == ["asin", "result"]
    assert df["asin"].tolist() == ["B09BC2LJJD", "B00AGJFNCA"]
    assert rep.image_ext_stripped == 1
    assert df.loc[0, "result"].startswith("[Category] {Baby Care}")


def test_ids_stay_strings(tmp_path):
    df, _ = read_answers(_write(tmp_path, "asin,result\n00123,x\n"))
    assert df.loc[0, "asin"] == "00123"


@pytest.mark.parametrize("text,match", [
    ("", "empty file"),
    ("foo,bar\n1,x\n", "not recognised"),
    ("asin,result\n,x\n", "line 2: empty item id"),
    ("asin,result\n1\n", "line 2: expected 2 columns"),
])
def test_bad_files_name_file_and_line(tmp_path, text, match):
    p = _write(tmp_path, text)
    with pytest.raises(AnswersError, match=match) as exc:
        read_answers(p)
    assert str(p) in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(AnswersError, match="not found"):
        read_answers(tmp_path / "nope.csv")


def test_real_files(shared_data):
    df, rep = read_answers(shared_data / "allrecipes/lvlm/qwen3vl-8b__fitb.csv")
    assert rep.repeated_headers > 1000  # several CSVs concatenated
    assert rep.rows_out == len(df) and not df["asin"].duplicated().any()
    assert rep.rows_read == rep.rows_out + rep.repeated_headers + rep.duplicated_asin
    df, rep = read_answers(shared_data / "baby/lvlm/qwen2vl-7b__fitb.csv")
    assert rep.columns == ["Image Name", "Keywords"] and df["asin"].str.match(r"^B0").mean() > 0.5
    from mmrepr.data.release import RELEASE_FILES

    for rel in RELEASE_FILES:
        assert (shared_data / rel).is_file(), rel


def test_resolve_recorded_checks_sha(tmp_path):
    from types import SimpleNamespace

    from mmrepr.lvlm.answers import resolve_recorded

    rel = "allrecipes/lvlm/phi35vl__fitb.csv"
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text("asin,result\n1,tampered\n")
    P = SimpleNamespace(mirror_dir=tmp_path, cache_dir=tmp_path / "cache", data=SimpleNamespace(release_base_url="http://127.0.0.1:9"))
    with pytest.raises(AnswersError, match="sha256"):
        resolve_recorded(P, SimpleNamespace(name="phi35vl__fitb", path=__import__("pathlib").Path(rel)))
