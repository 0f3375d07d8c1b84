"""Classify new images with an exported model: single-cell images or whole smears, streamed.

The engine behind ``leuko classify`` (see :mod:`leuko.tool.cli`):

* :func:`iter_image_files` walks the given files and folders lazily (folders recursively, in
  sorted order; inside folders only files with an image suffix are taken, hidden files
  skipped; a file named explicitly is always tried, so a wrong one is reported, not ignored).
* Images are decoded by :func:`leuko.core.images.load_rgb` in a small thread pool, a fixed number
  of batches ahead of the model (:func:`_prefetch`), so memory stays bounded whatever the
  number of files: at most ``(prefetch + 1) * batch_size`` images are held at once.
* Every batch the model sees has exactly ``batch_size`` images (the last one is padded), so
  the model's graph is built once.
* A file that cannot be read (:class:`leuko.core.images.BadImageError`) becomes a
  :class:`leuko.core.images.BadImage` with its reason; the others are still classified.
* Results are written row by row (CSV) as they come; the differential count is a running
  tally.

Single cells: each image is one cell, centre-cropped when the model's metadata says so, and
resized (bilinear, aspect not kept) to the model's input size, as in training. A cell model
looks for the cell's nucleus first; an image in which none was found is classified on the
whole image and called *uncertain*, whatever its probabilities.

How far each cell lies from the cells the model was trained on (:mod:`leuko.cells.novelty`) comes
with its class when the model's novelty file lies beside it (``<model stem>-novelty.npz``):
the same pass through the model gives the penultimate features and the probabilities. Without
the file the distance is not available, and the run says so (``RunSummary.novelty_note``).
Smears (``smear=True``): :func:`leuko.cells.detect.detect_cells` finds the white cells, each is cropped
(:func:`leuko.cells.detect.cell_crop_box`), classified, and an annotated PNG of the smear is written.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from leuko.cells.detect import CLASS_COLOURS, annotate, cell_crops, detect_cells
from leuko.cells.novelty import Novelty, novelty_path
from leuko.cells.outputs import features_and_output
from leuko.cells.preprocess import CellPreprocess, mean_over_views, prepare_cell
from leuko.core.atomic import atomic_write, write_csv_atomic
from leuko.core.calibration import temperature_scale
from leuko.core.crops import centre_crop
from leuko.core.datasets import DIFFERENTIAL_CLASSES, WBC_CLASSES
from leuko.core.images import (
    SUPPORTED_SUFFIXES,
    BadImage,
    BadImageError,
    bad_images_frame,
    load_rgb,
    resize,
)
from leuko.core.progress import progress_bar
from leuko.thesis.study import load_model

__all__ = [
    "Classifier",
    "Prediction",
    "RunSummary",
    "classify_cells",
    "classify_smears",
    "differential_count",
    "format_differential",
    "iter_image_files",
    "load_classifier",
    "metadata_path",
    "run",
]


class ModelMetadataError(FileNotFoundError):
    """The model's metadata JSON is missing or incomplete."""


# --------------------------------------------------------------------------------------------
# the model and its metadata
# --------------------------------------------------------------------------------------------
def metadata_path(model_path: str | Path) -> Path:
    """The metadata JSON that belongs to a model: ``x.keras`` -> ``x.json``."""
    return Path(model_path).with_suffix(".json")


@dataclass
class Classifier:
    """A loaded model with what is needed to feed it: class names, input size, crop."""

    model: object
    classes: list[str]
    image_size: tuple[int, int]
    crop: int | float | None = None
    metadata: dict = field(default_factory=dict)
    cell_preprocess: dict | None = None  # leuko.cells.preprocess: find, frame and normalise the cell
    temperature: float = 1.0  # calibration (temperature scaling, fitted on validation cells)
    views: int = 1  # probabilities averaged over this many symmetries (cells.mean_over_views)
    abstain_threshold: float = 0.0  # calibrated confidence below which a cell is uncertain
    path: Path | None = None
    novelty: Novelty | None = None  # the distance to the training cells (leuko.cells.novelty)
    novelty_note: str = ""  # why there is no distance, when ``novelty`` is None
    _predict: Callable | None = field(default=None, repr=False)
    _scored: Callable | None = field(default=None, repr=False)

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """An RGB image as the model takes it, uint8: for a cell model the cell found, framed
        and stain-normalised (:func:`leuko.cells.preprocess.prepare_cell`), else centre-cropped if
        required and resized as in training (:func:`leuko.core.images.resize`: bilinear, aspect
        not kept)."""
        return self.prepare_flagged(rgb)[0]

    def prepare_flagged(self, rgb: np.ndarray) -> tuple[np.ndarray, bool | None]:
        """``prepare``, and for a cell model whether its nucleus was found (False: the whole
        image was used; None: the model does not look for cells)."""

        height, width = self.image_size
        if self.cell_preprocess is not None:

            return prepare_cell(rgb, height, CellPreprocess.from_dict(self.cell_preprocess))
        if self.crop:
            rgb = centre_crop(rgb, self.crop)
        return np.ascontiguousarray(resize(rgb, height, width), dtype=np.uint8), None

    def is_uncertain(self, probabilities: np.ndarray) -> bool:
        """Whether a cell's (calibrated) confidence is below the abstention threshold."""
        return float(np.max(probabilities)) < self.abstain_threshold

    def predict_batch(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """Class probabilities of up to ``batch_size`` prepared images (padded to the full
        batch, so every call has the same shape), averaged over the model's ``views`` of each
        image as in its calibration, then temperature-scaled."""
        n = len(images)
        if n == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        if n > batch_size:
            raise ValueError(f"{n} images exceed the batch size {batch_size}")
        batch = np.zeros((batch_size, *images.shape[1:]), dtype=np.float32)
        batch[:n] = images
        if self._predict is None:
            model = self.model
            self._predict = tf.function(lambda x: model(x, training=False),
                                        reduce_retracing=True)
        probs = mean_over_views(lambda b: np.asarray(self._predict(b)), batch, self.views)[:n]
        return self._calibrated(probs)

    def _calibrated(self, probs: np.ndarray) -> np.ndarray:
        """View-averaged probabilities temperature-scaled, checked against the classes."""
        if self.temperature != 1.0:

            probs = temperature_scale(probs, self.temperature).astype(np.float32)
        if probs.shape[1] != len(self.classes):
            raise ModelMetadataError(
                f"the model gives {probs.shape[1]} outputs but its metadata names "
                f"{len(self.classes)} classes ({self.classes})")
        return probs

    def predict_scored(self, images: np.ndarray, batch_size: int
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict_batch`'s probabilities and each image's distance to the training
        cells (:meth:`leuko.cells.novelty.Novelty.distance` of its penultimate features averaged over
        the same views), both from one pass; the distances are None without a novelty file."""
        if self.novelty is None:
            return self.predict_batch(images, batch_size), None
        n = len(images)
        if n == 0:
            return np.zeros((0, len(self.classes)), np.float32), np.zeros(0)
        if n > batch_size:
            raise ValueError(f"{n} images exceed the batch size {batch_size}")
        batch = np.zeros((batch_size, *images.shape[1:]), dtype=np.float32)
        batch[:n] = images
        if self._scored is None:
            both = features_and_output(self.model)
            self._scored = tf.function(lambda x: both(x, training=False),
                                       reduce_retracing=True)
        feats = []

        def probabilities(view):
            features, probs = self._scored(view)
            feats.append(np.asarray(features))
            return np.asarray(probs)

        probs = mean_over_views(probabilities, batch, self.views)[:n]
        return self._calibrated(probs), self.novelty.distance(np.mean(feats, axis=0)[:n])


def load_classifier(model_path: str | Path, novelty: bool = True) -> Classifier:
    """Load an exported model (``safe_mode``) and its metadata JSON beside it, and with
    ``novelty`` its novelty file (:func:`leuko.cells.novelty.novelty_path`) when there is one
    (else ``novelty_note`` says it is missing; one that belongs to another model is a
    :class:`leuko.cells.novelty.NoveltyError`).

    Raises FileNotFoundError (model) or :class:`ModelMetadataError` (metadata) with a message
    that says how to get them (``leuko export``).
    """

    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(
            f"model not found: {model_path}. Export the study's model first (`dvc repro "
            f"export` or `leuko export --task wbc`), or pass --model PATH.")
    meta_file = metadata_path(model_path)
    if not meta_file.is_file():
        raise ModelMetadataError(
            f"model metadata not found: {meta_file} (class names and input size). Models "
            "written by `leuko export` have it beside the .keras file.")
    metadata = json.loads(meta_file.read_text())
    missing = [k for k in ("classes", "input_size") if k not in metadata]
    if missing:
        raise ModelMetadataError(f"{meta_file} lacks {missing}")
    model = load_model(model_path)
    size = metadata["input_size"]
    size = (int(size), int(size)) if isinstance(size, int | float) else (int(size[0]),
                                                                          int(size[1]))
    abstain = metadata.get("abstain") or {}
    fitted, note = None, "not asked for"
    if novelty:
        novelty_file = novelty_path(model_path)
        if novelty_file.is_file():
            fitted, note = Novelty.load(novelty_file, model_path), ""
        else:
            note = (f"no {novelty_file} beside the model (`dvc repro novelty` writes the "
                    "study's, `leuko adapt` an adapted model's)")
    return Classifier(model=model, classes=[str(c) for c in metadata["classes"]],
                      image_size=size, crop=metadata.get("crop"), metadata=metadata,
                      path=model_path, cell_preprocess=metadata.get("cell_preprocess"),
                      temperature=float(metadata.get("temperature", 1.0)),
                      views=int(metadata.get("views", 1)),
                      abstain_threshold=float(abstain.get("threshold", 0.0)),
                      novelty=fitted, novelty_note=note)


# --------------------------------------------------------------------------------------------
# files in, results out
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """One classified cell: a cell image, or cell ``cell`` of smear ``path`` in ``box``."""

    path: str
    probabilities: np.ndarray
    cell: int | None = None
    box: tuple[int, int, int, int] | None = None
    cell_found: bool | None = None
    distance: float | None = None  # to the training cells (None: no novelty file)


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_SUFFIXES


def iter_image_files(inputs: Iterable[str | Path], skipped: Counter | None = None,
                     exclude: Iterable[str | Path] = ()) -> Iterator[Path]:
    """The files to classify, lazily: explicit files as given (whatever their suffix, so a
    wrong one is reported), folders walked recursively in sorted order, taking image files
    (JPEG, PNG, BMP, TIFF by suffix); hidden files and folders and the folders ``exclude``
    (e.g. this run's own annotated images) are skipped. ``skipped['not an image']`` counts
    the other files."""
    excluded = {Path(e).resolve() for e in exclude}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                                 and (Path(root) / d).resolve() not in excluded)
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    if _is_image_name(name):
                        yield Path(root) / name
                    elif skipped is not None:
                        skipped["not an image"] += 1
        else:
            yield path  # missing or unreadable files fail with their reason later


def count_image_files(inputs: Sequence[str | Path], exclude: Iterable[str | Path] = ()) -> int:
    """How many files :func:`iter_image_files` will yield (a listing pass; no decoding)."""
    return sum(1 for _ in iter_image_files(inputs, exclude=exclude))


def _prefetch(iterator: Iterator, depth: int) -> Iterator:
    """Run ``iterator`` in a background thread, at most ``depth`` items ahead."""
    if depth <= 0:
        yield from iterator
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
            items.put(("error", error))
            return
        items.put(("done", done))

    thread = threading.Thread(target=produce, daemon=True, name="leuko-prefetch")
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


def _chunks(iterator: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in iterator:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decode_all(paths: Iterable[Path], work: Callable, chunk: int, workers: int
                ) -> Iterator[tuple[Path, object]]:
    """``(path, work(path))`` for each path, decoded ``chunk`` at a time by a thread pool;
    a BadImageError becomes ``(path, BadImage)``."""

    def safe(path):
        try:
            return work(path)
        except BadImageError as error:
            return BadImage(Path(path), error.reason)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for paths_chunk in _chunks(paths, chunk):
            yield from zip(paths_chunk, pool.map(safe, paths_chunk), strict=True)


def classify_cells(paths: Iterable[Path], classifier: Classifier, batch_size: int = 64,
                   workers: int = 2, prefetch: int = 2) -> Iterator[Prediction | BadImage]:
    """Predictions (or failures) for single-cell images, in the order of ``paths``."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")

    def read(path):
        return classifier.prepare_flagged(load_rgb(path))

    decoded = _prefetch(_decode_all(paths, read, batch_size, workers), prefetch * batch_size)
    pending: list[tuple[Path, object]] = []
    n_images = 0

    def flush():
        images = [item[0] for _, item in pending if not isinstance(item, BadImage)]
        probs, distances = (classifier.predict_scored(np.stack(images), batch_size) if images
                            else (None, None))
        k = 0
        for path, item in pending:
            if isinstance(item, BadImage):
                yield item
            else:
                yield Prediction(str(path), probs[k], cell_found=item[1],
                                 distance=None if distances is None else float(distances[k]))
                k += 1
        pending.clear()

    for path, item in decoded:
        pending.append((path, item))
        if not isinstance(item, BadImage):
            n_images += 1
        if n_images == batch_size:
            yield from flush()
            n_images = 0
    if pending:
        yield from flush()


@dataclass
class SmearResult:
    """One smear after classification: its cells' predictions, for the annotated image."""

    path: str
    image: np.ndarray
    detections: list
    probabilities: list = field(default_factory=list)
    distances: list = field(default_factory=list)  # None each without a novelty file


def classify_smears(paths: Iterable[Path], classifier: Classifier, config,
                    batch_size: int = 64, workers: int = 2, prefetch: int = 2
                    ) -> Iterator[SmearResult | BadImage]:
    """Each smear with its detected cells classified (or a failure), in the order of
    ``paths``; ``config``: the detector's :class:`leuko.cells.detect.DetectConfig` (the study's:
    ``DetectConfig.from_params``). Cells of several smears share a batch; a smear is yielded
    as soon as all of its cells are classified, so only smears with cells in the current
    batch are held."""

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")

    def read(path):
        rgb = load_rgb(path)
        found = detect_cells(rgb, config)
        crops = [classifier.prepare(c) for c in cell_crops(rgb, found, config)]
        return rgb, found, crops

    decoded = _prefetch(_decode_all(paths, read, max(1, workers), workers), prefetch)
    pending: list[SmearResult | BadImage] = []
    crops: list[tuple[SmearResult, np.ndarray]] = []

    def predict(n):
        batch, rest = crops[:n], crops[n:]
        probs, distances = classifier.predict_scored(np.stack([c for _, c in batch]),
                                                     batch_size)
        for k, ((result, _), p) in enumerate(zip(batch, probs, strict=True)):
            result.probabilities.append(p)
            result.distances.append(None if distances is None else float(distances[k]))
        crops[:] = rest

    def ready():
        while pending and (isinstance(pending[0], BadImage) or
                           len(pending[0].probabilities) == len(pending[0].detections)):
            yield pending.pop(0)

    for path, item in decoded:
        if isinstance(item, BadImage):
            pending.append(item)
        else:
            rgb, found, cell_images = item
            result = SmearResult(str(path), rgb, found)
            pending.append(result)
            crops.extend((result, c) for c in cell_images)
            while len(crops) >= batch_size:
                predict(batch_size)
        yield from ready()
    while crops:
        predict(min(batch_size, len(crops)))
    yield from ready()


# --------------------------------------------------------------------------------------------
# the differential count
# --------------------------------------------------------------------------------------------
def differential_classes(classes: Sequence[str]) -> tuple[list[str], list[str]]:
    """A model's classes split into those a differential count counts (the white cells) and
    the other cell types (immature granulocytes, erythroblasts, platelets)."""

    white = set(DIFFERENTIAL_CLASSES) | set(WBC_CLASSES)
    return [c for c in classes if c in white], [c for c in classes if c not in white]


def differential_count(counts: Counter | dict, classes: Sequence[str]) -> list[dict]:
    """Cells and percent per class (in ``classes`` order), from a tally of predicted names."""
    total = sum(int(counts.get(c, 0)) for c in classes)
    return [{"class": c, "cells": int(counts.get(c, 0)),
             "percent": round(100.0 * counts.get(c, 0) / total, 1) if total else 0.0}
            for c in classes]


def format_differential(rows: list[dict], title: str = "Differential count") -> str:
    """The differential count as an aligned text table with a total line."""
    width = max([len("class"), len("total")] + [len(r["class"]) for r in rows])
    total = sum(r["cells"] for r in rows)
    lines = [title, f"  {'class':<{width}}  {'cells':>7}  {'%':>6}"]
    lines += [f"  {r['class']:<{width}}  {r['cells']:>7}  {r['percent']:>6.1f}" for r in rows]
    lines.append(f"  {'total':<{width}}  {total:>7}  {100.0 if total else 0.0:>6.1f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the whole run, as `leuko classify` does it
# --------------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """What a run did: counts, failures, where the results are; ``exit_code`` 0 or 2."""

    model: str
    classes: list[str]
    mode: str
    files: int = 0
    classified_files: int = 0
    cells: int = 0
    counts: Counter = field(default_factory=Counter)
    failures: list[BadImage] = field(default_factory=list)
    ignored_files: int = 0
    smears_without_cells: list[str] = field(default_factory=list)
    output: str = ""
    failed_output: str | None = None
    smear_output: str | None = None
    annotated_dir: str | None = None
    seconds: float = 0.0
    uncertain: int = 0  # cells below the model's abstention threshold, or no nucleus found
    cells_not_found: int = 0  # images in which no nucleus was found (whole image used)
    far: int = 0  # cells farther from the training cells than their class's threshold
    novelty_file: str | None = None  # the model's novelty file (None: distances unavailable)
    novelty_note: str = ""  # why the distances are not available
    folder_share: float | None = None
    unlike_sources: bool = False  # more than folder_share of the cells are far: warn

    @property
    def exit_code(self) -> int:
        return 2 if self.failures else 0

    def differential(self) -> list[dict]:
        """The differential count of the white cells classified with confidence."""
        return differential_count(self.counts, differential_classes(self.classes)[0])

    def other_cells(self) -> dict[str, int]:
        """Cells of the other types (not white cells), by class."""
        return {c: int(self.counts.get(c, 0)) for c in differential_classes(self.classes)[1]}

    def to_dict(self) -> dict:
        return {
            "model": self.model, "classes": self.classes, "mode": self.mode,
            "files": self.files, "classified_files": self.classified_files,
            "cells": self.cells, "differential": self.differential(),
            "other_cells": self.other_cells(), "uncertain": self.uncertain,
            "cells_not_found": self.cells_not_found,
            "novelty": {"available": self.novelty_file is not None,
                        "file": self.novelty_file, "note": self.novelty_note,
                        "far_cells": self.far,
                        "far_share": round(self.far / self.cells, 4) if (
                            self.novelty_file and self.cells) else None,
                        "folder_share": self.folder_share,
                        "warning": self.unlike_sources},
            "failed": [{"path": str(f.path), "reason": f.reason} for f in self.failures],
            "ignored_non_image_files": self.ignored_files,
            "smears_without_cells": self.smears_without_cells,
            "output": self.output, "failed_output": self.failed_output,
            "smear_output": self.smear_output, "annotated_dir": self.annotated_dir,
            "seconds": round(self.seconds, 2),
            "cells_per_second": round(self.cells / self.seconds, 1) if self.seconds else None,
            "exit_code": self.exit_code,
        }


def _unique_png(folder: Path, stem: str, used: set[str]) -> Path:
    name, k = f"{stem}.png", 2
    while name in used:
        name, k = f"{stem}-{k}.png", k + 1
    used.add(name)
    return folder / name


def run(inputs: Sequence[str | Path], model: str | Path, output: str | Path,
        batch_size: int = 64, smear: bool = False, detect_config=None, progress: bool = True,
        workers: int = 2, classifier: Classifier | None = None) -> RunSummary:
    """Classify every image under ``inputs`` and write the CSV(s); see :mod:`leuko.tool.cli`.
    ``detect_config``: the detector's settings, needed with ``smear``. Each row carries the
    cell's distance to the training cells and whether it is far (empty without the model's
    novelty file); the summary says whether the run's share of far cells exceeds the novelty
    file's ``folder_share`` (``unlike_sources``)."""


    if smear and detect_config is None:
        raise ValueError("classifying smears needs the detector's settings "
                         "(leuko.cells.detect.DetectConfig.from_params())")
    start = time.perf_counter()
    classifier = classifier or load_classifier(model)
    classes = classifier.classes
    novelty = classifier.novelty
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(model=str(model), classes=classes, mode="smear" if smear else "cells",
                         output=str(output), novelty_note=classifier.novelty_note)
    if novelty is not None:
        summary.novelty_file = str(novelty_path(classifier.path or model))
        summary.folder_share = novelty.settings.folder_share

    def far_cells(distance: float | None) -> tuple[str, str, bool]:
        """The CSV's distance and far columns of a cell, and whether it is far."""
        if distance is None:
            return "", "", False
        far = bool(novelty.is_far(np.array([distance]))[0])
        return f"{distance:.4f}", str(far).lower(), far
    annotated_dir = output.with_name(f"{output.stem}-annotated")
    exclude = [annotated_dir] if smear else []
    total = count_image_files(inputs, exclude)
    skipped: Counter = Counter()
    files = iter_image_files(inputs, skipped, exclude)
    bar = progress_bar(total=total, enabled=progress, unit="smear" if smear else "img",
                       desc="classify smears" if smear else "classify")
    prob_columns = [f"p_{c}" for c in classes]
    smear_rows = []
    try:
        with atomic_write(output) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            if smear:

                annotated_dir.mkdir(parents=True, exist_ok=True)
                summary.annotated_dir = str(annotated_dir)
                used: set[str] = set()
                writer.writerow(["path", "cell", "xmin", "ymin", "xmax", "ymax", "predicted",
                                 "confidence", "uncertain", "distance", "far", *prob_columns])
                for item in classify_smears(files, classifier, detect_config, batch_size,
                                            workers):
                    summary.files += 1
                    bar.update(1)
                    if isinstance(item, BadImage):
                        summary.failures.append(item)
                        continue
                    summary.classified_files += 1
                    names, counts, far_here = [], Counter(), 0
                    for i, (det, p, d) in enumerate(zip(item.detections, item.probabilities,
                                                        item.distances, strict=True)):
                        k = int(np.argmax(p))
                        doubt = classifier.is_uncertain(p)
                        names.append("uncertain" if doubt else classes[k])
                        counts[names[-1]] += 1
                        summary.uncertain += doubt
                        distance, far_text, far = far_cells(d)
                        far_here += far
                        writer.writerow([item.path, i + 1, *det.box, classes[k],
                                         f"{p[k]:.5f}", str(doubt).lower(), distance,
                                         far_text, *(f"{v:.5f}" for v in p)])
                    summary.far += far_here
                    summary.counts.update({c: n for c, n in counts.items()
                                           if c != "uncertain"})
                    summary.cells += len(names)
                    if not names:
                        summary.smears_without_cells.append(item.path)
                    png = _unique_png(annotated_dir, Path(item.path).stem, used)
                    labels = [f"{n} {float(np.max(p)):.2f}"
                              for n, p in zip(names, item.probabilities, strict=True)]
                    colours = [CLASS_COLOURS[classes.index(n) % len(CLASS_COLOURS)]
                               if n in classes else "#808080" for n in names]
                    title = (", ".join(f"{c} {counts[c]}" for c in [*classes, "uncertain"]
                                       if counts[c])
                             or "no white cell found")
                    annotate(item.image, [d.box for d in item.detections], labels, colours,
                             title=title).save(png)
                    smear_rows.append({"path": item.path, "cells": len(names),
                                       **{c: counts[c] for c in classes},
                                       "uncertain": counts["uncertain"],
                                       "far": far_here if novelty is not None else "",
                                       "annotated": str(png)})
            else:
                writer.writerow(["path", "predicted", "confidence", "uncertain", "cell_found",
                                 "distance", "far", *prob_columns])
                for item in classify_cells(files, classifier, batch_size, workers):
                    summary.files += 1
                    bar.update(1)
                    if isinstance(item, BadImage):
                        summary.failures.append(item)
                        continue
                    p = item.probabilities
                    k = int(np.argmax(p))
                    # no nucleus found: the whole image was classified, so no class is trusted
                    doubt = classifier.is_uncertain(p) or item.cell_found is False
                    if doubt:
                        summary.uncertain += 1
                    else:
                        summary.counts[classes[k]] += 1
                    summary.cells_not_found += item.cell_found is False
                    summary.cells += 1
                    summary.classified_files += 1
                    distance, far_text, far = far_cells(item.distance)
                    summary.far += far
                    found = "" if item.cell_found is None else str(item.cell_found).lower()
                    writer.writerow([item.path, classes[k], f"{p[k]:.5f}",
                                     str(doubt).lower(), found, distance, far_text,
                                     *(f"{v:.5f}" for v in p)])
    finally:
        bar.close()
    summary.ignored_files = skipped["not an image"]
    if smear:
        smear_csv = output.with_name(f"{output.stem}-smears.csv")
        frame = pd.DataFrame(smear_rows, columns=["path", "cells", *classes, "uncertain",
                                                  "far", "annotated"])
        write_csv_atomic(smear_csv, frame)
        summary.smear_output = str(smear_csv)
    failed_csv = output.with_name(f"{output.stem}-failed.csv")
    if summary.failures:
        write_csv_atomic(failed_csv, bad_images_frame(
            summary.failures))
        summary.failed_output = str(failed_csv)
    else:
        failed_csv.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
    if novelty is not None:
        summary.unlike_sources = novelty.flags(summary.far, summary.cells)
    summary.seconds = time.perf_counter() - start
    return summary
