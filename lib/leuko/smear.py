"""White cells on whole smears: find them by their stained nuclei, crop them, and measure how
well that works on BCCD's WBC boxes.

How a smear is searched (:func:`detect_cells`)
----------------------------------------------
1. The smear is resized so that a white cell is about :data:`WORK_CELL_PX` pixels wide
   (``DetectConfig.cell_size`` says how wide one is in the input: 190 px on BCCD's 640x480
   smears, the median side of its WBC boxes). Every size below is relative to ``cell_size``,
   so another magnification needs one number changed.
2. A "nuclear stain" map: blue minus green (``B - G``, levels 0..255), lightly smoothed.
   Nuclei stained by Giemsa / Wright are purple-blue (B - G about 100), red cells pink and the
   background pale (about 0). ``feature="hematoxylin"`` uses the hematoxylin density of a
   stain deconvolution (:func:`leuko.stain.rgb_to_hed`) instead; on BCCD's trainval smears it
   did worse (precision 0.92, recall 0.97 against 0.99, 0.99), since the red cells and the
   background absorb in the hematoxylin channel too.
3. Otsu's threshold of that map, never below ``threshold_floor`` (so a smear with no white cell,
   whose histogram Otsu splits between red cells and background, yields no nucleus).
4. Morphology: an opening removes specks; small objects (platelets) are dropped later by area.
5. Lobes of one nucleus (a neutrophil's 2-5 lobes) are merged by a dilation of
   ``merge_radius`` before connected components are labelled; each component's nucleus pixels
   (undilated) give its area and its box.
6. Components with a nucleus area outside ``[min_area, max_area] * cell_size**2`` are dropped.
7. The cell's box is the nucleus box scaled by ``box_scale`` about its centre, clipped to the
   smear: the cytoplasm lies around the nucleus. (``box_shape="square"`` takes the square of
   :func:`leuko.crops.square_box` instead; on BCCD's trainval smears the scaled nucleus box
   matched the annotated boxes better: F1 0.992 vs 0.985 at IoU 0.5.)

The crop a classifier sees (:func:`cell_crop_box`) is not the cell's box. The study's classifier
was trained on blood-cell-images, whose 320x240 "crops" are in fact whole 640x480 BCCD smears
halved (measured: ``TEST_SIMPLE/EOSINOPHIL/_1_5031.jpeg`` is ``BloodImage_00139.jpg`` at half
size, mean squared difference 2.2 levels^2 against a median of 712 over the other smears; TRAIN
and TEST are shifted, rotated and flipped copies). A cell crop therefore keeps that geometry: a
window ``crop_height = 2.53`` cell sizes high (480 / 190) with aspect 4:3, centred on the
nucleus and shifted (not clipped) to stay inside the smear. On BCCD that window is the whole
smear, so two white cells of one smear share one window (and one class); on larger fields each
cell gets its own window. Measured on BCCD's 339 smears with one WBC box and one class in
``labels.csv`` (not independent of the training data: these smears are the sources of
blood-cell-images): accuracy 0.60 with windows of 1.26 cell sizes (a 320x240 window around
the cell), 0.86 with 1.9, 0.91 with 2.53.

Measured on BCCD (``notebooks/09-detect.ipynb``): precision and recall at IoU >= 0.5, matching
each predicted box to at most one annotated WBC box (greedy by IoU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from leuko.crops import crop_box, square_box

__all__ = [
    "FEATURES",
    "WORK_CELL_PX",
    "Detection",
    "DetectConfig",
    "annotate",
    "annotated_smear",
    "classify_detections",
    "detection_study",
    "montage",
    "reviewed",
    "smear_classification_metrics",
    "bccd_ground_truth",
    "cell_crop_box",
    "detect_cells",
    "detection_summary",
    "evaluate_detection",
    "iou",
    "match_boxes",
    "nuclear_stain",
]

WORK_CELL_PX = 95.0
"""Width of a white cell, in pixels, in the resized smear the segmentation runs on."""

FEATURES = ("blue_green", "hematoxylin")
"""Nuclear stain maps :func:`nuclear_stain` can compute."""

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class DetectConfig:
    """Parameters of :func:`detect_cells`; sizes are fractions of ``cell_size`` (see module doc).

    The defaults were chosen on BCCD's VOC ``trainval`` smears (292) and hold on its ``test``
    smears; see ``reports/detection/metrics.json``.
    """

    cell_size: float = 190.0  # px: a white cell's width in the input (BCCD 640x480: 190)
    feature: str = "blue_green"  # "blue_green" (B - G) or "hematoxylin" (HED density x 100)
    smooth: float = 1.0  # Gaussian sigma of the stain map, px at the working scale
    threshold_floor: float = 20.0  # the threshold is max(Otsu, floor), in the map's units
    open_radius: float = 0.01  # opening radius (specks), fraction of cell_size
    merge_radius: float = 0.03  # dilation radius that merges lobes of one nucleus
    min_area: float = 0.1  # nucleus area limits, fractions of cell_size**2
    max_area: float = 1.5
    box_scale: float = 1.3  # cell box / nucleus box (each side, about the centre)
    box_shape: str = "rect"  # "rect": the nucleus box scaled; "square": crops.square_box
    crop_height: float = 2.53  # classifier window height / cell_size (BCCD: 480 / 190)
    crop_aspect: float = 4 / 3  # classifier window width / height (blood-cell-images: 4:3)

    def __post_init__(self):
        if self.box_shape not in ("rect", "square"):
            raise ValueError(f"detect box_shape must be 'rect' or 'square', got "
                             f"{self.box_shape!r}")
        if self.feature not in FEATURES:
            raise ValueError(f"detect feature must be one of {FEATURES}, got {self.feature!r}")
        positive = ("cell_size", "box_scale", "crop_height", "crop_aspect", "max_area")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"detect {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("smooth", "open_radius", "merge_radius", "min_area"):
            if getattr(self, name) < 0:
                raise ValueError(f"detect {name} must be >= 0, got {getattr(self, name)!r}")
        if self.min_area >= self.max_area:
            raise ValueError(f"detect min_area ({self.min_area}) must be below max_area "
                             f"({self.max_area})")

    @classmethod
    def from_dict(cls, values: dict | None) -> DetectConfig:
        """A config from a dict such as ``params/detect.yaml``'s, naming unknown keys."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown detect parameter(s) {unknown}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Detection:
    """One white cell found on a smear: its box, its nucleus' box and area (input pixels)."""

    box: Box
    nucleus_box: Box
    nucleus_area: float
    stain: float = field(default=0.0)  # mean stain-map value of the nucleus (a confidence)


# --------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------
def _disk(radius: float) -> np.ndarray | None:
    r = int(round(radius))
    if r < 1:
        return None
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    if values.size == 0 or float(values.max()) == float(values.min()):
        return float("inf")
    return float(threshold_otsu(values))


def nuclear_stain(rgb: np.ndarray, feature: str = "blue_green") -> np.ndarray:
    """The map that is high on stained nuclei: ``B - G`` in levels, or hematoxylin x 100."""
    if feature == "blue_green":
        return rgb[..., 2].astype(np.float32) - rgb[..., 1].astype(np.float32)
    if feature == "hematoxylin":
        from leuko.stain import rgb_to_hed

        return (rgb_to_hed(rgb)[..., 0] * 100.0).astype(np.float32)
    raise ValueError(f"detect feature must be one of {FEATURES}, got {feature!r}")


def detect_cells(rgb: np.ndarray, config: DetectConfig = DetectConfig()) -> list[Detection]:
    """White cells on a uint8 RGB smear, sorted top to bottom, left to right."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"smear must be an (H, W, 3) RGB array, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    factor = WORK_CELL_PX / float(config.cell_size)  # input px -> working px
    work_w, work_h = max(1, round(width * factor)), max(1, round(height * factor))
    small = rgb if (work_w, work_h) == (width, height) else np.asarray(
        Image.fromarray(rgb).resize((work_w, work_h), Image.BILINEAR))
    stain = nuclear_stain(small, config.feature)
    if config.smooth:
        stain = ndi.gaussian_filter(stain, config.smooth)
    threshold = max(_otsu(stain), config.threshold_floor)
    mask = stain > threshold
    opening = _disk(config.open_radius * WORK_CELL_PX)
    if opening is not None:
        mask = ndi.binary_opening(mask, opening)
    merging = _disk(config.merge_radius * WORK_CELL_PX)
    merged = ndi.binary_dilation(mask, merging) if merging is not None else mask
    labels, n = ndi.label(merged)
    if n == 0:
        return []
    labels = np.where(mask, labels, 0)
    index = np.arange(1, n + 1)
    areas = ndi.sum_labels(mask, labels, index)
    means = ndi.mean(stain, labels, index)
    cell_area = WORK_CELL_PX ** 2
    found = []
    for i, sl in enumerate(ndi.find_objects(labels, max_label=n)):
        if sl is None or not config.min_area * cell_area <= areas[i] <= config.max_area * cell_area:
            continue
        # the nucleus box back in input pixels
        nucleus = (sl[1].start / factor, sl[0].start / factor, sl[1].stop / factor,
                   sl[0].stop / factor)
        nucleus_box = tuple(int(v) for v in (
            max(0, math.floor(nucleus[0])), max(0, math.floor(nucleus[1])),
            min(width, math.ceil(nucleus[2])), min(height, math.ceil(nucleus[3]))))
        box = _cell_box(nucleus, config, (height, width))
        found.append(Detection(box=box, nucleus_box=nucleus_box,
                               nucleus_area=float(areas[i]) / factor ** 2,
                               stain=float(means[i])))
    return sorted(found, key=lambda d: (d.box[1], d.box[0]))


def _cell_box(nucleus: tuple[float, float, float, float], config: DetectConfig,
              image_shape: tuple[int, int]) -> Box:
    """The cell's box from its nucleus box: scaled about the centre, clipped to the image."""
    if config.box_shape == "square":
        return square_box(*nucleus, scale=config.box_scale, image_shape=image_shape)
    height, width = image_shape
    cx, cy = (nucleus[0] + nucleus[2]) / 2, (nucleus[1] + nucleus[3]) / 2
    half_w = (nucleus[2] - nucleus[0]) * config.box_scale / 2
    half_h = (nucleus[3] - nucleus[1]) * config.box_scale / 2
    return (max(0, round(cx - half_w)), max(0, round(cy - half_h)),
            min(width, round(cx + half_w)), min(height, round(cy + half_h)))


def cell_crop_box(detection: Detection | Box, image_shape: tuple[int, int],
                  config: DetectConfig = DetectConfig()) -> Box:
    """The classifier's window around a cell: ``crop_height * cell_size`` high, ``crop_aspect``
    wide, centred on the nucleus and shifted to lie inside the smear (clipped only when the
    smear is smaller than the window)."""
    box = detection.nucleus_box if isinstance(detection, Detection) else detection
    height, width = image_shape
    crop_h = min(height, max(1, round(config.crop_height * config.cell_size)))
    crop_w = min(width, max(1, round(crop_h * config.crop_aspect)))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(min(max(0, round(cx - crop_w / 2)), width - crop_w))
    y0 = int(min(max(0, round(cy - crop_h / 2)), height - crop_h))
    return (x0, y0, x0 + crop_w, y0 + crop_h)


def cell_crops(rgb: np.ndarray, detections: Sequence[Detection],
               config: DetectConfig = DetectConfig()) -> list[np.ndarray]:
    """The classifier's crop of every detection (uint8 arrays, views of ``rgb``)."""
    return [crop_box(rgb, cell_crop_box(d, rgb.shape[:2], config)) for d in detections]


# --------------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------------
CLASS_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
                 "#9a6324")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def annotate(rgb: np.ndarray, boxes: Sequence[Box], labels: Sequence[str] = (),
             colours: Sequence[str] = (), truth: Sequence[Box] = (),
             title: str = "") -> Image.Image:
    """The smear with one labelled box per cell (and annotated boxes ``truth`` dashed in
    white, when given); returns a PIL image, e.g. to ``.save("x.png")``."""
    image = Image.fromarray(np.asarray(rgb, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(image)
    scale = max(1, round(max(image.size) / 640))
    font = _font(12 * scale)
    for box in truth:
        x0, y0, x1, y1 = box
        dash = 6 * scale
        for x in range(x0, x1, 2 * dash):
            draw.line([(x, y0), (min(x + dash, x1), y0)], fill="white", width=scale)
            draw.line([(x, y1), (min(x + dash, x1), y1)], fill="white", width=scale)
        for y in range(y0, y1, 2 * dash):
            draw.line([(x0, y), (x0, min(y + dash, y1))], fill="white", width=scale)
            draw.line([(x1, y), (x1, min(y + dash, y1))], fill="white", width=scale)
    for i, box in enumerate(boxes):
        colour = colours[i] if i < len(colours) else CLASS_COLOURS[0]
        draw.rectangle(box, outline=colour, width=2 * scale)
        text = labels[i] if i < len(labels) else ""
        if text:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left, bottom - top
            x = min(max(0, box[0]), image.width - tw - 4)
            y = box[1] - th - 4 if box[1] - th - 4 >= 0 else box[1]
            draw.rectangle((x, y, x + tw + 4, y + th + 4), fill=colour)
            draw.text((x + 2 - left, y + 2 - top), text, fill="white", font=font)
    if title:
        left, top, right, bottom = draw.textbbox((0, 0), title, font=font)
        draw.rectangle((0, image.height - (bottom - top) - 6, right - left + 6, image.height),
                       fill="black")
        draw.text((3 - left, image.height - (bottom - top) - 3 - top), title, fill="white",
                  font=font)
    return image


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
    from leuko import datasets

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


def evaluate_detection(smears: pd.DataFrame, config: DetectConfig = DetectConfig(),
                       threshold: float = 0.5, progress: bool = False,
                       keep_boxes: bool = True) -> pd.DataFrame:
    """Detect on every smear of ``smears`` (columns ``path``, ``boxes``) and count true
    positives, false positives and missed cells at IoU >= ``threshold``: one row per smear."""
    from tqdm.auto import tqdm

    from leuko.images import load_rgb

    out = []
    for record in tqdm(list(smears.itertuples(index=False)), disable=not progress,
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
def classify_detections(per_smear: pd.DataFrame, classifier, config: DetectConfig = DetectConfig(),
                        batch_size: int = 64) -> pd.DataFrame:
    """Classify every detected cell and every annotated box of :func:`evaluate_detection`'s rows
    (kept boxes); adds ``predicted`` (one class per detection, ``;``-joined),
    ``predicted_matched`` (the class of the detection matched to the annotated box of a smear
    with one box, else "") and ``predicted_annotated`` (that box's own crop, else "")."""
    from leuko.images import load_rgb

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
    from leuko.metrics import classification_metrics

    labelled = per_smear[per_smear["label"].isin(list(classes))]
    result = {"labelled_smears": int(len(labelled))}
    lookup = {c: i for i, c in enumerate(classes)}
    for column, key in (("predicted_matched", "from_detected_box"),
                        ("predicted_annotated", "from_annotated_box")):
        rows = labelled[labelled[column] != ""]
        if rows.empty:
            result[key] = {"n": 0}
            continue
        m = classification_metrics(rows["label"].map(lookup).to_numpy(),
                                   rows[column].map(lookup).to_numpy(), list(classes))
        result[key] = {"n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                       "recall": {c: v["recall"] for c, v in m["per_class"].items()},
                       "confusion_matrix": m["confusion_matrix"]}
    result["cells_not_detected"] = int((labelled["predicted_matched"] == "").sum())
    return result


def annotated_smear(record, config: DetectConfig = DetectConfig(), classes: Sequence[str] = ()
                    ) -> Image.Image:
    """One smear of :func:`evaluate_detection` (+ :func:`classify_detections`) drawn with its
    annotated boxes (dashed white) and detected cells (labelled with their class, if any)."""
    from leuko.images import load_rgb

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


def montage(images: Sequence[Image.Image], ncols: int = 3, title: str = "",
            width: int = 640) -> Image.Image:
    """Images side by side, ``ncols`` a row, each scaled to ``width`` pixels (full resolution
    for BCCD, so box labels stay legible), with a title line on top."""
    ncols = max(1, min(ncols, len(images) or 1))
    scaled = [im.resize((width, max(1, round(im.height * width / im.width)))) for im in images]
    cell_h = max([im.height for im in scaled] or [width * 3 // 4])
    rows = max(1, math.ceil(len(scaled) / ncols))
    font = _font(20)
    head = 34 if title else 0
    sheet = Image.new("RGB", (ncols * width + (ncols - 1) * 6, head + rows * (cell_h + 6)),
                      "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((8, 6), title, fill="black", font=font)
    if not scaled:
        draw.text((8, head + 8), "none", fill="black", font=font)
    for k, im in enumerate(scaled):
        r, c = divmod(k, ncols)
        sheet.paste(im, (c * (width + 6), head + r * (cell_h + 6)))
    return sheet


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
    with ``model`` when given, and write ``metrics.json``, ``per-smear.csv``, ``example.png``
    and ``errors.png`` to ``out_dir``. Returns ``{"metrics", "per_smear", "figures"}``.

    ``metrics["detection"]`` counts against BCCD's boxes as published;
    ``metrics["detection_reviewed"]`` corrects the annotation errors listed in
    ``unannotated_cells`` / ``wrong_annotations`` (see :func:`reviewed`)."""
    from leuko.atomic import atomic_write, write_csv_atomic, write_json_atomic

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
    if model is not None and Path(model).is_file():
        from leuko.classify import load_classifier

        classifier = load_classifier(model)
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
        metrics["classification"] = {"model": None if model is None else str(model),
                                     "note": "no model: detected cells were not classified"}
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
        sheet = montage([annotated_smear(by_id.loc[i], config, classes) for i in ids], 3, title)
        with atomic_write(out_dir / f"{name}.png") as tmp:
            sheet.save(tmp, format="PNG")
        figures[name] = out_dir / f"{name}.png"
    return {"metrics": metrics, "per_smear": per_smear, "figures": figures}
