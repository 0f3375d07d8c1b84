"""The experiment queue, as docs/experiments/thesis.md (*More cores, more GPUs, more machines*)
documents it for scaling a parameter sweep over cores or machines: two experiments queued with
``dvc exp run --queue -S``, run by ``dvc queue start``, and both results collected from
``dvc exp show --json``.

Queueing runs in-process through ``dvc.cli.main`` (the shell command's code path, without
a new interpreter per command) and results are read with ``dvc.api.exp_show`` (the rows of
``dvc exp show``); ``dvc queue start``, its worker and the experiments are separate
processes, as in use.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

STEP = textwrap.dedent("""
    import json
    import yaml

    x = yaml.safe_load(open("params.yaml"))["x"]
    json.dump({"y": x * 10}, open("metrics.json", "w"))
""")


def run_dvc(*args: str) -> None:
    """Run one dvc command in-process (AssertionError on a non-zero exit)."""
    from dvc.cli import main

    code = main(list(args))
    assert code == 0, f"dvc {' '.join(args)} exited with {code}"


def finished(rows: list[dict]) -> dict[float, tuple[str, float]]:
    """``x -> (state, y)`` for every queued experiment in ``dvc.api.exp_show()`` rows."""
    return {row["x"]: (row["State"], row.get("y")) for row in rows
            if row.get("Experiment") and row.get("State")}


def experiment_refs() -> list[str]:
    """The git refs of finished experiments (``refs/exps/<baseline sha>/<name>``) in the
    working directory's repo."""
    listed = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
                            capture_output=True, text=True, check=True)
    return [ref for ref in listed.stdout.split()
            if re.fullmatch(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/[^/]+", ref)]


@pytest.fixture()
def exp_repo(tmp_path, monkeypatch):
    """A committed git+dvc repo with one stage: params.yaml's x -> metrics.json's y = 10 x."""
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    # the queue worker is spawned as `dvc` from PATH: this environment's
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    for key, value in {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
                       "GIT_COMMITTER_NAME": "test",
                       "GIT_COMMITTER_EMAIL": "test@example.org"}.items():
        monkeypatch.setenv(key, value)
    subprocess.run(["git", "init", "-q"], check=True)
    (repo / "params.yaml").write_text("x: 0\n")
    (repo / "step.py").write_text(STEP)
    (repo / "dvc.yaml").write_text(textwrap.dedent(f"""
        stages:
          step:
            cmd: {sys.executable} step.py
            deps: [step.py]
            params: [x]
            metrics:
              - metrics.json:
                  cache: false
    """))
    run_dvc("init", "-q")
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", "one stage"], check=True)
    return repo


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_queued_experiments_run_and_both_results_are_collected(exp_repo):
    import dvc.api

    run_dvc("exp", "run", "--queue", "-S", "x=1")
    run_dvc("exp", "run", "--queue", "-S", "x=2")
    # a separate process, as from the shell: the worker it spawns must not be our child
    subprocess.run(["dvc", "queue", "start", "--jobs", "1"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # wait cheaply (an experiment that succeeded leaves a git ref under refs/exps), then read
    # the results once: polling `exp show` would compete with the worker for the 2 cores
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(experiment_refs()) < 2:
        time.sleep(0.5)
    if len(experiment_refs()) < 2:  # the worker leaves by itself once the queue is empty
        subprocess.run(["dvc", "queue", "stop", "--kill"], capture_output=True)
    states = {}
    while time.monotonic() < deadline + 30:  # the queue marks a task done just after its ref
        with contextlib.suppress(Exception):  # a running task's temp dir may vanish mid-read
            states = finished(dvc.api.exp_show())
        if len(states) == 2 and all(s in ("Success", "Failed") for s, _ in states.values()):
            break
        time.sleep(1)
    assert states == {1: ("Success", 10), 2: ("Success", 20)}
