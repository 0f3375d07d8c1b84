"""Measured stage times (leuko.pipeline.stagetimes), the machine they name (leuko.core.machine) and the
per-epoch progress lines of a training (leuko.models.train.EpochProgress)."""

from __future__ import annotations

import io
import json
import sys

import pytest

from leuko.core import machine
from leuko.pipeline import stagetimes

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse avx avx2 fma avx512f avx512bw avx512_bf16
"""


def test_machine_names_cpu_cores_and_vector_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    info = machine.describe(cpuinfo)
    assert info["cpu"] == "AMD EPYC 7B13"
    assert info["avx2"] and info["avx512"] and info["avx512_bf16"] and not info["amx"]
    assert info["vector"] == "AVX2 AVX-512 AVX512-BF16"
    assert info["cores"] >= 1 and info["tensorflow"]
    line = machine.machine_line(info)
    assert line.startswith("AMD EPYC 7B13; ") and "AVX512-BF16" in line
    cpuinfo.write_text("model name\t: Old\nflags\t\t: sse2\n")
    assert machine.describe(cpuinfo)["vector"].startswith("none of AVX2")


def test_a_stage_run_writes_its_record_and_a_failed_one_none(tmp_path):
    ok = [sys.executable, "-c", "print('hello')"]
    assert stagetimes.run_timed("train@m1", ok, tmp_path) == 0
    record = json.loads((tmp_path / "train@m1.json").read_text())
    assert record["stage"] == "train@m1" and record["seconds"] >= 0
    assert record["machine"]["cpu"] and "avx2" in record["machine"]
    fail = [sys.executable, "-c", "raise SystemExit(3)"]
    assert stagetimes.run_timed("evaluate-wbc", fail, tmp_path) == 3
    assert not (tmp_path / "evaluate-wbc.json").exists()
    assert stagetimes.main(["x"]) == 2  # usage


def test_table_has_one_row_per_stage_with_its_machine(tmp_path):
    for stage in ("prepare-wbc", "train@m1"):
        stagetimes.run_timed(stage, [sys.executable, "-c", "pass"], tmp_path)
    table = stagetimes.stage_times_table(tmp_path)
    assert list(table.columns) == stagetimes.COLUMNS
    assert list(table["stage"]) == ["prepare-wbc", "train@m1"]
    summary = stagetimes.stage_times_summary(table)
    assert summary["stages"] == 2 and len(summary["machines"]) == 1
    assert summary["span_seconds"] >= 0
    empty = stagetimes.stage_times_table(tmp_path / "none")
    assert empty.empty and stagetimes.stage_times_summary(empty)["stages"] == 0


def test_progress_prints_epoch_rate_and_time_left_throttled():
    pytest.importorskip("keras")
    from leuko.models.train import EpochProgress

    out = io.StringIO()
    progress = EpochProgress("m1", epochs=5, every_seconds=3600, stream=out)
    for epoch in range(4):  # early stopping after 4 of 5 epochs
        progress.on_epoch_begin(epoch)
        progress.on_epoch_end(epoch, {"val_accuracy": 0.5})
    progress.on_train_end()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the first epoch, then the last one run (the rest throttled)
    assert lines[0].startswith("[m1] epoch 1/5 ") and "s/epoch" in lines[0]
    assert "left" in lines[0] and "val_accuracy 0.500" in lines[0]
    assert lines[1].startswith("[m1] epoch 4/5 ")
