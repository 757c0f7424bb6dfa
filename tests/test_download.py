"""download / fetch_many against a local HTTP server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mmrepr.data.download import ChecksumError, DownloadError, download, fetch_many

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes, every offset distinguishable
SHA = hashlib.sha256(PAYLOAD).hexdigest()
FAST = dict(retries=4, backoff=0.01, timeout=2, progress=False)


class Handler(BaseHTTPRequestHandler):
    # Class-level state, reset by the fixture: requests seen per path, and their Range headers.
    hits: dict[str, int] = defaultdict(int)
    ranges: dict[str, list] = defaultdict(list)
    lock = threading.Lock()

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _count(self) -> int:
        with self.lock:
            self.hits[self.path] += 1
            self.ranges[self.path].append(self.headers.get("Range"))
            return self.hits[self.path]

    def _send(self, status, body=b"", headers=None, length=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _serve(self, honour_range=True):
        rng = self.headers.get("Range")
        if rng and honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(PAYLOAD):
                self._send(416, b"", {"Content-Range": f"bytes */{len(PAYLOAD)}"})
                return
            body = PAYLOAD[start:]
            self._send(206, body, {"Content-Range": f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"})
        else:
            self._send(200, PAYLOAD)

    def do_GET(self):  # noqa: C901 - one branch per scenario
        n = self._count()
        kind = self.path.strip("/").split("/")[0]
        try:
            if kind == "ok":
                self._serve()
            elif kind == "missing":
                self._send(404, b"not here")
            elif kind == "forbidden":
                self._send(403, b"no")
            elif kind == "ratelimit":
                if n == 1:
                    self._send(429, b"slow down", {"Retry-After": "1"})
                else:
                    self._serve()
            elif kind == "flaky":  # two 503s, then the file
                if n <= 2:
                    self._send(503, b"busy")
                else:
                    self._serve()
            elif kind == "down":
                self._send(500, b"broken")
            elif kind == "stall":  # half the body, then silence longer than the client's timeout
                if n == 1:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(PAYLOAD)))
                    self.end_headers()
                    self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
                    self.wfile.flush()
                    time.sleep(1.5)
                else:
                    self._serve()
            elif kind in ("truncated", "norange"):  # promises the full length, sends 40%, hangs up
                if n == 1:
                    self._send(200, PAYLOAD[: len(PAYLOAD) * 2 // 5], length=len(PAYLOAD))
                    self.close_connection = True
                else:
                    self._serve(honour_range=(kind == "truncated"))
            else:
                self._send(400, b"?")
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture()
def server():
    Handler.hits = defaultdict(int)
    Handler.ranges = defaultdict(list)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_plain_download_records_size_sha_and_skips_second_time(server, tmp_path):
    dest = tmp_path / "a" / "file.bin"
    rec = download(f"{server}/ok/1", dest, sha256=SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert (rec.bytes, rec.sha256, rec.attempts, rec.resumed, rec.skipped) == (len(PAYLOAD), SHA, 1, False, False)
    assert not dest.with_name("file.bin.part").exists()
    again = download(f"{server}/ok/1", dest, sha256=SHA, **FAST)
    assert again.skipped and again.attempts == 0
    assert Handler.hits["/ok/1"] == 1  # no second request


def test_existing_file_with_wrong_sha_is_fetched_again(server, tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    rec = download(f"{server}/ok/2", dest, sha256=SHA, **FAST)
    assert not rec.skipped and dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("path,status", [("/missing/x", 404), ("/forbidden/x", 403)])
def test_permanent_errors_fail_at_once_naming_url_and_status(server, tmp_path, path, status):
    with pytest.raises(DownloadError) as ei:
        download(server + path, tmp_path / "x", **FAST)
    assert ei.value.status == status
    assert server + path in str(ei.value) and str(status) in str(ei.value)
    assert Handler.hits[path] == 1  # not retried
    assert not (tmp_path / "x").exists()


def test_429_honours_retry_after(server, tmp_path):
    t0 = time.monotonic()
    rec = download(f"{server}/ratelimit/1", tmp_path / "r.bin", **FAST)
    elapsed = time.monotonic() - t0
    assert rec.attempts == 2 and (tmp_path / "r.bin").read_bytes() == PAYLOAD
    assert elapsed >= 0.95  # waited Retry-After: 1, not the 0.01 s backoff


def test_5xx_is_retried_then_gives_up(server, tmp_path):
    rec = download(f"{server}/flaky/1", tmp_path / "f.bin", **FAST)
    assert rec.attempts == 3 and rec.sha256 == SHA
    with pytest.raises(DownloadError, match=r"giving up after 3 attempts.*HTTP 500"):
        download(f"{server}/down/1", tmp_path / "d.bin", **{**FAST, "retries": 2})
    assert Handler.hits["/down/1"] == 3


def test_read_timeout_mid_body_resumes_with_range(server, tmp_path):
    rec = download(f"{server}/stall/1", tmp_path / "s.bin", sha256=SHA, **{**FAST, "timeout": 0.4})
    assert (tmp_path / "s.bin").read_bytes() == PAYLOAD
    assert rec.attempts == 2 and rec.resumed
    assert Handler.ranges["/stall/1"] == [None, f"bytes={len(PAYLOAD) // 2}-"]


def test_truncated_body_is_resumed_via_range(server, tmp_path):
    rec = download(f"{server}/truncated/1", tmp_path / "t.bin", sha256=SHA, **FAST)
    assert (tmp_path / "t.bin").read_bytes() == PAYLOAD
    assert rec.resumed and rec.attempts == 2
    assert Handler.ranges["/truncated/1"] == [None, f"bytes={len(PAYLOAD) * 2 // 5}-"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    rec = download(f"{server}/norange/1", tmp_path / "n.bin", sha256=SHA, **FAST)
    # A naive append would give 140% of the file; the 200 must replace the partial bytes.
    assert (tmp_path / "n.bin").read_bytes() == PAYLOAD
    assert not rec.resumed and rec.attempts == 2
    assert Handler.ranges["/norange/1"][1] is not None  # it did ask for a range


def test_leftover_part_file_is_resumed(server, tmp_path):
    dest = tmp_path / "p.bin"
    dest.with_name("p.bin.part").write_bytes(PAYLOAD[:1000])  # a previous run was killed
    rec = download(f"{server}/ok/3", dest, sha256=SHA, **FAST)
    assert rec.resumed and dest.read_bytes() == PAYLOAD
    assert Handler.ranges["/ok/3"] == ["bytes=1000-"]


def test_checksum_mismatch_names_url_and_hashes_and_removes_file(server, tmp_path):
    dest = tmp_path / "c.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as ei:
        download(f"{server}/ok/4", dest, sha256=wrong, **FAST)
    msg = str(ei.value)
    assert f"{server}/ok/4" in msg and wrong in msg and SHA in msg
    assert not dest.exists() and not dest.with_name("c.bin.part").exists()


def test_file_url_copy_with_checks(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    rec = download(src.as_uri(), tmp_path / "out" / "dst.bin", sha256=SHA, progress=False)
    assert (tmp_path / "out" / "dst.bin").read_bytes() == PAYLOAD and rec.sha256 == SHA
    with pytest.raises(ChecksumError):
        download(src.as_uri(), tmp_path / "bad.bin", sha256="1" * 64, progress=False)
    assert not (tmp_path / "bad.bin").exists()
    with pytest.raises(DownloadError, match="does not exist"):
        download((tmp_path / "nope.bin").as_uri(), tmp_path / "n.bin", progress=False)


def test_fetch_many_records_failures_and_skips(server, tmp_path):
    (tmp_path / "have.bin").write_bytes(b"already here")
    jobs = [(f"{server}/ok/{i}", tmp_path / f"ok{i}.bin") for i in range(6)]
    jobs += [(f"{server}/missing/{i}", tmp_path / f"m{i}.bin") for i in range(3)]
    jobs += [(f"{server}/ok/have", tmp_path / "have.bin")]
    jobs += [(f"{server}/ok/0", tmp_path / "ok0.bin")]  # duplicate destination: run once
    rep = fetch_many(jobs, workers=4, **FAST)
    assert (rep.fetched, rep.skipped, rep.failed) == (6, 1, 3)
    assert {u for u, _ in rep.failures} == {f"{server}/missing/{i}" for i in range(3)}
    assert all("404" in e for _, e in rep.failures)
    assert all((tmp_path / f"ok{i}.bin").read_bytes() == PAYLOAD for i in range(6))
    assert (tmp_path / "have.bin").read_bytes() == b"already here"
    assert Handler.hits["/ok/have"] == 0 and Handler.hits["/ok/0"] == 1
    assert "failed 3" in rep.summary()
    rep2 = fetch_many(jobs[:6], workers=2, **FAST)
    assert (rep2.fetched, rep2.skipped, rep2.failed) == (0, 6, 0)


def test_complete_part_file_left_by_a_killed_run_is_finished(server, tmp_path):
    dest = tmp_path / "done.bin"
    dest.with_name("done.bin.part").write_bytes(PAYLOAD)  # killed between last byte and rename
    rec = download(f"{server}/ok/5", dest, sha256=SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD and rec.attempts == 1
    assert Handler.ranges["/ok/5"] == [f"bytes={len(PAYLOAD)}-"]  # answered 416, nothing re-sent
