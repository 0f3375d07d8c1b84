"""Training: the three regimes of the thesis study and the leukemia recipe's callbacks.

- ``imagenet``: frozen pretrained base; bottleneck features computed once (cached by the
  ``features`` stage); only the head is trained, on the features. ``imagenet-long`` is the
  same with many more epochs (the thesis's 5000-epoch run).
- ``imagenet-finetune``: the pretrained base unfrozen (all or its top blocks), the head first
  warmed up on the cached features, then everything trained end to end with a small rate.
  ``imagenet-finetune-stain`` adds stain, colour and scale jitter (``leuko.core.stain``): the
  model meant for cells from other labs.
- ``scratch``: random initial weights, the whole network trained, with the cure the thesis
  named for its near-chance scratch models: weight decay (L2), dropout and early stopping.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from leuko.core.inputs import make_dataset
from leuko.core.machine import describe

REGIMES = ("imagenet", "imagenet-long", "imagenet-finetune", "imagenet-finetune-stain", "scratch")
FROZEN_REGIMES = ("imagenet", "imagenet-long")  # head only, on cached bottleneck features
PRETRAINED_REGIMES = (*FROZEN_REGIMES, "imagenet-finetune", "imagenet-finetune-stain")


def check_regime(regime: str) -> str:
    """``regime`` if known, else a ValueError naming the allowed values."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    return regime


def set_determinism(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and turn on deterministic ops (CPU reruns match)."""

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
    steps_per_execution: int = 1  # >1 runs several steps per call (cuts overhead of tiny heads)

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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class EpochProgress(keras.callbacks.Callback):
    """Progress of a long ``dvc repro``: a line per epoch on the process's own stderr, e.g.
    ``[blood-cell-images-mobilenet_v2-scratch] epoch 3/9  41.2 s/epoch  ~4 min 07 s left``.

    ``sys.__stderr__`` inside a papermill kernel is the kernel process's stderr, which papermill
    passes through to the console (the notebook's own output, Keras's ``verbose=2`` lines,
    stays in the executed notebook). The time left is the epochs to go times the median of the
    last five epochs (the first one, which builds the graphs, left out); early stopping can end
    sooner. Fast epochs are throttled to a line every ``every_seconds`` (first and last epoch
    always shown), so a 200-epoch head does not flood the log."""

    def __init__(self, name: str, epochs: int, every_seconds: float = 10.0, stream=None):
        super().__init__()
        self.name, self.epochs, self.every_seconds = name, int(epochs), float(every_seconds)
        self.stream = stream
        self._times: list[float] = []
        self._last_print = float("-inf")
        self._pending = ""

    def _write(self, line: str) -> None:

        stream = self.stream or sys.__stderr__ or sys.stderr
        stream.write(line + "\n")
        stream.flush()
        self._last_print = time.perf_counter()
        self._pending = ""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self._times.append(seconds)
        done = epoch + 1
        recent = (self._times[1:] or self._times)[-5:]
        left = max(self.epochs - done, 0) * float(np.median(recent))
        extra = ""
        if logs and "val_accuracy" in logs:
            extra = f"  val_accuracy {float(logs['val_accuracy']):.3f}"
        line = (f"[{self.name}] epoch {done}/{self.epochs}  {seconds:.1f} s/epoch  "
                f"~{_duration(left)} left{extra}")
        if (len(self._times) == 1 or done >= self.epochs
                or time.perf_counter() - self._last_print >= self.every_seconds):
            self._write(line)
        else:
            self._pending = line

    def on_train_end(self, logs=None):
        if self._pending:  # the last epoch run (early stopping) when it was throttled
            self._write(self._pending)


def progress_name(work_dir: Path, label: str = "") -> str:
    """The name a training's progress lines carry: its work folder below ``build/work``
    (the model id, plus ``/head`` for a head's warm-up), else the folder's name."""
    parts = Path(work_dir).parts
    name = "/".join(parts[parts.index("work") + 1:]) if "work" in parts[:-1] else parts[-1]
    return f"{name} {label}".strip() if label and label not in name else name


def compile_model(model: keras.Model, config: FitConfig) -> keras.Model:
    """Adam (or AdamW with weight decay), categorical cross-entropy, accuracy."""
    if config.weight_decay > 0:
        optimizer = keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(config.learning_rate)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=config.steps_per_execution)
    return model


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` of the weights of the best ``val_accuracy`` that also remembers
    which epoch it saved (``best_epoch``, 0-based; -1 before the first save), which
    ``ResumableCallbacks`` keeps across a killed and resumed run as it keeps ``best``."""

    def __init__(self, path: Path):
        super().__init__(path, monitor="val_accuracy", save_best_only=True,
                         save_weights_only=True)
        self.best_epoch = -1

    def on_epoch_end(self, epoch, logs=None):
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best != before:  # changed only when this epoch's weights were saved
            self.best_epoch = epoch


class ResumableCallbacks(keras.callbacks.Callback):
    """Keeps what ``BackupAndRestore`` does not (it restores weights, optimizer and epoch)
    across a killed and resumed run: the counters of EarlyStopping / ReduceLROnPlateau /
    ModelCheckpoint and the state of the layers' random seed generators (dropout), so a
    resumed run continues exactly as an uninterrupted one."""

    FIELDS = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")

    def __init__(self, callbacks: list[keras.callbacks.Callback], path: Path):
        super().__init__()
        self.tracked = callbacks
        self.path = Path(path)

    def on_train_begin(self, logs=None):
        if not self.path.exists():
            return
        state = json.loads(self.path.read_text())
        for variable, value in zip(self._seed_states(), state["seeds"], strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        for i, callback in enumerate(self.tracked):
            for key, value in state["callbacks"][i].items():
                setattr(callback, key, value)
            weights = self.path.with_name(f"best-{i}.npz")
            if getattr(callback, "restore_best_weights", False) and weights.exists():
                with np.load(weights, allow_pickle=False) as data:
                    callback.best_weights = [data[f"w{k}"] for k in range(len(data.files))]

    def _seed_states(self) -> list:
        return _seed_states_of(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {"callbacks": [],
                 "seeds": [np.asarray(v).tolist() for v in self._seed_states()]}
        for i, callback in enumerate(self.tracked):
            values = {k: _plain(getattr(callback, k)) for k in self.FIELDS
                      if hasattr(callback, k)}
            state["callbacks"].append(values)
            best = getattr(callback, "best_weights", None)
            if best is not None and getattr(callback, "best_epoch", None) == epoch:
                np.savez(self.path.with_name(f"best-{i}.npz"),
                         **{f"w{k}": w for k, w in enumerate(best)})
        self.path.write_text(json.dumps(state))


def _seed_states_of(model: keras.Model) -> list:
    """The random seed generator states of a model's layers (dropout, augmentation)."""
    return [v for v in model.variables if "seed_generator_state" in v.path]


def _plain(value):
    """A JSON-able copy of a callback counter (numpy scalars -> Python numbers)."""
    return value.item() if hasattr(value, "item") else value


def resume_epoch(work_dir: Path) -> int:
    """The epoch a killed run resumes at (0 when there is nothing to resume)."""
    metadata = Path(work_dir) / "backup" / "training_metadata.json"
    return int(json.loads(metadata.read_text())["epoch"]) if metadata.exists() else 0


def resumable_live(folder: Path, start: int) -> Live:
    """DVCLive writing a run's curves to ``folder`` inside its resumable state, where they
    survive a kill as the weights do (DVC removes a stage's outputs, the published curves,
    before it reruns the stage). A run resumed at epoch ``start`` drops any row an earlier
    attempt logged from that epoch on (logged before its backup was written) and logs the
    next epoch as step ``start``: one curve, each epoch once."""
    if start > 0:
        for tsv in (folder / "plots").rglob("*.tsv"):
            lines = tsv.read_text().splitlines()
            kept = [lines[0]] + [line for line in lines[1:] if int(line.split("\t")[0]) < start]
            tsv.write_text("\n".join(kept) + "\n")
    live = Live(str(folder), resume=start > 0, save_dvc_exp=False, dvcyaml=None)
    live.step = start
    return live


def publish_curves(folder: Path, live_dir: Path) -> None:
    """Move a finished run's curves (``metrics.json``, ``plots/``) from its state folder to
    ``live_dir``, replacing what an earlier run left there."""
    live_dir.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        target = live_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.move(str(item), str(target))


def fit(model: keras.Model, train_batches: Callable[[int], object], steps_per_epoch: int,
        val_data, config: FitConfig, live_dir: Path | None, work_dir: Path, label: str = ""
        ) -> pd.DataFrame:
    """Fit a compiled model; returns its history (one row per epoch, with ``epoch_time_s`` and
    the :data:`PHASE_COLUMNS`: which epoch's weights the model holds at the end, by which rule,
    and their validation accuracy measured on the model by one more pass over ``val_data``).

    ``train_batches(start_epoch)`` gives the training batches from that epoch on (see
    ``inputs.make_epochs_dataset``). ``work_dir`` holds the resumable state: a run killed in
    the middle (SIGTERM or SIGKILL) resumes from its last finished epoch when started again
    and ends as an uninterrupted run would, its DVCLive curves too (kept with the state, see
    :func:`resumable_live`, and moved to ``live_dir`` at the end); the state is removed on
    success.
    """

    work_dir = Path(work_dir)
    backup = work_dir / "backup"
    start = resume_epoch(work_dir)
    callbacks: list[keras.callbacks.Callback] = [
        EpochTimer(), EpochProgress(progress_name(work_dir, label), config.epochs)]
    stateful = []
    if config.patience:
        stateful.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True))
    if config.reduce_lr_patience:
        stateful.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=config.reduce_lr_patience, min_lr=1e-6))
    checkpoint = work_dir / "best.weights.h5"
    if config.checkpoint_best:
        stateful.append(BestCheckpoint(checkpoint))
    callbacks += [*stateful, ResumableCallbacks(stateful, work_dir / "callbacks.json")]
    live = None
    if live_dir is not None:
        live = resumable_live(work_dir / "live", start)
        callbacks.append(DVCLiveCallback(live=live))
    callbacks.append(keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=True))
    build_training_state(model, val_data)
    history = model.fit(train_batches(start), steps_per_epoch=steps_per_epoch,
                        validation_data=val_data, epochs=config.epochs, callbacks=callbacks,
                        verbose=2)
    restored = config.checkpoint_best and checkpoint.exists()
    if restored:
        model.load_weights(checkpoint)
    if live is not None:
        live.end()
        publish_curves(work_dir / "live", Path(live_dir))
    shutil.rmtree(work_dir, ignore_errors=True)
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", np.arange(start + 1, start + len(frame) + 1))
    if label:
        frame.insert(0, "phase", label)
    epoch, rule = saved_epoch(stateful, start + len(frame), restored)
    return mark_saved(frame, start + len(frame), epoch, rule, val_accuracy(model, val_data))


def build_training_state(model: keras.Model, batches) -> None:
    """Create the variables of the optimizer, the loss and the metrics before ``fit`` traces
    its training step, from one batch ``(x, y)`` of ``batches`` (a forward pass in inference
    mode: nothing the training reads is changed).

    Keras 3 on TensorFlow without a distribution strategy defers this to the first trace of
    the training function, and a ``tf.function`` that creates variables while it is traced is
    traced a second time: for MobileNetV2 at 96 px that second trace and the optimizer's
    variables built inside it are ~20 s of a ~45-s first epoch on 2 CPU cores, for
    EfficientNetB2 ~35 s (``make bench``, section ``tracing``). The trained weights are the
    same either way."""
    if model.optimizer is None or model.optimizer.built:
        return
    x, y = next(iter(batches))[:2]
    y_pred = model(x, training=False)
    model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
    model.compute_metrics(x, y, y_pred, sample_weight=None)
    model.reset_metrics()
    model.optimizer.build(model.trainable_variables)


#: Columns ``fit`` adds to its history, one value per phase (the same on each of its rows):
#: the epochs the phase ran (those before a resume included), the epoch (1-based) whose
#: weights the model holds when the phase ends, which rule chose them, and their validation
#: accuracy measured on the model after the phase (not read from the history).
PHASE_COLUMNS = ("phase_epochs", "saved_epoch", "saved_by", "saved_val_accuracy")
SAVED_BY = {"checkpoint": "best val_accuracy (ModelCheckpoint)",
            "early_stopping": "best val_loss (EarlyStopping, restore_best_weights)",
            "last": "last epoch"}


def saved_epoch(callbacks: list[keras.callbacks.Callback], last_epoch: int,
                checkpoint_loaded: bool) -> tuple[int, str]:
    """The epoch (1-based) whose weights a fit leaves in the model, and the rule that chose it:
    the best-``val_accuracy`` checkpoint when it was loaded at the end, else the epoch
    EarlyStopping restored (it restores its best ``val_loss`` weights whenever it has them,
    stopped early or not), else the last epoch run."""
    for callback in callbacks:
        if checkpoint_loaded and isinstance(callback, BestCheckpoint) and callback.best_epoch >= 0:
            return int(callback.best_epoch) + 1, SAVED_BY["checkpoint"]
    for callback in callbacks:
        if (isinstance(callback, keras.callbacks.EarlyStopping)
                and callback.restore_best_weights and callback.best_weights is not None):
            return int(callback.best_epoch) + 1, SAVED_BY["early_stopping"]
    return int(last_epoch), SAVED_BY["last"]


def val_accuracy(model: keras.Model, val_data) -> float:
    """Accuracy of the model as it stands on the validation batches (one pass, no training;
    NaN without validation data): the score of the weights that are saved."""
    if val_data is None:
        return float("nan")
    return float(model.evaluate(val_data, verbose=0, return_dict=True)["accuracy"])


def mark_saved(frame: pd.DataFrame, phase_epochs: int, epoch: int, rule: str,
               score: float) -> pd.DataFrame:
    """``frame`` with the :data:`PHASE_COLUMNS` set on every row (see there)."""
    return frame.assign(phase_epochs=int(phase_epochs), saved_epoch=int(epoch), saved_by=rule,
                        saved_val_accuracy=float(score))


def compute_features(base: keras.Model, preprocess: keras.layers.Layer, images: np.ndarray,
                     batch_size: int = 64) -> np.ndarray:
    """Bottleneck features of a frozen base: one forward pass over uint8 images."""

    model = keras.Sequential([keras.Input(images.shape[1:]), preprocess, base])
    return model.predict(make_dataset(images, None, batch_size), verbose=0).astype(np.float32)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Integer labels -> float32 one-hot rows."""
    return np.eye(n_classes, dtype=np.float32)[np.asarray(labels, dtype=int)]


@dataclass
class RunResult:
    """What a training run leaves: the model, its history (the concatenated histories of
    :func:`fit`, one ``phase`` per call) and timings."""

    model: keras.Model
    history: pd.DataFrame
    train_seconds: float
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Flat numbers for the training summary (``reports/train/<model>.json``).

        ``epochs_run``: all epochs of all phases; ``epochs_per_phase``: per phase (the WBC
        fine-tuning regimes: ``head`` warm-up, then ``end-to-end``). ``saved_phase`` /
        ``saved_epoch`` / ``saved_by`` / ``saved_val_accuracy``: the weights the saved model
        holds (see :func:`saved_weights`); ``best_val_accuracy`` is the highest validation
        accuracy any epoch of any phase reached, which the saved weights need not have.
        ``machine``: :func:`leuko.core.machine.describe` of the machine that trained."""
        frame = self.history
        last = frame.iloc[-1] if len(frame) else {}
        return {"train_seconds": round(self.train_seconds, 2),
                **phase_epochs(frame),
                "final_train_accuracy": float(last.get("accuracy", np.nan)),
                "final_val_accuracy": float(last.get("val_accuracy", np.nan)),
                "best_val_accuracy": float(frame.get("val_accuracy",
                                                     pd.Series([np.nan])).max()),
                **saved_weights(frame),
                "machine": describe(),
                **self.extra}


def _phases(history: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The history's phases in training order (the whole history as one phase when it has no
    ``phase`` column)."""
    if "phase" not in history.columns:
        return [("training", history)] if len(history) else []
    return [(str(name), rows) for name, rows in history.groupby("phase", sort=False)]


def phase_epochs(history: pd.DataFrame) -> dict:
    """``{"epochs_run": total, "epochs_per_phase": {phase: epochs}}`` of a :func:`fit`
    history (``phase_epochs`` counts a resumed phase's epochs before the resume too)."""
    per_phase = {}
    for name, rows in _phases(history):
        per_phase[name] = (int(rows["phase_epochs"].iloc[-1]) if "phase_epochs" in rows
                           else len(rows))
    return {"epochs_run": int(sum(per_phase.values())), "epochs_per_phase": per_phase}


def saved_weights(history: pd.DataFrame) -> dict:
    """The weights a run saves are those its last phase ends with: ``saved_phase``,
    ``saved_epoch`` (1-based, as the history numbers it), ``saved_by`` (the rule: best
    val_accuracy checkpoint, EarlyStopping's restored best val_loss, or the last epoch) and
    ``saved_val_accuracy``, measured on the model after training by :func:`fit`; the phase is
    the last one that has that epoch. NaN / None where the history lacks the columns."""
    phases = _phases(history)
    if not phases or "saved_epoch" not in history.columns:
        return {"saved_phase": None, "saved_epoch": None, "saved_by": None,
                "saved_val_accuracy": float("nan")}
    last = history.iloc[-1]
    epoch = int(last["saved_epoch"])
    owner = next((name for name, rows in reversed(phases) if (rows["epoch"] == epoch).any()),
                 phases[-1][0])
    return {"saved_phase": owner, "saved_epoch": epoch, "saved_by": str(last["saved_by"]),
            "saved_val_accuracy": float(last["saved_val_accuracy"])}


def config_dict(config) -> dict:
    """A dataclass config as a plain dict (for the metrics file)."""
    return asdict(config)
