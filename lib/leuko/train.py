"""Training: the three regimes of the thesis study and the leukemia recipe's callbacks.

- ``imagenet``: frozen pretrained base; bottleneck features computed once (cached by the
  ``features`` stage); only the head is trained, on the features.
- ``imagenet-finetune``: the pretrained base unfrozen (all or its top blocks), the head first
  warmed up on the cached features, then everything trained end to end with a small rate.
- ``scratch``: random initial weights, the whole network trained, with the cure the thesis
  named for its near-chance scratch models: weight decay (L2), dropout and early stopping.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

REGIMES = ("imagenet", "imagenet-finetune", "scratch")


def check_regime(regime: str) -> str:
    """``regime`` if known, else a ValueError naming the allowed values."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    return regime


def set_determinism(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and turn on deterministic ops (CPU reruns match)."""
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


@dataclass(frozen=True)
class FitConfig:
    """How to fit one model (all values come from ``params/``)."""

    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.0  # decoupled L2 (AdamW); 0 = plain Adam
    patience: int = 0  # EarlyStopping on val_loss (restoring the best weights); 0 = off
    reduce_lr_patience: int = 0  # ReduceLROnPlateau(factor 0.5, min_lr 1e-6); 0 = off
    checkpoint_best: bool = False  # ModelCheckpoint on the best val_accuracy, reloaded at end
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


class EpochTimer(keras.callbacks.Callback):
    """Records wall-clock seconds per epoch into the logs as ``epoch_time_s``."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_time_s"] = time.perf_counter() - self._start


def compile_model(model: keras.Model, config: FitConfig) -> keras.Model:
    """Adam (or AdamW with weight decay), categorical cross-entropy, accuracy."""
    if config.weight_decay > 0:
        optimizer = keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(config.learning_rate)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def fit(model: keras.Model, train_data, val_data, config: FitConfig, live_dir: Path | None,
        work_dir: Path, label: str = "") -> pd.DataFrame:
    """Fit a compiled model; returns its history (one row per epoch, with ``epoch_time_s``).

    ``work_dir`` holds the resumable state (``BackupAndRestore``): a run killed in the middle
    resumes from its last finished epoch when started again; the state is removed on success.
    Curves go to DVCLive in ``live_dir``.
    """
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    work_dir = Path(work_dir)
    backup = work_dir / "backup"
    resuming = backup.exists()
    callbacks: list[keras.callbacks.Callback] = [EpochTimer()]
    if config.patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True))
    if config.reduce_lr_patience:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=config.reduce_lr_patience, min_lr=1e-6))
    checkpoint = work_dir / "best.weights.h5"
    if config.checkpoint_best:
        callbacks.append(keras.callbacks.ModelCheckpoint(
            checkpoint, monitor="val_accuracy", save_best_only=True, save_weights_only=True))
    live = None
    if live_dir is not None:
        live = Live(str(live_dir), resume=resuming, save_dvc_exp=False, dvcyaml=None)
        callbacks.append(DVCLiveCallback(live=live))
    callbacks.append(keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=True))
    history = model.fit(train_data, validation_data=val_data, epochs=config.epochs,
                        callbacks=callbacks, verbose=2)
    if config.checkpoint_best and checkpoint.exists():
        model.load_weights(checkpoint)
    if live is not None:
        live.end()
    shutil.rmtree(work_dir, ignore_errors=True)
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", np.arange(1, len(frame) + 1) + (config.epochs - len(frame)
                                                             if resuming else 0))
    if label:
        frame.insert(0, "phase", label)
    return frame


def compute_features(base: keras.Model, preprocess: keras.layers.Layer, images: np.ndarray,
                     batch_size: int = 64) -> np.ndarray:
    """Bottleneck features of a frozen base: one forward pass over uint8 images."""
    from leuko.inputs import make_dataset

    model = keras.Sequential([keras.Input(images.shape[1:]), preprocess, base])
    return model.predict(make_dataset(images, None, batch_size), verbose=0).astype(np.float32)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Integer labels -> float32 one-hot rows."""
    return np.eye(n_classes, dtype=np.float32)[np.asarray(labels, dtype=int)]


@dataclass
class RunResult:
    """What a training run leaves: the model, its history and timings."""

    model: keras.Model
    history: pd.DataFrame
    train_seconds: float
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Flat numbers for the metrics file."""
        last = self.history.iloc[-1] if len(self.history) else {}
        return {"train_seconds": round(self.train_seconds, 2),
                "epochs_run": int(len(self.history)),
                "final_train_accuracy": float(last.get("accuracy", np.nan)),
                "final_val_accuracy": float(last.get("val_accuracy", np.nan)),
                "best_val_accuracy": float(self.history.get("val_accuracy",
                                                            pd.Series([np.nan])).max()),
                **self.extra}


def config_dict(config) -> dict:
    """A dataclass config as a plain dict (for the metrics file)."""
    return asdict(config)
