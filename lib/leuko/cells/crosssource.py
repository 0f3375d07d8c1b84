"""Leave one source out: the cell classifiers of :mod:`leuko.cells.multisource` scored on every
source's held-out test part and on a lab unlike both sources that no model trains on
(``leuko.cells.unseen``: ``data/bionet``, part ``bionet/unseen``), with intervals, calibration,
abstention and the simulated stain-shift score beside the real cross-source one (stage
evaluate-cells, notebook 12).

Kept apart from training so that an edit of the metrics reruns evaluation, not training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from leuko.cells.multisource import DEFAULT_PATHS, TEST_PARTS, CellCache
from leuko.cells.outputs import (
    ModelOutputs,
    group_of,
    model_outputs,
    outputs_path,
    save_outputs,
    view_probabilities,
)
from leuko.cells.unseen import UNSEEN_SPLIT
from leuko.core import splits
from leuko.core.atomic import atomic_write, write_csv_atomic
from leuko.core.calibration import (
    coverage_curve,
    expected_calibration_error,
    reliability_table,
    temperature_scale,
)
from leuko.core.machine import describe
from leuko.core.metrics import format_interval, macro_f1_metric
from leuko.core.score import score_labels
from leuko.core.stain import STAIN_SHIFTS, stain_shift
from leuko.thesis.evaluation import source_cells
from leuko.thesis.study import Paths, class_index, load_model, read_json, write_json


def present_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro F1 over the classes that occur in ``y_true`` (a class a test part does not hold
    says nothing about it); NaN without rows."""

    present = sorted(set(np.asarray(y_true).tolist()))
    return macro_f1_metric(n_classes, over=present)(y_true, y_pred) if present else float("nan")


def score_part(probs: np.ndarray, rows: pd.DataFrame, classes: list[str], threshold: float,
               n_boot: int, seed: int) -> tuple[dict, pd.DataFrame]:
    """Figures of one model on one held-out part (calibrated ``probs``), scored as ``leuko
    score`` scores a lab's cells (:func:`leuko.core.score.score_labels`) but over source cells:
    accuracy, macro F1 (over the classes present) and each present class's recall with 95 %
    cluster-bootstrap intervals over source cells / images, the confusion matrix, the exact
    intervals of the accuracy and of a class's recall where every image is its own cell, and
    accuracy at the abstention threshold with its coverage; with calibration (ECE). Rows
    whose class the model does not know are left out and counted (``n_unknown_class``)."""

    known = rows["label"].isin(classes).to_numpy()
    rows, probs = rows[known].reset_index(drop=True), probs[known]
    lookup = {c: i for i, c in enumerate(classes)}
    y_true = rows["label"].map(lookup).to_numpy(dtype=int)
    y_pred = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    kept = confidence >= threshold
    groups = source_cells(rows)  # one id per source cell: group, content hash, near-duplicates
    metrics = score_labels(y_true, y_pred, classes, kept=kept, groups=groups, n_boot=n_boot,
                           seed=seed)
    metrics["n_unknown_class"] = int((~known).sum())
    metrics["ece"] = expected_calibration_error(confidence, y_pred == y_true)
    metrics["abstain"] = {"threshold": threshold, **metrics["abstain"]}
    frame = pd.DataFrame({"path": rows["path"], "source": rows["source"], "split": rows["split"],
                          "actual": rows["label"],
                          "predicted": [classes[i] for i in y_pred],
                          "confidence": confidence.round(5), "uncertain": ~kept})
    return metrics, frame


def plot_name(part: str) -> str:
    """The file name of a test part's confusion data: ``pbc/test`` -> ``pbc-test``."""
    return part.replace("/", "-")


def model_views(summary: dict) -> int:
    """How many views of a cell the model's probabilities average (``cells.mean_over_views``),
    as its training summary records; a summary without the key was calibrated on one view."""
    return int(summary.get("views", 1))


def held_out_parts(cache: CellCache, unseen: dict[str, CellCache] | None = None
                   ) -> list[tuple[str, pd.DataFrame, np.ndarray]]:
    """``(part, rows, images)`` of every part a model is scored on: each source's test part
    (``TEST_PARTS``, part ``<source>/<split>``), then each lab of ``unseen`` (its name -> its
    cache, :func:`leuko.cells.unseen.load_unseen_cache`; part ``<name>/unseen``)."""

    parts = [(f"{source}/{split}", *cache.part(source, split)) for source, split in TEST_PARTS]
    for name, lab in (unseen or {}).items():
        rows, images = lab.part(name, UNSEEN_SPLIT)
        if rows.empty:
            raise ValueError(f"the cache of {name} holds no row of source {name!r} and split "
                             f"{UNSEEN_SPLIT!r}: rerun stage cells-unseen")
        parts.append((f"{name}/{UNSEEN_SPLIT}", rows, images))
    return parts


def part_rank(part: str) -> tuple[int, str]:
    """Sort key of a scored part: the sources' test parts in ``TEST_PARTS``' order, then the
    unseen labs by name."""
    order = [f"{source}/{split}" for source, split in TEST_PARTS]
    return (order.index(part), "") if part in order else (len(order), part)


def shift_sample(rows: pd.DataFrame, per_class: int, seed: int) -> np.ndarray:
    """Positions in ``rows`` (a model's validation cells) of the class-balanced sample scored
    under simulated stains."""
    sample = splits.balanced_subsample(rows.assign(_i=np.arange(len(rows))), per_class, seed)
    return sample["_i"].to_numpy()


def held_out_probabilities(outputs: ModelOutputs, cache: CellCache,
                           unseen: dict[str, CellCache] | None = None) -> dict[str, np.ndarray]:
    """A model's view-averaged, uncalibrated class probabilities on every held-out part
    (:func:`held_out_parts`, key ``<source>/<split>``) from its ``outputs`` on the caches,
    with the paths of each part's rows (``paths/<part>``)."""
    probabilities = {}
    for part, rows, _ in held_out_parts(cache, unseen):
        probabilities[part] = outputs.rows(group_of(part.split("/")[0], unseen), rows)[1]
        probabilities[f"paths/{part}"] = rows["path"].to_numpy(dtype=str)
    return probabilities


def shift_probabilities(model, cache: CellCache, summary: dict, shift_per_class: int,
                        seed: int) -> dict[str, np.ndarray]:
    """A model's uncalibrated class probabilities, averaged over the views its summary
    records, on the stain-shift sample of its validation cells under each simulated stain of
    ``leuko.core.stain.STAIN_SHIFTS`` (key ``shift/<kind>``), with the sample's paths
    (``paths/shift``)."""
    views = model_views(summary)
    rows, images = cache.part(summary["sources"], "val")
    sample = shift_sample(rows, shift_per_class, seed)
    probabilities = {f"shift/{kind}": view_probabilities(
        model, stain_shift(images[sample], kind), views) for kind in STAIN_SHIFTS}
    probabilities["paths/shift"] = rows["path"].to_numpy(dtype=str)[sample]
    return probabilities


def model_probabilities(model, outputs: ModelOutputs, cache: CellCache, summary: dict,
                        shift_per_class: int, seed: int,
                        unseen: dict[str, CellCache] | None = None) -> dict[str, np.ndarray]:
    """A run's probabilities as evaluate-cells saves them: :func:`held_out_probabilities`
    from its ``outputs`` (over the views its summary records, as the model was calibrated and
    is exported), then :func:`shift_probabilities`."""
    if outputs.views != model_views(summary):
        raise ValueError(f"outputs over {outputs.views} views, but the model's summary records "
                         f"{model_views(summary)}")
    return {**held_out_probabilities(outputs, cache, unseen),
            **shift_probabilities(model, cache, summary, shift_per_class, seed)}


def save_probabilities(path: Path, probabilities: dict[str, np.ndarray]) -> Path:
    """:func:`model_probabilities` as one ``.npz``, written atomically."""

    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **probabilities)
    return Path(path)


def load_probabilities(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as saved:
        return {key: saved[key] for key in saved.files}


def ensemble_probabilities(member_ids: list[str], paths: Paths = DEFAULT_PATHS
                           ) -> dict[str, np.ndarray]:
    """An ensemble's probabilities (``leuko.cells.ensemble``: its output is the mean of its runs')
    as the mean of its runs' saved :func:`model_probabilities`, so an ensemble is scored
    without running its networks again. FileNotFoundError names a run not yet evaluated;
    ValueError when the runs were scored on other rows or classes."""
    saved = []
    for the_id in member_ids:
        path = paths.probabilities(the_id)
        if not path.is_file():
            raise FileNotFoundError(f"no probabilities of {the_id} ({path}): evaluate the "
                                    "ensemble's runs first (evaluate-cells)")
        saved.append(load_probabilities(path))
    first = saved[0]
    for the_id, other in zip(member_ids[1:], saved[1:], strict=True):
        if set(other) != set(first) or any(
                other[k].shape != first[k].shape
                or (k.startswith("paths/") and not np.array_equal(other[k], first[k]))
                for k in first):
            raise ValueError(f"{the_id} and {member_ids[0]} were scored on other rows or "
                             "classes: they cannot be averaged")
    return {key: first[key] if key.startswith("paths/") else
            np.mean([s[key] for s in saved], axis=0, dtype=np.float64).astype(np.float32)
            for key in first}


def stain_shift_score(probabilities: dict[str, np.ndarray], rows: pd.DataFrame,
                      classes: list[str], per_class: int, seed: int) -> dict:
    """Macro F1 on the class-balanced sample of validation cells (:func:`shift_sample` of
    ``rows``) as imaged and under each simulated other-lab stain (what the simulation
    predicts), from :func:`model_probabilities`."""

    sample = rows.iloc[shift_sample(rows, per_class, seed)]
    if not np.array_equal(sample["path"].to_numpy(dtype=str), probabilities["paths/shift"]):
        raise ValueError("the probabilities under simulated stains are of another sample of "
                         "validation cells (shift_per_class, seed or build/cells changed)")
    y = class_index(sample["label"], classes)
    per_shift = {kind: present_macro_f1(y, probabilities[f"shift/{kind}"].argmax(axis=1),
                                        len(classes)) for kind in STAIN_SHIFTS}
    shifted = [v for k, v in per_shift.items() if k != "none"]
    return {"n": len(sample), "as_imaged": per_shift["none"], "mean_shifted": float(np.mean(
        shifted)), "worst_shifted": float(np.min(shifted)), "per_shift": per_shift}


def evaluate_cell_models(model_ids, cache: CellCache, n_boot: int, seed: int,
                         shift_per_class: int = 50, paths: Paths = DEFAULT_PATHS,
                         unseen: dict[str, CellCache] | None = None,
                         progress: bool = False) -> dict:
    """Score every model (a run ``cells-<training>``, a repeat ``-seed<n>``, an ensemble
    ``-ensemble``) on every held-out part (``TEST_PARTS``, then each lab of ``unseen``, which
    no model trains on) and on simulated stain shifts of its own validation cells, predicting
    over the views its summary records; write per model
    ``reports/metrics/<id>.json``, ``reports/predictions/<id>.csv``, its uncalibrated
    probabilities ``build/probabilities/<id>.npz`` and, for a run, its outputs on every cell
    of the caches ``build/cell-outputs/<id>.npz`` (``leuko.cells.outputs``: one forward pass,
    which novelty and adapt-cells read too); return {model id: metrics}. A run is predicted by
    its network; an ensemble from its runs' saved probabilities
    (:func:`ensemble_probabilities`: evaluate the runs first)."""

    results = {}
    for the_id in model_ids:
        summary = read_json(paths.train_summary(the_id))
        classes = list(summary["classes"])
        if "members" in summary:  # an ensemble (leuko.cells.ensemble): the runs it averages
            probabilities = ensemble_probabilities(summary["members"], paths)
        else:  # one forward pass over every cell, kept for novelty and adapt-cells
            model_path = paths.model(the_id)
            model = load_model(model_path)
            outputs = model_outputs(model, model_path, model_views(summary), cache, unseen,
                                    progress=progress)
            save_outputs(outputs_path(the_id, paths), outputs)
            probabilities = model_probabilities(model, outputs, cache, summary,
                                                shift_per_class, seed, unseen)
        save_probabilities(paths.probabilities(the_id), probabilities)
        temperature = float(summary["temperature"])
        threshold = float(summary["abstain"]["threshold"])
        result = {"model": the_id, "dataset": "cells", "network": summary["network"],
                  "regime": summary["regime"], "trained_on": summary["training"],
                  "training_seed": int(summary["seed"]),
                  "sources": summary["sources"], "classes": classes, "splits": {}}
        frames = []
        for part, rows, _ in held_out_parts(cache, unseen):
            if part not in probabilities or not np.array_equal(
                    probabilities[f"paths/{part}"], rows["path"].to_numpy(dtype=str)):
                raise ValueError(f"{the_id}'s probabilities of {part} are not of the cache's "
                                 "rows (build/cells changed since its runs were evaluated)")
            probs = temperature_scale(probabilities[part], temperature)
            metrics, frame = score_part(probs, rows, classes, threshold, n_boot, seed)
            metrics["held_out_source"] = part.split("/")[0] not in summary["sources"]
            metrics["cells_not_found"] = int((~rows["cell_found"]).sum())
            metrics["coverage_curve"] = coverage_curve(
                frame["confidence"].to_numpy(), (frame["actual"] == frame["predicted"]).to_numpy()
            ).to_dict(orient="list")
            metrics["reliability"] = reliability_table(
                frame["confidence"].to_numpy(), (frame["actual"] == frame["predicted"]).to_numpy()
            ).to_dict(orient="list")
            result["splits"][part] = metrics
            frames.append(frame)
            write_csv_atomic(paths.confusion_plot(the_id, plot_name(part)),
                             frame[["actual", "predicted"]])
        val_rows, _ = cache.part(summary["sources"], "val")
        result["validation_stain_shift"] = stain_shift_score(probabilities, val_rows, classes,
                                                             shift_per_class, seed)
        result["training"] = {k: summary[k] for k in (
            "train_seconds", "epochs_run", "saved_val_accuracy", "temperature", "abstain",
            "val_ece", "n_train")}
        if "members" in summary:
            result["members"] = summary["members"]
        result["views"] = model_views(summary)
        result["machine"] = describe()  # the machine that evaluated (leuko.core.machine)
        write_json(paths.metrics(the_id), result)
        write_csv_atomic(paths.predictions(the_id), pd.concat(frames, ignore_index=True))
        results[the_id] = result
    return results


def cross_source_table(results: dict) -> pd.DataFrame:
    """One row per (model, held-out part): accuracy and macro F1 with intervals, coverage and
    accuracy at the abstention threshold, ECE, and the model's simulated stain-shift score."""
    rows = []
    for the_id, result in results.items():
        trained_on = " + ".join(result["sources"])
        if "members" in result:
            trained_on += f" (ensemble of {len(result['members'])})"
        for part, m in result["splits"].items():
            rows.append({
                "model": the_id, "trained on": trained_on, "tested on": part,
                "held-out source": m["held_out_source"], "cells": m["n_cells"], "images": m["n"],
                "accuracy": m["accuracy"], "accuracy low": m["intervals"]["accuracy"]["low"],
                "accuracy high": m["intervals"]["accuracy"]["high"],
                "macro F1": m["macro_f1"], "macro F1 low": m["intervals"]["macro_f1"]["low"],
                "macro F1 high": m["intervals"]["macro_f1"]["high"],
                "coverage": m["abstain"]["coverage"], "accuracy kept": m["abstain"][
                    "accuracy_kept"], "ECE": m["ece"],
                "simulated shift macro F1": result["validation_stain_shift"]["mean_shifted"],
                "validation macro F1": result["validation_stain_shift"]["as_imaged"]})
    return pd.DataFrame(rows)


RECALL_COLUMNS = ["model", "tested on", "class", "images", "recall", "recall low",
                  "recall high", "exact low", "exact high"]


def recall_table(results: dict) -> pd.DataFrame:
    """Per-class recall of each model on each held-out part, one row per (model, part, class
    the part holds): its images, the recall, its 95 % cluster-bootstrap interval over source
    cells and, where each of the class's images is its own cell, its exact (Clopper-Pearson)
    interval (NaN otherwise, and in a metrics file written before the intervals were)."""
    rows = []
    for the_id, result in results.items():
        for part, m in result["splits"].items():
            for name, v in m["per_class"].items():
                if v["support"] > 0:
                    ci = m["intervals"].get(f"recall_{name}", {})
                    exact = v.get("recall_exact", {})
                    rows.append({"model": the_id, "tested on": part, "class": name,
                                 "images": v["support"], "recall": v["recall"],
                                 "recall low": ci.get("low", np.nan),
                                 "recall high": ci.get("high", np.nan),
                                 "exact low": exact.get("low", np.nan),
                                 "exact high": exact.get("high", np.nan)})
    return pd.DataFrame(rows, columns=RECALL_COLUMNS)


def recall_view(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`recall_table` for reading: one row per model and part, one column per class,
    ``recall % [95 % CI] (images)``, the interval exact where each image of the class is its
    own cell, else the cluster bootstrap's (TEST's copies); – where the part holds no cell of
    the class."""
    exact = table["exact low"].notna()
    low = table["exact low"].where(exact, table["recall low"])
    high = table["exact high"].where(exact, table["recall high"])
    text = [f"{100 * r:.0f} [{100 * lo:.0f}, {100 * hi:.0f}] ({n})" for r, lo, hi, n in zip(
        table["recall"], low, high, table["images"], strict=True)]
    classes = list(dict.fromkeys(table["class"]))
    order = list(dict.fromkeys(zip(table["model"], table["tested on"], strict=True)))
    return (table.assign(text=text).pivot(index=["model", "tested on"], columns="class",
                                          values="text")
            .reindex(index=pd.MultiIndex.from_tuples(order, names=["model", "tested on"]),
                     columns=classes).fillna("–"))


def cross_source_view(table: pd.DataFrame) -> pd.DataFrame:
    """The cross-source table for reading: percentages with their intervals."""

    def pct(value, low=None, high=None):
        return format_interval(value, low, high, unit="")

    return pd.DataFrame({
        "trained on": table["trained on"], "tested on": table["tested on"],
        "unseen source": table["held-out source"].map({True: "yes", False: "no"}),
        "cells / images": [f"{c} / {i}" for c, i in zip(table["cells"], table["images"],
                                                          strict=True)],
        "accuracy % [95 % CI]": [pct(*v) for v in zip(
            table["accuracy"], table["accuracy low"], table["accuracy high"], strict=True)],
        "macro F1 % [95 % CI]": [pct(*v) for v in zip(
            table["macro F1"], table["macro F1 low"], table["macro F1 high"], strict=True)],
        "coverage %": table["coverage"].map(pct),
        "accuracy kept %": table["accuracy kept"].map(pct),
        "ECE": table["ECE"].round(3),
        "simulated-shift macro F1 %": table["simulated shift macro F1"].map(pct),
    })


def is_unseen_part(part: str) -> bool:
    """Whether a scored part is a lab no model trains on (``<name>/unseen``)."""

    return part.endswith(f"/{UNSEEN_SPLIT}")


def unseen_lab_views(results: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The parts of the labs unlike both sources (:func:`is_unseen_part`) for reading: the
    cross-source view of their rows and their per-class recall with intervals (both empty
    when no model was scored on such a lab)."""
    table = cross_source_table(results)
    recall = recall_table(results)
    if table.empty:
        return table, recall
    table = table[table["tested on"].map(is_unseen_part)]
    recall = recall[recall["tested on"].map(is_unseen_part)]
    return (cross_source_view(table.reset_index(drop=True)),
            recall_view(recall) if len(recall) else recall)


def write_cross_source_tables(results: dict, folder: Path = Path("reports/cells")) -> list[Path]:
    """``cross_source.csv`` (one row per model and test part) and ``recall.csv`` (one row per
    model, test part and class) in ``folder``."""

    folder = Path(folder)
    return [write_csv_atomic(folder / "cross_source.csv", cross_source_table(results)),
            write_csv_atomic(folder / "recall.csv", recall_table(results))]


def _short(the_id: str, part: str) -> str:
    return f"{the_id.removeprefix('cells-')} -> {part.replace('blood-cell-images', 'BCI')}"


def coverage_curves(results: dict) -> dict[str, pd.DataFrame]:
    """Accuracy-coverage curve per (model, test part), keyed by a short label."""
    return {_short(m, part): pd.DataFrame(v["coverage_curve"])
            for m, r in results.items() for part, v in r["splits"].items()}


def reliability_tables(results: dict) -> dict[str, pd.DataFrame]:
    """Reliability table per (model, test part), with the ECE in the label."""
    return {f"{_short(m, part)} (ECE {v['ece']:.3f})": pd.DataFrame(v["reliability"])
            for m, r in results.items() for part, v in r["splits"].items()}
