"""Read LVLM answer files (the authors' format, and its variants) into ``asin,result``.

Released files differ: ``asin,result`` or ``Image Name,Keywords``; one repeats its header
line thousands of times (several CSVs concatenated). :func:`read_answers` returns the
answers plus a report counting every row it did not keep as is — nothing is dropped
silently.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mmrepr.io import InputError, read_text, write_csv

log = logging.getLogger(__name__)

# Accepted names (lowercased) for the two columns.
ID_COLUMNS = ("asin", "parent_asin", "image name", "image_name", "image", "item", "item_id", "id", "recipe_id")
TEXT_COLUMNS = ("result", "keywords", "answer", "output", "response", "description", "text", "generated_text")
_IMAGE_EXT = re.compile(r"\.(?:jpe?g|png|webp|gif|bmp)$", re.IGNORECASE)

class AnswersError(ValueError):
    pass


_ROW_START = re.compile(r'^\s*"?([^",\s]+)"?\s*,')


def _id_shape(asin: str) -> tuple:
    """Coarse shape of an item id (all digits? its length) to spot a row swallowed by a quote."""
    return (asin.isdigit(), len(asin))


def _records(path: Path, text: str):
    """``(first line, last line, fields)`` of each CSV record; a quoting or size error names the line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            hint = ""
            if "field larger than field limit" in str(exc):
                hint = (f": one answer is longer than {csv.field_size_limit():,} characters "
                        f"(a quote never closed, or a corrupted file?)")
            elif "unexpected end of data" in str(exc) or "EOF" in str(exc):
                hint = ": a quoted field is never closed before the end of the file"
            elif "expected after" in str(exc):
                hint = ": a quote inside a field, or an unterminated quote that runs into later rows"
            raise AnswersError(f"{path}, line {start}: malformed CSV ({exc}){hint}") from None
        yield start, reader.line_num, row


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
    try:
        text = read_text(path)
    except InputError as exc:
        raise AnswersError(str(exc)) from None
    records = _records(path, text)
    try:
        _, _, header = next(records)
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
    shapes: set[tuple] = set()
    for lineno, last, row in records:
        if not row or all(not c.strip() for c in row):
            continue  # blank line between concatenated files
        if last > lineno and len(row) >= 2:
            # A quoted answer over several lines is legal, but one whose inner lines start like
            # records ("<id>,") is an unterminated quote swallowing the rows after it.
            for inner in (",".join(row[1:]).split("\n")[1:]):
                m = _ROW_START.match(inner)
                known = shapes | {_id_shape(_IMAGE_EXT.sub("", row[0].strip()))}
                if m and _id_shape(_IMAGE_EXT.sub("", m.group(1))) in known:
                    raise AnswersError(
                        f"{path}, line {lineno}: the answer of {row[0].strip()!r} runs over lines {lineno}-{last} "
                        f"and contains what looks like another row ({inner[:60]!r}): an unterminated quote? "
                        f"Fix the quoting; rows are not merged silently")
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
        shapes.add(_id_shape(asin))
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
    """Local path of a recorded answers file: the mirror, else downloaded (sha256 checked).

    Released files go through :func:`mmrepr.data.release.fetch_release_file` (one checksum
    table for the whole project); an absolute path or an unreleased mirror file is read as is.
    """
    from mmrepr.data.release import RELEASE_FILES, ReleaseFileError, fetch_release_file

    rel = Path(rec.path)
    if rel.is_absolute():
        if not rel.is_file():
            raise AnswersError(f"lvlm.recorded {rec.name!r}: file not found: {rel}")
        return rel
    mirror = P.mirror_dir
    key = rel.as_posix()
    if key not in RELEASE_FILES:
        if mirror is not None and (mirror / rel).is_file():
            return mirror / rel
        raise AnswersError(
            f"lvlm.recorded {rec.name!r}: {rel} is not in the mirror ({mirror}) and is not a released "
            f"file that can be downloaded; known: {', '.join(sorted(RELEASE_FILES))}"
        )
    try:
        return fetch_release_file(key, mirror, P.cache_dir, P.data.release_base_url)
    except ReleaseFileError as exc:
        raise AnswersError(str(exc)) from None
