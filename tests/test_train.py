"""leuko.models.train's record of what was saved: which epoch's weights a fit leaves in the model
(best checkpoint, EarlyStopping's restored epoch, or the last), their validation accuracy
measured on the model, and the epochs of each phase in the training summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from leuko.models import train

EPOCHS = 8


def _toy():
    """A 1-D problem whose validation boundary (x > -0.5) the model passes on its way from
    x > -1.5 (its start) to the training boundary (x > 0.5): validation accuracy rises, peaks
    in the middle of training and falls again, so the best epoch is not the last."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (128, 1)).astype("float32")
    xv = np.linspace(-0.99, 0.99, 40, dtype="float32")[:, None]
    y = train.one_hot((x[:, 0] > 0.5).astype(int), 2)
    yv = train.one_hot((xv[:, 0] > -0.5).astype(int), 2)
    return x, y, xv, yv


def _model():
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation="softmax")])
    model.layers[0].set_weights([np.array([[-4.0, 4.0]], "float32"),
                                 np.array([0.0, 6.0], "float32")])
    return model


def _fit(tmp_path, **config) -> tuple[pd.DataFrame, object, object]:
    from leuko.core import inputs
    train.set_determinism(0)
    x, y, xv, yv = _toy()
    model = _model()
    cfg = train.FitConfig(epochs=EPOCHS, batch_size=16, learning_rate=0.05, **config)
    train.compile_model(model, cfg)
    val = inputs.make_dataset(xv, yv, 16)
    history = train.fit(model, lambda s: inputs.make_epochs_dataset(x, y, 16, EPOCHS, s),
                        inputs.steps_per_epoch(len(x), 16), val, cfg, None, tmp_path / "work",
                        label="end-to-end")
    return history, model, val


def _accuracy_now(model, val) -> float:
    return float(model.evaluate(val, verbose=0, return_dict=True)["accuracy"])


@pytest.mark.slow
def test_checkpoint_run_saves_and_records_the_best_epoch_not_the_last(tmp_path):
    history, model, val = _fit(tmp_path, checkpoint_best=True)
    best = int(history["val_accuracy"].to_numpy().argmax()) + 1  # first of the best
    assert best < EPOCHS, "the toy must peak before its last epoch"
    summary = train.RunResult(model, history, 1.0).summary()
    assert summary["saved_epoch"] == best and summary["saved_phase"] == "end-to-end"
    assert summary["saved_by"] == train.SAVED_BY["checkpoint"]
    row = history.set_index("epoch").loc[best]
    # measured on the saved model: the best epoch's score, not the last one's
    assert summary["saved_val_accuracy"] == pytest.approx(row["val_accuracy"], abs=1e-6)
    assert summary["saved_val_accuracy"] > summary["final_val_accuracy"]
    assert _accuracy_now(model, val) == pytest.approx(summary["saved_val_accuracy"])
    assert summary["epochs_run"] == EPOCHS
    assert summary["epochs_per_phase"] == {"end-to-end": EPOCHS}
    assert summary["machine"]["cpu"] and summary["machine"]["cores"] >= 1
    json.dumps(summary, allow_nan=True)


@pytest.mark.slow
def test_early_stopping_run_records_the_restored_epoch(tmp_path):
    history, model, val = _fit(tmp_path, patience=EPOCHS)  # never stops, still restores
    restored = int(history["val_loss"].to_numpy().argmin()) + 1
    assert restored < EPOCHS
    summary = train.RunResult(model, history, 1.0).summary()
    assert summary["saved_epoch"] == restored
    assert summary["saved_by"] == train.SAVED_BY["early_stopping"]
    row = history.set_index("epoch").loc[restored]
    assert summary["saved_val_accuracy"] == pytest.approx(row["val_accuracy"], abs=1e-6)
    assert _accuracy_now(model, val) == pytest.approx(summary["saved_val_accuracy"])


@pytest.mark.slow
def test_plain_run_saves_the_last_epoch(tmp_path):
    history, model, _ = _fit(tmp_path)
    summary = train.RunResult(model, history, 1.0).summary()
    assert (summary["saved_epoch"], summary["saved_by"]) == (EPOCHS, train.SAVED_BY["last"])
    assert summary["saved_val_accuracy"] == pytest.approx(summary["final_val_accuracy"],
                                                          abs=1e-6)
    assert summary["saved_val_accuracy"] < summary["best_val_accuracy"]


@pytest.mark.slow
def test_leukemia_schedule_keeps_phase_one_when_phase_two_is_worse(tmp_path):
    """Phase 2 (no early stopping) goes on from phase 1's best weights and only gets worse
    here, so the run ends with phase 1's checkpoint, and the summary says so."""
    from leuko.leukemia import recipe as leukemia
    train.set_determinism(0)
    x, y, xv, yv = _toy()
    model = _model()
    config = train.FitConfig(epochs=3, batch_size=16, learning_rate=0.05, checkpoint_best=True)
    train.compile_model(model, config)
    history = leukemia.fit_recipe(model, x, y, xv, yv, config, 3, None, tmp_path / "work")
    summary = train.RunResult(model, history, 1.0).summary()
    assert summary["epochs_per_phase"] == {"early stopping": 3, "no early stopping": 3}
    assert summary["epochs_run"] == 6 and history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    first = history[history["phase"] == "early stopping"]
    best = int(first["epoch"].iloc[first["val_accuracy"].to_numpy().argmax()])
    assert history["val_accuracy"].iloc[3:].max() < first["val_accuracy"].max()
    assert (summary["saved_phase"], summary["saved_epoch"]) == ("early stopping", best)
    from leuko.core import inputs
    assert _accuracy_now(model, inputs.make_dataset(xv, yv, 16)) == pytest.approx(
        summary["saved_val_accuracy"])


def _phase(name: str, epochs: int, saved: int, score: float, rule: str) -> pd.DataFrame:
    frame = pd.DataFrame({"phase": name, "epoch": np.arange(1, epochs + 1),
                          "val_accuracy": np.linspace(0.5, 0.9, epochs)})
    return train.mark_saved(frame, epochs, saved, rule, score)


def test_summary_names_the_epochs_of_each_phase_and_the_last_phase_saved():
    history = pd.concat([_phase("head", 3, 3, 0.7, train.SAVED_BY["last"]),
                         _phase("end-to-end", 5, 4, 0.85, train.SAVED_BY["early_stopping"])],
                        ignore_index=True)
    summary = train.RunResult(None, history, 2.0).summary()
    assert summary["epochs_per_phase"] == {"head": 3, "end-to-end": 5}
    assert summary["epochs_run"] == 8  # not the largest epoch number (5)
    assert (summary["saved_phase"], summary["saved_epoch"]) == ("end-to-end", 4)
    assert summary["saved_val_accuracy"] == 0.85
    assert summary["best_val_accuracy"] == pytest.approx(0.9)
    # a phase resumed after epoch 2 has rows 3..5 only but ran 5 epochs
    resumed = _phase("end-to-end", 5, 5, 0.9, train.SAVED_BY["last"]).iloc[2:]
    assert train.phase_epochs(resumed) == {"epochs_run": 5, "epochs_per_phase": {"end-to-end": 5}}



def _traced_fit(how: str, work=None) -> tuple[int, list[np.ndarray]]:
    """A small conv net (BatchNorm, Dropout) fitted 2 epochs by Keras's ``fit`` alone
    (``how="keras"``), with the training state built first (``"built"``) or by ``train.fit``
    (``"train.fit"``, in ``work``); how often its training step was traced, and its weights."""
    import keras

    from leuko.core import inputs
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
        keras.layers.Flatten(), keras.layers.Dropout(0.5),
        keras.layers.Dense(2, activation="softmax")])
    config = train.FitConfig(epochs=2, batch_size=8, learning_rate=0.01)
    train.compile_model(model, config)
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, 32)]
    val = inputs.make_dataset(x[:16], y[:16], 8)
    traces = []
    step = model.train_step

    def counted(data):  # runs only while TensorFlow traces the training function
        traces.append(1)
        return step(data)

    model.train_step = counted
    if how == "train.fit":
        train.fit(model, lambda s: inputs.make_epochs_dataset(x, y, 8, 2, s),
                  inputs.steps_per_epoch(len(x), 8), val, config, None, work)
    else:
        if how == "built":
            train.build_training_state(model, val)
            assert model.optimizer.built
        model.fit(inputs.make_dataset(x, y, 8), validation_data=val, epochs=2, verbose=0)
    return len(traces), model.get_weights()


def test_training_state_built_first_traces_the_step_once_and_trains_the_same_weights(tmp_path):
    traces_keras, weights_keras = _traced_fit("keras")
    traces_built, weights_built = _traced_fit("built")
    assert traces_keras == 2  # Keras 3 builds the optimizer inside the first trace
    assert traces_built == 1
    assert all(np.array_equal(a, b) for a, b in zip(weights_keras, weights_built, strict=True))
    assert _traced_fit("train.fit", tmp_path / "work")[0] == 1
