"""The machine a measurement ran on: CPU model, cores, the vector-instruction flags that decide
oneDNN's speed (AVX2, AVX-512, AVX512-BF16, AMX), the software, the load.

One function for every place that names a machine (``describe``): the stage times of the
pipeline (``leuko.pipeline.stagetimes``) and the benchmark's machine line (``benchmarks/run.py``).
Cheap: reads ``/proc`` and package metadata, never imports TensorFlow.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from leuko.core.accel import cpu_flags

#: The flags reported, as /proc/cpuinfo spells them -> a readable name.
VECTOR_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16",
                "amx_bf16": "AMX-BF16"}


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def package_version(name: str) -> str:
    """An installed distribution's version without importing it ("" when absent)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def describe(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """The machine as a flat dict: ``cpu``, ``cores`` (logical), ``usable_cores`` (this
    process's affinity), ``avx2``, ``avx512``, ``avx512_bf16``, ``amx`` (bools), ``vector``
    (the flags present, readable), ``tensorflow``, ``keras``, ``python``, ``load_1min``."""
    flags = cpu_flags(cpuinfo)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"cpu": cpu_model(cpuinfo), "cores": os.cpu_count(), "usable_cores": usable,
            "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "amx": "amx_bf16" in flags,
            "vector": " ".join(name for flag, name in VECTOR_FLAGS.items() if flag in flags)
            or "none of " + "/".join(VECTOR_FLAGS.values()),
            "tensorflow": package_version("tensorflow") or package_version("tensorflow-cpu"),
            "keras": package_version("keras"), "python": platform.python_version(),
            "load_1min": round(load, 2)}


def machine_line(info: dict | None = None) -> str:
    """One line naming the machine, e.g. ``AMD EPYC 7B13; 2 logical cores (2 usable); AVX2
    AVX-512 AVX512-BF16; TensorFlow 2.21.0``."""
    info = info or describe()
    return (f"{info['cpu']}; {info['cores']} logical cores ({info['usable_cores']} usable); "
            f"{info['vector']}; TensorFlow {info['tensorflow'] or 'not installed'}")
