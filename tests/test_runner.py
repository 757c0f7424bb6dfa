"""The papermill runner: skip when up to date, rerun on change, fail clearly, survive a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from mmrepr.runner import StageFailed, run

ROOT = Path(__file__).resolve().parents[1]

NOTEBOOK_BODY = """
import json, os, pathlib, time
run_dir = pathlib.Path(params["runs_dir"]) / params["profile"]
root = run_dir.parent.parent
with open(root / "executions.log", "a") as fh:
    fh.write("{stage}\\n")
if (root / "fail_{stage}").exists():
    raise RuntimeError("planted failure in {stage}")
(root / "started_{stage}").write_text("1")
if (root / "slow_{stage}").exists():
    time.sleep(60)
out = run_dir / "{output}"
out.mkdir(parents=True, exist_ok=True)
(out / "result.json").write_text(json.dumps(params["{section}"], sort_keys=True))
"""


def make_project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    (proj / "notebooks").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("[project]\nname='x'\n")
    for name, stage, output, section in [
        ("01_data_prep.ipynb", "data", "data", "data"),
        ("02_feature_extraction.ipynb", "features", "features", "features"),
    ]:
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_code_cell("params_file = None\nparams = None", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(NOTEBOOK_BODY.format(stage=stage, output=output, section=section)),
        ]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, proj / "notebooks" / name)
    (proj / "params").mkdir()
    (proj / "params" / "t.yaml").write_text(
        f"profile: t\nruns_dir: {proj / 'runs'}\ndata:\n  source: synthetic\n  synthetic: {{n_users: 20}}\n"
    )
    return proj


@pytest.fixture
def project(tmp_path, monkeypatch):
    proj = make_project(tmp_path)
    monkeypatch.setenv("MMREPR_ROOT", str(proj))
    return proj


def executions(proj):
    log = proj / "executions.log"
    return log.read_text().split() if log.exists() else []


def test_skip_rerun_force_and_manifest(project):
    p = project / "params" / "t.yaml"
    res = run(p, stages=["data", "features"])
    assert [r.status for r in res] == ["ran", "ran"]
    assert executions(project) == ["data", "features"]
    res = run(p, stages=["data", "features"])
    assert [r.status for r in res] == ["skipped", "skipped"]
    assert executions(project) == ["data", "features"]

    # A change in the features section reruns features only; a change in data reruns both.
    p.write_text(p.read_text() + "features:\n  batch_size: 7\n")
    assert [r.status for r in run(p, stages=["data", "features"])] == ["skipped", "ran"]
    p.write_text(p.read_text().replace("n_users: 20", "n_users: 21"))
    assert [r.status for r in run(p, stages=["data", "features"])] == ["ran", "ran"]
    assert [r.status for r in run(p, stages=["data"], force=True)] == ["ran"]

    man = json.loads((project / "runs" / "t" / "manifest.json").read_text())
    assert man["profile"] == "t" and len(man["params_hash"]) == 64
    assert man["packages"]["cornac"] and man["packages"]["torch"]
    assert man["seed"] == 123 and "cpu_count" in man["host"] and "commit" in man["git"]
    assert man["stages"]["data"]["status"] == "ran" and man["stages"]["data"]["seconds"] > 0
    assert (project / "runs" / "t" / "notebooks" / "01_data_prep.ipynb").is_file()


def test_deleted_output_reruns(project):
    p = project / "params" / "t.yaml"
    run(p, stages=["data"])
    (project / "runs" / "t" / "data" / "result.json").unlink()
    (project / "runs" / "t" / "data").rmdir()
    assert [r.status for r in run(p, stages=["data"])] == ["ran"]


def test_failure_is_clear_and_leaves_no_record(project):
    p = project / "params" / "t.yaml"
    (project / "fail_data").write_text("1")
    with pytest.raises(StageFailed) as e:
        run(p, stages=["data"])
    msg = str(e.value)
    assert "stage data failed" in msg and "planted failure in data" in msg and "failed.ipynb" in msg
    assert not (project / "runs" / "t" / ".stages" / "data.json").exists()
    assert not (project / "runs" / "t" / "notebooks" / "01_data_prep.ipynb").exists()
    (project / "fail_data").unlink()
    assert [r.status for r in run(p, stages=["data"])] == ["ran"]


def test_missing_upstream_is_clear(project):
    with pytest.raises(StageFailed, match=r"features needs data first"):
        run(project / "params" / "t.yaml", stages=["features"])


def test_killed_run_resumes(project):
    """SIGKILL mid-stage: no record, no half-written notebook; the next run completes."""
    p = project / "params" / "t.yaml"
    run(p, stages=["data"])
    (project / "slow_features").write_text("1")
    env = dict(os.environ, MMREPR_ROOT=str(project))
    proc = subprocess.Popen([sys.executable, "-m", "mmrepr", "run", str(p), "--stages", "data", "features"],
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while not (project / "started_features").exists():
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = project / "runs" / "t"
    assert not (run_dir / ".stages" / "features.json").exists()
    assert not (run_dir / "notebooks" / "02_feature_extraction.ipynb").exists()
    (project / "slow_features").unlink()
    res = run(p, stages=["data", "features"])
    assert [r.status for r in res] == ["skipped", "ran"]
    assert json.loads((run_dir / "features" / "result.json").read_text())["batch_size"] == 32


BAR = "\rLoading weights: 100%|██████████| 103/103 [00:00<00:00, 10453.79it/s]"


@pytest.mark.parametrize("split", [True, False], ids=["newline-in-next-message", "newline-with-the-bar"])
def test_a_progress_bar_leaves_nothing_behind_wherever_its_newline_was_flushed(split):
    # tqdm writes the closing newline on its own; in one run it reached the notebook with the
    # bar, in the next at the start of the following log line (a flaky "identical runs" diff)
    from mmrepr.runner import strip_timing

    def stderr(text):
        return nbformat.v4.new_output("stream", name="stderr", text=text)

    def cell(*texts):
        c = nbformat.v4.new_code_cell("x")
        c.outputs = [stderr(t) for t in texts]
        nb = nbformat.v4.new_notebook(cells=[c])
        strip_timing(nb)
        return [o["text"] for o in nb.cells[0].outputs]

    texts = (BAR, "\nextract minilm: 38 encoded\n") if split else (BAR + "\n", "extract minilm: 38 encoded\n")
    assert cell(*texts) == ["extract minilm: 38 encoded\n"]
    # a blank line of the program's own, not after a bar, is kept (in the stream's one output)
    assert cell("a\n", "\nb\n") == ["a\n\nb\n"]
    assert cell(BAR + "\n", "\nb\n") == ["\nb\n"]


def test_a_print_flushed_in_two_messages_is_one_output():
    # under load the kernel sent print's text and its newline separately (a flaky
    # "identical runs" diff of notebook 05); a display between two streams keeps them apart
    from mmrepr.runner import strip_timing

    def run(*outs):
        c = nbformat.v4.new_code_cell("x")
        c.outputs = list(outs)
        nb = nbformat.v4.new_notebook(cells=[c])
        strip_timing(nb)
        return [(o["output_type"], o.get("name"), o.get("text")) for o in nb.cells[0].outputs]

    out, err = (lambda t: nbformat.v4.new_output("stream", name="stdout", text=t),
                lambda t: nbformat.v4.new_output("stream", name="stderr", text=t))
    shown = nbformat.v4.new_output("display_data", data={"text/plain": "x"})
    assert run(out("no ablations"), out("\n")) == run(out("no ablations\n")) == [
        ("stream", "stdout", "no ablations\n")]
    assert run(out("a\n"), shown, out("b\n")) == [("stream", "stdout", "a\n"), ("display_data", None, None),
                                                 ("stream", "stdout", "b\n")]
    assert run(err("log\n"), out("a\n")) == [("stream", "stderr", "log\n"), ("stream", "stdout", "a\n")]
