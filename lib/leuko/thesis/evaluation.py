"""Evaluation of trained models: held-out accuracy with intervals, and robustness to other labs.

Split from ``leuko.thesis.study`` so that the training stages do not import ``leuko.core.metrics``: a
change to how models are scored reruns the evaluate stages, never training (``leuko.pipeline.stagedeps``
derives each stage's code dependencies from these imports).

``evaluate_models`` scores many models in one process (one TensorFlow start for every model
instead of one per model) and writes each model's files as ``evaluate_model`` does
(``Paths``' scheme). Where one stage trains all of a network's models
(``wbc.stages.per_network``, the smoke preset), ``train_and_evaluate_network`` scores each
right after its training; ``evaluate_study`` (the ``evaluate-wbc`` stage) scores the other
models, gathers those, and writes the index of them all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from leuko.core import splits
from leuko.core.accel import eager_execution
from leuko.core.atomic import write_csv_atomic
from leuko.core.datasets import WBC_CLASSES
from leuko.core.inputs import load_resized
from leuko.core.machine import describe
from leuko.core.metrics import add_exact_interval, classification_metrics, metric_intervals
from leuko.core.params import read_block
from leuko.core.progress import progress_bar
from leuko.core.stain import STAIN_SHIFTS, stain_shift
from leuko.thesis.study import (
    WBC_POOLED_DATASET,
    ModelKey,
    Paths,
    class_index,
    load_model,
    model_id,
    predict,
    read_json,
    read_manifest,
    regime_and_size,
    resolve_image_size,
    train_network,
    wbc_models,
    write_json,
)

#: Where ``evaluate_study`` writes its index (one per study part).
INDEX_DIR = Path("reports") / "evaluation"
DEFAULT_PATHS = Paths()
#: Manifest columns whose shared values make images copies of one source cell (the keys the
#: splits are grouped by: source cell / patient, content hash, near-duplicate group).
CELL_KEYS = ("group", "sha256", "near")
#: What the training summary contributes to a model's metrics file (``train.RunResult``).
TRAINING_KEYS = ("train_seconds", "epochs_run", "epochs_per_phase", "saved_phase",
                 "saved_epoch", "saved_by", "saved_val_accuracy", "best_val_accuracy",
                 "final_train_accuracy", "machine")


def source_cells(rows: pd.DataFrame) -> np.ndarray:
    """One id per row: rows that share a value in any of the :data:`CELL_KEYS` the manifest
    has are copies of one source cell (TEST's shifted copies, ALL-IDB2's Im138_0 / Im146_0),
    so intervals resample and count these ids, not images."""
    keys = [k for k in CELL_KEYS if k in rows.columns]
    if "group" not in keys:
        raise ValueError(f"manifest rows lack the 'group' column (have {list(rows.columns)})")
    return splits.leak_groups(rows.reset_index(drop=True), keys)


def held_out_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str],
                     cells: np.ndarray, n_boot: int, seed: int) -> dict:
    """Figures of one held-out split: ``classification_metrics``, the 95 % cluster-bootstrap
    ``intervals`` over source cells (``cells``), ``n_cells``, and the exact Clopper-Pearson
    ``exact_interval`` of the accuracy where every image is its own cell
    (``metrics.add_exact_interval``; not on TEST, whose images are copies of 71 cells)."""

    metrics = add_exact_interval(classification_metrics(y_true, y_pred, classes), groups=cells)
    metrics["intervals"] = metric_intervals(y_true, y_pred, classes, n_boot=n_boot, seed=seed,
                                            groups=cells)
    return metrics


class DecodedImages:
    """``inputs.load_resized`` that decodes each (files, size, crop) once: the models that
    ``evaluate_models`` scores in one process read the same splits. The arrays are read-only,
    so no model's scoring can change another's images."""

    def __init__(self):
        self._arrays: dict[tuple, np.ndarray] = {}

    def __call__(self, paths, size: int, crop=None, progress: bool = True) -> np.ndarray:

        key = (tuple(str(p) for p in paths), int(size), crop)
        if key not in self._arrays:
            images = load_resized(list(key[0]), size, crop=crop, progress=progress)
            images.setflags(write=False)
            self._arrays[key] = images
        return self._arrays[key]


class SharedFrozenBase:
    """``study.predict`` for the models ``evaluate_models`` scores in one process, with the
    frozen base's forward pass shared: the head-only regimes' models (``imagenet``,
    ``imagenet-long``, their repeats, the pooled split's) are one frozen ImageNet base under
    different heads, so the base's features of an image set are computed once and each head
    runs on them. A model is split only when it is ``Input -> preprocess -> base -> head``
    with a base that is not trainable; its base is recognised by a digest of its weights and
    the images by a digest of their pixels, so a fine-tuned base or another image set is never
    served another's features. Every other model is predicted whole. Only one base's
    features are kept: a model over another base drops them (the full preset's flattened
    bottlenecks hold hundreds of MB per image set)."""

    def __init__(self):
        self._features: dict[tuple[str, str], np.ndarray] = {}
        self._last = None  # (model, its parts, its base's digest): split once per model
        self.shared = 0  # predictions served from features computed before

    @staticmethod
    def frozen_parts(model):
        """``(features model, head)`` of a frozen-base classifier, else None."""

        if len(model.layers) != 4:
            return None
        _, preprocess, base, head = model.layers
        if not isinstance(base, keras.Model) or base.trainable or base.trainable_weights:
            return None
        inputs = keras.Input(model.input_shape[1:])
        return keras.Model(inputs, base(preprocess(inputs))), head

    @staticmethod
    def digest(arrays) -> str:

        h = hashlib.sha1()
        for array in arrays:
            a = np.ascontiguousarray(array)
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.data)
        return h.hexdigest()

    def __call__(self, model, images: np.ndarray) -> np.ndarray:
        if self._last is None or self._last[0] is not model:
            parts = self.frozen_parts(model)
            base = None if parts is None else self.digest(parts[0].get_weights())
            if base is not None and any(key[0] != base for key in self._features):
                self._features.clear()  # another base: the kept features can serve no one
            self._last = (model, parts, base)
        _, parts, base = self._last
        if parts is None:
            return predict(model, images)
        features_model, head = parts
        key = (base, self.digest([images]))
        if key in self._features:
            self.shared += 1
        else:
            self._features[key] = predict(features_model, images)
        return head.predict(self._features[key], batch_size=64, verbose=0)


#: What a 4-class training summary records about how its base was built (copied to metrics).
TRAINING_CHOICES = ("bottleneck", "weights")


def stain_robustness(model, rows: pd.DataFrame, size: int, classes: list[str],
                     crop=None, decode=None, predictor=predict) -> dict[str, dict[str, float]]:
    """Accuracy and macro F1 of ``model`` on ``rows`` as they are (``none``) and as each
    simulated other lab of ``leuko.core.stain.STAIN_SHIFTS`` would show them. ``decode``: how the
    images are read (``inputs.load_resized``'s signature; default: decoded here);
    ``predictor(model, images)``: how they are predicted (default ``study.predict``)."""

    images = (decode or load_resized)(list(rows["path"]), size, crop=crop, progress=False)
    y_true = class_index(rows["label"], classes)
    # every shift in one prediction call (an eager forward pass costs about the same for 4
    # images as for 40), then split per shift
    shifted = np.concatenate([stain_shift(images, kind) for kind in STAIN_SHIFTS])
    y_preds = np.split(predictor(model, shifted).argmax(axis=1), len(STAIN_SHIFTS))
    scores = {}
    for kind, y_pred in zip(STAIN_SHIFTS, y_preds, strict=True):
        metrics = classification_metrics(y_true, y_pred, classes)
        scores[kind] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
    return scores


def evaluate_model(dataset: str, network: str, regime: str, image_size: int | str,
                   n_boot: int = 2000, seed: int = 0, eval_splits=("test", "test_simple"),
                   classes: list[str] | None = None, crop=None,
                   robustness_split: str | None = "test", robustness_per_class: int = 100,
                   eval_per_class: int = 0, repeat_seed: int | None = None,
                   paths: Paths = DEFAULT_PATHS, decode=None, predictor=predict,
                   model=None) -> dict:
    """Accuracy, per-class figures, confusion matrix and intervals on each held-out split
    (``held_out_metrics``): bootstrap intervals resample whole source cells / patients
    (``source_cells``), the exact interval comes where every image is its own cell. The file
    also carries ``training`` (the training summary's ``TRAINING_KEYS``: the saved weights'
    epoch and validation accuracy, the training machine, and for the 4-class study its
    ``TRAINING_CHOICES``) and ``machine``, the machine that evaluated
    (``leuko.core.machine.describe``). ``eval_per_class``: score a seeded, class-balanced sample of
    each split spread over its source cells (0 = every image; the smoke preset's plumbing run
    scores a few).

    Robustness to other labs: on a seeded, class-balanced sample of ``robustness_split``
    (``robustness_per_class`` images per class spread over its source cells; 0 = all) the
    accuracy under each simulated stain or light shift (``stain_robustness``); ``None`` or
    ``"none"`` skips it.

    ``repeat_seed``: score the repeat ``<id>-seed<n>`` (``wbc.repeats``) instead of the main
    run; the file's ``training_seed`` is the seed its training ran with either way.
    ``decode``: how images are read (default ``inputs.load_resized``; ``evaluate_models``
    passes one ``DecodedImages`` to all its models); ``predictor(model, images)``: how they are
    predicted (default ``study.predict``; ``evaluate_models`` passes a ``SharedFrozenBase``).
    ``model``: the trained model, still in memory (``train_and_evaluate_network``); None: loaded
    from ``paths.model``."""

    decode = decode or load_resized
    the_id = model_id(dataset, network, regime, repeat_seed)
    classes = list(classes or WBC_CLASSES)
    own_size = regime_and_size(regime)[1]  # a regime at an input size of its own
    size = resolve_image_size(network, image_size if own_size is None else own_size)
    model = model if model is not None else load_model(paths.model(the_id))
    manifest = read_manifest(paths.manifest(dataset))
    result = {"model": the_id, "dataset": dataset, "network": network, "regime": regime,
              "classes": classes, "splits": {}}
    predictions = []
    for split in eval_splits:
        rows = splits.balanced_subsample(manifest[manifest["split"] == split], eval_per_class,
                                         seed)
        if rows.empty:
            continue
        probs = predictor(model, decode(list(rows["path"]), size, crop=crop))
        y_true = class_index(rows["label"], classes)
        y_pred = probs.argmax(axis=1)
        result["splits"][split] = held_out_metrics(y_true, y_pred, classes, source_cells(rows),
                                                   n_boot, seed)
        frame = pd.DataFrame({"path": rows["path"].to_numpy(), "split": split,
                              "actual": rows["label"].to_numpy(),
                              "predicted": [classes[i] for i in y_pred]})
        for i, name in enumerate(classes):
            frame[f"p_{name}"] = probs[:, i].round(5)
        predictions.append(frame)
        write_csv_atomic(paths.confusion_plot(the_id, split), frame[["actual", "predicted"]])
    if robustness_split not in (None, "none"):
        rows = manifest[manifest["split"] == robustness_split]
        if rows.empty:
            raise ValueError(f"robustness_split {robustness_split!r} has no rows in "
                             f"{paths.manifest(dataset)}")
        rows = splits.balanced_subsample(rows, robustness_per_class, seed)
        result["stain_shift"] = {"split": robustness_split, "n": len(rows),
                                 "kinds": stain_robustness(model, rows, size, classes, crop,
                                                           decode, predictor)}
    training = read_json(paths.train_summary(the_id))
    missing = [k for k in TRAINING_KEYS if k not in training]
    if missing:
        raise ValueError(f"{paths.train_summary(the_id)} lacks {missing}: it was written by an "
                         "older training; retrain the model (dvc repro)")
    result["training"] = {k: training[k] for k in TRAINING_KEYS}
    result["training_seed"] = int(training.get("training_seed", seed))
    result["machine"] = describe()
    # the 4-class study's training names its bottleneck and weights (``weights: random`` is a
    # plumbing run, and its metrics say so); the leukemia models train from scratch
    result["training"].update({k: training[k] for k in TRAINING_CHOICES if k in training})
    write_json(paths.metrics(the_id), result)
    write_csv_atomic(paths.predictions(the_id), pd.concat(predictions, ignore_index=True))
    return result


def evaluate_models(models: list[ModelKey], image_size: int | str,
                    n_boot: int = 2000, seed: int = 0, robustness_split: str | None = "test",
                    robustness_per_class: int = 100, eval_per_class: int = 0,
                    paths: Paths = DEFAULT_PATHS,
                    eager: bool = False) -> list[dict]:
    """``evaluate_model`` for each model (``study.ModelKey``: read from its stage's folder) in
    one process; each model's metrics, predictions and confusion data are written as a
    per-model run writes them (``evaluate_study`` adds the index). Models are evaluated in
    order; the first failure stops the run. ``eager``: predict without graph tracing
    (``accel.eager_execution``; ``wbc.eager``, the smoke preset)."""


    if not models:
        raise ValueError("no models to evaluate (params/wbc.yaml: networks x regimes is empty)")
    results = []
    decode = DecodedImages()  # every model reads the same splits ...
    predictor = SharedFrozenBase()  # ... and the head-only ones share their base's features
    with eager_execution(eager):
        for key in progress_bar([ModelKey(*m) for m in models], desc="models", unit="model"):
            results.append(evaluate_model(
                key.dataset, key.network, key.regime, image_size, n_boot=n_boot, seed=seed,
                robustness_split=robustness_split, robustness_per_class=robustness_per_class,
                eval_per_class=eval_per_class, repeat_seed=key.repeat_seed,
                paths=key.paths(paths.root), decode=decode, predictor=predictor))
            keras.backend.clear_session()  # free the graphs of the model just scored
    return results


#: ``params/evaluate.yaml``'s keys for the 4-class models: ``evaluate_model``'s keyword arguments.
EVALUATE_OPTIONS = ("n_boot", "robustness_split", "robustness_per_class", "eval_per_class")


def evaluate_options(evaluate: dict) -> dict:
    """The ``evaluate`` block as ``evaluate_model``'s (and ``evaluate_models``') keyword
    arguments; a ValueError names the keys it lacks."""
    missing = [k for k in EVALUATE_OPTIONS if k not in evaluate]
    if missing:
        raise ValueError(f"params/evaluate.yaml: evaluate lacks {missing}")
    return {k: evaluate[k] for k in EVALUATE_OPTIONS}


def train_and_evaluate_network(network: str, data: dict | None = None,
                               wbc: dict | None = None, evaluate: dict | None = None,
                               trainings: dict[str, dict] | None = None,
                               paths: Paths = DEFAULT_PATHS) -> tuple[list, list[dict]]:
    """The stage of a network of ``wbc.stages.per_network`` (the smoke preset): every model of
    it trained (``study.train_network``) and each scored as ``evaluate_models`` scores it, right
    after its training while it is in memory: loading a deep network's ``.keras`` again costs
    seconds (DenseNet201 ~12 s on 2 cores), and the smoke preset trains 63 models. The
    ``evaluate-wbc`` stage then only gathers these models' metrics (``evaluate_study``).
    Blocks that are None are read from ``params/``; the evaluation's seed is ``data.seed``.
    Returns each model's ``train.RunResult`` and its metrics, in order."""

    wbc, evaluate = read_block("wbc", wbc), read_block("evaluate", evaluate)
    seed = int(read_block("data", data)["seed"])
    decode, predictor = DecodedImages(), SharedFrozenBase()
    results: list[dict] = []

    def score(key: ModelKey, run) -> None:
        with eager_execution(bool(wbc.get("eager", False))):
            results.append(evaluate_model(
                key.dataset, key.network, key.regime, wbc["image_size"], seed=seed,
                repeat_seed=key.repeat_seed, paths=key.paths(paths.root), decode=decode,
                predictor=predictor, model=run.model, **evaluate_options(evaluate)))

    runs = train_network(network, data, wbc, trainings, paths, on_trained=score)
    return runs, results


def evaluate_study(wbc: dict, evaluate: dict, seed: int,
                   paths: Paths = DEFAULT_PATHS) -> list[dict]:
    """The ``evaluate-wbc`` stage: every model of ``params/wbc.yaml`` (``study.wbc_models``),
    in order. The models of ``wbc.stages.per_model`` are scored here in one process
    (``evaluate_models``); those of ``per_network`` were scored by their network's stage
    (``train_and_evaluate_network``), whose metrics files are read. Writes the index
    ``reports/evaluation/wbc.json`` of them all."""
    models = wbc_models(wbc)
    scored: dict[str, dict] = {}
    own = [m for m in models if not m.group]
    if own:
        for result in evaluate_models(own, wbc["image_size"], seed=seed, paths=paths,
                                      eager=bool(wbc.get("eager", False)),
                                      **evaluate_options(evaluate)):
            scored[result["model"]] = result
    for key in (m for m in models if m.group):
        path = key.paths(paths.root).metrics(key.model_id)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no metrics of {key.model_id}, which the stage "
                                    f"train-network@{key.network} trains and scores (dvc "
                                    f"repro train-network@{key.network})")
        scored[key.model_id] = read_json(path)
    results = [scored[m.model_id] for m in models]
    write_json(paths.root / INDEX_DIR / "wbc.json", evaluation_index(results, paths))
    return results


def model_kind(result: dict) -> str:
    """A model's name without its network: the regime, ``pooled`` for the leaky pooled split,
    ``seed<n>`` for a repeat (``study.model_id``)."""
    prefix = f"{result['dataset']}-{result['network']}-"
    kind = result["model"].removeprefix(prefix)
    return f"{kind} (pooled)" if result["dataset"] == WBC_POOLED_DATASET else kind


def confusion_panels(results: list[dict], split: str
                     ) -> tuple[dict[tuple[str, str], np.ndarray], list[str], list[str]]:
    """The confusion matrices of ``split`` as ``figures.plot_confusion_grid`` takes them:
    (network, ``model_kind``) -> matrix, with the rows (networks) and columns (kinds) in the
    order the models come."""
    matrices = {(r["network"], model_kind(r)): np.asarray(r["splits"][split]["confusion_matrix"])
                for r in results if split in r["splits"]}
    rows = list(dict.fromkeys(network for network, _ in matrices))
    cols = list(dict.fromkeys(kind for _, kind in matrices))
    return matrices, rows, cols


def evaluation_index(results: list[dict], paths: Paths = DEFAULT_PATHS) -> dict:
    """Per model: its files and, per split, accuracy (with its interval), macro F1 and n."""
    index = {}
    for result in results:
        the_id = result["model"]
        index[the_id] = {
            "metrics": paths.metrics(the_id).as_posix(),
            "predictions": paths.predictions(the_id).as_posix(),
            "splits": {split: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                               "n": m["n"],
                               "accuracy_low": m["intervals"]["accuracy"]["low"],
                               "accuracy_high": m["intervals"]["accuracy"]["high"]}
                       for split, m in result["splits"].items()}}
    return {"models": index}


def results_frame(results: list[dict]) -> pd.DataFrame:
    """One row per model and split: accuracy [low, high], macro F1, n."""
    rows = [{"model": r["model"], "split": split, "accuracy": m["accuracy"],
             "low": m["intervals"]["accuracy"]["low"],
             "high": m["intervals"]["accuracy"]["high"], "macro_f1": m["macro_f1"], "n": m["n"]}
            for r in results for split, m in r["splits"].items()]
    return pd.DataFrame(rows, columns=["model", "split", "accuracy", "low", "high", "macro_f1",
                                       "n"])


def stain_shift_frame(results: list[dict]) -> pd.DataFrame:
    """Accuracy per model (rows) under each simulated stain or light shift (columns)."""
    rows = {r["model"]: {kind: v["accuracy"] for kind, v in r["stain_shift"]["kinds"].items()}
            for r in results if "stain_shift" in r}
    return pd.DataFrame.from_dict(rows, orient="index")
