"""Read LVLM answer files (the authors' format, and its variants) into ``asin,result``.

Released files differ: ``asin,result`` or ``Image Name,Keywords``; one repeats its header
line thousands of times (several CSVs concatenated). :func:`read_answers` returns the
answers plus a report counting every row it did not keep as is — nothing is dropped
silently.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mmrepr.io import sha256_file, write_csv

log = logging.getLogger(__name__)

# Accepted names (lowercased) for the two columns.
ID_COLUMNS = ("asin", "parent_asin", "image name", "image_name", "image", "item", "item_id", "id", "recipe_id")
TEXT_COLUMNS = ("result", "keywords", "answer", "output", "response", "description", "text", "generated_text")
_IMAGE_EXT = re.compile(r"\.(?:jpe?g|png|webp|gif|bmp)$", re.IGNORECASE)

# The authors' released answer files: mirror path -> (path in their repository at the
# pinned commit, sha256). Same table as ../shared/data/README.md.
RELEASED_ANSWERS: dict[str, tuple[str, str]] = {
    "allrecipes/lvlm/qwen2vl-7b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen2_keywords.csv", "01094818ad9345a7ddf5b6034cff7ddc7f9b19b4206190b0d7abd6b6ed9b50ba"),
    "allrecipes/lvlm/phi35vl__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_phi35_keyword.csv", "b08eba85fda727c0b03ced03db72bb3ea1989485ce169f1c457235db1cb5c27b"),
    "allrecipes/lvlm/qwen25vl-3b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_25vl_3b_keywords.csv", "c12847666377b0442f40054e4e3145a33a80f577947895038af9b07a2f4bcb3a"),
    "allrecipes/lvlm/qwen25vl-7b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_25vl_7b_keywords.csv", "765fd91ee0e386b4967173d1e88128f0f9bdf61da606199c0dd27b0ca6e5ddff"),
    "allrecipes/lvlm/qwen3vl-2b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_3vl_2b_keywords.csv", "b833303af2874be7f3f6b8d139d68844ea46c7cd36e5960ccf7a2323f2193bcc"),
    "allrecipes/lvlm/qwen3vl-4b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_3vl_4b_keywords.csv", "c715c50a0b96e03d4d475d45ddaa689e523604227e42c72bf00705c8e85b7eae"),
    "allrecipes/lvlm/qwen3vl-8b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_3vl_8b_keywords.csv", "9924a921c0b336b9121fff3038ba22a78c2709d4b91401befb0b1ce77f39619d"),
    "allrecipes/lvlm/phi4mm__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_phi_4_multimodal_keywords.csv", "8e02eff47e9f3e5b776faf65ebf90926108c423718e9150e367eb054a7f3f7ac"),
    "allrecipes/lvlm/qwen2vl-7b__descr.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_2vl_7b_descriptive.csv", "4d97142174d7fdc1e1492ae6076340bc0dd100ae460826410736ff029d5b21ca"),
    "allrecipes/lvlm/qwen2vl-7b__mis.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_2vl_7b_mis.csv", "a92a75c2ab19ba1ff5bcdcce8acf0138c9b360d290e746057a7dcbf0891953b1"),
    "allrecipes/lvlm/phi35vl__mis.csv": ("extracted_outputs/allrecipes/allrecipes_phi_35vl_mis.csv", "fd25a827d65ba8241c71ce7b204eb041a71041ee67eaab29618a664a7487d4e2"),
    "baby/lvlm/qwen2vl-7b__fitb.csv": ("elliot/extracted_keywords/baby_QWEN2VL_keywords.csv", "d75f4098ba191e2c142afb8d8c06cfd09636ebc345af78a507ef0cb3c7fae5ef"),
}


class AnswersError(ValueError):
    pass


@dataclass
class AnswersReport:
    """What reading one answers file did."""

    path: str
    columns: list[str]
    rows_read: int = 0  # data lines, header repeats included
    repeated_headers: int = 0
    empty_results: int = 0
    duplicated_asin: int = 0  # later rows of an asin already seen (first kept)
    duplicated_conflicting: int = 0  # … of which with a different answer
    image_ext_stripped: int = 0
    rows_out: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _match_column(name: str, accepted: tuple[str, ...]) -> bool:
    return name.strip().lower() in accepted


def read_answers(path: str | Path) -> tuple[pd.DataFrame, AnswersReport]:
    """``asin,result`` (both str) of an answers file, and the report of what was cleaned."""
    path = Path(path)
    if not path.is_file():
        raise AnswersError(f"{path}: answers file not found")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise AnswersError(f"{path}: empty file (no header line)") from None
        if len(header) < 2 or not _match_column(header[0], ID_COLUMNS) or not _match_column(header[1], TEXT_COLUMNS):
            raise AnswersError(
                f"{path}: header {header!r} not recognised; the first column must be one of {ID_COLUMNS}, "
                f"the second one of {TEXT_COLUMNS}"
            )
        rep = AnswersReport(path=str(path), columns=header[:2])
        norm_header = [h.strip().lower() for h in header[:2]]
        ids: list[str] = []
        texts: list[str] = []
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue  # blank line between concatenated files
            rep.rows_read += 1
            if [c.strip().lower() for c in row[:2]] == norm_header:
                rep.repeated_headers += 1
                continue
            if len(row) < 2:
                raise AnswersError(f"{path}, line {lineno}: expected 2 columns, got {len(row)}: {row!r}")
            # A third+ field can only come from an unquoted comma in the answer: keep it in the text.
            asin, text = row[0].strip(), ",".join(row[1:])
            if not asin:
                raise AnswersError(f"{path}, line {lineno}: empty item id")
            if _IMAGE_EXT.search(asin):
                asin = _IMAGE_EXT.sub("", asin)
                rep.image_ext_stripped += 1
            ids.append(asin)
            texts.append(text)
    df = pd.DataFrame({"asin": pd.Series(ids, dtype=str), "result": pd.Series(texts, dtype=str)})
    empty = df["result"].str.strip() == ""
    rep.empty_results = int(empty.sum())
    if rep.empty_results:
        rep.examples["empty_results"] = df.loc[empty, "asin"].head(5).tolist()
    dup = df["asin"].duplicated(keep="first")
    rep.duplicated_asin = int(dup.sum())
    if rep.duplicated_asin:
        first = df.drop_duplicates("asin").set_index("asin")["result"]
        conflicting = df.loc[dup & (df["result"] != df["asin"].map(first))]
        rep.duplicated_conflicting = int(len(conflicting))
        rep.examples["duplicated_asin"] = df.loc[dup, "asin"].head(5).tolist()
        df = df.loc[~dup]
    rep.rows_out = int(len(df))
    return df.reset_index(drop=True), rep


def write_answers(df: pd.DataFrame, path: str | Path) -> None:
    """The authors' format: ``asin,result``."""
    write_csv(df[["asin", "result"]], path)


def resolve_recorded(P, rec) -> Path:
    """Local path of a recorded answers file: the mirror, else downloaded (sha256 checked)."""
    rel = Path(rec.path)
    if rel.is_absolute():
        if not rel.is_file():
            raise AnswersError(f"lvlm.recorded {rec.name!r}: file not found: {rel}")
        return rel
    mirror = P.mirror_dir
    key = rel.as_posix()
    if mirror is not None and (mirror / rel).is_file():
        local = mirror / rel
        if key in RELEASED_ANSWERS:
            actual = sha256_file(local)
            if actual != RELEASED_ANSWERS[key][1]:
                raise AnswersError(f"{local}: sha256 {actual} does not match the released {RELEASED_ANSWERS[key][1]}")
        return local
    if key not in RELEASED_ANSWERS:
        raise AnswersError(
            f"lvlm.recorded {rec.name!r}: {rel} is not in the mirror ({mirror}) and is not a released "
            f"file that can be downloaded; known: {', '.join(sorted(RELEASED_ANSWERS))}"
        )
    original, sha = RELEASED_ANSWERS[key]
    url = P.data.release_base_url.rstrip("/") + "/" + original
    dest = P.cache_dir / "release" / key
    if dest.is_file() and sha256_file(dest) == sha:
        return dest
    try:
        from mmrepr.data.download import download
    except ImportError as exc:  # written by another engineer
        raise AnswersError(f"{rel} must be downloaded from {url} but mmrepr.data.download is unavailable: {exc}") from exc
    log.info("downloading %s -> %s", url, dest)
    download(url, dest, sha256=sha)
    return dest
