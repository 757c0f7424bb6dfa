"""The HTML report: built from what exists, checked in headless Chromium."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import analysis_results as F  # noqa: E402

from mmrepr.analysis.report import build_report  # noqa: E402
from mmrepr.analysis.run import run_analysis  # noqa: E402
from mmrepr.manifest import update_manifest  # noqa: E402
from mmrepr.paths import notebooks_dir  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _executed_notebook(path: Path, text: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {text}"),
        nbformat.v4.new_code_cell("1 + 1", execution_count=1, outputs=[
            nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    P = F.params(tmp_path_factory.mktemp("runs"), bootstrap=50)
    F.build(P.run_dir)
    run_analysis(P)
    _executed_notebook(P.run_dir / "notebooks" / "01_data_prep.ipynb", "data stage ran")
    _executed_notebook(P.run_dir / "notebooks" / "04_train.failed.ipynb", "train stage failed")
    _executed_notebook(P.run_dir / "notebooks" / ".05_analysis.ipynb.x.ipynb", "in flight")
    update_manifest(P.run_dir / "manifest.json", profile="fx", params_hash="abc123", git={"commit": "deadbeef"},
                    stages={"data": {"status": "ran", "seconds": 1.5}})
    return P, build_report(P)


def test_index_links_stages_manifest_tables_and_figures(report):
    P, index = report
    assert index == P.run_dir / "report" / "index.html"
    page = index.read_text()
    rdir = index.parent
    links = set(re.findall(r'(?:href|src)="([^"#]+)"', page))
    for link in links:
        assert (rdir / link).is_file(), f"broken link {link}"
    assert "notebooks/01_data_prep.html" in links and "notebooks/04_train.failed.html" in links
    assert not any(".05_analysis" in x for x in links)  # papermill's temporary copy is not a stage
    assert "data stage ran" in (rdir / "notebooks" / "01_data_prep.html").read_text()
    assert "manifest.json" in links and "deadbeef" in page
    for fig in ("content_use_fx", "bars_fx", "planted_vs_measured_fx"):
        assert f'<img src="analysis/figures/{fig}.png"' in page
    for table in ("main", "baselines", "keywords", "controls"):
        assert f"analysis/tables/{table}.csv" in links
    assert "VBPR — " not in page or "uses content" in page
    assert "fx — VBPR: <span class='verdict'>uses content</span>" in page
    assert "fx — LATTICE: <span class='verdict'>no evidence of content use</span>" in page


TIMINGS_SECTION = re.compile(r'<section id="timings">.*?</section>', re.S)


def test_index_keeps_run_bookkeeping_in_its_timings_section(report, tmp_path):
    """Times, durations and the manifest dump sit in one section; the rest of the page depends
    on the results only (tests/test_identical_runs.py strips that section)."""
    P, index = report
    first = index.read_text()
    other = tmp_path / "copy"
    shutil.copytree(P.run_dir, other / P.run_dir.name)
    P2 = P.model_copy(update={"runs_dir": other})
    assert P2.run_dir == other / P.run_dir.name
    update_manifest(P2.run_dir / "manifest.json", started="2099-01-01T00:00:00+00:00",
                    stages={"data": {"status": "ran", "seconds": 98.76, "finished": "2099-01-01T00:01:00+00:00",
                                     "timings": {"chunk": {"items_per_s": 12.5}}}})
    (P2.run_dir / "notebooks" / "01_data_prep.ipynb").touch()
    second = build_report(P2).read_text()
    assert len(TIMINGS_SECTION.findall(second)) == 1
    assert "98.76" in TIMINGS_SECTION.search(second).group() and "98.76" not in TIMINGS_SECTION.sub("", second)
    assert "2099-01-01T00:01:00" in second and "report built" in TIMINGS_SECTION.search(second).group()
    assert TIMINGS_SECTION.sub("", first) == TIMINGS_SECTION.sub("", second)


def test_report_renders_what_exists(tmp_path):
    P = F.params(tmp_path)
    index = build_report(P)  # nothing has run yet
    page = index.read_text()
    assert "has not run yet" in page and "No figures yet" in page


def _serve(directory: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp}", "--virtual-time-budget=10000", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _body_attrs(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (run `make browser`)")
def test_report_loads_in_headless_chromium(report, tmp_path):
    _, index = report
    rdir = index.parent
    # A copy with a broken image: the in-page check must catch it (so the real check can fail).
    broken = rdir / "broken_check.html"
    broken.write_text(index.read_text().replace("analysis/figures/bars_fx.png", "analysis/figures/missing.png", 1))
    server = _serve(rdir)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        res = _chromium(f"{base}/index.html", tmp_path / "p1", "--dump-dom")
        attrs = _body_attrs(res.stdout)
        assert attrs.get("data-check") == "ok", attrs
        assert int(attrs["data-images"]) >= 5 and attrs["data-errors"] == ""
        bad = _body_attrs(_chromium(f"{base}/broken_check.html", tmp_path / "p2", "--dump-dom").stdout)
        assert bad.get("data-check") == "fail" and "missing.png" in bad["data-broken-images"]
        shot = tmp_path / "shot.png"
        _chromium(f"{base}/index.html", tmp_path / "p3", f"--screenshot={shot}", "--window-size=1280,2400")
        import matplotlib.image as mpimg

        img = mpimg.imread(shot)
        assert img.shape[0] >= 2000 and img[..., :3].std() > 0.05, "screenshot is blank"
        nb = _body_attrs(_chromium(f"{base}/notebooks/01_data_prep.html", tmp_path / "p4", "--dump-dom").stdout)
        assert nb is not None
    finally:
        server.shutdown()
        broken.unlink(missing_ok=True)


@pytest.mark.slow
def test_notebook_05_runs_from_saved_results(tmp_path):
    import papermill as pm

    P = F.params(tmp_path, bootstrap=50)
    F.build(P.run_dir)
    out = tmp_path / "05_out.ipynb"
    pm.execute_notebook(str(notebooks_dir() / "05_analysis.ipynb"), str(out), kernel_name="python3",
                        parameters={"params_file": None, "params": P.model_dump(mode="json")},
                        cwd=str(notebooks_dir()), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "VBPR: uses content" in text
    assert (P.run_dir / "report" / "index.html").is_file()
    assert (P.run_dir / "analysis" / "figures" / "content_use_fx.png").is_file()
