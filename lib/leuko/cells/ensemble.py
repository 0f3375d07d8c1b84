"""Deep ensembles of the cell models: a training's main run and its repeats averaged.

One training run of a cell model is one draw, and on a source it has not seen the draws differ
by many points (the README's spread over training seeds). Averaging the class probabilities of
the runs (Lakshminarayanan et al., "Simple and scalable predictive uncertainty estimation
using deep ensembles", NeurIPS 2017) reduces that variance. The ensemble is one Keras
model (its members nested, their softmax outputs averaged), so export and ``leuko classify``
treat it as any other cell model; it is calibrated and given its abstention threshold on the
validation cells as :func:`leuko.cells.multisource.train_cell_model` calibrates one run. Evaluation
scores it from its runs' saved probabilities (``crosssource.ensemble_probabilities``, the same
mean), without running the networks again.
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial

import keras

from leuko.cells.multisource import (
    DEFAULT_PATHS,
    TRAININGS,
    CellCache,
    CellStudy,
    ensemble_model_id,
    load_cell_cache,
)
from leuko.cells.preprocess import mean_over_views
from leuko.core.calibration import (
    abstention_threshold,
    expected_calibration_error,
    fit_temperature,
    temperature_scale,
)
from leuko.models.networks import count_params
from leuko.thesis.study import (
    Paths,
    chdir_project_root,
    class_index,
    load_model,
    predict,
    read_json,
    save_model,
    write_json,
)

#: What an ensemble's training summary takes over from its main run's: the data, the classes
#: and the preprocessing all members share.
SHARED_KEYS = ("dataset", "training", "sources", "network", "regime", "classes", "image_size",
               "n_train", "n_val", "cells_not_found_train", "tight_framed_train",
               "cell_preprocess", "config", "views", "eager", "seed")


def member_ids(training: str, study: CellStudy) -> list[str]:
    """The runs an ensemble averages: the training's main run and its repeats
    (``cells.repeats``); at least two."""
    if training not in TRAININGS:
        raise ValueError(f"training must be one of {sorted(TRAININGS)}, got {training!r}")
    if not study.repeat_seeds:
        raise ValueError("an ensemble needs repeats: cells.repeats.seeds is empty")
    return study.run_ids(training)


def average_models(models: list, name: str = "ensemble"):
    """One Keras model whose output is the mean of ``models``' outputs (same input and output
    shapes), each nested under the name ``run_<i>``."""

    shapes = {(tuple(m.input_shape), tuple(m.output_shape)) for m in models}
    if len(models) < 2 or len(shapes) != 1:
        raise ValueError(f"need at least two models with one input and output shape, got "
                         f"{len(models)} with {sorted(shapes)}")
    inputs = keras.Input(models[0].input_shape[1:], name="image")
    for i, model in enumerate(models):
        model.name = f"run_{i}"
    outputs = keras.layers.Average(name="mean")([model(inputs) for model in models])
    return keras.Model(inputs, outputs, name=name)


def build_cell_ensemble(training: str, cache: CellCache, study: CellStudy,
                        paths: Paths = DEFAULT_PATHS) -> dict:
    """Average the training's runs (:func:`member_ids`), calibrate the average on the
    validation cells of its sources (temperature, abstention threshold at
    ``cells.abstain.val_coverage``), save it as ``cells-<training>-ensemble`` with its training
    summary (``members``; ``train_seconds`` and ``epochs_run``: the members' together) and
    return the summary."""

    start = time.perf_counter()
    ids = member_ids(training, study)
    summaries = [read_json(paths.train_summary(the_id)) for the_id in ids]
    for key in ("classes", "views", "cell_preprocess", "image_size"):
        if len({repr(s[key]) for s in summaries}) != 1:
            raise ValueError(f"the runs {ids} differ in {key}: they cannot be averaged")
    main = summaries[0]
    model = average_models([load_model(paths.model(the_id)) for the_id in ids],
                           name=f"cells_{training}_ensemble".replace("-", "_"))
    val_rows, x_val = cache.part(TRAININGS[training], "val")
    y_val = class_index(val_rows["label"], list(main["classes"]))
    probs = mean_over_views(partial(predict, model), x_val, int(main["views"]))
    temperature = fit_temperature(probs, y_val)
    calibrated = temperature_scale(probs, temperature)
    threshold = abstention_threshold(calibrated.max(axis=1), study.abstain.val_coverage)
    the_id = ensemble_model_id(training)
    save_model(model, paths.model(the_id))
    summary = {**{key: main[key] for key in SHARED_KEYS if key in main},
               "model": the_id, "members": ids, "temperature": temperature,
               "abstain": {**study.abstain.to_dict(), "threshold": threshold},
               "val_ece": {"raw": expected_calibration_error(probs.max(axis=1),
                                                             probs.argmax(axis=1) == y_val),
                           "calibrated": expected_calibration_error(
                               calibrated.max(axis=1), calibrated.argmax(axis=1) == y_val)},
               "saved_val_accuracy": float((probs.argmax(axis=1) == y_val).mean()),
               "train_seconds": round(sum(float(s["train_seconds"]) for s in summaries), 2),
               "epochs_run": sum(int(s["epochs_run"]) for s in summaries),
               "build_seconds": round(time.perf_counter() - start, 2),
               "params": count_params(model)}
    write_json(paths.train_summary(the_id), summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m leuko.cells.ensemble --training <name>``: the ensemble-cells stage."""

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training", required=True, choices=sorted(TRAININGS))
    args = parser.parse_args(argv)
    chdir_project_root()
    summary = build_cell_ensemble(args.training, load_cell_cache(), CellStudy.from_params())
    print(f"{summary['model']}: {len(summary['members'])} runs averaged, validation accuracy "
          f"{summary['saved_val_accuracy']:.3f}, temperature {summary['temperature']:.2f}, "
          f"abstention threshold {summary['abstain']['threshold']:.2f}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
