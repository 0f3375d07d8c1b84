"""Precision and distribution switches: validated parameters, the auto rules, and a real
data-parallel epoch under MirroredStrategy over two logical CPU devices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import pytest

from leuko.core import accel


@pytest.fixture()
def restore_policy():
    before = keras.mixed_precision.global_policy().name
    yield
    keras.mixed_precision.set_global_policy(before)


def cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 {flags}\n\n")
    return path


def test_precision_is_validated_naming_the_parameter_and_values(restore_policy):
    with pytest.raises(ValueError, match=r"precision must be one of .*mixed_bfloat16.*'fp8'"):
        accel.set_precision("fp8")


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_set_precision_sets_the_global_policy(policy, restore_policy):
    assert accel.set_precision(policy) == policy
    assert keras.mixed_precision.global_policy().name == policy
    layer = keras.layers.Dense(2)
    assert layer.variable_dtype == "float32"
    assert layer.compute_dtype == ("float32" if policy == "float32" else policy[len("mixed_"):])


def test_auto_precision_follows_the_hardware(tmp_path):
    plain = cpuinfo(tmp_path, "avx2 avx512f avx512_vnni")
    assert accel.resolve_precision("auto", gpus=1, cpuinfo=plain) == "mixed_float16"
    assert accel.resolve_precision("auto", gpus=0, cpuinfo=plain) == "float32"
    for flag in ("avx512_bf16", "amx_bf16"):
        bf16 = cpuinfo(tmp_path, f"avx512f {flag}")
        assert accel.resolve_precision("auto", gpus=0, cpuinfo=bf16) == "mixed_bfloat16"
    assert accel.resolve_precision("auto", gpus=0, cpuinfo=tmp_path / "absent") == "float32"
    assert accel.resolve_precision("float32", gpus=4) == "float32"


def test_set_precision_auto_resolves(restore_policy):
    """``auto`` sets the explicit policy the documented rule names for this machine."""
    if accel.gpu_count():
        expected = "mixed_float16"
    else:
        expected = "mixed_bfloat16" if accel.cpu_has_bf16() else "float32"
    assert accel.set_precision("auto") == expected
    assert keras.mixed_precision.global_policy().name == expected
    accel.set_precision("float32")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_mixed_precision_classifier_keeps_float32_probabilities(restore_policy):
    from leuko.models import networks
    accel.set_precision("mixed_bfloat16")
    model = networks.build_classifier("leukemia_cnn", 2, 32, pretrained=False,
                                      channel_mean=(0.5, 0.5, 0.5))
    probs = model.predict(keras.ops.zeros((2, 32, 32, 3)), verbose=0)
    assert str(probs.dtype) == "float32"
    assert abs(float(probs.sum()) - 2.0) < 1e-3


def test_strategy_is_validated_and_defaults_to_one_device():
    import tensorflow as tf

    with pytest.raises(ValueError, match=r"strategy must be one of .*'mirrored'.*'tpu'"):
        accel.distribution_strategy("tpu")
    if not tf.config.list_physical_devices("GPU"):
        strategy = accel.distribution_strategy()
        assert strategy is tf.distribute.get_strategy()
        assert strategy.num_replicas_in_sync == 1


MIRRORED = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from leuko.core import accel
    strategy = accel.distribution_strategy("mirrored")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                                  keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).random((32, 8, 8, 3), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(32) % 2]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "kind": type(strategy).__name__,
                      "devices": list(strategy.extended.worker_devices),
                      "loss": history.history["loss"][-1]}))
""")


@pytest.mark.slow
def test_mirrored_strategy_trains_over_two_logical_cpus():
    """Two logical CPU devices (configured before TensorFlow initialises, so in a subprocess):
    one epoch of a tiny model under MirroredStrategy, two replicas."""
    import json
    import math

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kind"] == "MirroredStrategy"
    assert result["replicas"] == 2
    assert len(result["devices"]) == 2
    assert math.isfinite(result["loss"])


def test_eager_execution_runs_a_fit_without_tracing_and_restores_the_mode():
    """Inside the block Keras's train step is never traced (its Python body runs on every
    step); outside it, as before, once per trace; False changes nothing."""
    import warnings

    import numpy as np
    import tensorflow as tf

    calls = []

    class Counting(keras.Model):
        def train_step(self, data):
            calls.append(1)
            return super().train_step(data)

    def fit_steps() -> int:
        inputs = keras.Input((3,))
        model = Counting(inputs, keras.layers.Dense(2)(inputs))
        model.compile(optimizer="sgd", loss="mse")
        calls.clear()
        model.fit(np.zeros((8, 3)), np.zeros((8, 2)), batch_size=2, epochs=1, verbose=0)
        return len(calls)

    assert not tf.config.functions_run_eagerly()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tf.data's notice that it still traces is silenced
        with accel.eager_execution(True):
            assert tf.config.functions_run_eagerly()
            assert fit_steps() == 4  # once per batch: nothing traced
    assert not tf.config.functions_run_eagerly()
    with accel.eager_execution(False):
        assert not tf.config.functions_run_eagerly()
    assert fit_steps() < 4  # traced: the body ran only while tracing
