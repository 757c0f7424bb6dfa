"""The HTML report: ``runs/<profile>/report/index.html``.

``build_report(P)`` renders what exists, independent of the runner: every executed
notebook in ``runs/<profile>/notebooks/`` (nbconvert), the run manifest, the analysis
tables, the computed answer and the figures (copied beside the index so the report folder
is self-contained and can be served or zipped on its own). Called by ``make report`` /
``python -m mmrepr report PARAMS`` and by the last cell of notebook 05 (which therefore
shows notebook 05's previous run, if any; ``make report`` afterwards includes all five).

The index carries a small script that records, once the page has loaded, whether every
image decoded and whether any error fired (``data-check="ok"`` on ``<body>``): the
browser test reads it with headless Chromium.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from mmrepr.analysis.answer import CORRECTION_NAMES
from mmrepr.io import atomic_open, atomic_path, read_json
from mmrepr.stages import STAGES

log = logging.getLogger("mmrepr.report")

CHECK_SCRIPT = """<script>
(function () {
  var errors = [];
  // Capture phase: also sees resource errors (an <img> that fails to load).
  window.addEventListener('error', function (e) {
    var t = e.target || {};
    errors.push(String(e.message || t.src || t.href || 'error'));
  }, true);
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images);
    var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                  .map(function (i) { return i.getAttribute('src'); });
    var b = document.body;
    b.setAttribute('data-images', String(imgs.length));
    b.setAttribute('data-broken-images', bad.join(' '));
    b.setAttribute('data-errors', errors.join(' | '));
    b.setAttribute('data-check', (bad.length === 0 && errors.length === 0) ? 'ok' : 'fail');
  });
})();
</script>"""

STYLE = """<style>
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table.mmtable, table.plain { border-collapse: collapse; font-size: 0.85em; margin: .5em 0 1em; }
table.mmtable td, table.mmtable th, table.plain td, table.plain th { border: 1px solid #ddd; padding: 2px 6px; }
table.mmtable caption { text-align: left; font-style: italic; padding: 4px 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.answer li { margin: .25em 0; } .verdict { font-weight: bold; }
.muted { color: #777; } pre { background: #f6f6f6; padding: .6em; overflow: auto; font-size: 0.8em; }
</style>"""

KEY_FIGURE_ORDER = ("content_use", "cold_vs_warm", "ablation", "activity", "bars", "planted_vs_measured", "lvlm_quality", "keyword_distributions")


def _e(x: Any) -> str:
    return html.escape(str(x))


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def render_notebook(src: Path, dst: Path) -> Path:
    """One executed notebook to standalone HTML (skipped when the HTML is newer)."""
    if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(src, as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    with atomic_open(dst, "w", encoding="utf-8") as fh:
        fh.write(body)
    return dst


def _notebooks(run_dir: Path, report_dir: Path) -> list[dict[str, Any]]:
    out = []
    nb_dir = run_dir / "notebooks"
    if not nb_dir.is_dir():
        return out
    for src in sorted(nb_dir.glob("*.ipynb")):
        if src.name.startswith("."):  # papermill's in-flight temporary copy
            continue
        rel = Path("notebooks") / (src.name[: -len(".ipynb")] + ".html")
        entry = {"name": src.name, "html": str(rel), "failed": src.name.endswith(".failed.ipynb"),
                 "modified": dt.datetime.fromtimestamp(src.stat().st_mtime).isoformat(timespec="seconds")}
        try:
            render_notebook(src, report_dir / rel)
        except Exception as exc:  # noqa: BLE001 - a broken notebook is listed, not fatal
            entry["error"] = f"{type(exc).__name__}: {exc}"
            log.warning("report: could not render %s: %s", src, exc)
        out.append(entry)
    return out


def _stages_html(manifest: dict[str, Any], notebooks: list[dict[str, Any]]) -> str:
    by_nb = {n["name"]: n for n in notebooks}
    rows = []
    for st in STAGES:
        rec = (manifest.get("stages") or {}).get(st.name, {})
        nb = by_nb.get(st.notebook)
        failed = by_nb.get(st.notebook.replace(".ipynb", ".failed.ipynb"))
        links = []
        for n, label in ((nb, "notebook"), (failed, "failed run")):
            if n and "error" not in n:
                links.append(f'<a href="{_e(n["html"])}">{label}</a>')
            elif n:
                links.append(f'{label}: could not render ({_e(n["error"])})')
        status = rec.get("status", "not run" if not nb else "executed")
        rows.append(
            f"<tr><td>{_e(st.name)}</td><td>{_e(st.notebook)}</td><td>{_e(status)}</td>"
            f"<td>{' · '.join(links) or '—'}</td></tr>"
        )
    return ('<table class="plain"><tr><th>stage</th><th>notebook</th><th>status</th>'
            "<th>rendered</th></tr>" + "".join(rows) + "</table>")


def _timings_html(manifest: dict[str, Any], notebooks: list[dict[str, Any]]) -> str:
    """Everything on the page that changes from run to run (times, durations, the manifest),
    in one ``<section id="timings">`` so the rest of the page depends on the results only."""
    by_nb = {n["name"]: n for n in notebooks}
    rows = []
    for st in STAGES:
        rec = (manifest.get("stages") or {}).get(st.name, {})
        nb = by_nb.get(st.notebook)
        measured = rec.get("timings") or {}
        rows.append(
            f"<tr><td>{_e(st.name)}</td><td>{_e(rec.get('finished', ''))}</td><td>{_e(rec.get('seconds', ''))}</td>"
            f"<td>{len(measured) or ''}</td><td>{_e(nb['modified']) if nb else ''}</td></tr>"
        )
    return (
        '<section id="timings">\n<h2>Timings</h2>\n'
        f'<p class="muted">report built {_e(dt.datetime.now().isoformat(timespec="seconds"))}; run started '
        f'{_e(manifest.get("started", "?"))}. Per-stage measurements (items/s, peak memory, seconds per cell) are '
        "the <code>timings</code> of each stage in the manifest.</p>"
        '<table class="plain"><tr><th>stage</th><th>finished</th><th>seconds</th><th>measurements</th>'
        "<th>notebook modified</th></tr>" + "".join(rows) + "</table>\n"
        f"<details><summary>show manifest.json</summary><pre>{_e(json.dumps(manifest, indent=2, sort_keys=True))}"
        "</pre></details>\n</section>"
    )


def _answer_html(answer: dict[str, Any] | None) -> str:
    if not answer:
        return '<p class="muted">The analysis stage has not run yet: no computed answer.</p>'
    parts = [f"<p>Primary metric {_e(answer['primary_metric'])}, alpha = {_e(answer['alpha'])}. "
             "Every sentence is generated from the significance table.</p>"]
    if not answer.get("records"):
        parts.append("<p>No comparisons could be made.</p>")
    heads = [rec["headline"] for rec in answer.get("records", []) if rec.get("headline")]
    if heads:
        parts.append('<ul class="answer verdict">' + "".join(f"<li>{_e(h)}</li>" for h in heads) + "</ul>")
    for rec in answer.get("records", []):
        head = rec["model"] + (f" on {rec['feature_set']}" if rec.get("feature_set") else "")
        verdict = rec.get("content_verdict") or rec.get("keywords_verdict", "")
        parts.append(f"<h3>{_e(rec['dataset'])} — {_e(head)}: <span class='verdict'>{_e(verdict)}</span></h3>")
        parts.append('<ul class="answer">' + "".join(f"<li>{_e(s.strip())}</li>" for s in rec["sentences"]) + "</ul>")
    return "\n".join(parts)


SLICE_NAMES = {"test": "warm items", "test_cold": "cold items", "test_all": "whole catalogue"}


def _slices_html(index: dict[str, Any]) -> str:
    """Which test slices have results, per dataset (an absent one is said, not hidden)."""
    sl = index.get("slices") or {}
    if not sl:
        return ""
    items = []
    for ds, have in sorted(sl.items()):
        parts = [f"{_e(SLICE_NAMES.get(s, s))}: {'yes' if ok else '<b>absent</b> (no results in train/best.parquet)'}"
                 for s, ok in have.items()]
        items.append(f"<li>{_e(ds)} — {'; '.join(parts)}</li>")
    return ('<p>Test slices (see the <code>slices</code> table, <a href="analysis/tests_by_slice.csv">tests per '
            'slice (CSV)</a>):</p><ul>' + "".join(items) + "</ul>")


def _checks_html(adir: Path, index: dict[str, Any]) -> str:
    """The checks against the planted truth (synthetic data): how many passed, and each failure."""
    if not index.get("truth_checks"):
        return ""
    import pandas as pd

    path = adir / "truth_checks.csv"
    checks = pd.read_csv(path, keep_default_na=False) if path.is_file() else pd.DataFrame()
    n, ok = index["truth_checks"]["n"], index["truth_checks"]["passed"]
    failed = checks[checks["passed"].astype(str) != "True"] if len(checks) else checks
    items = "".join(f"<li>FAILED: {_e(r.check)} — {_e(r.model)} on {_e(r.feature_set)}"
                    f"{' vs ' + _e(r.control) if r.control else ''} ({_e(r.dataset)}): {_e(r.detail)}</li>"
                    for r in failed.itertuples())
    return (f'<h2>Checks against the planted truth</h2><p>{_e(ok)} of {_e(n)} checks passed '
            f'(<a href="analysis/truth_checks.csv">truth_checks.csv</a>).</p>' + (f"<ul>{items}</ul>" if items else ""))


def build_report(P) -> Path:
    run_dir = Path(P.run_dir)
    report_dir = run_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    notebooks = _notebooks(run_dir, report_dir)

    manifest_path = run_dir / "manifest.json"
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            manifest = read_json(manifest_path)
        except ValueError:
            manifest = {"error": f"{manifest_path} is not valid JSON"}
        _copy(manifest_path, report_dir / "manifest.json")

    # Analysis artefacts, copied so the report folder stands alone.
    adir = run_dir / "analysis"
    index = read_json(adir / "index.json") if (adir / "index.json").is_file() else {}
    answer = read_json(adir / "answer.json") if (adir / "answer.json").is_file() else None
    problems = read_json(adir / "problems.json") if (adir / "problems.json").is_file() else None
    for pattern in ("figures/*.png", "figures/*.svg", "tables/*.csv", "tables/*.html", "*.csv", "*.md", "*.json"):
        for src in adir.glob(pattern):
            _copy(src, report_dir / "analysis" / src.relative_to(adir))

    figs = index.get("figures", {})
    ordered = sorted(figs, key=lambda k: (next((i for i, p in enumerate(KEY_FIGURE_ORDER) if k.startswith(p)), 99), k))
    fig_html = []
    for key in ordered:
        f = figs[key]
        if "png" not in f or not (report_dir / "analysis" / f["png"]).is_file():
            continue
        svg = f' · <a href="analysis/{_e(f["svg"])}">SVG</a>' if "svg" in f else ""
        fig_html.append(
            f'<figure><img src="analysis/{_e(f["png"])}" alt="{_e(key)}">'
            f'<figcaption>{_e(key)} — <a href="analysis/{_e(f["png"])}">PNG</a>{svg}</figcaption></figure>'
        )
    table_html = []
    order = {n: i for i, n in enumerate(("main", "controls", "slices", "truth_checks", "keywords", "baselines"))}
    for name, paths in sorted(index.get("tables", {}).items(), key=lambda kv: (order.get(kv[0], 99), kv[0])):
        frag = report_dir / "analysis" / paths["html"]
        body = frag.read_text(encoding="utf-8") if frag.is_file() else ""
        table_html.append(
            f'<h3>{_e(name)}</h3><p><a href="analysis/{_e(paths["csv"])}">CSV</a> · '
            f'<a href="analysis/{_e(paths["html"])}">HTML</a></p>{body}'
        )
    prob_html = ""
    if problems and problems.get("count"):
        prob_html = ("<h2>Input problems (counted, not dropped silently)</h2><ul>"
                     + "".join(f"<li>{_e(p)}</li>" for p in problems["problems"]) + "</ul>")

    git = manifest.get("git") or {}
    title = f"mmrepr report — {P.profile}"
    summary_line = (
        f"{_e(index.get('n_tests', 0))} paired tests, {_e(index.get('n_significant', 0))} significant after "
        f"{_e(CORRECTION_NAMES.get(index.get('correction'), index.get('correction')))} correction (alpha {_e(P.analysis.alpha)}, "
        f"{_e(index.get('bootstrap', P.analysis.bootstrap))} bootstrap resamples)."
        if index else "The analysis stage has not run yet."
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
{STYLE}
{CHECK_SCRIPT}
</head><body>
<h1>{_e(title)}</h1>
<p>{_e(P.description)}</p>
<p class="muted">params hash {_e(str(manifest.get('params_hash', P.hash))[:12])} · git {_e(str(git.get('commit'))[:12])}
{'(dirty)' if git.get('dirty') else ''} · seed {_e(P.seed)}</p>
<h2>Stages</h2>
{_stages_html(manifest, notebooks)}
<p><a href="manifest.json">Run manifest (manifest.json)</a>: params, package versions, git commit, seeds, host, per-stage timings (<a href="#timings">below</a>).</p>
<h2>The computed answer</h2>
<p>{summary_line} <a href="analysis/tests.csv">All tests (CSV)</a> · <a href="analysis/answer.md">answer.md</a></p>
{_slices_html(index)}
{_answer_html(answer)}
{_checks_html(adir, index)}
<h2>Key figures</h2>
{''.join(fig_html) or '<p class="muted">No figures yet.</p>'}
<h2>Tables</h2>
{''.join(table_html) or '<p class="muted">No tables yet.</p>'}
{prob_html}
{_timings_html(manifest, notebooks)}
</body></html>
"""
    out = report_dir / "index.html"
    with atomic_open(out, "w", encoding="utf-8") as fh:
        fh.write(page)
    return out
