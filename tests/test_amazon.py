"""Amazon Reviews 2023 parser and category loader on files in the published format."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmrepr.data.amazon import (
    REVIEW_REQUIRED,
    category_urls,
    iter_jsonl,
    load_category,
    main_image_url,
    read_meta,
    read_reviews,
)

CAT = "Baby_Products"


def _img(path: Path, color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def _meta(asin, *, title="Item", description=("A thing.",), images=None, **extra):
    # Field names, order and shapes as in meta_<Category>.jsonl of the 2023 release.
    d = {
        "main_category": "Baby", "title": title, "average_rating": 4.5, "rating_number": 120,
        "features": ["Soft", "Washable"], "description": list(description), "price": None,
        "images": images if images is not None else [], "videos": [], "store": "BabyCo",
        "categories": ["Baby Products", "Feeding", "Bibs"],
        "details": {"Item Weight": "2 ounces", "Date First Available": "May 1, 2019"},
        "parent_asin": asin, "bought_together": None,
    }
    d.update(extra)
    return json.dumps(d)


def _image(large, *, variant="MAIN", hi_res=None, thumb="https://m.media-amazon.com/images/I/x._SS40_.jpg"):
    return {"thumb": thumb, "large": large, "variant": variant, "hi_res": hi_res}


def _review(user, asin, rating, ts, **extra):
    d = {
        "rating": rating, "title": "Great", "text": "Works well.", "images": [],
        "asin": asin + "X", "parent_asin": asin, "user_id": user, "timestamp": ts,
        "helpful_vote": 0, "verified_purchase": True,
    }
    d.update(extra)
    return json.dumps(d)


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


REVIEW_LINES = [
    _review("U1", "B01", 5.0, 1588687728923),  # 1
    _review("U1", "B01", 3.0, 1600000000000),  # 2 latest of (U1, B01): kept
    _review("U1", "B01", 4.0, 1590000000000),  # 3 older, later in the file: dropped
    '{"rating": 5.0, "title": "Gre',  # 4 truncated JSON
    "[1, 2, 3]",  # 5 not an object
    "",  # 6 blank: ignored, not counted
    json.dumps({"rating": 4.0, "user_id": "U9", "timestamp": 1600000000000}),  # 7 no parent_asin
    _review("U2", "B02", "five", 1600000000000),  # 8 rating as a string
    _review("U2", "B02", 4, 1610000000000),  # 9 int rating is fine
    _review("U2", "B03", 7.0, 1610000000000),  # 10 rating out of range
    _review("U3", "B99", 2.0, 1620000000000),  # 11
]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_iter_jsonl_counts_malformed_lines_with_numbers(tmp_path, suffix):
    path = _write(tmp_path / f"r{suffix}", REVIEW_LINES)
    reader = iter_jsonl(path, required=REVIEW_REQUIRED, progress=False)
    objs = list(reader)
    rep = reader.report
    assert [o["user_id"] for o in objs] == ["U1", "U1", "U1", "U2", "U3"]
    assert (rep.lines, rep.ok, rep.malformed) == (10, 5, 5)
    bad = {e["line"]: e["reason"] for e in rep.examples}
    assert sorted(bad) == [4, 5, 7, 8, 10]
    assert bad[4].startswith("invalid JSON") and bad[5] == "not a JSON object: list"
    assert bad[7] == "missing parent_asin" and "rating is not a number" in bad[8]
    assert bad[10] == "rating outside 1..5: 7.0"
    assert rep.examples[0]["excerpt"].startswith('{"rating": 5.0, "title": "Gre')
    assert rep.reasons["invalid JSON"] == 1 and "line 4" in rep.summary()


def test_read_reviews_keeps_latest_of_repeated_pairs(tmp_path):
    path = _write(tmp_path / "r.jsonl.gz", REVIEW_LINES)
    df, rep = read_reviews(path, progress=False)
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert df["rating"].dtype == np.float32 and df["timestamp"].dtype == np.int64
    got = list(df.itertuples(index=False, name=None))
    assert got == [("U1", "B01", 3.0, 1600000000000), ("U2", "B02", 4.0, 1610000000000),
                   ("U3", "B99", 2.0, 1620000000000)]
    assert rep.duplicates == 2 and rep.duplicate_examples[0] == "U1/B01"
    # The cap counts raw non-blank lines, malformed included.
    capped, crep = read_reviews(path, max_reviews=4, progress=False)
    assert crep.lines == 4 and crep.stopped_early and crep.malformed == 1 and len(capped) == 1


def test_main_image_url_preference():
    assert main_image_url([_image("L2", variant="PT01"), _image("L1", hi_res="H1")]) == "L1"
    assert main_image_url([_image(None, hi_res="H1")]) == "H1"
    assert main_image_url([_image(None, variant="PT01"), _image("L3", variant="PT02")]) == "L3"
    assert main_image_url([{"thumb": "T1", "large": None, "variant": "PT01", "hi_res": None}]) == "T1"
    assert main_image_url([]) is None and main_image_url(None) is None and main_image_url(["x"]) is None


def test_read_meta_fields_and_duplicates(tmp_path):
    lines = [
        _meta("B01", title="Soft Bib", description=["A soft bib. ", " Machine washable."],
              images=[_image("https://m.media-amazon.com/images/I/bib.jpg", hi_res="https://h/bib.jpg"),
                      _image("https://m.media-amazon.com/images/I/bib2.jpg", variant="PT01")]),
        _meta("B01", title="Second copy"),
        json.dumps({"title": "no key", "description": []}),
        _meta("B02", title=None, description=[], images=[], average_rating=None, rating_number=None, store=None),
    ]
    df, rep = read_meta(_write(tmp_path / "m.jsonl", lines), progress=False)
    assert df["item"].tolist() == ["B01", "B02"]
    b1, b2 = df.iloc[0], df.iloc[1]
    assert b1["title"] == "Soft Bib" and b1["description"] == "A soft bib. Machine washable."
    assert b1["image_url"] == "https://m.media-amazon.com/images/I/bib.jpg"
    assert json.loads(b1["src_categories"]) == ["Baby Products", "Feeding", "Bibs"]
    assert b1["src_store"] == "BabyCo" and b1["src_average_rating"] == 4.5 and b1["src_rating_number"] == 120
    assert b2["title"] == "" and b2["description"] == "" and pd.isna(b2["image_url"]) and pd.isna(b2["src_store"])
    assert pd.isna(b2["src_rating_number"]) and np.isnan(b2["src_average_rating"])
    assert rep.duplicates == 1 and rep.duplicate_examples == ["B01"]
    assert rep.malformed == 1 and rep.examples[0] == {"line": 3, "reason": "missing parent_asin",
                                                      "excerpt": '{"title": "no key", "description": []}'}


class _ImageHandler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, *a):
        pass

    def do_GET(self):
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")


@pytest.fixture()
def image_server(tmp_path):
    png = tmp_path / "served.png"
    _img(png, (0, 0, 255))
    _ImageHandler.files = {"/images/I/b08.png": png.read_bytes()}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _catalogue(root: Path, server: str, gz: bool = True) -> Path:
    """A raw folder in the published layout; returns it. Images live under root/src."""
    src = root / "src"
    b01 = _img(src / "b01.png")
    b02 = _img(src / "b02.png", (0, 200, 0))
    (src / "b06.jpg").write_text("this is not an image")
    meta = [
        _meta("B01", title="Bib", images=[_image(b01.as_uri())]),
        _meta("B02", title="Cup", images=[_image(b02.as_uri(), variant="PT01")]),  # no MAIN: first large
        _meta("B03", images=[]),  # no image
        _meta("B04", description=[], images=[_image(b01.as_uri())]),  # empty description
        _meta("B05", description=["   "], images=[_image(b01.as_uri())]),  # blank description
        _meta("B06", images=[_image(None, hi_res=(src / "b06.jpg").as_uri())]),  # unreadable image
        _meta("B07", images=[_image((src / "gone.png").as_uri())]),  # local image missing
        _meta("B08", images=[_image(f"{server}/images/I/b08.png")]),  # downloaded
        _meta("B09", images=[_image(f"{server}/images/I/b09.jpg")]),  # 404
        _meta("B01", title="duplicate"),
        '{"parent_asin": "B10", "title": ',  # truncated
    ]
    reviews = [
        _review("U1", "B01", 5.0, 1_600_000_000_000), _review("U1", "B02", 4.0, 1_600_000_000_001),
        _review("U2", "B01", 3.0, 1_600_000_000_002), _review("U2", "B08", 4.0, 1_600_000_000_003),
        _review("U2", "B03", 4.0, 1_600_000_000_004), _review("U3", "B06", 5.0, 1_600_000_000_005),
        _review("U3", "B09", 1.0, 1_600_000_000_006), _review("U3", "B77", 5.0, 1_600_000_000_007),
        _review("U1", "B01", 2.0, 1_500_000_000_000),  # older repeat of (U1, B01)
        '{"rating": "five"}',
    ]
    s = ".jsonl.gz" if gz else ".jsonl"
    raw = root / "raw"
    _write(raw / "meta_categories" / f"meta_{CAT}{s}", meta)
    _write(raw / "review_categories" / f"{CAT}{s}", reviews)
    return raw


@pytest.mark.parametrize("gz", [True, False])
def test_load_category_drops_and_counts_every_step(tmp_path, image_server, gz):
    raw = _catalogue(tmp_path, image_server, gz=gz)
    image_dir = tmp_path / "images"
    items, inter, quality = load_category(raw, CAT, image_dir=image_dir, workers=2, progress=False)

    assert items["item"].tolist() == ["B01", "B02", "B08"]
    assert list(items.columns[:4]) == ["item", "title", "description", "image_path"]
    paths = dict(zip(items["item"], items["image_path"]))
    assert paths["B01"] == str((tmp_path / "src" / "b01.png").resolve())  # file:// used in place
    assert paths["B08"] == str((image_dir / "B08.png").resolve())  # fetched
    assert not (image_dir / "B01.png").exists()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in paths.values())
    assert items.set_index("item").loc["B01", "title"] == "Bib"  # first duplicate kept

    assert list(inter.itertuples(index=False, name=None)) == [
        ("U1", "B01", 5.0, 1_600_000_000_000), ("U1", "B02", 4.0, 1_600_000_000_001),
        ("U2", "B01", 3.0, 1_600_000_000_002), ("U2", "B08", 4.0, 1_600_000_000_003),
    ]

    q = {r["step"]: r for r in quality}
    for r in quality:
        assert r["dropped"] == r["rows_in"] - r["rows_out"] >= 0 and set(r) == {"step", "rows_in", "rows_out", "dropped", "reason"}
    assert (q["meta: parse"]["rows_in"], q["meta: parse"]["dropped"]) == (11, 1)
    assert q["meta: duplicate parent_asin"]["dropped"] == 1
    assert q["items without image"]["dropped"] == 1
    assert q["items with empty description"]["dropped"] == 2
    assert q["image download failed"]["dropped"] == 2  # B07 missing local file, B09 404
    assert "B09" in q["image download failed"]["reason"] and "404" in q["image download failed"]["reason"]
    assert q["image unreadable"]["dropped"] == 1 and "B06" in q["image unreadable"]["reason"]
    assert (q["reviews: parse"]["rows_in"], q["reviews: parse"]["dropped"]) == (10, 1)
    assert q["reviews: repeated (user, item)"]["dropped"] == 1
    assert q["reviews of items without metadata"]["dropped"] == 1  # B77
    assert q["reviews of dropped items"]["dropped"] == 3  # B03, B06, B09
    # Steps chain: each step's input is the previous step's output within items / reviews.
    assert q["reviews of dropped items"]["rows_out"] == len(inter)

    # Second run: images are cached, nothing is fetched again.
    _ImageHandler.files = {}
    items2, inter2, _ = load_category(raw, CAT, image_dir=image_dir, workers=2, progress=False)
    pd.testing.assert_frame_equal(items, items2)
    pd.testing.assert_frame_equal(inter, inter2)


def test_load_category_without_image_download_keeps_items(tmp_path, image_server):
    raw = _catalogue(tmp_path, image_server)
    items, _, quality = load_category(raw, CAT, image_dir=tmp_path / "img", download_images=False,
                                      verify_images=False, progress=False)
    paths = dict(zip(items["item"], items["image_path"]))
    assert paths["B08"] == "" and paths["B09"] == "" and paths["B01"].endswith("b01.png")
    assert {r["step"] for r in quality} >= {"images not downloaded"}
    assert not (tmp_path / "img").exists()


def test_load_category_downloads_raw_files_and_records_checksums(tmp_path, image_server):
    mirror = _catalogue(tmp_path / "mirror", image_server)
    base = mirror.as_uri()
    assert category_urls(CAT, base)["meta"] == f"{base}/meta_categories/meta_{CAT}.jsonl.gz"
    assert category_urls(CAT, "https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023/resolve/main/raw")[
        "reviews"].endswith(f"/raw/review_categories/{CAT}.jsonl")
    raw = tmp_path / "cache" / "raw"
    with pytest.raises(FileNotFoundError, match=CAT):
        load_category(raw, CAT, image_dir=tmp_path / "img", progress=False)
    items, inter, _ = load_category(raw, CAT, image_dir=tmp_path / "img", base_url=base, workers=2, progress=False)
    assert len(items) == 3 and len(inter) == 4
    for rel in (f"review_categories/{CAT}.jsonl.gz", f"meta_categories/meta_{CAT}.jsonl.gz"):
        got = raw / rel
        side = json.loads(got.with_name(got.name + ".download.json").read_text())
        assert side["sha256"] == hashlib.sha256(got.read_bytes()).hexdigest()
        assert side["bytes"] == got.stat().st_size == (mirror / rel).stat().st_size


def test_truncated_gzip_is_a_clear_error(tmp_path):
    path = _write(tmp_path / "r.jsonl.gz", REVIEW_LINES * 50)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"r\.jsonl\.gz: compressed stream is broken after line \d+"):
        read_reviews(path, progress=False)
