"""Robust file downloads: resumable, retried, checksummed, atomic.

``download`` streams a URL into ``<dest>.part`` and renames it onto ``dest`` only once the
whole body has arrived (and, when given, its sha256 matches), so a killed run never leaves
a half-written file under the real name and the next run resumes from the ``.part`` file
with an HTTP ``Range`` request. Transient failures (429 with ``Retry-After``, 5xx,
connection errors, read timeouts, bodies shorter than their ``Content-Length``) are
retried with exponential backoff; permanent ones (404, 403, ...) fail at once with the URL
and status in the message. ``file://`` URLs are copied with the same checks, which lets
tests and the synthetic catalogue run offline.

``fetch_many`` runs many downloads concurrently and records failures instead of raising,
for the tens of thousands of product images stage 1 needs.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import requests
import urllib3
from mmrepr.progress import tqdm

log = logging.getLogger(__name__)

CHUNK = 1 << 16
# Statuses that will not get better by asking again.
PERMANENT = {400, 401, 403, 404, 405, 410, 451}
# Upper bound on one wait, whatever the server's Retry-After says.
MAX_WAIT_S = 120.0


class DownloadError(RuntimeError):
    """A download that failed for good; the message names the URL (and status when known)."""

    def __init__(self, message: str, url: str, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class ChecksumError(DownloadError):
    def __init__(self, url: str, path: Path, expected: str, actual: str):
        super().__init__(
            f"{url}: sha256 mismatch for {path}: expected {expected}, got {actual} (file removed)", url
        )
        self.expected = expected
        self.actual = actual


class _Retry(Exception):
    """A transient failure; ``wait`` is the server's Retry-After when it sent one."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.wait = wait


@dataclass
class DownloadRecord:
    url: str
    path: Path
    bytes: int
    sha256: str | None
    attempts: int
    resumed: bool
    skipped: bool = False  # dest already present (and matching), nothing transferred

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _local_path(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise DownloadError(f"{url}: file:// URL with a remote host is not supported", url)
    return Path(url2pathname(unquote(parsed.path)))


def _finish(part: Path, dest: Path, url: str, sha256: str | None) -> str:
    """Check the completed ``.part`` file's sha256 and rename it onto ``dest`` atomically."""
    actual = _sha256(part)
    if sha256 is not None and actual.lower() != sha256.lower():
        part.unlink(missing_ok=True)
        raise ChecksumError(url, dest, sha256, actual)
    with open(part, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    return actual


def _copy_local(url: str, dest: Path, part: Path, sha256: str | None) -> DownloadRecord:
    src = _local_path(url)
    if not src.is_file():
        raise DownloadError(f"{url}: local file {src} does not exist", url, status=404)
    shutil.copyfile(src, part)
    digest = _finish(part, dest, url, sha256)
    return DownloadRecord(url, dest, dest.stat().st_size, digest, attempts=1, resumed=False)


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30,
    progress: bool = True,
    session: requests.Session | None = None,
) -> DownloadRecord:
    """Fetch ``url`` into ``dest``; see the module docstring for the guarantees.

    ``retries`` is the number of extra attempts after the first; the wait before attempt
    ``n+1`` is ``backoff * 2**(n-1)`` seconds unless the server sent ``Retry-After``.
    ``timeout`` applies to connecting and to each read (a stalled body is retried and
    resumed). Raises ``DownloadError`` (``ChecksumError`` for a sha256 mismatch).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        if sha256 is None:
            return DownloadRecord(url, dest, dest.stat().st_size, None, attempts=0, resumed=False, skipped=True)
        actual = _sha256(dest)
        if actual.lower() == sha256.lower():
            return DownloadRecord(url, dest, dest.stat().st_size, actual, attempts=0, resumed=False, skipped=True)
        log.warning("%s exists but its sha256 %s is not the expected %s: downloading again", dest, actual, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)

    if urlparse(url).scheme == "file":
        return _copy_local(url, dest, part, sha256)

    own_session = session is None
    sess = session or requests.Session()
    attempts = 0
    resumed = False
    last_reason = ""
    try:
        while True:
            attempts += 1
            try:
                resumed |= _attempt(sess, url, part, timeout=timeout, progress=progress)
                break
            except _Retry as exc:
                last_reason = str(exc)
                if attempts > retries:
                    raise DownloadError(
                        f"{url}: giving up after {attempts} attempts; last error: {last_reason}", url
                    ) from None
                wait = exc.wait if exc.wait is not None else backoff * (2 ** (attempts - 1))
                wait = min(wait, MAX_WAIT_S)
                log.info("%s: %s; retry %d/%d in %.2fs", url, last_reason, attempts, retries, wait)
                time.sleep(wait)
    finally:
        if own_session:
            sess.close()
    digest = _finish(part, dest, url, sha256)
    return DownloadRecord(url, dest, dest.stat().st_size, digest, attempts=attempts, resumed=resumed)


def _attempt(sess: requests.Session, url: str, part: Path, *, timeout: float, progress: bool) -> bool:
    """One HTTP request appending to ``part``; returns whether it resumed. Raises ``_Retry``."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: byte offsets and Content-Length must refer to the file itself, not a
    # transport-compressed body.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = sess.get(url, stream=True, timeout=timeout, headers=headers)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    with resp:
        status = resp.status_code
        if status in PERMANENT:
            raise DownloadError(f"{url}: HTTP {status} {resp.reason or ''}".rstrip(), url, status=status)
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status}", wait=_retry_after(resp.headers.get("Retry-After")))
        if status == 416 and offset:
            # "bytes */N" with N == what we have: a previous run got every byte but died
            # before the rename. Otherwise the .part is not a prefix the server knows.
            total = resp.headers.get("Content-Range", "")
            if total.startswith("bytes */") and total[8:].strip() == str(offset):
                return True
            part.unlink(missing_ok=True)
            raise _Retry("HTTP 416 on resume: restarting from zero", wait=0.0)
        if status not in (200, 206):
            raise DownloadError(f"{url}: unexpected HTTP {status} {resp.reason or ''}".rstrip(), url, status=status)

        resumed = False
        if status == 206 and offset:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"Content-Range starts at {start}, expected {offset}: restarting", wait=0.0)
            mode, resumed = "ab", True
        else:
            # 200 although we asked for a range: the server ignores Range, start over.
            mode, offset = "wb", 0
        length = resp.headers.get("Content-Length")
        expected = offset + int(length) if length and length.isdigit() else None

        received = 0
        bar = tqdm(total=expected, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=Path(urlparse(url).path).name[:40], disable=not progress, leave=False)
        try:
            with open(part, mode) as fh:
                while True:
                    # read1 hands over whatever has arrived; iter_content/read(amt) would drop
                    # the last partial chunk when the connection dies, losing resumable bytes.
                    try:
                        chunk = resp.raw.read1(CHUNK, decode_content=False)
                    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                        # Keep what arrived (flushed on close): the next attempt resumes from it.
                        raise _Retry(f"body interrupted after {offset + received} bytes "
                                     f"({type(exc).__name__}: {exc})") from None
                    if not chunk:
                        break
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
        total = offset + received
        if expected is not None and total < expected:
            raise _Retry(f"truncated body: {total} of {expected} bytes")
        if expected is not None and total > expected:
            part.unlink(missing_ok=True)
            raise _Retry(f"body longer than Content-Length ({total} > {expected}): restarting")
        return resumed


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


# --------------------------------------------------------------------------- many files


@dataclass
class FetchReport:
    fetched: int = 0
    skipped: int = 0
    failed: int = 0
    records: list[DownloadRecord] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (url, error)

    def examples(self, n: int = 5) -> list[tuple[str, str]]:
        return self.failures[:n]

    @property
    def failed_urls(self) -> set[str]:
        return {u for u, _ in self.failures}

    def summary(self) -> str:
        s = f"fetched {self.fetched}, skipped {self.skipped} (already present), failed {self.failed}"
        if self.failures:
            s += "; e.g. " + "; ".join(f"{u}: {e}" for u, e in self.examples(3))
        return s


def fetch_many(
    jobs: list[tuple[str, str | os.PathLike]] | list[tuple[str, str | os.PathLike, str | None]],
    workers: int = 16,
    *,
    desc: str = "download",
    progress: bool = True,
    **kw,
) -> FetchReport:
    """Download ``(url, dest)`` (or ``(url, dest, sha256)``) jobs concurrently.

    Already-present files are skipped; every failure is recorded as ``(url, error)`` and
    never raised. ``kw`` goes to ``download`` (retries, backoff, timeout). Jobs with the
    same ``dest`` are run once (the first wins). Records keep the order of ``jobs``.
    """
    seen: set[Path] = set()
    todo = []
    for job in jobs:
        url, dest, sha = tuple(job) if len(job) == 3 else (*job, None)
        dest = Path(dest)
        if dest in seen:
            continue
        seen.add(dest)
        todo.append((url, dest, sha))

    report = FetchReport()
    results: dict[int, DownloadRecord] = {}
    local = threading.local()

    def run(i: int, url: str, dest: Path, sha: str | None) -> DownloadRecord:
        # requests.Session is not guaranteed thread-safe: one per worker thread.
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return download(url, dest, sha256=sha, progress=False, session=local.session, **kw)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(todo), desc=desc, unit="file", disable=not progress) as bar:
        futures = {pool.submit(run, i, url, dest, sha): (i, url) for i, (url, dest, sha) in enumerate(todo)}
        for fut in as_completed(futures):
            i, url = futures[fut]
            try:
                rec = fut.result()
            except Exception as exc:  # noqa: BLE001 - every failure is recorded, none is raised
                report.failed += 1
                report.failures.append((url, f"{type(exc).__name__}: {exc}"))
            else:
                results[i] = rec
                if rec.skipped:
                    report.skipped += 1
                else:
                    report.fetched += 1
            bar.update(1)
            bar.set_postfix(failed=report.failed, refresh=False)
    report.records = [results[i] for i in sorted(results)]
    order = {url: i for i, (url, _, _) in enumerate(todo)}
    report.failures.sort(key=lambda f: order.get(f[0], 0))
    return report
