"""Stage times that are measured: each pipeline stage's wall time and the machine it ran on.

Every heavy stage's command in ``dvc.yaml`` runs under this wrapper::

    python -m leuko.pipeline.stagetimes train@blood-cell-images-mobilenet_v2-imagenet -- papermill ...

which runs the command, prints one line when the stage starts (with the machine) and one when
it ends (with its time) to stderr, and, when the command succeeds, writes
``reports/times/<stage>.json``: the stage, its start and end (UTC), its wall seconds and
``leuko.core.machine.describe()`` (CPU model, cores, AVX2 / AVX-512 / AVX512-BF16 / AMX, TensorFlow
version, load). A failed command writes nothing and passes its exit code on.

``stage_times_table()`` reads these records into the table the compare notebook writes as
``reports/tables/stage_times.csv``. The compare and report stages are not wrapped: they run
after the table is built (their own time would make compare depend on itself).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from leuko.core.atomic import write_json_atomic
from leuko.core.machine import describe, machine_line

# pandas is imported only where a table is built: this module wraps every stage's start,
# where its 0.25 s import (python -X importtime, AMD EPYC) would be paid 33 times a run.

TIMES_DIR = Path("reports") / "times"
#: The columns of ``stage_times_table``, in order.
COLUMNS = ["stage", "started", "ended", "seconds", "cpu", "cores", "usable_cores", "avx2",
           "avx512", "avx512_bf16", "amx", "vector", "tensorflow", "keras", "python",
           "load_1min"]


def record_path(stage: str, times_dir: Path = TIMES_DIR) -> Path:
    """Where the record of ``stage`` goes (``/`` in a stage name becomes ``_``)."""
    return Path(times_dir) / f"{stage.replace('/', '_')}.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_timed(stage: str, command: list[str], times_dir: Path = TIMES_DIR) -> int:
    """Run ``command``; on success write the stage's time record. Returns the exit code."""
    if not command:
        raise ValueError("no command to run: python -m leuko.pipeline.stagetimes STAGE -- COMMAND ...")
    machine = describe()
    record_path(stage, times_dir).unlink(missing_ok=True)
    started, begin = _now(), time.perf_counter()
    print(f"[{stage}] started {started[11:19]} UTC on {machine_line(machine)}",
          file=sys.stderr, flush=True)
    child = subprocess.Popen(command)

    def forward(signum, _frame):  # let the stage end cleanly (a training resumes later)
        child.send_signal(signum)

    # SIGTERM is passed on; Ctrl-C reaches the child from the terminal (same process group),
    # so the wrapper only waits for it to end and reports its exit code.
    previous = {sig: signal.signal(sig, handler) for sig, handler in (
        (signal.SIGTERM, forward), (signal.SIGINT, lambda *_: None))}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    seconds = time.perf_counter() - begin
    if code == 0:
        write_json_atomic(record_path(stage, times_dir), {
            "stage": stage, "started": started, "ended": _now(), "seconds": round(seconds, 1),
            "machine": machine})
    print(f"[{stage}] {'done' if code == 0 else f'FAILED (exit {code})'} after "
          f"{seconds:.0f} s", file=sys.stderr, flush=True)
    return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N


def read_records(times_dir: Path = TIMES_DIR) -> list[dict]:
    """Every stage's time record, in start order."""

    records = [json.loads(p.read_text()) for p in sorted(Path(times_dir).glob("*.json"))]
    return sorted(records, key=lambda r: (r["started"], r["stage"]))


def stage_times_table(times_dir: Path | str = TIMES_DIR):
    """One row per stage: name, start, end, wall seconds and the machine it ran on (CPU model,
    cores, AVX2 / AVX-512 / AVX512-BF16 / AMX flags, TensorFlow version, load). What the
    compare notebook writes as ``reports/tables/stage_times.csv``."""
    import pandas as pd

    rows = [{"stage": r["stage"], "started": r["started"], "ended": r["ended"],
             "seconds": r["seconds"], **r["machine"]} for r in read_records(Path(times_dir))]
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def stage_times_summary(table) -> dict:
    """Totals of a ``stage_times_table``: the stages, their summed seconds, the span from the
    first start to the last end, and the machines (one line each)."""
    import pandas as pd

    if table.empty:
        return {"stages": 0, "stage_seconds": 0.0, "span_seconds": 0.0, "machines": []}
    span = pd.to_datetime(table["ended"]).max() - pd.to_datetime(table["started"]).min()
    machines = sorted({machine_line(row) for row in table.to_dict("records")})
    return {"stages": len(table), "stage_seconds": float(table["seconds"].sum()),
            "span_seconds": span.total_seconds(), "machines": machines}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m leuko.pipeline.stagetimes STAGE -- COMMAND [ARGS ...]", file=sys.stderr)
        return 2
    return run_timed(argv[0], argv[2:])


if __name__ == "__main__":
    sys.exit(main())
