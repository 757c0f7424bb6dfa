"""Item content as the extractors see it: decoded images and description texts.

Every item gets a *content key*: the SHA-256 of its image bytes or of its text. The cache
is addressed by it, so an unchanged item is never encoded twice and a changed one is
encoded alone. Missing content gets a key of the form ``missing:<reason>`` and is never
sent to a model; the feature-set builder applies ``features.missing_policy`` to it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

MISSING_PREFIX = "missing:"

# A decoded image bigger than this is reduced on load (JPEG draft mode, then thumbnail), so a
# huge product photo costs neither minutes nor gigabytes; every extractor resizes to <= 224 px.
MAX_SIDE = 1024


def is_missing(key: str) -> bool:
    return key.startswith(MISSING_PREFIX)


def text_key(text: str | None) -> str:
    if text is None or not str(text).strip():
        return MISSING_PREFIX + "empty_text"
    return hashlib.sha256(str(text).strip().encode("utf-8")).hexdigest()


def _image_key(path: str | None) -> str:
    if path is None or not str(path).strip():
        return MISSING_PREFIX + "no_image_path"
    p = Path(path)
    if not p.is_file():
        return MISSING_PREFIX + "image_not_found"
    try:
        data = p.read_bytes()
    except OSError:
        return MISSING_PREFIX + "image_unreadable_file"
    if not data:
        return MISSING_PREFIX + "image_empty_file"
    return hashlib.sha256(data).hexdigest()


def image_keys(paths: list[str], num_workers: int = 2) -> list[str]:
    """Content keys of many image files, read in a thread pool (hashing releases the GIL)."""
    if num_workers <= 1:
        return [_image_key(p) for p in paths]
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        return list(pool.map(_image_key, paths, chunksize=64))


def decode_image(path: str) -> tuple[Image.Image | None, str]:
    """Open ``path`` as an RGB image: ``(image, note)``, or ``(None, reason)`` if unreadable.

    Grayscale, palette, CMYK, RGBA (composited on white) and 16-bit images are converted to
    RGB and noted; corrupt or truncated files are reported, never half-decoded.
    """
    try:
        data = Path(path).read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            mode = img.mode
            if img.format == "JPEG":
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # decode huge JPEGs at reduced size
            img.load()  # raises on truncated / corrupt data (LOAD_TRUNCATED_IMAGES stays False)
        if max(img.size) > MAX_SIDE:
            img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
        if mode in ("RGBA", "LA") or (mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba).convert("RGB")
        elif mode in ("I;16", "I;16B", "I;16L", "I"):
            img = img.point(lambda x: x * (1 / 256)).convert("L").convert("RGB")
        elif mode != "RGB":
            img = img.convert("RGB")
        if img.width < 1 or img.height < 1:
            return None, "image_zero_size"
        note = "ok" if mode == "RGB" else f"ok_converted_from_{mode}"
        return img, note
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, "image_too_large"
    except Exception as exc:  # noqa: BLE001 -- any decoder failure means "unreadable"
        log.info("unreadable image %s: %s: %s", path, type(exc).__name__, exc)
        return None, "image_unreadable"
