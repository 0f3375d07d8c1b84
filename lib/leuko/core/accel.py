"""Acceleration switches: numeric precision and multi-device training.

- ``set_precision``: the Keras global dtype policy (float32, or mixed precision with bfloat16
  or float16 compute and float32 variables). Set it before building a model: layers take the
  policy in force when they are created. The heads in ``networks`` keep their softmax in
  float32, so probabilities and the loss stay float32 under any policy.
- ``distribution_strategy``: ``tf.distribute.MirroredStrategy`` when more than one GPU is
  visible (data-parallel training, one replica per device), else TensorFlow's default
  strategy. Build and compile a model inside ``with strategy.scope():``.
- ``eager_execution``: every ``tf.function`` (Keras's training, validation and prediction
  steps) run op by op from Python instead of traced into a graph. Slower per step, but with no
  tracing, which is most of a run of one or two tiny steps: the smoke preset's plumbing run
  (``wbc.eager``; ``benchmarks/thesis/smoke_eager.py``). The study's real runs trace.

Measured on the study's 2-core CPU (a Xeon with AVX-512 but no AVX512-BF16/AMX; ``make
bench``): a mixed_bfloat16 training step is ~1.5x slower than float32 for MobileNetV2 at 96 px
and 2-5x slower for the custom CNN at 128 px (bfloat16 is emulated there), with accuracy no
better, so the study's default is float32 and ``"auto"`` picks float32 on such CPUs.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

# TensorFlow is imported inside the functions that need it: importing it takes 3.6 s
# (python -X importtime, AMD EPYC), and leuko.core's other modules (leuko score, make results, the
# image decoders) load without it.

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
STRATEGIES = ("auto", "mirrored", "default")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (empty where it is absent)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    return bool(cpu_flags(cpuinfo) & set(_BF16_CPU_FLAGS))


def gpu_count() -> int:
    """The number of GPUs TensorFlow sees."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def resolve_precision(policy: str, gpus: int | None = None,
                      cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The concrete Keras dtype policy for ``policy`` (``"auto"``: mixed_float16 on a GPU,
    mixed_bfloat16 on a CPU with native bfloat16, else float32); ValueError if unknown."""
    if policy not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {policy!r}")
    if policy != "auto":
        return policy
    if (gpu_count() if gpus is None else gpus) > 0:
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16(cpuinfo) else "float32"


def set_precision(policy: str) -> str:
    """Set Keras's global dtype policy (``precision`` in ``PRECISIONS``); returns the policy
    actually set (``"auto"`` resolved). Call it before building models."""
    import keras

    resolved = resolve_precision(policy)
    keras.mixed_precision.set_global_policy(resolved)
    return resolved


def distribution_strategy(kind: str = "auto"):
    """A ``tf.distribute`` strategy: ``"auto"`` -> MirroredStrategy over the GPUs when more
    than one is visible, else the default (one-device) strategy; ``"mirrored"`` ->
    MirroredStrategy over all GPUs, or over all logical CPU devices where there is no GPU;
    ``"default"`` -> the default strategy."""
    import tensorflow as tf

    if kind not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {kind!r}")
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored" or (kind == "auto" and len(gpus) > 1):
        devices = gpus or tf.config.list_logical_devices("CPU")
        cross_device_ops = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy([d.name for d in devices],
                                              cross_device_ops=cross_device_ops)
    return tf.distribute.get_strategy()


@contextmanager
def eager_execution(eager: bool = True):
    """Run every ``tf.function`` eagerly inside the block when ``eager`` (``False``: leave
    TensorFlow as it is); the previous setting comes back on exit."""

    import tensorflow as tf

    before = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(bool(eager) or before)
    try:
        with warnings.catch_warnings():
            # tf.data's input functions stay traced (cheap); TensorFlow says so at every one
            warnings.filterwarnings("ignore", message="Even though the `tf.config.experimental_"
                                    "run_functions_eagerly` option is set", category=UserWarning)
            yield
    finally:
        tf.config.run_functions_eagerly(before)
