"""Keep TensorFlow's C++ start-up chatter about CUDA off a command's stderr.

On a machine without a GPU, importing TensorFlow prints "Could not find cuda drivers" (before
TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``, so no setting hides it) and its first operation
"failed call to cuInit" (and on an AVX-512 CPU, twice, "oneDNN custom operations are
on"). :func:`quiet_tensorflow_start_up`, called by a command line before
anything imports TensorFlow:

* hides absent GPUs only when none exist (``CUDA_VISIBLE_DEVICES=""``) and then raises the
  C++ log threshold to 3 (Python exceptions still carry every error); with a GPU it keeps
  warnings off (level 2) and shows everything else;
* filters the lines written while ``tensorflow`` is imported: only the known start-up lines
  (:data:`START_UP_NOISE`) are dropped, anything else is written to stderr as it came.

Settings the user made (``TF_CPP_MIN_LOG_LEVEL``, ``CUDA_VISIBLE_DEVICES``) are kept.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

START_UP_NOISE = re.compile(
    r"cudart_stub\.cc|cuda_platform\.cc|cuda_dnn\.cc|cuda_fft\.cc|cuda_blas\.cc|cuInit|"
    r"cuda drivers|All log messages before absl::InitializeLog|cpu_feature_guard\.cc|"
    r"To enable the following instructions|computation_placer\.cc|Unable to register cu|"
    r"oneDNN custom operations are on")
"""Lines TensorFlow writes while starting on a machine without a GPU; and, on a CPU where
oneDNN's custom operations run (AVX-512), twice the note that they are on (their round-off
is why a result is reproduced per machine: docs/results.md, *Across machines*)."""


def has_nvidia_gpu(dev: Path = Path("/dev")) -> bool:
    """Whether an NVIDIA GPU device node exists (``/dev/nvidia0``, ...), without CUDA."""
    return any(dev.glob("nvidia[0-9]*"))


@contextlib.contextmanager
def stderr_without(noise: re.Pattern = START_UP_NOISE) -> Iterator[None]:
    """Capture what is written to file descriptor 2 (C++ included) inside the block, then
    write it back to stderr without the lines that match ``noise``."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(True)
                    if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once and runs its import inside :func:`stderr_without`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            with stderr_without():
                execute(module)

        spec.loader.exec_module = exec_module
        return spec


def quiet_tensorflow_start_up() -> None:
    """Set TensorFlow's environment and filter its import (see the module doc); call before
    anything imports TensorFlow. A no-op for what is already set or imported."""
    if has_nvidia_gpu():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    elif "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(
            isinstance(finder, _QuietImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())
