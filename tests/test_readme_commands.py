"""Every command of the README's command table (under *Two commands*) works as a new user runs
it, and has a test here that runs it: :data:`COMMAND_TESTS` maps each command to its tests, and
a command added to the table without an entry fails
:func:`test_every_readme_command_has_a_test`.

Commands that change the tree (``make results``, the presets, ``make data``) run in a copy of
the checkout (its files as a clone of them would have them, ``.venv`` linked): the checkout's
own ``params/``, README and reports stay as they are, even while a ``dvc repro`` reads them.
No test here remakes the environment: ``make`` runs with ``-o .venv/.installed``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from conftest import WBC_CLASSES, require, save_tiny_model
from leuko.pipeline import presets
from leuko.tool import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAKE = shutil.which("make") or "make"
VENV_BIN = Path(sys.executable).parent
LEUKO = VENV_BIN / "leuko"
#: never rebuild the environment from a test (in a copy that would re-point the editable
#: install at the copy); ``KEEP_DATA`` also takes the pulled data as current
KEEP_ENV = ("-o", ".venv/.installed")
KEEP_DATA = (*KEEP_ENV, "-o", ".dvc/tmp/data-pulled")
LAB_START_SECONDS = 120
LAB_STOP_SECONDS = 30

#: command of the README's table -> the tests that run it ("name" here, "file::name" in tests/)
COMMAND_TESTS: dict[str, tuple[str, ...]] = {
    "make study": ("test_make_study_and_make_test_run_what_the_readme_says",
                   "test_smoke.py::test_every_network_builds_caches_features_and_every_regime_trains",
                   "test_pipeline.py::test_wbc_notebooks_run_with_their_defaults"),
    "make test": ("test_make_study_and_make_test_run_what_the_readme_says",),
    "make data": ("test_make_data_refuses_to_delete_files_it_did_not_put_there",),
    "make lab": ("test_make_lab_serves_the_leuko_kernel_as_default_and_stops",),
    "make preset-full": ("test_make_presets_round_trip_the_parameter_files",
                         "test_project.py::test_full_preset_lists_all_thesis_trainings_and_default_restores"),
    "make preset-smoke": ("test_make_presets_round_trip_the_parameter_files",),
    "make preset-spread": ("test_make_presets_round_trip_the_parameter_files",),
    "make preset-default": ("test_make_presets_round_trip_the_parameter_files",),
    "make results": ("test_make_results_a_second_time_changes_nothing",),
    "make bench": ("test_make_bench_quick_runs_every_section_and_prints_its_ratio",),
    "make lint": ("test_make_lint_passes",),
    "leuko classify": ("test_leuko_classify_and_score_from_a_folder_outside_the_checkout",
                       "test_leuko_classify_finds_the_model_or_says_where_it_looked"),
    "leuko score": ("test_leuko_classify_and_score_from_a_folder_outside_the_checkout",),
    "leuko export": ("test_leuko_export_from_a_folder_outside_the_checkout",),
    "leuko adapt": ("test_adapt.py::test_adaptation_raises_the_cross_validated_score",
                    "test_adapt.py::test_classify_reads_the_adapted_model_and_it_does_better_on_held_out_cells"),
}


# --- helpers -----------------------------------------------------------------------------------


def readme_commands(text: str) -> list[str]:
    """The commands of the table under *Two commands*, each as its first two words
    (``make preset-full``, ``leuko classify``), in table order."""
    section = text.split("\n## Two commands", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        if line.startswith("| `"):
            for command in re.findall(r"`([^`]+)`", line.split("|")[1]):
                commands.append(" ".join(command.split()[:2]))
    return commands


def defined_tests(path: Path) -> set[str]:
    """The names of the test functions a test file defines."""
    return {node.name for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def make(*args: str, cwd: Path = ROOT, keep=KEEP_ENV, timeout: float = 300,
         env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MAKE, "--no-print-directory", *keep, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def said(done: subprocess.CompletedProcess) -> str:
    """A finished command's output, for an assertion's message."""
    return f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def tree_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links to folders not followed) -> its bytes."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = Path(parent) / name
            if path.is_file():
                files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def changed(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


@pytest.fixture()
def checkout_copy(tmp_path) -> Path:
    """A copy of the checkout's files as a clone of the working tree would have them (tracked
    files and new ones git does not ignore; no data/, build/ or .venv), ``.venv`` linked, in a
    git repository of its own (DVC wants one)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    copy = tmp_path / "checkout"
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    return copy


def cell_images(folder: Path, per_class: int = 2) -> Path:
    """``folder/<CLASS>/<n>.png``: small plain images, their folder naming their label."""
    for k, label in enumerate(WBC_CLASSES):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            colour = (40 * k + 30 * n, 200 - 40 * k, 90 + 20 * n)
            Image.new("RGB", (24, 24), colour).save(folder / label / f"{n}.png")
    return folder


def leuko_command() -> list[str]:
    """The ``leuko`` console script as the user's shell finds it after activating .venv."""
    return [str(LEUKO)] if LEUKO.exists() else [sys.executable, "-m", "leuko.tool.cli"]


# --- the table --------------------------------------------------------------------------------


def test_every_readme_command_has_a_test():
    """A command added to the README's table without a test here fails; every test named
    exists."""
    commands = readme_commands(README.read_text())
    assert {"make study", "make test", "make lab", "make bench", "leuko classify"} <= set(
        commands), commands
    missing = [c for c in commands if c not in COMMAND_TESTS]
    assert not missing, (f"README commands without a test: {missing}; write one and add it to "
                         "COMMAND_TESTS in tests/test_readme_commands.py")
    for command in commands:
        for test in COMMAND_TESTS[command]:
            file, _, name = test.rpartition("::")
            path = ROOT / "tests" / file if file else Path(__file__)
            assert path.is_file() and name in defined_tests(path), \
                f"{command}: no test {test} in {path}"


def test_every_make_command_of_the_table_is_a_make_target():
    for command in readme_commands(README.read_text()):
        if command.startswith("make "):
            done = make("-n", command.split()[1], keep=KEEP_DATA, timeout=60)
            assert done.returncode == 0, f"{command}: {said(done)}"


def test_make_study_and_make_test_run_what_the_readme_says():
    """``make study`` runs ``dvc repro`` and ``make test`` the test suite (what CI runs); the
    study itself is tested by the stage tests named in COMMAND_TESTS."""
    assert "dvc repro" in make("-n", "study", keep=KEEP_DATA, timeout=60).stdout
    assert "-m pytest" in make("-n", "test", keep=KEEP_DATA, timeout=60).stdout
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_make_lint_passes():
    done = make("lint", timeout=120)
    assert done.returncode == 0, said(done)


# --- make lab -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen) -> bool:
    """SIGTERM to the process group (make and jupyter); SIGKILL if it is still there after
    :data:`LAB_STOP_SECONDS`. Whether it stopped on SIGTERM."""
    if process.poll() is not None:
        return True
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(LAB_STOP_SECONDS)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        return False


@pytest.mark.slow
def test_make_lab_serves_the_leuko_kernel_as_default_and_stops(tmp_path):
    """``make lab`` starts (as root too), serves ``/api/kernelspecs`` with ``leuko`` the default
    kernel, and stops on SIGTERM: on the loopback, a free port, a token of its own."""
    port, token = free_port(), secrets.token_hex(16)
    lab_args = (f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 "
                f"--IdentityProvider.token={token}")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "BROWSER": "true"}
    log = tmp_path / "lab.log"
    url = f"http://127.0.0.1:{port}/api/kernelspecs"
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    specs, deadline = None, time.monotonic() + LAB_START_SECONDS
    with log.open("w") as out:
        process = subprocess.Popen([MAKE, "--no-print-directory", *KEEP_DATA, "lab",
                                    f"LAB_ARGS={lab_args}"], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while specs is None and process.poll() is None and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        specs = json.load(response)
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.5)
        finally:
            stopped = stop(process)
    output = log.read_text()[-4000:]
    assert specs is not None, f"no answer from {url} within {LAB_START_SECONDS} s:\n{output}"
    assert specs["default"] == "leuko", specs["default"]
    assert "leuko" in specs["kernelspecs"]
    assert stopped, f"make lab did not stop within {LAB_STOP_SECONDS} s of SIGTERM:\n{output}"


# --- make results, the presets, make data: in a copy -------------------------------------------


@pytest.mark.slow
def test_make_results_a_second_time_changes_nothing(checkout_copy):
    """``make results`` twice: the second run finds every block current and changes no file.
    (The first may change blocks whose files a clone lacks, e.g. build/.)"""
    first = make("results", cwd=checkout_copy, timeout=300)
    assert first.returncode == 0, said(first)
    before = tree_files(checkout_copy)
    second = make("results", cwd=checkout_copy, timeout=300)
    assert second.returncode == 0, said(second)
    assert not changed(before, tree_files(checkout_copy)), \
        f"the second `make results` changed {changed(before, tree_files(checkout_copy))}"


@pytest.mark.slow
def test_make_presets_round_trip_the_parameter_files(checkout_copy):
    """``make preset-smoke`` writes the smoke preset's files over params/, and ``make
    preset-default`` after it gives back the default params/ byte for byte (in a copy: the
    checkout's own params/, which a running ``dvc repro`` may read, are never switched). The
    other presets' targets run the same recipe with their name (each ``make preset-X`` costs
    a ``dvc stage list``: the full preset's values are tested in test_project.py)."""
    params = checkout_copy / "params"
    folder = params / "presets"
    default = tree_files(params)  # the working tree's params/, with the default preset set
    for relative in presets.preset_files("default", folder):
        default[f"{relative.as_posix()}"] = (folder / "default" / relative).read_bytes()
    for name in ("smoke", "default"):
        done = make(f"preset-{name}", cwd=checkout_copy, timeout=120)
        assert done.returncode == 0, said(done)
        for relative in presets.preset_files(name, folder):
            assert (params / relative).read_bytes() == (folder / name / relative).read_bytes(), \
                f"make preset-{name}: params/{relative} is not the preset's"
    assert not changed(default, tree_files(params)), changed(default, tree_files(params))
    for name in presets.available(folder):
        dry = make("-n", f"preset-{name}", cwd=checkout_copy, timeout=60)
        assert f"-m leuko.pipeline.presets {name}" in dry.stdout, said(dry)


def dvc_repo(repo: Path, env: dict):
    """A git + DVC repository at ``repo`` with a local remote ``lab`` beside it, the
    checkout's Makefile and .venv linked; returns a runner of commands in it."""
    repo.mkdir()
    shutil.copy2(ROOT / "Makefile", repo / "Makefile")
    (repo / ".venv").symlink_to(ROOT / ".venv")

    def run(*command: str) -> subprocess.CompletedProcess:
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"{' '.join(command)}: {said(done)}"
        return done

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "remote", "add", "-d", "lab", "../store")
    (repo / ".gitignore").write_text("/.venv\n/data\n")
    return run


@pytest.mark.slow
def test_make_data_refuses_to_delete_files_it_did_not_put_there(tmp_path):
    """``dvc pull`` silently deletes a file under data/ that data.dvc does not list when its
    content is in the cache (here a copy of a tracked file): ``make data`` refuses, naming
    every such file, until ``FORCE=1``; files of another version of the data (one in git's
    history) are DVC's to remove."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    repo = tmp_path / "repo"
    run = dvc_repo(repo, env)
    data = repo / "data"
    (data / "cells").mkdir(parents=True)
    for name in ("a", "b"):
        (data / "cells" / f"{name}.txt").write_text(f"tracked {name}\n")
    run("dvc", "add", "-q", "data")
    run("dvc", "push", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "data v1")
    # the user's own files: a copy of a tracked file, and a new one
    (data / "mine").mkdir()
    shutil.copy(data / "cells" / "a.txt", data / "mine" / "copy-of-a.txt")
    (data / "mine" / "new.txt").write_text("mine\n")

    refused = make("data", cwd=repo, env=env, timeout=120)
    assert refused.returncode != 0, said(refused)
    assert "data/mine/copy-of-a.txt" in refused.stderr and "data/mine/new.txt" in refused.stderr
    assert "FORCE=1" in refused.stderr
    assert (data / "mine" / "copy-of-a.txt").is_file() and (data / "mine" / "new.txt").is_file()

    forced = make("data", "FORCE=1", cwd=repo, env=env, timeout=120)
    assert forced.returncode == 0, said(forced)
    assert sorted(p.name for p in data.rglob("*") if p.is_file()) == ["a.txt", "b.txt"]

    # a second version (b.txt gone, c.txt new) in git's history; back to the first: c.txt
    # came from a version of the data, so the pull may remove it
    (data / "cells" / "b.txt").unlink()
    (data / "cells" / "c.txt").write_text("tracked c\n")
    run("dvc", "add", "-q", "data")
    run("dvc", "push", "-q")
    run("git", "commit", "-q", "-am", "data v2")
    run("git", "checkout", "-q", "HEAD~1", "--", "data.dvc")
    back = make("data", cwd=repo, env=env, timeout=120)
    assert back.returncode == 0, said(back)
    assert sorted(p.name for p in data.rglob("*") if p.is_file()) == ["a.txt", "b.txt"]


# --- make bench --------------------------------------------------------------------------------


def bench_sections() -> list[str]:
    """Every section of benchmarks/run.py: its ``SECTIONS`` and ``OPTIONAL``, as written."""
    values = {}
    for node in ast.parse((ROOT / "benchmarks" / "run.py").read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name) and node.targets[0].id in ("SECTIONS", "OPTIONAL"):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return [*values["SECTIONS"], *values["OPTIONAL"]]


@pytest.mark.slow
def test_make_bench_quick_runs_every_section_and_prints_its_ratio(wbc_root, allidb_root):
    """``make bench BENCH_ARGS=--quick``: every section, the optional ones too, runs on a few
    images and prints a ratio (run.py exits 1 naming a section without one)."""
    require(ROOT / "data" / "pretrained")
    sections = bench_sections()
    assert {"pipeline", "transfer", "dvc", "tracing"} <= set(sections)
    done = make("bench", "BENCH_ARGS=--quick", keep=KEEP_DATA, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, said(done)
    for section in sections:
        assert f"[{section}: " in output, f"section {section} did not run:\n{said(done)}"
    assert "section(s) without a ratio" not in output
    assert re.search(r"^measurement\s+ours\s+compared with\s+result", output, re.M)


# --- leuko, from a folder outside the checkout -------------------------------------------------


@pytest.mark.slow
def test_leuko_classify_and_score_from_a_folder_outside_the_checkout(tmp_path, tiny_classifier):
    """``leuko classify my-cells/`` and ``leuko score`` in a folder of the user's: with
    $LEUKO_MODEL, and without it the study's exported model of the checkout leuko is
    installed from, or (when the study has not run) an error naming where it looked."""
    outside = tmp_path / "elsewhere"
    cell_images(outside / "my-cells")
    env = {k: v for k, v in os.environ.items() if k != cli.MODEL_ENV}

    def leuko(*args: str, model: Path | None = None) -> subprocess.CompletedProcess:
        extra = {cli.MODEL_ENV: str(model)} if model else {}
        return subprocess.run([*leuko_command(), *args], cwd=outside, env={**env, **extra},
                              capture_output=True, text=True, timeout=300)

    done = leuko("classify", "my-cells", "--no-progress", model=tiny_classifier)
    assert done.returncode == 0, said(done)
    assert f"with {tiny_classifier}" in done.stdout
    assert (outside / "leuko-classify.csv").is_file()
    scored = leuko("score", "leuko-classify.csv", "--json", "--n-boot", "50")
    assert scored.returncode == 0, said(scored)
    assert json.loads(scored.stdout)

    study_model = ROOT / cli.DEFAULT_MODEL
    done = leuko("classify", "my-cells", "--no-progress", "--output", "study.csv")
    if study_model.is_file():
        assert done.returncode == 0, said(done)
        assert f"with {study_model}" in done.stdout
    else:
        assert done.returncode == 1, said(done)
        for place in (outside / cli.DEFAULT_MODEL, study_model, f"${cli.MODEL_ENV}"):
            assert str(place) in done.stderr, said(done)


def test_leuko_classify_finds_the_model_or_says_where_it_looked(tmp_path, monkeypatch):
    """Without --model: $LEUKO_MODEL (alone: a missing file is refused, not passed over), then
    build/export/wbc.keras under the current folder, then under the package's checkout."""
    cwd, checkout = tmp_path / "here", tmp_path / "checkout"
    for folder in (cwd, checkout):
        (folder / cli.DEFAULT_MODEL).parent.mkdir(parents=True)
    in_checkout = checkout / cli.DEFAULT_MODEL
    in_checkout.write_bytes(b"model")
    assert cli.find_model(cwd, checkout, {}) == in_checkout
    (cwd / cli.DEFAULT_MODEL).write_bytes(b"model")
    assert cli.find_model(cwd, checkout, {}) == cwd / cli.DEFAULT_MODEL
    mine = tmp_path / "mine.keras"
    mine.write_bytes(b"model")
    assert cli.find_model(cwd, checkout, {cli.MODEL_ENV: str(mine)}) == mine
    with pytest.raises(FileNotFoundError, match="gone.keras"):
        cli.find_model(cwd, checkout, {cli.MODEL_ENV: str(tmp_path / "gone.keras")})
    (cwd / cli.DEFAULT_MODEL).unlink()
    in_checkout.unlink()
    with pytest.raises(FileNotFoundError) as error:
        cli.find_model(cwd, checkout, {})
    assert str(cwd / cli.DEFAULT_MODEL) in str(error.value)
    assert str(in_checkout) in str(error.value)
    # the installed package knows its checkout: this one
    assert cli.package_checkout() == ROOT
    # and the command line uses it: classify runs with the checkout's model from elsewhere
    tiny = save_tiny_model(checkout / "build" / "export")
    tiny.rename(in_checkout)
    tiny.with_suffix(".json").rename(in_checkout.with_suffix(".json"))
    cell_images(cwd / "my-cells", per_class=1)
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(cli.MODEL_ENV, raising=False)
    monkeypatch.setattr(cli, "package_checkout", lambda: checkout)
    assert cli.main(["classify", "my-cells", "--no-progress", "--output", "out.csv"]) == 0
    assert (cwd / "out.csv").is_file()


def test_leuko_export_from_a_folder_outside_the_checkout(tmp_path):
    """``leuko export --help`` anywhere; run outside the checkout, ``leuko export`` says it
    reads the study's files there and names the checkout."""
    helped = subprocess.run([*leuko_command(), "export", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, said(helped)
    assert "--task" in helped.stdout and "--rule" in helped.stdout
    done = subprocess.run([*leuko_command(), "export", "--task", "wbc"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, said(done)
    assert "not a checkout of the study" in done.stderr and str(ROOT) in done.stderr
