"""Export the study's chosen model per task, with the metadata a classifier needs.

``export_task("wbc")`` = :func:`candidates` -> :func:`choose_model` -> :func:`export_model`:
``build/export/<task>.keras`` (the trained ``.keras`` file, byte for byte, preprocessing inside)
and ``build/export/<task>.json`` beside it::

    task, model_id, dataset, network, regime
    classes            output order of the softmax
    input_size         [height, width]; images are resized to it (bilinear, aspect not kept)
    input              what the model takes (RGB 0..255; the Preprocess layer is inside)
    preprocessing      the Preprocess layer's kind (and mean), for information
    crop               centre crop applied before resizing (null for the WBC task)
    data_version       md5 of data/ from data.dvc (the DVC version of the raw data)
    choice             rule asked, rule used, the score of every candidate, a note on fallbacks
    test               accuracy, macro F1, n (images, cells) per held-out split with the
                       bootstrap interval and, where every image is its own cell, the exact
                       one (reports/metrics/<id>.json)
    training           epochs, the saved weights' epoch and val accuracy, seconds
                       (reports/train/<id>.json)
    params, file_bytes, sha256

The choice rule
---------------
Task ``wbc`` (the classifier ``leuko classify`` uses by default) takes the cell models trained
on both sources (``leuko.cells.multisource``); their validation scores are the evaluate-cells
stage's, on validation cells prepared as in training. ``wbc4`` takes the thesis study's
4-class models, ``leukemia`` the leukemia study's. The rule is always named: the study's is
``params/export.yaml``'s ``export.rule``, which the export stage passes and ``leuko export``
reads when ``--rule`` is not given; no function here has a default one.

``val_macro_f1_shifted``: the mean macro F1 of
each candidate on a class-balanced sample of the validation rows (``SHIFTED_PER_CLASS`` per
class) as imaged and as each simulated other lab of ``leuko.core.stain.STAIN_SHIFTS`` would show
them: the exported model is judged on cells from labs it has never seen, so it is chosen for
that. ``val_macro_f1``: the macro F1 of each candidate on *all* validation rows of its
manifest (``split == "val"``), computed here, since the study records only validation accuracy.
Validation rows are source cells / patients held out from training; the training runs'
checkpointing and early stopping looked at a subsample of the same rows, so the figure is
slightly optimistic for every candidate alike and fair for choosing; it is never a test figure.
The test split is never used to choose. ``saved_val_accuracy``: the training summary's
validation accuracy of the weights the model was saved with (``train.RunResult.summary``:
measured on the saved model, the best checkpoint's or EarlyStopping's restored epoch or the
last one, whichever the run kept), not the best any epoch reached (cheaper; accuracy ignores
class imbalance). When the val macro F1 cannot be computed (no manifest, no validation rows,
no evaluation of a cell model), the export stops with the cause. Ties: the higher
saved_val_accuracy, then the fewer parameters, then the model id.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import yaml

from leuko.core.atomic import atomic_write, write_json_atomic
from leuko.core.datasets import DIFFERENTIAL_CLASSES, WBC_CLASSES
from leuko.core.images import file_sha256
from leuko.core.inputs import load_resized
from leuko.core.metrics import classification_metrics
from leuko.core.splits import balanced_subsample
from leuko.thesis.evaluation import stain_robustness
from leuko.thesis.study import (
    Paths,
    class_index,
    load_model,
    model_paths,
    predict,
    read_json,
    read_manifest,
    trained_models,
)

__all__ = ["RULES", "TASKS", "candidates", "choose_model", "data_version", "export_model",
           "export_task", "val_macro_f1"]

RULES = ("val_macro_f1", "val_macro_f1_shifted", "saved_val_accuracy")
SCORED_RULES = ("val_macro_f1", "val_macro_f1_shifted")  # computed here from validation images
SHIFTED_PER_CLASS = 50
DEFAULT_PATHS = Paths()

TASKS: dict[str, dict] = {
    "wbc": {"datasets": ("cells",), "trainings": ("both",),
            "description": "white cells of other labs: the 5-part differential (basophil, "
                           "eosinophil, lymphocyte, monocyte, neutrophil) and 3 other cell "
                           "types (immature granulocyte, erythroblast, platelet), trained on "
                           "two sources (blood-cell-images and PBC)"},
    "wbc4": {"datasets": ("blood-cell-images",),
             "description": "the thesis study's 4 white-cell classes (eosinophil, lymphocyte, "
                            "monocyte, neutrophil), one source"},
    "leukemia": {"datasets": ("all-idb2", "cnmc"),
                 "description": "ALL lymphoblast vs healthy (HEM) cell"},
}
"""Task -> the datasets whose models may represent it. ``blood-cell-images-pooled`` is left out
on purpose: its random split puts copies of one source cell on both sides (see the README)."""


def _check_task(task: str) -> dict:
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    return TASKS[task]


def _check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"choice rule must be one of {RULES}, got {rule!r}")
    return rule


def data_version(dvc_file: str | Path = "data.dvc") -> str:
    """The md5 of ``data/`` recorded in ``data.dvc`` (its first output)."""
    dvc_file = Path(dvc_file)
    if not dvc_file.is_file():
        raise FileNotFoundError(f"{dvc_file} not found: it records the data version")
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
    if not outs or "md5" not in outs[0]:
        raise ValueError(f"{dvc_file} has no outs[0].md5")
    return str(outs[0]["md5"])


def candidates(task: str, paths: Paths = DEFAULT_PATHS) -> list[str]:
    """Trained models of a task: training summaries whose dataset belongs to the task and whose
    ``.keras`` file exists, sorted by id."""
    spec = _check_task(task)
    found = []
    for model_id, where in trained_models(paths).items():
        summary = read_json(where.train_summary(model_id))
        trainings = spec.get("trainings")
        if (summary.get("dataset") in spec["datasets"] and where.model(model_id).is_file()
                and (trainings is None or summary.get("training") in trainings)):
            found.append(model_id)
    return found


def _model_input_size(model) -> tuple[int, int]:
    shape = model.input_shape
    return int(shape[1]), int(shape[2])


def val_macro_f1(model_id: str, paths: Paths = DEFAULT_PATHS, batch_size: int = 64,
                 model=None, shifted: bool = False) -> dict:
    """Accuracy and macro F1 of a trained model on all validation rows of its manifest; with
    ``shifted``, their means over ``leuko.core.stain.STAIN_SHIFTS`` (as imaged and under each
    simulated other lab) on a seeded, class-balanced sample of ``SHIFTED_PER_CLASS`` rows per
    class, with the macro F1 per shift under ``per_shift``.

    Raises ValueError when the manifest has no validation rows.
    """

    where = model_paths(model_id, paths)
    summary = read_json(where.train_summary(model_id))
    if "cell_preprocess" in summary:
        return _cell_model_validation(model_id, paths, shifted)
    manifest_file = paths.manifest(summary["dataset"])
    if not manifest_file.is_file():
        raise ValueError(f"manifest {manifest_file} not found")
    manifest = read_manifest(manifest_file)
    rows = manifest[manifest["split"] == "val"]
    if rows.empty:
        raise ValueError(f"manifest {manifest_file} has no validation rows")
    model = model if model is not None else load_model(where.model(model_id))
    size = _model_input_size(model)
    if size[0] != size[1]:
        raise ValueError(f"{model_id}: non-square input {size} is not supported")
    classes = list(summary["classes"])
    if shifted:
        rows = balanced_subsample(rows, SHIFTED_PER_CLASS, seed=0)
        per_shift = stain_robustness(model, rows, size[0], classes, crop=summary.get("crop"))
        return {"macro_f1": float(np.mean([m["macro_f1"] for m in per_shift.values()])),
                "accuracy": float(np.mean([m["accuracy"] for m in per_shift.values()])),
                "n": len(rows), "per_shift": {k: m["macro_f1"] for k, m in per_shift.items()}}
    images = load_resized(list(rows["path"]), size[0], crop=summary.get("crop"),
                          progress=False)
    probs = predict(model, images, batch_size)
    metrics = classification_metrics(class_index(rows["label"], classes), probs.argmax(axis=1),
                                      classes)
    return {"macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"],
            "n": metrics["n"]}


def _cell_model_validation(model_id: str, paths: Paths, shifted: bool) -> dict:
    """A cell model's validation scores, as the evaluate-cells stage measured them on its
    validation cells (prepared as in training): macro F1 as imaged, or its mean over the
    image as imaged and each simulated other-lab stain."""
    metrics_file = paths.metrics(model_id)
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file} not found: run the evaluate-cells stage "
                                "before exporting a cell model")
    scores = read_json(metrics_file)["validation_stain_shift"]
    per_shift = scores["per_shift"]
    value = float(np.mean(list(per_shift.values()))) if shifted else float(scores["as_imaged"])
    return {"macro_f1": value, "n": scores["n"], "per_shift": per_shift,
            "from": str(metrics_file)}


def choose_model(model_ids: list[str], rule: str, paths: Paths = DEFAULT_PATHS,
                 scorer=val_macro_f1) -> dict:
    """Pick one of ``model_ids`` by ``rule`` (see the module doc; no default here: the study's
    rule is ``params/export.yaml``'s ``export.rule``); return the choice record:
    ``model_id, rule, rule_used, score, scores, note``."""
    _check_rule(rule)
    if not model_ids:
        raise ValueError("no candidate models to choose from: train the task's models first "
                         "(dvc repro), or name them")
    located = trained_models(paths)
    summaries = {m: read_json(located.get(m, paths).train_summary(m)) for m in model_ids}
    val_accuracy = {m: float(s.get("saved_val_accuracy", float("nan")))
                    for m, s in summaries.items()}
    n_params = {m: int((s.get("params") or {}).get("total", 0)) for m, s in summaries.items()}
    rule_used, note, scores, details = rule, "", {}, {}
    if rule in SCORED_RULES:  # errors keep their cause: no silent change of rule
        for m in model_ids:
            details[m] = scorer(m, paths, shifted=rule == "val_macro_f1_shifted")
            scores[m] = float(details[m]["macro_f1"])
    if rule_used == "saved_val_accuracy":
        scores = dict(val_accuracy)
    usable = {m: s for m, s in scores.items() if not math.isnan(s)}
    if not usable:
        raise ValueError(f"no candidate has a usable {rule_used}: {scores}")
    best = max(usable, key=lambda m: (usable[m], _nan_low(val_accuracy[m]), -n_params[m],
                                      _reverse_key(m)))
    return {"model_id": best, "rule": rule, "rule_used": rule_used, "score": usable[best],
            "scores": scores, "validation": details, "note": note,
            "candidates": list(model_ids)}


def _nan_low(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _reverse_key(text: str) -> tuple[int, ...]:
    """A key that sorts ids in reverse, so ``max`` prefers the alphabetically first on ties."""
    return tuple(-ord(c) for c in text)


def _test_figures(metrics: dict) -> dict:
    out = {}
    for split, values in (metrics.get("splits") or {}).items():
        entry = {k: values[k] for k in ("n", "n_cells", "accuracy", "macro_f1") if k in values}
        intervals = values.get("intervals") or {}
        for name in ("accuracy", "macro_f1"):
            if isinstance(intervals.get(name), dict):
                entry[f"{name}_ci95"] = {k: intervals[name][k] for k in ("low", "high")
                                         if k in intervals[name]}
        if isinstance(values.get("exact_interval"), dict):  # every image its own cell
            entry["accuracy_exact_ci95"] = {k: values["exact_interval"][k]
                                            for k in ("low", "high")}
        out[split] = entry
    return out


def _preprocessing(model) -> dict:
    """The model's ``Preprocess`` layer, also inside nested models (an ensemble's runs)."""
    for layer in model.layers:
        if type(layer).__name__ == "Preprocess":
            return {"kind": layer.kind, "mean": layer.mean, "inside_model": True}
        if hasattr(layer, "layers"):
            found = _preprocessing(layer)
            if found["inside_model"]:
                return found
    return {"kind": "unknown", "inside_model": False}


def export_model(task: str, choice: dict, paths: Paths = DEFAULT_PATHS,
                 out_dir: str | Path = Path("build/export"),
                 dvc_file: str | Path = Path("data.dvc")) -> dict:
    """Copy the chosen model to ``out_dir/<task>.keras`` and write ``out_dir/<task>.json``
    (see the module doc); returns the metadata. The copy is checked to load in safe mode and
    to give one output per class."""

    spec = _check_task(task)
    model_id = choice["model_id"]
    where = model_paths(model_id, paths)
    source = where.model(model_id)
    summary = read_json(where.train_summary(model_id))
    classes = list(summary["classes"])
    model = load_model(source)
    n_out = int(model.output_shape[-1])
    if n_out != len(classes):
        raise ValueError(f"{model_id} gives {n_out} outputs but its summary names "
                         f"{len(classes)} classes")
    height, width = _model_input_size(model)
    metrics_file = paths.metrics(model_id)
    metrics = read_json(metrics_file) if metrics_file.is_file() else {}
    out_dir = Path(out_dir)
    target = out_dir / f"{task}.keras"
    with atomic_write(target) as tmp:
        shutil.copyfile(source, tmp)
    metadata = {
        "task": task,
        "task_description": spec["description"],
        "model_id": model_id,
        "model_file": str(target),
        "source_model": str(source),
        "dataset": summary.get("dataset"),
        "network": summary.get("network"),
        "regime": summary.get("regime"),
        "classes": classes,
        "input_size": [height, width],
        "input": (f"RGB, values 0..255 (uint8 or float), resized to {height}x{width} "
                  "(bilinear; the aspect ratio is not kept, as in training)"),
        "preprocessing": _preprocessing(model),
        "crop": summary.get("crop"),
        "data_version": {"file": str(dvc_file), "md5": data_version(dvc_file)},
        "choice": choice,
        "test": _test_figures(metrics),
        "test_figures_from": str(metrics_file) if metrics else None,
        "training": {k: summary[k] for k in ("epochs_run", "epochs_per_phase", "saved_epoch",
                                             "saved_by", "saved_val_accuracy",
                                             "best_val_accuracy", "train_seconds",
                                             "image_size", "machine")
                     if k in summary},
        "params": summary.get("params"),
        **{key: summary[key] for key in ("sources", "cell_preprocess", "views", "temperature",
                                         "abstain", "n_train", "members") if key in summary},
        "differential_classes": [c for c in classes if c in DIFFERENTIAL_CLASSES + WBC_CLASSES],
        "file_bytes": target.stat().st_size,
        "sha256": file_sha256(target),
    }
    if not metrics:
        metadata["note_test"] = (f"no test figures: {metrics_file} is missing (run the "
                                 "evaluate stage)")
    write_json_atomic(out_dir / f"{task}.json", metadata)
    return metadata


def export_task(task: str, rule: str, model_ids: list[str] | None = None,
                paths: Paths = DEFAULT_PATHS, out_dir: str | Path = Path("build/export"),
                dvc_file: str | Path = Path("data.dvc")) -> dict:
    """Choose the task's model by ``rule`` (one of :data:`RULES`; the study's is
    ``params/export.yaml``'s ``export.rule``) among ``model_ids`` (default: all its trained
    models) and export it; returns the metadata written."""
    _check_task(task)
    _check_rule(rule)
    ids = list(model_ids) if model_ids else candidates(task, paths)
    if not ids:
        raise ValueError(f"no trained model for task {task!r} (datasets "
                         f"{list(TASKS[task]['datasets'])}) in {paths.model('x').parent}: "
                         "run the study first (dvc repro)")
    located = trained_models(paths)
    files = [located.get(m, paths).model(m) for m in ids]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise FileNotFoundError("model file(s) not found: " + ", ".join(missing))
    choice = choose_model(ids, rule, paths)
    return export_model(task, choice, paths, out_dir, dvc_file)
