"""Amazon Reviews 2023 (McAuley Lab): download, parse, clean one category.

Published layout (UCSD mirror, gzip; the Hugging Face dataset
``McAuley-Lab/Amazon-Reviews-2023`` has the same paths uncompressed, ``.jsonl``):

- ``raw/review_categories/<Category>.jsonl.gz``: one review per line, fields ``rating``
  (float 1-5), ``title``, ``text``, ``images`` (the reviewer's photos), ``asin``,
  ``parent_asin``, ``user_id``, ``timestamp`` (Unix milliseconds), ``helpful_vote``,
  ``verified_purchase``.
- ``raw/meta_categories/meta_<Category>.jsonl.gz``: one item per line, fields
  ``main_category``, ``title``, ``average_rating``, ``rating_number``, ``features`` (list),
  ``description`` (list of str), ``price``, ``images`` (list of ``{thumb, large, variant,
  hi_res}``, ``hi_res`` often null), ``videos``, ``store``, ``categories`` (list),
  ``details`` (dict), ``parent_asin``, ``bought_together``.

The item key is ``parent_asin`` (reviews of colour/size variants share it). The synthetic
catalogue (``mmrepr.data.synthetic``) writes this same format with ``file://`` image URLs,
so both go through the parser below unchanged.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import numpy as np
import pandas as pd
import pyarrow as pa
from mmrepr.progress import tqdm

from mmrepr.data.download import DownloadRecord, download, fetch_many
from mmrepr.io import read_json, write_json

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/raw"
HF_BASE_URL = "https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023/resolve/main/raw"
SUFFIXES = (".jsonl.gz", ".jsonl")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}
ITEM_OUT_COLUMNS = ["item", "title", "description", "image_path", "image_url", "src_main_category",
                    "src_store", "src_categories", "src_average_rating", "src_rating_number"]
INTERACTION_OUT_COLUMNS = ["user", "item", "rating", "timestamp"]
_CHUNK_ROWS = 500_000


# --------------------------------------------------------------------------- locations


def category_urls(category: str, base_url: str | None = None) -> dict[str, str]:
    """``{"reviews": url, "meta": url}``; Hugging Face serves ``.jsonl``, UCSD ``.jsonl.gz``."""
    _check_category(category)
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    suffix = ".jsonl" if "huggingface.co" in base else ".jsonl.gz"
    return {
        "reviews": f"{base}/review_categories/{category}{suffix}",
        "meta": f"{base}/meta_categories/meta_{category}{suffix}",
    }


def _check_category(category: str | None) -> None:
    if not category or "/" in category or "\\" in category or category.startswith("."):
        raise ValueError(f"invalid Amazon 2023 category {category!r} (expected e.g. 'Baby_Products')")


def _rel(kind: str, category: str) -> str:
    return f"review_categories/{category}" if kind == "reviews" else f"meta_categories/meta_{category}"


def find_category_files(raw_dir: Path, category: str) -> dict[str, Path | None]:
    """The reviews and meta files under ``raw_dir`` (``.jsonl.gz`` preferred), None if absent."""
    out: dict[str, Path | None] = {}
    for kind in ("reviews", "meta"):
        out[kind] = next((p for s in SUFFIXES if (p := Path(raw_dir) / f"{_rel(kind, category)}{s}").is_file()), None)
    return out


def download_category(category: str, raw_dir: str | Path, base_url: str | None = None, **kw) -> dict[str, DownloadRecord]:
    """Fetch the reviews and meta files into ``raw_dir/{review,meta}_categories/``.

    Each file gets a ``<file>.download.json`` beside it (url, bytes, sha256, attempts):
    the checksum of what was downloaded, so a later run or a reader can verify the copy.
    A file already present with a matching sidecar is not fetched or re-hashed again.
    """
    raw_dir = Path(raw_dir)
    records = {}
    for kind, url in category_urls(category, base_url).items():
        dest = raw_dir / f"{_rel(kind, category)}{'.jsonl.gz' if url.endswith('.gz') else '.jsonl'}"
        sidecar = dest.with_name(dest.name + ".download.json")
        if dest.is_file() and sidecar.is_file():
            meta = read_json(sidecar)
            if meta.get("bytes") == dest.stat().st_size:
                records[kind] = DownloadRecord(meta["url"], dest, meta["bytes"], meta["sha256"],
                                               attempts=0, resumed=False, skipped=True)
                continue
        rec = download(url, dest, **kw)
        if rec.sha256 is None:  # was already there without a sidecar: record its checksum now
            from mmrepr.io import sha256_file

            rec.sha256 = sha256_file(dest)
        write_json(sidecar, rec.to_dict())
        records[kind] = rec
    return records


# --------------------------------------------------------------------------- parsing


@dataclass
class ParseReport:
    """What a pass over one JSONL file kept, skipped and why (first few examples with line numbers)."""

    path: str
    lines: int = 0  # non-blank lines read
    ok: int = 0
    malformed: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)  # {"line", "reason", "excerpt"}
    duplicates: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    stopped_early: bool = False  # max_lines reached
    max_examples: int = 5

    def bad(self, line_no: int, reason: str, raw: bytes) -> None:
        self.malformed += 1
        # Group reasons by kind, not by value ("rating outside 1..5", not each rating).
        self.reasons[reason.split(":")[0]] += 1
        if len(self.examples) < self.max_examples:
            excerpt = raw[:80].decode("utf-8", errors="replace").rstrip()
            self.examples.append({"line": line_no, "reason": reason, "excerpt": excerpt})

    def duplicate(self, key: str) -> None:
        self.duplicates += 1
        if len(self.duplicate_examples) < self.max_examples:
            self.duplicate_examples.append(key)

    def summary(self) -> str:
        s = f"{Path(self.path).name}: {self.lines} lines, {self.ok} ok, {self.malformed} malformed"
        if self.malformed:
            s += " (" + ", ".join(f"{r}: {n}" for r, n in self.reasons.most_common()) + ")"
            s += "; e.g. " + "; ".join(f"line {e['line']}: {e['reason']}" for e in self.examples[:3])
        if self.stopped_early:
            s += "; stopped at the max_reviews cap"
        return s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reasons"] = dict(self.reasons)
        return d


def _nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and not v.isspace() and v != ""


def _number(v: Any) -> bool:
    # type() rather than isinstance: bool is an int subclass and is not a rating.
    t = type(v)
    return t is float and math.isfinite(v) or t is int


def _check_rating(v: Any) -> str | None:
    if not _number(v):
        return f"rating is not a number: {type(v).__name__} {str(v)[:20]!r}"
    if not 1 <= v <= 5:
        return f"rating outside 1..5: {v}"
    return None


def _check_timestamp(v: Any) -> str | None:
    if not _number(v) or v != int(v) or v <= 0:
        return f"timestamp is not a positive integer (ms): {type(v).__name__} {str(v)[:20]!r}"
    return None


def _check_id(name: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if _nonempty_str(v) else f"{name} is not a non-empty string: {type(v).__name__}"
    return check


# field -> check(value) -> reason or None. A missing field is its own reason.
REVIEW_REQUIRED: dict[str, Callable[[Any], str | None]] = {
    "parent_asin": _check_id("parent_asin"),
    "user_id": _check_id("user_id"),
    "rating": _check_rating,
    "timestamp": _check_timestamp,
}
META_REQUIRED: dict[str, Callable[[Any], str | None]] = {"parent_asin": _check_id("parent_asin")}


def _open_binary(path: Path):
    if path.name.endswith(".gz"):
        # BufferedReader gives C-speed line iteration over GzipFile's Python-level readline.
        return io.BufferedReader(gzip.GzipFile(path, "rb"), buffer_size=1 << 20)
    return open(path, "rb", buffering=1 << 20)


_decode_json = json.JSONDecoder().decode


class JsonlReader:
    """Iterate the JSON objects of a ``.jsonl``/``.jsonl.gz`` file line by line (bounded memory).

    Lines that are not valid JSON, not an object, or fail a ``required`` field check are
    skipped and counted in ``self.report`` with their line numbers. ``max_lines`` caps the
    non-blank lines read (malformed ones included).
    """

    def __init__(self, path: str | Path, required: dict[str, Callable[[Any], str | None]] | None = None,
                 max_lines: int | None = None, progress: bool = True, desc: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found")
        self.required = required or {}
        self.max_lines = max_lines
        self.progress = progress
        self.desc = desc or self.path.name
        self.report = ParseReport(str(self.path))

    def __iter__(self) -> Iterator[dict]:
        rep = self.report
        line_no = 0
        bar = tqdm(desc=self.desc, unit=" lines", unit_scale=True, disable=not self.progress, mininterval=1.0)
        try:
            with _open_binary(self.path) as fh:
                try:
                    for line_no, raw in enumerate(fh, start=1):
                        if not raw.strip():
                            continue
                        if self.max_lines is not None and rep.lines >= self.max_lines:
                            rep.stopped_early = True
                            break
                        rep.lines += 1
                        if rep.lines % 10_000 == 0:
                            bar.update(10_000)
                        try:
                            obj = _decode_json(raw.decode("utf-8"))
                        except UnicodeDecodeError:
                            rep.bad(line_no, "invalid UTF-8", raw)
                            continue
                        except ValueError as exc:
                            rep.bad(line_no, f"invalid JSON: {exc.args[0][:60] if exc.args else exc}", raw)
                            continue
                        if not isinstance(obj, dict):
                            rep.bad(line_no, f"not a JSON object: {type(obj).__name__}", raw)
                            continue
                        reason = None
                        for key, check in self.required.items():
                            if key not in obj or obj[key] is None:
                                reason = f"missing {key}"
                                break
                            if (reason := check(obj[key])) is not None:
                                break
                        if reason is not None:
                            rep.bad(line_no, reason, raw)
                            continue
                        rep.ok += 1
                        yield obj
                except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                    raise ValueError(
                        f"{self.path}: compressed stream is broken after line {line_no} ({exc}); "
                        "the file is truncated or corrupt: delete it and download it again"
                    ) from None
        finally:
            bar.update(rep.lines % 10_000)
            bar.close()


def iter_jsonl(path: str | Path, required: dict[str, Callable[[Any], str | None]] | None = None,
               max_lines: int | None = None, progress: bool = True) -> JsonlReader:
    """A ``JsonlReader``: iterate it for the dicts, read ``.report`` afterwards."""
    return JsonlReader(path, required=required, max_lines=max_lines, progress=progress)


# --------------------------------------------------------------------------- meta


def main_image_url(images: Any) -> str | None:
    """The product's main image: the ``MAIN`` variant's ``large`` (else its ``hi_res``),
    else the first ``large`` of any image, else the first ``thumb``; None if there is none."""
    if not isinstance(images, list):
        return None
    imgs = [im for im in images if isinstance(im, dict)]
    for im in imgs:
        if im.get("variant") == "MAIN":
            for key in ("large", "hi_res"):
                if _nonempty_str(im.get(key)):
                    return im[key].strip()
    for key in ("large", "thumb"):
        for im in imgs:
            if _nonempty_str(im.get(key)):
                return im[key].strip()
    return None


def _description(v: Any) -> str:
    if isinstance(v, list):
        return " ".join(s.strip() for s in v if isinstance(s, str) and s.strip()).strip()
    return v.strip() if isinstance(v, str) else ""


def _float_or_nan(v: Any) -> float:
    if _number(v):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _int_or_none(v: Any) -> int | None:
    if _number(v) and v == int(v):
        return int(v)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    return None


def read_meta(path: str | Path, progress: bool = True) -> tuple[pd.DataFrame, ParseReport]:
    """Items of a meta file: ``item, title, description, image_url, src_*``; first of a duplicated parent_asin kept."""
    reader = iter_jsonl(path, required=META_REQUIRED, progress=progress)
    rows: list[tuple] = []
    seen: set[str] = set()
    for obj in reader:
        item = obj["parent_asin"].strip()
        if item in seen:
            reader.report.duplicate(item)
            continue
        seen.add(item)
        title = obj.get("title")
        cats = obj.get("categories")
        rows.append((
            item,
            title.strip() if isinstance(title, str) else "",
            _description(obj.get("description")),
            main_image_url(obj.get("images")),
            obj.get("main_category") if isinstance(obj.get("main_category"), str) else None,
            obj.get("store") if isinstance(obj.get("store"), str) else None,
            json.dumps(cats if isinstance(cats, list) else [], ensure_ascii=False),
            _float_or_nan(obj.get("average_rating")),
            _int_or_none(obj.get("rating_number")),
        ))
    cols = ["item", "title", "description", "image_url", "src_main_category", "src_store",
            "src_categories", "src_average_rating", "src_rating_number"]
    df = pd.DataFrame(rows, columns=cols)
    df["src_average_rating"] = df["src_average_rating"].astype(np.float64)
    df["src_rating_number"] = df["src_rating_number"].astype("Int64")
    return df, reader.report


# --------------------------------------------------------------------------- reviews


def read_reviews(path: str | Path, max_reviews: int | None = None, progress: bool = True) -> tuple[pd.DataFrame, ParseReport]:
    """Interactions of a reviews file: ``user, item, rating (float32), timestamp (int64 ms)``.

    Only these four fields are kept, accumulated in Arrow chunks so tens of millions of
    lines fit in memory. A (user, item) pair reviewed more than once keeps its latest
    review (ties: the later line); the others are counted in ``report.duplicates``.
    Sorted by user, item.
    """
    reader = iter_jsonl(path, required=REVIEW_REQUIRED, max_lines=max_reviews, progress=progress)
    chunks: list[pa.Table] = []
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    stamps: list[int] = []

    def flush() -> None:
        if users:
            chunks.append(pa.table({
                "user": pa.array(users, pa.string()), "item": pa.array(items, pa.string()),
                "rating": pa.array(ratings, pa.float32()), "timestamp": pa.array(stamps, pa.int64()),
            }))
            users.clear(); items.clear(); ratings.clear(); stamps.clear()  # noqa: E702

    for obj in reader:
        users.append(obj["user_id"].strip())
        items.append(obj["parent_asin"].strip())
        ratings.append(float(obj["rating"]))
        stamps.append(int(obj["timestamp"]))
        if len(users) >= _CHUNK_ROWS:
            flush()
    flush()
    schema = pa.schema([("user", pa.string()), ("item", pa.string()), ("rating", pa.float32()), ("timestamp", pa.int64())])
    table = pa.concat_tables(chunks) if chunks else schema.empty_table()
    df = table.to_pandas()
    df["_ord"] = np.arange(len(df), dtype=np.int64)
    df = df.sort_values(["user", "item", "timestamp", "_ord"], kind="mergesort")
    dup = df.duplicated(["user", "item"], keep="last")
    if dup.any():
        for u, i in df.loc[dup, ["user", "item"]].head(reader.report.max_examples).itertuples(index=False):
            reader.report.duplicate_examples.append(f"{u}/{i}")
        reader.report.duplicates = int(dup.sum())
    df = df.loc[~dup, INTERACTION_OUT_COLUMNS].reset_index(drop=True)
    df["rating"] = df["rating"].astype(np.float32)
    df["timestamp"] = df["timestamp"].astype(np.int64)
    return df, reader.report


# --------------------------------------------------------------------------- whole category


def _step(step: str, rows_in: int, rows_out: int, reason: str) -> dict:
    return {"step": step, "rows_in": int(rows_in), "rows_out": int(rows_out),
            "dropped": int(rows_in - rows_out), "reason": reason}


def _local_file(url: str) -> Path | None:
    """The path of a ``file://`` URL (None for other schemes)."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    return Path(url2pathname(unquote(parsed.path)))


def _image_ext(url: str) -> str:
    ext = Path(urlparse(url).path).suffix.lower()
    return ext if ext in IMAGE_EXTS else ".jpg"


def _readable_image(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    import warnings

    try:
        with warnings.catch_warnings():
            # past PIL's pixel limit (MAX_IMAGE_PIXELS; 2x raises DecompressionBombError): an
            # unreadable image like any other, recorded, not a crash of stage 1
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"image too large: {str(exc)[:100]}"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:80]}"
    return None


def _examples(pairs: list[tuple[str, str]], n: int = 3) -> str:
    return "; ".join(f"{k} ({v[:100]})" for k, v in pairs[:n])



def _parse_steps(kind: str, rep, rows_out: int, dup_step: str, dup_reason: str) -> list[dict]:
    """Quality rows for reading one file: malformed lines, then duplicates."""
    log.info("%s %s", kind, rep.summary())
    if rep.malformed:
        log.warning("%s", rep.summary())
    examples = f"; e.g. {', '.join(rep.duplicate_examples[:3])}" if rep.duplicates else ""
    return [
        _step(f"{kind}: parse", rep.lines, rep.ok, f"malformed lines skipped; {rep.summary()}"),
        _step(f"{kind}: {dup_step}", rep.ok, rows_out, dup_reason + examples),
    ]

def load_category(
    raw_dir: str | Path,
    category: str,
    *,
    image_dir: str | Path,
    download_images: bool = True,
    workers: int = 16,
    max_reviews: int | None = None,
    base_url: str | None = None,
    verify_images: bool = True,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Items, interactions and one quality row per cleaning step for one category.

    Raw files are read from ``raw_dir`` (downloaded there first when missing and
    ``base_url`` is given). Items without an image URL or with an empty description are
    dropped, then main images are fetched into ``image_dir/<parent_asin>.<ext>`` (a
    ``file://`` URL to an existing file is used in place) and items whose image failed or
    does not open are dropped; then reviews of items not in the remaining catalogue. No
    k-core, no split. With ``download_images=False`` only images already on disk are used
    and items without one keep ``image_path == ""``.
    """
    _check_category(category)
    raw_dir, image_dir = Path(raw_dir), Path(image_dir)
    files = find_category_files(raw_dir, category)
    if any(p is None for p in files.values()):
        if base_url is None:
            missing = [f"{raw_dir / _rel(k, category)}{{{','.join(SUFFIXES)}}}" for k, p in files.items() if p is None]
            raise FileNotFoundError(f"Amazon 2023 raw files not found: {', '.join(missing)} (no base_url to download them from)")
        download_category(category, raw_dir, base_url, progress=progress)
        files = find_category_files(raw_dir, category)
    quality: list[dict] = []

    # --- items
    items, mrep = read_meta(files["meta"], progress=progress)
    meta_items = set(items["item"])
    quality += _parse_steps("meta", mrep, len(items), "duplicate parent_asin", "kept the first line of each parent_asin")
    n = len(items)
    items = items[items["image_url"].notna()]
    quality.append(_step("items without image", n, len(items), "no MAIN/large/hi_res/thumb image URL in meta"))
    n = len(items)
    items = items[items["description"].str.len() > 0]
    quality.append(_step("items with empty description", n, len(items), "description list empty or blank"))
    items = items.reset_index(drop=True)

    # --- images
    paths: dict[str, str] = {}
    failures: list[tuple[str, str]] = []
    jobs: list[tuple[str, Path]] = []
    job_items: list[str] = []  # aligned with jobs; items may share an image URL
    for item, url in zip(items["item"], items["image_url"]):
        local = _local_file(url)
        if local is not None and local.is_file():
            paths[item] = str(local.resolve())  # used in place, no copy
            continue
        dest = image_dir / f"{item}{_image_ext(url)}"
        if dest.is_file():
            paths[item] = str(dest.resolve())
        elif download_images:
            jobs.append((url, dest))
            job_items.append(item)
        elif local is not None:
            failures.append((item, f"local image {local} does not exist"))
    if jobs:
        rep = fetch_many(jobs, workers=workers, desc=f"images {category}", progress=progress)
        log.info("images: %s", rep.summary())
        bad_urls = dict(rep.failures)
        for (url, dest), item in zip(jobs, job_items):
            if Path(dest).is_file():
                paths[item] = str(Path(dest).resolve())
            else:
                failures.append((item, bad_urls.get(url, "not downloaded")))
    n = len(items)
    if download_images:
        failed = {i for i, _ in failures}
        items = items[~items["item"].isin(failed)]
        quality.append(_step("image download failed", n, len(items),
                             f"{len(jobs)} to download, {len(paths)} images on disk after fetching" + (f"; e.g. {_examples(failures)}" if failures else "")))
    else:
        have = int(items["item"].isin(paths.keys()).sum())
        quality.append(_step("images not downloaded", n, n,
                             f"download_images=false: {n - have} items have no local image (image_path empty, kept)"))
    if verify_images and paths:
        unreadable = []
        for item in tqdm(items["item"], desc="verify images", unit="img", disable=not progress, mininterval=1.0):
            p = paths.get(item)
            if p is not None and (why := _readable_image(Path(p))) is not None:
                unreadable.append((item, f"{p}: {why}"))
        n = len(items)
        items = items[~items["item"].isin({i for i, _ in unreadable})]
        quality.append(_step("image unreadable", n, len(items),
                             "PIL cannot open the file" + (f"; e.g. {_examples(unreadable)}" if unreadable else "")))
    items = items.assign(image_path=items["item"].map(paths).fillna("").astype(str))
    items = items.sort_values("item", kind="mergesort").reset_index(drop=True)[ITEM_OUT_COLUMNS]

    # --- interactions
    inter, rrep = read_reviews(files["reviews"], max_reviews=max_reviews, progress=progress)
    quality += _parse_steps("reviews", rrep, len(inter), "repeated (user, item)", "kept the latest review of each pair")
    n = len(inter)
    inter = inter[inter["item"].isin(meta_items)]
    quality.append(_step("reviews of items without metadata", n, len(inter),
                         "parent_asin not in the meta file"))
    n = len(inter)
    inter = inter[inter["item"].isin(set(items["item"]))]
    quality.append(_step("reviews of dropped items", n, len(inter),
                         "item dropped above (no image, empty description, image failed)"))
    inter = inter.sort_values(["user", "item"], kind="mergesort").reset_index(drop=True)
    return items, inter, quality
