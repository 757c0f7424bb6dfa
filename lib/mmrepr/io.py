"""Atomic, deterministic file output.

Every artefact is written to a temporary file in the target folder and renamed into
place, so a run killed at any moment never leaves a half-written file under a real name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class OutputError(OSError):
    """Writing an artefact failed; the message says why (disk full, read-only, ...) and names the file."""

    def __str__(self) -> str:  # the message alone (OSError would print "[Errno n] strerror: filename")
        return str(self.args[0]) if self.args else super().__str__()


class InputError(ValueError):
    """A file the user or a stage provided cannot be read; the message names the file (and line)."""


_WRITE_REASONS = {
    errno.ENOSPC: "the disk is full",
    getattr(errno, "EDQUOT", -1): "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def _explain_write_error(exc: OSError, path: Path) -> OutputError:
    reason = _WRITE_REASONS.get(exc.errno or 0)
    if reason is None and "requested and" in str(exc) and "written" in str(exc):
        reason = "short write: the disk is likely full"  # numpy's message for a partial write
    free = ""
    with contextlib.suppress(OSError):
        import shutil

        free = f"; {shutil.disk_usage(path.parent if path.parent.exists() else '/').free:,} bytes free there"
    what = reason or (exc.strerror or type(exc).__name__)
    out = OutputError(f"cannot write {path}: {what} ({exc}){free}")
    out.errno, out.filename = exc.errno, str(path)  # set after: OSError(errno, msg) would prefix "[Errno n]"
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    An ``OSError`` while writing becomes :class:`OutputError` naming ``path`` and the reason
    (disk full, read-only file system, permission denied).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OutputError:
        raise
    except OSError as exc:
        raise _explain_write_error(exc, path) from exc
    os.close(fd)
    # mkstemp makes 0600 files; artefacts should get the usual permissions (umask applied).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OutputError:
        tmp_path.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise _explain_write_error(exc, path) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any):
    """``open`` that only replaces ``path`` once the ``with`` block has finished."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a truncated or malformed one raises :class:`InputError` naming file and line."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg}); "
                         f"the file may be truncated or corrupted") from None


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """A text file's content; bytes that are not ``encoding`` raise :class:`InputError` naming the line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(f"{path}, line {line}, column {col}: not {encoding} text "
                         f"(byte {data[exc.start:exc.start + 1]!r}: {exc.reason})") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_parquet(df, path: str | os.PathLike) -> None:
    """Write a DataFrame as parquet, deterministically (no index, fixed compression)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)


def read_parquet(path: str | os.PathLike):
    import pandas as pd

    return pd.read_parquet(path)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` with fixed zip member dates (numpy stamps the current time), so equal
    arrays give equal bytes."""
    import zipfile

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, arr in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)


def write_csv(df, path: str | os.PathLike, **kwargs: Any) -> None:
    kwargs.setdefault("index", False)
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        df.to_csv(fh, **kwargs)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable hash of a JSON-able object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def sha256_tree(root: str | os.PathLike, pattern: str = "*.py") -> str:
    """Hash of every file matching ``pattern`` under ``root`` (paths and contents)."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(root.rglob(pattern)):
        if "__pycache__" in p.parts:
            continue
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()
