"""One run per run folder: a second run stops (or waits) naming the holder; a killed holder's lock is taken over."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from mmrepr.runner import LOCK_INFO, RunLocked, run
from test_runner import executions, make_project  # noqa: F401


@pytest.fixture
def project(tmp_path, monkeypatch):
    proj = make_project(tmp_path)
    monkeypatch.setenv("MMREPR_ROOT", str(proj))
    return proj


def start_holder(project):
    """A `python -m mmrepr run` in another process, held inside the features stage."""
    p = project / "params" / "t.yaml"
    (project / "slow_features").write_text("1")
    env = dict(os.environ, MMREPR_ROOT=str(project))
    proc = subprocess.Popen([sys.executable, "-m", "mmrepr", "run", str(p), "--stages", "data", "features"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not (project / "started_features").exists():
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.2)
    return proc


@pytest.mark.slow
def test_second_run_stops_naming_the_holder_and_a_killed_holder_is_taken_over(project, capsys):
    p = project / "params" / "t.yaml"
    run_dir = project / "runs" / "t"
    proc = start_holder(project)
    try:
        with pytest.raises(RunLocked) as e:
            run(p, stages=["data"])
        msg = str(e.value)
        assert str(run_dir) in msg and f"pid {proc.pid}" in msg and "mmrepr run" in msg and "started" in msg, msg
        assert executions(project) == ["data", "features"]  # the second run ran nothing
        info = json.loads((run_dir / LOCK_INFO).read_text())
        assert info["pid"] == proc.pid
        # a temporary file as a killed write leaves it
        stale = run_dir / "data" / ".result.json.abc123.tmp"
        stale.write_text("half")
        stale_nb = run_dir / "notebooks" / ".02_feature_extraction.ipynb.xyz.tmp"
        stale_nb.write_text("half")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (project / "slow_features").unlink()
    capsys.readouterr()
    res = run(p, stages=["data", "features"])
    out = capsys.readouterr().out
    assert [r.status for r in res] == ["skipped", "ran"]
    assert f"pid {proc.pid}" in out and "taking over" in out and "no longer running" in out
    assert not stale.exists() and not stale_nb.exists()
    # ours and the killed run's own (papermill's notebook being written)
    assert "temporary file(s) left by an interrupted run" in out
    assert not [f for f in run_dir.rglob(".*") if f.name.endswith((".tmp", ".ipynb"))]
    assert not (run_dir / LOCK_INFO).exists()  # released at the end


@pytest.mark.slow
def test_second_run_waits_for_the_holder(project, capsys):
    p = project / "params" / "t.yaml"
    proc = start_holder(project)
    # the holder is killed 3 s into the wait; the waiting run then takes the folder over
    killer = threading.Timer(3.0, lambda: os.killpg(proc.pid, signal.SIGKILL))
    killer.start()
    try:
        (project / "slow_features").unlink()
        t0 = time.time()
        res = run(p, stages=["data", "features"], wait=60)
        waited = time.time() - t0
    finally:
        killer.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out = capsys.readouterr().out
    assert "waiting up to 60s" in out and f"pid {proc.pid}" in out
    assert waited >= 2.5
    assert [r.status for r in res] == ["skipped", "ran"]


def test_cli_exit_code_and_message(project, capsys):
    """The command line reports a held folder as an error (exit 2), naming the holder."""
    from filelock import FileLock

    from mmrepr.cli import main

    run_dir = project / "runs" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / LOCK_INFO).write_text(json.dumps({"pid": 4242, "host": "h", "started": "2020", "command": "x"}))
    with FileLock(str(run_dir / ".run.lock")):
        assert main(["run", str(project / "params" / "t.yaml")]) == 2
    err = capsys.readouterr().err
    assert "in use by another run" in err and "pid 4242 on h" in err
