"""The cell classifier for other labs: two sources, one cell geometry, leave-one-source-out.

A classifier trained on one lab's cells fails on another lab's (see the README). This module
trains and judges the classifier that ``leuko classify`` ships on two independent sources:

* ``blood-cell-images`` (BCCD's lab: 4 classes, ~300 source cells, augmented copies), split as
  the thesis study splits it (validation = whole held-out source cells of TRAIN; TEST /
  TEST_SIMPLE as published);
* ``pbc`` (Barcelona, CellaVision: 5 white cells + immature granulocytes, erythroblasts,
  platelets), split 6:2:2, stratified, grouped by content hash (:func:`prepare_pbc`).

Every image goes through :func:`leuko.cells.preprocess.prepare_cell` (the cell found, framed at a fixed
multiple of its nucleus, stain-normalised) once, into a cache (:func:`build_cell_cache`) that
every training and evaluation of this module reads. Three trainings (``TRAININGS``): on
blood-cell-images only, on PBC only, on both; each is evaluated on every source's test part,
so the two single-source models give the leave-one-source-out scores and the two-source model
is the one exported. Every model is calibrated on its validation cells (temperature scaling)
and carries an abstention threshold chosen there (:func:`abstention_threshold`).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from leuko.cells.preprocess import (
    VIEW_COUNTS,
    CellPreprocess,
    mean_over_views,
    prepare_cell,
    tight_frame,
)
from leuko.core import datasets, splits
from leuko.core.accel import eager_execution
from leuko.core.atomic import write_csv_atomic
from leuko.core.calibration import (
    abstention_threshold,
    expected_calibration_error,
    fit_temperature,
    temperature_scale,
)
from leuko.core.figures import cell_gallery
from leuko.core.images import bad_images_frame, check_policy, load_rgb
from leuko.core.inputs import make_dataset, steps_per_epoch
from leuko.core.params import read_block, typed
from leuko.core.progress import progress_bar
from leuko.models import train
from leuko.models.networks import HeadConfig, build_classifier, count_params
from leuko.models.stain_input import check_input_colour, with_input_colour
from leuko.thesis.study import (
    Paths,
    epochs_of,
    load_features,
    one_hot_labels,
    predict,
    read_manifest,
    repeat_id,
    save_features,
    save_model,
    write_json,
    write_manifest,
)

TRAININGS: dict[str, tuple[str, ...]] = {
    "blood-cell-images": ("blood-cell-images",),
    "pbc": ("pbc",),
    "both": ("blood-cell-images", "pbc"),
}
"""Training name -> the sources it trains on (the model id is ``cells-<name>``)."""

TEST_PARTS: tuple[tuple[str, str], ...] = (
    ("pbc", "test"), ("blood-cell-images", "test_simple"), ("blood-cell-images", "test"))
"""(source, split) of every held-out part each model is scored on."""

CLASS_ORDER = (*datasets.DIFFERENTIAL_CLASSES, *datasets.OTHER_CELL_CLASSES)
CACHE_NAME = "cells"
DEFAULT_PATHS = Paths()


def cell_model_id(training: str, training_seed: int | None = None) -> str:
    """``cells-<training>``: the id of one model of this study; a repeat (the same model
    trained again with another training seed, the cells fixed) adds ``-seed<n>``
    (``study.repeat_id``)."""
    if training not in TRAININGS:
        raise ValueError(f"training must be one of {sorted(TRAININGS)}, got {training!r}")
    return repeat_id(f"cells-{training}", training_seed)


def ensemble_model_id(training: str) -> str:
    """``cells-<training>-ensemble``: the id of a training's runs averaged (leuko.cells.ensemble)."""
    return cell_model_id(training) + "-ensemble"


@dataclass(frozen=True)
class CellData:
    """Which cells of each source the study uses (``params/cells.yaml: cells.data``, where
    each value is set and explained)."""

    image_size: int
    bci_train_per_class: int  # blood-cell-images TRAIN: round-robin over source cells
    bci_val_per_class: int
    pbc_split: tuple[float, float, float]  # train / val / test
    tight_share: float  # share of training images cut tight to their cell first
    # the other parts (PBC's three splits, blood-cell-images' TEST and TEST_SIMPLE): at most
    # this many cells per class each, a class-balanced sample over source cells; 0 = all
    max_per_class: int


# --- data -------------------------------------------------------------------------------------


def prepare_pbc(data_path: str | Path, seed: int, ratios=(0.6, 0.2, 0.2), policy: str = "fail",
                progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The PBC manifest with a seeded train / val / test split, stratified by class and grouped
    by content hash (byte-identical files stay on one side); and its unreadable images."""

    check_policy(policy)
    prepared = datasets.pbc(data_path, policy=policy, progress=progress)
    frame = prepared.manifest
    frame["split"] = splits.split_train_val_test(frame, ratios, seed).to_numpy()
    return frame, bad_images_frame(prepared.bad)


def cell_rows(bci: pd.DataFrame, pbc: pd.DataFrame, data: CellData, seed: int) -> pd.DataFrame:
    """Every row any model of this study trains, validates or is tested on, with ``source``.

    blood-cell-images: a class-balanced sample of TRAIN and of the validation cells (round-robin
    over source cells, so every cell is seen before any copy repeats), TEST and TEST_SIMPLE
    whole; PBC: every image of its split. ``data.max_per_class`` > 0 samples each of the
    whole parts down to that many cells per class (the smoke preset's plumbing run).
    """
    parts = []
    for split, n in (("train", data.bci_train_per_class), ("val", data.bci_val_per_class),
                     ("test", data.max_per_class), ("test_simple", data.max_per_class)):
        parts.append(splits.balanced_subsample(bci[bci["split"] == split], n, seed))
    bci_rows = pd.concat(parts).assign(source="blood-cell-images")
    pbc_rows = pd.concat(splits.balanced_subsample(pbc[pbc["split"] == split],
                                                   data.max_per_class, seed)
                         for split in ("train", "val", "test"))
    rows = pd.concat([bci_rows, pbc_rows.assign(source="pbc")], ignore_index=True)
    columns = ["path", "source", "label", "split", "group", "sha256"]
    return rows[columns].sort_values(["source", "split", "path"], kind="stable").reset_index(
        drop=True)


def _prepare_one(task: tuple[str, int, dict, bool]) -> tuple[np.ndarray, bool]:

    path, size, config, tight = task
    config = CellPreprocess.from_dict(config)
    image = load_rgb(path)
    return prepare_cell(tight_frame(image, config) if tight else image, size, config)


def prepare_images(paths: list[str], size: int, config: CellPreprocess, workers: int = 2,
                   progress: bool = True, tight=None) -> tuple[np.ndarray, np.ndarray]:
    """``prepare_cell`` on every file, in ``workers`` processes: uint8 images (N, size, size, 3)
    and a bool per image, True where a nucleus was found. ``tight``: a bool per file, True
    where the image is first cut tight to its cell (``leuko.cells.preprocess.tight_frame``)."""
    tight = [False] * len(paths) if tight is None else [bool(t) for t in tight]
    tasks = [(str(p), int(size), config.to_dict(), t) for p, t in zip(paths, tight, strict=True)]
    images = np.empty((len(tasks), size, size, 3), dtype=np.uint8)
    found = np.empty(len(tasks), dtype=bool)
    bar = progress_bar(total=len(tasks), enabled=progress, desc=f"cells {size}px")
    if workers <= 1:
        results = map(_prepare_one, tasks)
    else:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(_prepare_one, tasks, chunksize=32)
    for i, (image, ok) in enumerate(results):
        images[i], found[i] = image, ok
        bar.update()
    bar.close()
    if workers > 1:
        pool.shutdown()
    return images, found


def cache_path(paths: Paths = DEFAULT_PATHS) -> Path:
    return paths.root / "build" / "cells" / f"{CACHE_NAME}.npz"


def build_cell_cache(rows: pd.DataFrame, data: CellData, config: CellPreprocess,
                     paths: Paths = DEFAULT_PATHS, workers: int = 2, progress: bool = True,
                     seed: int = 0) -> Path:
    """Prepare every row's cell once; write the images, the found flags and the rows' table
    (``build/cells/cells.npz`` and its manifest ``build/manifests/cells.csv``). A seeded
    ``data.tight_share`` of the training rows is cut tight to its cell first (column
    ``tight``), so that the models also learn cells framed as another lab may frame them."""

    rng = np.random.default_rng([seed, 7])
    tight = (rows["split"] == "train").to_numpy() & (rng.random(len(rows)) < data.tight_share)
    images, found = prepare_images(list(rows["path"]), data.image_size, config, workers,
                                   progress, tight)
    rows = rows.assign(cell_found=found, tight=tight, index=np.arange(len(rows)))
    write_manifest(rows, paths.manifest(CACHE_NAME))  # sorted by path; index = image row
    return save_features(cache_path(paths), images=images, found=found,
                         paths=rows["path"].to_numpy(dtype=str))


@dataclass
class CellCache:
    """The prepared cells and their rows (``index`` = row of ``images``)."""

    rows: pd.DataFrame
    images: np.ndarray

    def part(self, sources, split: str) -> tuple[pd.DataFrame, np.ndarray]:
        """Rows and images of ``split`` from ``sources``."""
        sources = (sources,) if isinstance(sources, str) else tuple(sources)
        rows = self.rows[self.rows["source"].isin(sources) & (self.rows["split"] == split)]
        rows = rows.sort_values(["source", "path"], kind="stable").reset_index(drop=True)
        return rows, self.images[rows["index"].to_numpy(dtype=int)]


def load_cell_cache(paths: Paths = DEFAULT_PATHS) -> CellCache:
    """The cache written by :func:`build_cell_cache` (checked: rows and images agree)."""

    rows = read_manifest(paths.manifest(CACHE_NAME))
    arrays = load_features(cache_path(paths))
    if len(arrays["images"]) != len(rows):
        raise ValueError(f"{cache_path(paths)} holds {len(arrays['images'])} images but "
                         f"{paths.manifest(CACHE_NAME)} {len(rows)} rows: rerun the cells stage")
    for flag in ("cell_found", "tight"):
        rows[flag] = rows[flag].astype(str).str.lower() == "true"
    return CellCache(rows, arrays["images"])


def classes_of(labels) -> list[str]:
    """The classes present in ``labels``, in the study's order (the five, then the others)."""
    present = set(labels)
    unknown = present - set(CLASS_ORDER)
    if unknown:
        raise ValueError(f"unknown class name(s) {sorted(unknown)}; expected {CLASS_ORDER}")
    return [c for c in CLASS_ORDER if c in present]


@dataclass(frozen=True)
class Abstain:
    """The abstention rule (``params/cells.yaml: cells.abstain``)."""

    val_coverage: float  # share of validation cells classified; the rest uncertain

    def to_dict(self) -> dict:
        return asdict(self)


# --- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellTraining:
    """How each model of this study is trained (``params/cells.yaml: cells.train``): an
    ImageNet MobileNetV2 fine-tuned end to end on the prepared cells; ``bn_inference`` keeps
    its BatchNorm layers in inference mode (``networks.freeze_batch_norm``)."""

    network: str
    epochs: int
    batch_size: int
    learning_rate: float
    head_units: tuple[int, ...]
    head_dropout: float
    augment: bool  # flips and 90-degree turns
    stain_jitter: float  # leuko.core.stain.stain_jitter strength on top of normalisation
    # sharpness jitter: each training cell blurred by a random share of a Gaussian of this
    # sigma (px at image_size; 0 = off): PBC's cells are twice as sharp as blood-cell-images'
    # at the same size (sharpness_jitter)
    blur_sigma: float
    # the jitter's floor: no cell is blurred below this much detail (cells.detail), and a cell
    # with no more than that is left as it is; 0 = any share of the blur
    detail_floor: float
    # with a ceiling (> floor), sharpness randomisation instead: every cell blurred or
    # sharpened (unsharp mask, the same Gaussian) to a detail drawn from [floor, ceiling]; 0 = off
    detail_ceiling: float
    bn_inference: bool  # the base's BatchNorm in inference mode while it is fine-tuned
    views: int  # probabilities averaged over this many symmetries of a cell (cells.VIEW_COUNTS)
    eager: bool  # no graph tracing (leuko.core.accel.eager_execution): the smoke preset
    # lightness-contrast jitter: each training cell's lightness contrast multiplied by a factor
    # drawn from [1 - low_contrast, 1] (contrast_jitter); 0 = off
    low_contrast: float = 0.0
    # what colour the network sees (leuko.models.stain_input): rgb, or hed (the haematoxylin,
    # eosin and DAB densities of colour deconvolution, a layer inside the model)
    input_colour: str = "rgb"

    def __post_init__(self):
        check_input_colour(self.input_colour)
        if self.blur_sigma < 0:
            raise ValueError(f"cells.train.blur_sigma must be >= 0, got {self.blur_sigma!r}")
        if self.detail_floor < 0:
            raise ValueError(f"cells.train.detail_floor must be >= 0 (0 = off), got "
                             f"{self.detail_floor!r}")
        if (self.detail_floor or self.detail_ceiling) and not self.blur_sigma:
            raise ValueError("cells.train.detail_floor / detail_ceiling shape the sharpness "
                             "jitter: set blur_sigma > 0 too (0 = no jitter at all)")
        if self.detail_ceiling and not self.detail_ceiling > self.detail_floor:
            raise ValueError(f"cells.train.detail_ceiling must be above detail_floor "
                             f"({self.detail_floor!r}) or 0 (off), got {self.detail_ceiling!r}")
        if not 0 <= self.low_contrast < 1:
            raise ValueError(f"cells.train.low_contrast must be in [0, 1) (0 = off), got "
                             f"{self.low_contrast!r}")
        if self.views not in VIEW_COUNTS:
            raise ValueError(f"cells.train.views must be one of {VIEW_COUNTS}, got "
                             f"{self.views!r}")


def gaussian_blur(images, sigma: float):
    """A batch (N, H, W, C) float blurred by a Gaussian of ``sigma`` px (separable, radius
    3 sigma, borders reflected): a TensorFlow op, for a ``tf.data`` map."""

    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = tf.constant(taps / taps.sum(), tf.float32)
    channels = images.shape[-1]
    x = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = tf.tile(tf.reshape(taps, [-1, 1, 1, 1]), [1, 1, channels, 1])
    cols = tf.tile(tf.reshape(taps, [1, -1, 1, 1]), [1, 1, channels, 1])
    x = tf.nn.depthwise_conv2d(x, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(x, cols, [1, 1, 1, 1], "VALID")


def batch_detail(images):
    """:func:`leuko.cells.preprocess.detail` of each image of a float batch (N, H, W, 3): the standard
    deviation of the 4-neighbour Laplacian of its grey level over the interior pixels."""

    grey = tf.reduce_mean(tf.cast(images, tf.float32), axis=-1)
    lap = (4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1]
           - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:])
    return tf.math.reduce_std(lap, axis=[1, 2])


def sharpness_jitter(images, seed, sigma: float, floor: float = 0.0, ceiling: float = 0.0):
    """Each image of a batch moved a random share ``t ~ U[0, t_max]`` of the way from itself to
    its Gaussian blur of ``sigma`` px (seeded by ``seed``, a shape-[2] int tensor, as the other
    training jitters): cells as sharp as PBC's and as soft as blood-cell-images' in one
    training set. ``t_max`` is 1 without a ``floor``; with one, it is the share that brings the
    image's :func:`batch_detail` down to ``floor`` if the detail moved linearly with the share
    (it moves about so: on the study's cells, the full share lands within ~25 % of the floor),
    so cells end about no softer than the floor and one no sharper is left as it is.

    With a ``ceiling`` too, sharpness randomisation: each image gets a detail drawn from
    ``U[floor, ceiling]`` whatever its own, reached by the share of the blur that would give it
    linearly, negative (an unsharp mask, ``x + s (x - blur)``) when the target is above the
    image's own detail; clipped to 0..255. Float32 in the images' range."""

    images = tf.cast(images, tf.float32)
    blurred = gaussian_blur(images, sigma)
    draw = tf.random.stateless_uniform([tf.shape(images)[0]], seed)
    if floor or ceiling:
        sharp, soft = batch_detail(images), batch_detail(blurred)

        def share_reaching(target):  # the share of the blur that gives ``target`` linearly
            return tf.math.divide_no_nan(sharp - target, sharp - soft)

    if ceiling:  # negative shares sharpen
        share = tf.clip_by_value(share_reaching(floor + draw * (ceiling - floor)), -4.0, 1.0)
    elif floor:
        share = draw * tf.clip_by_value(share_reaching(floor), 0.0, 1.0)
    else:
        share = draw
    out = images + tf.reshape(share, [-1, 1, 1, 1]) * (blurred - images)
    return tf.clip_by_value(out, 0.0, 255.0) if ceiling else out


def jittered_batches(batches, steps_per_epoch: int, seed: int, jitter, salt: int):
    """The batch factory ``start_epoch -> dataset`` of ``study.epochs_of`` with ``jitter(x,
    seed)`` on each batch's images, seeded by (seed + salt, step), so a resumed run draws what
    an uninterrupted one would."""

    def jittered(start: int):
        def apply(step, batch):
            x, y = batch
            return jitter(x, tf.stack([tf.constant(seed + salt, tf.int64), step])), y
        return batches(start).enumerate(start * steps_per_epoch).map(
            apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return jittered


def sharpness_jittered(batches, steps_per_epoch: int, seed: int, sigma: float,
                       floor: float = 0.0, ceiling: float = 0.0):
    """:func:`jittered_batches` with :func:`sharpness_jitter`."""
    return jittered_batches(batches, steps_per_epoch, seed,
                            lambda x, s: sharpness_jitter(x, s, sigma, floor, ceiling), 104729)


def contrast_jitter(images, seed, low: float):
    """Each image of a batch (float, 0..255) with its lightness contrast about its own mean
    multiplied by a factor ``f ~ U[1 - low, 1]`` (seeded by ``seed``, a shape-[2] int tensor):
    every channel moved by ``(f - 1) (Y - mean Y)``, ``Y`` the pixel's grey level, so the
    lightness spread shrinks and the chroma (each channel minus the grey) is kept. What
    blood-cell-images' black corners did to its cells by accident (*Black margins* in
    docs/cell-classifier-choices.md: the Reinhard statistics, inflated by the black, shrank
    their lightness spread by a factor of about 0.65 to 1), as a training jitter. Clipped to
    0..255."""

    images = tf.cast(images, tf.float32)
    factor = 1.0 - low * tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed)
    grey = tf.reduce_mean(images, axis=-1, keepdims=True)
    mean = tf.reduce_mean(grey, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value(images + (factor - 1.0) * (grey - mean), 0.0, 255.0)


def train_cell_model(training: str, cache: CellCache, config: CellTraining, abstain: Abstain,
                     preprocess: CellPreprocess, seed: int, paths: Paths = DEFAULT_PATHS,
                     repeat_seed: int | None = None) -> tuple[dict, pd.DataFrame]:
    """Train one model on the training part of its sources, calibrate it on their validation
    part, choose its abstention threshold there; save the model and its training summary.
    ``seed`` seeds the weights, batch order, augmentation and dropout; ``repeat_seed`` (a
    repeat, id ``cells-<training>-seed<n>``) replaces it. Returns the summary and the
    per-epoch history."""

    the_id = cell_model_id(training, repeat_seed)
    seed = seed if repeat_seed is None else repeat_seed
    sources = TRAININGS[training]
    train_rows, x_train = cache.part(sources, "train")
    val_rows, x_val = cache.part(sources, "val")
    classes = classes_of(train_rows["label"])
    missing = set(val_rows["label"]) - set(classes)
    if missing:
        raise ValueError(f"{the_id}: validation classes {sorted(missing)} not in training")
    y_train = one_hot_labels(train_rows["label"].to_numpy(), classes)
    y_val = one_hot_labels(val_rows["label"].to_numpy(), classes)
    train.set_determinism(seed)
    start = time.perf_counter()
    size = int(x_train.shape[1])
    model = build_classifier(config.network, len(classes), size, pretrained=True,
                             head=HeadConfig(config.head_units, config.head_dropout),
                             base_bn_inference=config.bn_inference)
    model = with_input_colour(model, config.input_colour)
    fit = train.FitConfig(epochs=config.epochs, batch_size=config.batch_size,
                          learning_rate=config.learning_rate, seed=seed)
    train.compile_model(model, fit)
    steps = steps_per_epoch(len(x_train), config.batch_size)
    batches = epochs_of(x_train, y_train, config.batch_size, config.epochs, config.augment, seed,
                        config.stain_jitter)
    if config.blur_sigma:
        batches = sharpness_jittered(batches, steps, seed, config.blur_sigma,
                                     config.detail_floor, config.detail_ceiling)
    if config.low_contrast:
        batches = jittered_batches(batches, steps, seed,
                                   lambda x, s: contrast_jitter(x, s, config.low_contrast), 7919)
    with eager_execution(config.eager):
        history = train.fit(model, batches, steps,
                            make_dataset(x_val, y_val, config.batch_size), fit,
                            paths.live(the_id), paths.work(the_id), label="end-to-end")
        seconds = time.perf_counter() - start
        # calibrated and thresholded as the model will predict: over config.views views
        val_probs = mean_over_views(lambda x: predict(model, x), x_val, config.views)
    y_val_idx = y_val.argmax(axis=1)
    temperature = fit_temperature(val_probs, y_val_idx)
    calibrated = temperature_scale(val_probs, temperature)
    threshold = abstention_threshold(calibrated.max(axis=1), abstain.val_coverage)
    save_model(model, paths.model(the_id))
    summary = train.RunResult(model, history, seconds, extra={
        "model": the_id, "dataset": CACHE_NAME, "training": training, "sources": list(sources),
        "network": config.network, "regime": "imagenet-finetune", "classes": classes,
        "image_size": size,
        "n_train": {s: int((train_rows["source"] == s).sum()) for s in sources},
        "n_val": {s: int((val_rows["source"] == s).sum()) for s in sources},
        "cells_not_found_train": int((~train_rows["cell_found"]).sum()),
        "tight_framed_train": int(train_rows["tight"].sum()),
        "cell_preprocess": preprocess.to_dict(), "config": {**asdict(config),
                                                            "head_units": list(config.head_units)},
        "views": config.views, "eager": config.eager, "temperature": temperature,
        "abstain": {**abstain.to_dict(), "threshold": threshold},
        "val_ece": {"raw": expected_calibration_error(val_probs.max(axis=1),
                                                      val_probs.argmax(axis=1) == y_val_idx),
                    "calibrated": expected_calibration_error(
                        calibrated.max(axis=1), calibrated.argmax(axis=1) == y_val_idx)},
        "params": count_params(model), "seed": seed, "training_seed": seed}).summary()
    write_json(paths.train_summary(the_id), summary)
    return summary, history


# --- parameters ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class CellStudy:
    """Every setting of this study, typed, from the ``cells`` parameters."""

    pbc_path: str
    data: CellData
    preprocess: CellPreprocess
    train: CellTraining
    abstain: Abstain
    shift_per_class: int
    trainings: tuple[str, ...]
    repeat_seeds: tuple[int, ...] = ()  # each training again with these training seeds
    ensembles: tuple[str, ...] = ()  # the trainings whose runs are averaged (leuko.cells.ensemble)

    def __post_init__(self):
        for name in (*self.trainings, *self.ensembles):
            cell_model_id(name)
        if self.ensembles and not self.repeat_seeds:
            raise ValueError("cells.ensembles needs repeats to average: cells.repeats.seeds "
                             "is empty")
        if not set(self.ensembles) <= set(self.trainings):
            raise ValueError(f"cells.ensembles {list(self.ensembles)} must be among "
                             f"cells.trainings {list(self.trainings)}")

    def run_ids(self, training: str) -> list[str]:
        """A training's runs: its main run (``cells-<training>``), then its repeats."""
        return [cell_model_id(training, seed) for seed in (None, *self.repeat_seeds)]

    def model_ids(self) -> list[str]:
        """Every model of this study: each training's main run and its repeats, then the
        ensembles (``cells-<training>-ensemble``)."""
        runs = [the_id for training in self.trainings for the_id in self.run_ids(training)]
        return runs + [ensemble_model_id(training) for training in self.ensembles]

    @classmethod
    def from_params(cls, cells: dict | None = None) -> CellStudy:
        """From the ``cells`` block (papermill ``-f params/cells.yaml``), or, when None, read
        from params/cells.yaml."""
        p = read_block("cells", cells)
        data = {**p["data"], "pbc_split": tuple(p["data"]["pbc_split"])}
        train = {**p["train"], "head_units": tuple(p["train"]["head_units"])}
        return cls(pbc_path=str(p["pbc_path"]), data=typed(CellData, data, "cells.data"),
                   preprocess=CellPreprocess.from_dict(p["preprocess"]),
                   train=typed(CellTraining, train, "cells.train"),
                   abstain=typed(Abstain, p["abstain"], "cells.abstain"),
                   shift_per_class=int(p["evaluate"]["shift_per_class"]),
                   trainings=tuple(p["trainings"]),
                   repeat_seeds=tuple(int(s) for s in p["repeats"]["seeds"]),
                   ensembles=tuple(p["ensembles"]))


# --- the stages ---------------------------------------------------------------------------------


def cells_stage(study: CellStudy, seed: int, bad_images: str = "fail", workers: int = 2,
                paths: Paths = DEFAULT_PATHS) -> pd.DataFrame:
    """Stage ``cells``: the PBC manifest and its bad-image list, then every used cell prepared
    once into the cache. Returns the cache's rows."""

    pbc, bad = prepare_pbc(study.pbc_path, seed, study.data.pbc_split, bad_images)
    write_manifest(pbc, paths.manifest("pbc"))
    write_csv_atomic(paths.bad_images("pbc"), bad)
    bci = read_manifest(paths.manifest("blood-cell-images"))
    rows = cell_rows(bci, pbc, study.data, seed)
    build_cell_cache(rows, study.data, study.preprocess, paths, workers, seed=seed)
    return load_cell_cache(paths).rows


def cell_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Images per source, split and class, and how many had no nucleus found (whole image)."""
    table = rows.groupby(["source", "split", "label"]).size().unstack(fill_value=0)
    table["not found"] = rows.groupby(["source", "split"])["cell_found"].apply(
        lambda found: int((~found).sum()))
    return table


def preparation_gallery(rows: pd.DataFrame, study: CellStudy, seed: int, size: int = 96):
    """One image per class and source, as taken and as prepared (``figures.cell_gallery``)."""

    picked = (rows[rows["split"] == "train"].groupby(["source", "label"], sort=True)
              .sample(1, random_state=seed).sort_values(["source", "label"]))
    raw, prepared, titles = [], [], []
    for record in picked.itertuples(index=False):
        image = load_rgb(record.path)
        raw.append(image)
        prepared.append(prepare_cell(image, size, study.preprocess)[0])
        titles.append(f"{'PBC' if record.source == 'pbc' else 'BCI'} {record.label.lower()}")
    return cell_gallery(raw, prepared, titles, title="As taken (top) and prepared (bottom); "
                                                     "BCI = blood-cell-images")
