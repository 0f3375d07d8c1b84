"""Evaluation of the leukemia study's trained solutions (stage ``evaluate-leukemia``, notebook
08): test-split metrics with intervals, k-fold results, and galleries of the errors.

Kept apart from :mod:`leuko.leukemia.recipe` (training) so that an edit of how models are scored
(``leuko.core.metrics``, ``leuko.thesis.evaluation``) reruns the evaluate stages, never training
(``leuko.pipeline.stagedeps`` derives each stage's code dependencies from the imports).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from leuko.core.figures import image_gallery, plot_confusion_matrix, save_figure
from leuko.core.metrics import classification_metrics, kfold_summary, metric_intervals
from leuko.leukemia.recipe import (
    GALLERY_KINDS,
    POSITIVE,
    REGIME,
    LeukemiaPaths,
    cropped_loader,
    leukemia_model_id,
)
from leuko.thesis import study
from leuko.thesis.evaluation import evaluate_model

DEFAULT_PATHS = LeukemiaPaths()


def errors(predictions: pd.DataFrame, kind: str, positive: str = POSITIVE) -> pd.DataFrame:
    """The false positives or negatives of a predictions table, most confident first."""
    if kind == "false-positives":
        rows = predictions[(predictions["predicted"] == positive)
                           & (predictions["actual"] != positive)]
        confidence = rows[f"p_{positive}"]
    elif kind == "false-negatives":
        rows = predictions[(predictions["predicted"] != positive)
                           & (predictions["actual"] == positive)]
        confidence = 1 - rows[f"p_{positive}"]
    else:
        raise ValueError(f"kind must be one of {sorted(GALLERY_KINDS)}, got {kind!r}")
    return rows.assign(_c=confidence.to_numpy()).sort_values(
        ["_c", "path"], ascending=[False, True]).drop(columns="_c")


def error_gallery(predictions: pd.DataFrame, kind: str, crop, title: str = "",
                  limit: int = 24, positive: str = POSITIVE):
    """A gallery of the (cropped) images of one kind of error, with p(ALL) under each."""

    found = errors(predictions, kind, positive)
    rows = found.head(limit)
    load = cropped_loader(crop)
    images = [load(p) for p in rows["path"]]
    titles = [f"{Path(p).stem}\np({positive}) = {v:.2f}"
              for p, v in zip(rows["path"], rows[f"p_{positive}"], strict=True)]
    shown = f"{len(found)} image{'s' if len(found) != 1 else ''}" + (f", the {limit} most confident shown"
                                      if len(found) > limit else "")
    text = f"{title or GALLERY_KINDS[kind]} ({shown})"
    if len(rows) < 3:  # a narrow figure (2 in per image, 4 in if none): wrap the title
        import textwrap

        text = textwrap.fill(text, 36 if len(rows) != 1 else 20)
    return image_gallery(images, titles, ncols=6, title=text)


def kfold_results(predictions: pd.DataFrame, classes: list[str], n_boot: int, seed: int) -> dict:
    """Per-fold metrics, mean ± sd over the folds, and the pooled predictions' metrics with
    bootstrap intervals (every labelled image is predicted once, by the fold that held it out)."""

    per_fold = {}
    for fold, rows in predictions.groupby("fold", sort=True):
        per_fold[fold] = classification_metrics(study.class_index(rows["actual"], classes),
                                                study.class_index(rows["predicted"], classes),
                                                classes)
    y_true = study.class_index(predictions["actual"], classes)
    y_pred = study.class_index(predictions["predicted"], classes)
    pooled = classification_metrics(y_true, y_pred, classes)
    pooled["intervals"] = metric_intervals(y_true, y_pred, classes, n_boot=n_boot, seed=seed,
                                           groups=predictions["group"].astype(str).to_numpy())
    keys = ["accuracy", "macro_f1", *[f"per_class.{c}.recall" for c in classes]]
    return {"folds": len(per_fold), "summary": kfold_summary(list(per_fold.values()), keys),
            "per_fold": per_fold, "pooled": pooled}


def kfold_figure(kfold: dict, classes: list[str], title: str = ""):
    """Per-fold accuracy and macro F1 (bars; the mean ± sd as error bars of the 'mean' bar)
    beside the pooled confusion matrix."""


    fig = Figure(figsize=(11.0, 4.0), layout="constrained")
    ax_bar, ax_cm = fig.subplots(1, 2, width_ratios=[1.3, 1])
    summary = kfold["summary"]
    labels = [*kfold["per_fold"], "mean"]
    x = np.arange(len(labels))
    for j, key in enumerate(("accuracy", "macro_f1")):
        values = [*summary[key]["per_fold"], summary[key]["mean"]]
        sd = [0.0] * (len(values) - 1) + [summary[key]["sd"]]
        ax_bar.bar(x + (j - 0.5) * 0.4, values, width=0.38, yerr=np.nan_to_num(sd), capsize=3,
                   label=key.replace("_", " "))
    ax_bar.set_xticks(x, labels)
    ax_bar.set_ylim(0, 1)
    ax_bar.set_ylabel("fraction")
    ax_bar.legend(loc="lower right", fontsize=8)
    ax_bar.grid(True, axis="y", alpha=0.3)
    ax_bar.set_title("per fold (mean ± sd)")
    plot_confusion_matrix(kfold["pooled"]["confusion_matrix"], classes,
                          title="pooled over the folds", ax=ax_cm)
    if title:
        fig.suptitle(title)
    return fig


def evaluate_leukemia(dataset: str, network: str, n_boot: int = 2000,
                      seed: int = 0, repeat_seed: int | None = None,
                      paths: LeukemiaPaths = DEFAULT_PATHS) -> dict:
    """Evaluate a trained solution on the test split (and C-NMC's labelled preliminary test
    set when present) with ``evaluation.evaluate_model``; add the k-fold results and, for the
    main run, write the galleries of false positives and false negatives (a repeat,
    ``repeat_seed``, writes its metrics and predictions only). Returns the metrics dict."""

    the_id = leukemia_model_id(dataset, network, repeat_seed)
    training = study.read_json(paths.train_summary(the_id))
    classes = list(training["classes"])
    result = evaluate_model(dataset, network, REGIME, training["image_size"],
                            n_boot=n_boot, seed=seed, eval_splits=("test", "prelim"),
                            classes=classes, crop=training["crop"],
                            robustness_split=None, repeat_seed=repeat_seed, paths=paths)
    result.update(solution=training["solution"], image_size=training["image_size"],
                  crop=training["crop"])
    kfold_table = pd.read_csv(paths.kfold_predictions(the_id), keep_default_na=False)
    if len(kfold_table):
        result["kfold"] = kfold_results(kfold_table, classes, n_boot, seed)
        save_figure(kfold_figure(result["kfold"], classes,
                                 f"{the_id}: {result['kfold']['folds']}-fold cross-validation"),
                    paths.kfold_figure(the_id))
    study.write_json(paths.metrics(the_id), result)
    predictions = pd.read_csv(paths.predictions(the_id), keep_default_na=False)
    test = predictions[predictions["split"] == "test"]
    for kind, what in GALLERY_KINDS.items() if repeat_seed is None else ():
        save_figure(error_gallery(test, kind, training["crop"], f"{the_id}, test: {what}"),
                    paths.gallery(the_id, kind))
    return result
