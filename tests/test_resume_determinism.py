"""A training run killed in the middle resumes from its last epoch and ends exactly like an
uninterrupted run; the same seed gives the same training on rerun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    import keras, numpy as np
    from leuko.core import inputs
    from leuko.models import train
    work, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kill_at >= 0:  # die hard (SIGKILL) right after the backup of epoch `kill_at`
        original = keras.callbacks.BackupAndRestore.on_epoch_end
        def killer(self, epoch, logs=None):
            original(self, epoch, logs)
            if epoch == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        keras.callbacks.BackupAndRestore.on_epoch_end = killer
    train.set_determinism(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 16, 16, 3)).astype(np.uint8)
    y = np.eye(2, dtype="float32")[(x[:, :8].mean(axis=(1, 2, 3)) > 127).astype(int)]
    xv, yv = x[:16], y[:16]
    model = keras.Sequential([
        keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dropout(0.3), keras.layers.Dense(2, activation="softmax")])
    config = train.FitConfig(epochs=6, batch_size=8, learning_rate=0.01, patience=3,
                             reduce_lr_patience=1)
    train.compile_model(model, config)
    history = train.fit(
        model, lambda start: inputs.make_epochs_dataset(x, y, 8, 6, start, True, 0),
        inputs.steps_per_epoch(len(x), 8), inputs.make_dataset(xv, yv, 8), config,
        os.path.join(work, "live"), os.path.join(work, "state"))
    json.dump({"weights": [w.tolist() for w in model.get_weights()],
               "epochs": history["epoch"].tolist(),
               "val_loss": history["val_loss"].tolist()}, open(out, "w"))
''')


def run(work: Path, out: Path, kill_at: int) -> subprocess.CompletedProcess:
    script = work.parent / "train_small.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, str(script), str(work), str(out), str(kill_at)],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_killed_run_resumes_and_matches_uninterrupted(tmp_path):
    whole = run(tmp_path / "whole", tmp_path / "whole.json", -1)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = run(tmp_path / "resumed", tmp_path / "resumed.json", 2)
    assert killed.returncode == -9  # SIGKILL after epoch 3 of 6
    assert not (tmp_path / "resumed.json").exists()
    assert not (tmp_path / "resumed" / "live").exists()  # curves are published at the end
    # DVC removes a stage's outputs (the published curves) before it reruns the stage
    resumed = run(tmp_path / "resumed", tmp_path / "resumed.json", -1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "whole.json").read_text())
    b = json.loads((tmp_path / "resumed.json").read_text())
    assert b["epochs"][0] == 4, "the resumed run must start after the last finished epoch"
    assert b["val_loss"] == a["val_loss"][-len(b["val_loss"]):]
    assert b["weights"] == a["weights"]
    assert not (tmp_path / "resumed" / "state").exists()  # resumable state removed on success
    curves = tmp_path / "resumed" / "live" / "plots" / "metrics"
    for curve in ("train/loss.tsv", "eval/loss.tsv"):  # one curve, each epoch once, no gap
        steps = [line.split("\t")[0] for line in (curves / curve).read_text().splitlines()[1:]]
        assert steps == [str(i) for i in range(len(a["epochs"]))], (curve, steps)
    whole_curve = (tmp_path / "whole" / "live" / "plots" / "metrics" / "eval" / "loss.tsv")
    assert ((curves / "eval" / "loss.tsv").read_text().splitlines()[1:]
            == whole_curve.read_text().splitlines()[1:])
    step = {run: json.loads((tmp_path / run / "live" / "metrics.json").read_text())["step"]
            for run in ("whole", "resumed")}
    assert step["resumed"] == step["whole"]


@pytest.mark.slow
def test_same_seed_same_training(tmp_path):
    first = run(tmp_path / "a", tmp_path / "a.json", -1)
    second = run(tmp_path / "b", tmp_path / "b.json", -1)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:]
    assert (json.loads((tmp_path / "a.json").read_text())
            == json.loads((tmp_path / "b.json").read_text()))
