"""The BCCD detection study (``notebooks/09-detect.ipynb``): how well :mod:`leuko.cells.detect` finds
white cells on BCCD's 364 smears, against its annotated WBC boxes, and what the exported
classifier calls the cells it finds.

Precision and recall at IoU >= 0.5, matching each predicted box to at most one annotated WBC
box (greedy by IoU). The detector itself, its parameters (:class:`DetectConfig`) and the
drawing live in :mod:`leuko.cells.detect`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from leuko.cells.detect import (
    CLASS_COLOURS,
    Box,
    DetectConfig,
    annotate,
    cell_crop_box,
    detect_cells,
    montage,
)
from leuko.core import datasets
from leuko.core.atomic import atomic_write, write_csv_atomic, write_json_atomic
from leuko.core.crops import crop_box
from leuko.core.images import load_rgb
from leuko.core.metrics import classification_metrics
from leuko.core.params import read_block, typed
from leuko.core.progress import progress_bar
from leuko.thesis.study import class_index
from leuko.tool.classify import load_classifier

__all__ = [
    "DetectionStudy",
    "annotated_smear",
    "bccd_ground_truth",
    "classify_detections",
    "detection_study",
    "detection_summary",
    "evaluate_detection",
    "iou",
    "match_boxes",
    "reviewed",
    "run_detection_study",
    "smear_classification_metrics",
]


@dataclass(frozen=True)
class DetectionStudy:
    """The detect stage's settings, ``params/detect.yaml``'s ``detect`` block: BCCD and its
    labels, the model that classifies the cells found (``""``: detection only), the matching
    threshold, the smears drawn, the detector (:class:`leuko.cells.detect.DetectConfig`, its
    ``detector`` sub-block), BCCD's annotation errors found by eye, and ``limit`` (0: every
    smear)."""

    data_path: str
    labels_csv: str
    model: str
    iou_threshold: float
    batch_size: int
    example_smears: tuple[str, ...]
    detector: DetectConfig
    unannotated_cells: tuple[str, ...]
    wrong_annotations: tuple[str, ...]
    limit: int

    @classmethod
    def from_params(cls, detect: dict | None = None) -> DetectionStudy:
        """From the ``detect`` block (papermill ``-f params/detect.yaml``), or, when None,
        read from ``params/detect.yaml``; the lists of smears are comma-separated there."""
        block = read_block("detect", detect)

        def names(key: str) -> tuple[str, ...]:
            return tuple(s for s in str(block.get(key) or "").split(",") if s)

        values = {**block, "detector": DetectConfig.from_params(block),
                  **{key: names(key) for key in ("example_smears", "unannotated_cells",
                                                 "wrong_annotations") if key in block}}
        return typed(cls, values, "params/detect.yaml: detect")


# --------------------------------------------------------------------------------------------
# measuring detection on BCCD
# --------------------------------------------------------------------------------------------
def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (xmin, ymin, xmax, ymax) boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(predicted: Sequence[Box], truth: Sequence[Box],
                threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(predicted index, truth index, IoU)`` with IoU >= ``threshold``,
    greedy from the highest IoU (the usual VOC-style matching)."""
    pairs = sorted(((iou(p, t), i, j) for i, p in enumerate(predicted)
                    for j, t in enumerate(truth)), reverse=True)
    used_p, used_t, matches = set(), set(), []
    for value, i, j in pairs:
        if value < threshold:
            break
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        matches.append((i, j, value))
    return matches


def bccd_ground_truth(root: str | Path, labels_csv: str | Path | None = None,
                      progress: bool = False) -> pd.DataFrame:
    """Every BCCD smear with its WBC boxes: one row per smear (columns ``path, smear, split,
    label, boxes``), including smears without a WBC box (which :func:`datasets.bccd` leaves
    out, having one row per box)."""
    root = Path(root)
    rows = datasets.bccd(root, labels_csv=labels_csv, progress=progress).manifest
    per_smear = {}
    for record in rows.itertuples(index=False):
        entry = per_smear.setdefault(record.group, {
            "path": record.path, "smear": record.group, "split": record.split,
            "label": record.label, "boxes": []})
        entry["boxes"].append((int(record.xmin), int(record.ymin), int(record.xmax),
                               int(record.ymax)))
    splits = {}
    for split in ("train", "val", "test"):
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if listing.is_file():
            splits.update(dict.fromkeys(listing.read_text().split(), split))
    for xml in sorted((root / "Annotations").glob("*.xml")):
        if xml.stem in per_smear:
            continue
        wbc = [b for b in datasets.read_voc_boxes(xml) if b.name.upper() == "WBC"]
        if wbc:  # bccd() keeps every smear with a WBC box; this cannot happen
            raise datasets.DatasetError(f"{xml}: WBC boxes missing from the BCCD manifest")
        image = root / "JPEGImages" / f"{xml.stem}.jpg"
        per_smear[xml.stem] = {"path": str(image), "smear": xml.stem,
                               "split": splits.get(xml.stem, ""), "label": "", "boxes": []}
    frame = pd.DataFrame(sorted(per_smear.values(), key=lambda r: r["smear"]))
    frame["label"] = frame["label"].where(frame["boxes"].map(len) == 1, "")
    frame["label"] = frame["label"].replace("WBC", "")
    return frame


def evaluate_detection(smears: pd.DataFrame, config: DetectConfig,
                       threshold: float = 0.5, progress: bool = False,
                       keep_boxes: bool = True) -> pd.DataFrame:
    """Detect on every smear of ``smears`` (columns ``path``, ``boxes``) and count true
    positives, false positives and missed cells at IoU >= ``threshold``: one row per smear."""

    out = []
    for record in progress_bar(list(smears.itertuples(index=False)), enabled=progress,
                               desc="detect", unit="smear"):
        rgb = load_rgb(record.path)
        found = detect_cells(rgb, config)
        boxes = [d.box for d in found]
        truth = [tuple(b) for b in record.boxes]
        matches = match_boxes(boxes, truth, threshold)
        row = {c: getattr(record, c) for c in smears.columns if c != "boxes"}
        row |= {"n_true": len(truth), "n_found": len(boxes), "tp": len(matches),
                "fp": len(boxes) - len(matches), "fn": len(truth) - len(matches),
                "matched": len(matches), "iou_sum": float(sum(m[2] for m in matches))}
        if keep_boxes:
            row["found"] = boxes
            row["truth"] = truth
            row["detections"] = found
            row["matches"] = matches
        out.append(row)
    return pd.DataFrame(out)


def detection_summary(per_smear: pd.DataFrame) -> dict:
    """Precision, recall and F1 (pooled over smears) from :func:`evaluate_detection`'s rows."""
    tp, fp, fn = (int(per_smear[c].sum()) for c in ("tp", "fp", "fn"))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    iou_sum = float(per_smear["iou_sum"].sum()) if "iou_sum" in per_smear else 0.0
    matched = int(per_smear["matched"].sum()) if "matched" in per_smear else tp
    return {"smears": int(len(per_smear)), "true_cells": tp + fn, "found": tp + fp,
            "tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1,
            "mean_iou_of_matches": iou_sum / matched if matched else 0.0,
            "smears_all_correct": int(((per_smear["fp"] == 0) & (per_smear["fn"] == 0)).sum())}


# --------------------------------------------------------------------------------------------
# the detection study (notebooks/09-detect.ipynb)
# --------------------------------------------------------------------------------------------
def classify_detections(per_smear: pd.DataFrame, classifier, config: DetectConfig,
                        batch_size: int = 64) -> pd.DataFrame:
    """Classify every detected cell and every annotated box of :func:`evaluate_detection`'s rows
    (kept boxes); adds ``predicted`` (one class per detection, ``;``-joined),
    ``predicted_matched`` (the class of the detection matched to the annotated box of a smear
    with one box, else "") and ``predicted_annotated`` (that box's own crop, else "")."""

    jobs = []  # (row index, kind, crop)
    for index, record in per_smear.iterrows():
        rgb = load_rgb(record["path"])
        for d in record["detections"]:
            jobs.append((index, "found", classifier.prepare(
                crop_box(rgb, cell_crop_box(d, rgb.shape[:2], config)))))
        if len(record["truth"]) == 1:
            jobs.append((index, "annotated", classifier.prepare(
                crop_box(rgb, cell_crop_box(record["truth"][0], rgb.shape[:2], config)))))
    names = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        probs = classifier.predict_batch(np.stack([j[2] for j in chunk]), batch_size)
        names += [classifier.classes[int(k)] for k in probs.argmax(axis=1)]
    found = {i: [] for i in per_smear.index}
    annotated = dict.fromkeys(per_smear.index, "")
    for (index, kind, _), name in zip(jobs, names, strict=True):
        if kind == "found":
            found[index].append(name)
        else:
            annotated[index] = name
    out = per_smear.copy()
    out["predicted"] = [";".join(found[i]) for i in out.index]
    matched = []
    for i, record in out.iterrows():
        hit = [m[0] for m in record["matches"] if m[1] == 0] if len(record["truth"]) == 1 else []
        matched.append(found[i][hit[0]] if hit else "")
    out["predicted_matched"] = matched
    out["predicted_annotated"] = [annotated[i] for i in out.index]
    return out


def smear_classification_metrics(per_smear: pd.DataFrame, classes: Sequence[str]) -> dict:
    """Accuracy and macro F1 of the cells of labelled one-cell smears, classified from the
    detected box and from the annotated box (:func:`classify_detections`'s columns)."""

    classes = list(classes)
    labelled = per_smear[per_smear["label"].isin(classes)]
    result = {"labelled_smears": int(len(labelled))}
    for column, key in (("predicted_matched", "from_detected_box"),
                        ("predicted_annotated", "from_annotated_box")):
        rows = labelled[labelled[column] != ""]
        if rows.empty:
            result[key] = {"n": 0}
            continue
        m = classification_metrics(class_index(rows["label"], classes),
                                   class_index(rows[column], classes), classes)
        result[key] = {"n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                       "recall": {c: v["recall"] for c, v in m["per_class"].items()},
                       "confusion_matrix": m["confusion_matrix"]}
    result["cells_not_detected"] = int((labelled["predicted_matched"] == "").sum())
    return result


def annotated_smear(record, classes: Sequence[str] = ()) -> Image.Image:
    """One smear of :func:`evaluate_detection` (+ :func:`classify_detections`) drawn with its
    annotated boxes (dashed white) and detected cells (labelled with their class, if any)."""

    rgb = load_rgb(record["path"])
    names = [n for n in str(record.get("predicted", "") or "").split(";") if n]
    boxes = list(record["found"])
    colours = [CLASS_COLOURS[list(classes).index(n) % len(CLASS_COLOURS)]
               if n in classes else CLASS_COLOURS[0] for n in names] or [CLASS_COLOURS[0]] * len(
                   boxes)
    labels = names or ["WBC"] * len(boxes)
    title = f"{record['smear']}: {int(record['tp'])} found, {int(record['fp'])} false, " \
            f"{int(record['fn'])} missed"
    if record.get("label"):
        title += f" (labels.csv: {record['label']})"
    return annotate(rgb, boxes, labels, colours, truth=list(record["truth"]), title=title)


def reviewed(per_smear: pd.DataFrame, unannotated_cells: Sequence[str] = (),
             wrong_annotations: Sequence[str] = ()) -> pd.DataFrame:
    """Counts corrected for annotation errors found by eye: on the smears
    ``unannotated_cells`` every false box is a white cell BCCD did not annotate (counted as
    found), on ``wrong_annotations`` every missed box is not a white cell (dropped)."""
    out = per_smear.copy()  # ids not in the table (e.g. a limited run) are ignored
    extra = out["smear"].isin(list(unannotated_cells))
    out.loc[extra, "tp"] += out.loc[extra, "fp"]
    out.loc[extra, "n_true"] += out.loc[extra, "fp"]
    out.loc[extra, "fp"] = 0
    wrong = out["smear"].isin(list(wrong_annotations))
    out.loc[wrong, "n_true"] -= out.loc[wrong, "fn"]
    out.loc[wrong, "fn"] = 0
    return out


def detection_study(data_path: str | Path, labels_csv: str | Path | None,
                    config: DetectConfig, out_dir: str | Path, iou_threshold: float = 0.5,
                    model: str | Path | None = None, example_smears: Sequence[str] = (),
                    batch_size: int = 64, limit: int | None = None, progress: bool = False,
                    unannotated_cells: Sequence[str] = (),
                    wrong_annotations: Sequence[str] = ()) -> dict:
    """Measure detection on BCCD (all smears and per VOC split), classify the detected cells
    with ``model`` when one is named (a named model that is missing is a
    FileNotFoundError; None or "" measures detection only, as ``metrics["classification"]``
    records), and write ``metrics.json``, ``per-smear.csv``, ``example.png``
    and ``errors.png`` to ``out_dir``. Returns ``{"metrics", "per_smear", "figures"}``.

    ``metrics["detection"]`` counts against BCCD's boxes as published;
    ``metrics["detection_reviewed"]`` corrects the annotation errors listed in
    ``unannotated_cells`` / ``wrong_annotations`` (see :func:`reviewed`)."""

    if model and not Path(model).is_file():
        raise FileNotFoundError(
            f"detect model {model} is missing: export one (leuko export --task wbc) or set "
            "the model parameter empty to measure detection only")
    out_dir = Path(out_dir)
    truth = bccd_ground_truth(data_path, labels_csv)
    if limit:
        truth = truth.head(int(limit))
    per_smear = evaluate_detection(truth, config, iou_threshold, progress=progress)
    metrics = {"iou_threshold": iou_threshold, "config": config.to_dict(),
               "detection": {"all": detection_summary(per_smear)}}
    for split in ("trainval", "train", "val", "test"):
        rows = per_smear[per_smear["split"].isin(["train", "val"] if split == "trainval"
                                                 else [split])]
        if len(rows):
            metrics["detection"][split] = detection_summary(rows)
    fixed = reviewed(per_smear, unannotated_cells, wrong_annotations)
    metrics["detection_reviewed"] = {
        "all": detection_summary(fixed),
        "test": detection_summary(fixed[fixed["split"] == "test"]) if (
            fixed["split"] == "test").any() else {},
        "unannotated_cells": list(unannotated_cells),
        "wrong_annotations": list(wrong_annotations),
        "note": ("BCCD's boxes corrected by eye: false boxes on the unannotated_cells smears "
                 "are white cells BCCD did not annotate; missed boxes on the "
                 "wrong_annotations smears are not white cells")}
    classes: list[str] = []
    if model:


        classifier = load_classifier(model, novelty=False)  # the classes only, not distances
        classes = classifier.classes
        per_smear = classify_detections(per_smear, classifier, config, batch_size)
        metrics["classification"] = {
            "model": str(model),
            "model_id": classifier.metadata.get("model_id"),
            **smear_classification_metrics(per_smear, classes),
            "note": ("BCCD's smears are the sources of blood-cell-images' crops (TRAIN and "
                     "TEST), so these cells are not independent of the model's training data; "
                     "labels from blood-cell-images' labels.csv (smears with one WBC box and "
                     "one class)."),
        }
    else:
        metrics["classification"] = {"model": None,
                                     "note": "no model asked for (model parameter empty): "
                                             "detected cells were not classified"}
    table = per_smear.drop(columns=["detections", "matches", "found", "truth"])
    table["found_boxes"] = [";".join(" ".join(map(str, b)) for b in boxes)
                            for boxes in per_smear["found"]]
    table["true_boxes"] = [";".join(" ".join(map(str, b)) for b in boxes)
                           for boxes in per_smear["truth"]]
    write_csv_atomic(out_dir / "per-smear.csv", table)
    write_json_atomic(out_dir / "metrics.json", metrics)

    by_id = per_smear.set_index("smear", drop=False)
    examples = [s for s in example_smears if s in by_id.index] or list(
        per_smear[per_smear["split"] == "test"]["smear"].head(6)) or list(
        per_smear["smear"].head(6))
    figures = {}
    for name, ids, title in (
            ("example", examples, "White cells found on BCCD smears (white dashes: annotated)"),
            ("errors", list(per_smear[(per_smear["fp"] > 0) | (per_smear["fn"] > 0)]["smear"]
                            .head(12)), "Smears with a false or a missed cell")):
        sheet = montage([annotated_smear(by_id.loc[i], classes) for i in ids], 3, title)
        with atomic_write(out_dir / f"{name}.png") as tmp:
            sheet.save(tmp, format="PNG")
        figures[name] = out_dir / f"{name}.png"
    return {"metrics": metrics, "per_smear": per_smear, "figures": figures}


def run_detection_study(study: DetectionStudy, out_dir: str | Path,
                        progress: bool = False) -> dict:
    """:func:`detection_study` with the detect stage's settings (``params/detect.yaml``)."""
    return detection_study(
        study.data_path, study.labels_csv or None, study.detector, out_dir,
        iou_threshold=study.iou_threshold, model=study.model or None,
        example_smears=study.example_smears, batch_size=study.batch_size,
        limit=study.limit or None, progress=progress,
        unannotated_cells=study.unannotated_cells, wrong_annotations=study.wrong_annotations)
