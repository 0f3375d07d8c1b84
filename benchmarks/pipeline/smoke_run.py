"""``make preset-smoke && make study`` on a fresh clone, timed: the whole smoke preset through
DVC, install and data pull included (issue 16's check), stage by stage.

    .venv/bin/python benchmarks/pipeline/smoke_run.py                  # stops the run after 100 min
    .venv/bin/python benchmarks/pipeline/smoke_run.py --limit-min 30   # a partial run: what it reached

It clones the committed HEAD into a temporary folder with a link to ``../shared`` beside it
(as CI does), runs ``make preset-smoke`` and then ``make study`` there under a time limit, and
reads the clone's ``reports/times/`` (``leuko.pipeline.stagetimes``: each stage's wall seconds and the
machine). Written: ``reports/ablation/smoke_run.csv`` (one row per stage that finished) and
``reports/ablation/smoke_run.json`` (the wall time of each make target, the stages the smoke
preset plans and how many finished, whether the report was written and titled as a plumbing
run, the commit, the machine, and the last lines of the log when a target failed);
``make results`` puts them in docs/experiments/thesis.md. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "reports" / "ablation" / "smoke_run.csv"
SUMMARY = ROOT / "reports" / "ablation" / "smoke_run.json"


def run_target(clone: Path, target: str, limit_s: float, log) -> dict:
    """``make <target>`` in the clone under ``limit_s`` seconds; its wall time and exit."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    begin = time.perf_counter()
    print(f"make {target} (limit {limit_s / 60:.0f} min)", flush=True)
    child = subprocess.Popen(["make", target], cwd=clone, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code, timed_out = child.wait(timeout=limit_s), False
    except subprocess.TimeoutExpired:  # stop make and everything it started (dvc, papermill)
        os.killpg(child.pid, signal.SIGTERM)
        child.wait()
        code, timed_out = None, True
    return {"target": target, "seconds": round(time.perf_counter() - begin, 1),
            "exit_code": code, "timed_out": timed_out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-min", type=float, default=100.0,
                        help="stop the run after this many minutes in all (default 100)")
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "lib"))
    import pandas as pd

    from leuko.core.machine import machine_line
    from leuko.pipeline.stagetimes import stage_times_table

    shared = ROOT.parent / "shared"
    if not shared.is_dir():
        raise SystemExit(f"{shared} is missing: the clone pulls its data from ../shared")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="smoke-run-"))
    clone, log_path = work / "main", work / "smoke-run.log"
    (work / "shared").symlink_to(shared)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    deadline = time.perf_counter() + 60 * args.limit_min
    begun = pd.Timestamp.now(tz="UTC").floor("s")
    targets = []
    try:
        with open(log_path, "w") as log:
            for target in ("preset-smoke", "study"):
                left = deadline - time.perf_counter()
                result = run_target(clone, target, left, log)
                targets.append(result)
                print(f"  {result}", flush=True)
                if result["exit_code"] != 0:
                    break
        venv_dvc = clone / ".venv" / "bin" / "dvc"
        planned = None
        if venv_dvc.exists():
            listed = subprocess.run([str(venv_dvc), "stage", "list"], cwd=clone,
                                    capture_output=True, text=True)
            planned = len(listed.stdout.splitlines()) if listed.returncode == 0 else None
        # the clone's reports/times/ also holds the committed records of the default run:
        # only the stages that started after this run began count
        table = stage_times_table(clone / "reports" / "times")
        table = table[pd.to_datetime(table["started"]) >= begun].reset_index(drop=True)
        report = clone / "reports" / "study.html"
        finished = all(t["exit_code"] == 0 for t in targets) and len(targets) == 2
        summary = {
            "commit": commit, "finished": finished,
            "wall_seconds": round(sum(t["seconds"] for t in targets), 1),
            "targets": targets, "stages_planned": planned, "stages_timed": len(table),
            "report_written": report.is_file(),
            "report_says_plumbing": report.is_file()
            and "plumbing run, not results" in report.read_text(errors="replace"),
            "machine": machine_line(),
            "log_tail": [] if finished else log_path.read_text(errors="replace").splitlines()[-30:]}
    finally:
        if args.keep:
            print(f"clone kept: {clone}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, index=False)
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "log_tail"}, indent=2))
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
