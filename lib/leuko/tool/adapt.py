"""``leuko adapt``: make the exported classifier a lab's own, from a few cells it labelled.

A classifier trained on two sources loses accuracy on a third lab's cells (stain, camera,
framing). Labelling a few dozen cells per class is often enough to win most of it back by
retraining the model's **last layer** only, the softmax Dense on the penultimate features,
and keeping everything before it as trained:

1. Labels (:func:`lab_cells`): each image's folder name, or a ``--labels`` CSV (``path``,
   ``label``), read as ``leuko score`` reads them (:func:`leuko.core.score.labels_for`, the same
   aliases, :func:`leuko.core.score.normalise_label`). A label that names no class of the model
   stops with the labels named; a file that cannot be read is reported as ``leuko classify``
   reports it, and the others are used.
2. Every lab cell is prepared exactly as ``leuko classify`` prepares it
   (:meth:`leuko.tool.classify.Classifier.prepare_flagged`: cell found, framed, stain-normalised),
   and the penultimate features of each of the model's ``views`` (the 8 symmetries the model
   averages over) are computed **once** (:func:`split_head`, :func:`features`).
3. The last layer is refitted (:func:`fit_head`: multinomial logistic regression by L-BFGS,
   started from the base weights) on the lab's cells, class-balanced, mixed with a
   class-balanced sample of the training sources' cells from the study's cell cache
   (``build/cells/``, :func:`source_sample`) so that nothing is forgotten; without the cache,
   on the lab's cells alone. Either way an L2 pull towards the base weights keeps the layer
   near where it was, and only the columns of the classes the lab labelled change: a class
   the lab has no cells of keeps the base model's weights.
4. What it is worth is measured by stratified k-fold cross-validation over the lab's cells
   (k = min(5, the smallest class count), at least 2; the layer refitted per fold): accuracy
   and macro F1 of the base model and of the adapted one on the held-out folds, with 95 %
   bootstrap intervals (:func:`leuko.core.score.score_labels`, as ``leuko score``).
5. The temperature and the abstention threshold are refitted on the adapted layer's
   out-of-fold probabilities of the lab's cells (:mod:`leuko.core.calibration`), so they are
   judged on cells the layer did not see; the layer itself is then fitted on all the lab's
   cells and the model written with its metadata JSON beside it, which ``leuko classify
   --model`` reads.

**Fine-tuning instead** (``--finetune N``, :func:`finetune_model`): the top ``N`` MobileNetV2
blocks of the network and its head are trained on the lab's cells (repeated to weigh as much as
the source cells they are mixed with) with the training's flips, turns and stain jitter; steps
4 and 5 are the same, each fold fine-tuning a fresh copy of the model. Where the model's
features do not separate the lab's cells, no last layer can (the PBC model on
blood-cell-images' soft cells: ``benchmarks/cells/adapt_finetune.py``); it costs a fine-tuning
per fold, and the features move, so the base model's distance to its training cells no longer
applies and none is written for the adapted model.

Supported models: those whose output is a softmax Dense, possibly inside nested functional
models (the study's ``Input -> Preprocess -> base -> head``). An averaged ensemble
(``leuko.cells.ensemble``) is refused with a message: adapt one of its members instead.
"""

from __future__ import annotations

import copy
import hashlib
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import softmax
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from leuko.cells.multisource import CACHE_NAME, cache_path, load_cell_cache
from leuko.cells.novelty import Novelty, novelty_path
from leuko.cells.outputs import HeadError, features, split_head, view_probabilities
from leuko.cells.preprocess import average_views
from leuko.core.atomic import write_csv_atomic, write_json_atomic
from leuko.core.calibration import abstention_threshold, fit_temperature, temperature_scale
from leuko.core.images import BadImage, bad_images_frame, file_sha256, load_rgb
from leuko.core.inputs import make_epochs_dataset, steps_per_epoch
from leuko.core.metrics import format_interval
from leuko.core.progress import progress_bar
from leuko.core.score import labels_for, normalise_label, score_labels
from leuko.models import train
from leuko.models.networks import set_trainable_top
from leuko.thesis.study import Paths, load_model, save_model
from leuko.tool.classify import (
    Classifier,
    _decode_all,
    iter_image_files,
    load_classifier,
    metadata_path,
)
from leuko.tool.locate import package_checkout

#: Training-split cells per class taken from the study's cell cache to mix in.
SOURCE_PER_CLASS = 50
#: Weight of the L2 pull of the last layer towards the base weights (per parameter).
L2_PULL = 1e-3
#: The abstention rule's coverage when the base model's metadata has none.
DEFAULT_COVERAGE = 0.95
MAX_ITER = 500
#: Weight of keeping the classes the lab has no cells of as probable as the base made them.
KEEP_ABSENT = 1.0
#: ``--finetune``: epochs, batch and learning rate (the study's cell training rate / 3) of
#: fine-tuning the top blocks and the head, with the training's stain jitter.
FINETUNE_EPOCHS = 5
FINETUNE_BATCH_SIZE = 32
FINETUNE_LEARNING_RATE = 1e-4
FINETUNE_STAIN_JITTER = 1.0


class AdaptError(ValueError):
    """Labels or model unfit for adaptation; the message says why."""


# --------------------------------------------------------------------------------------------
# the lab's cells and their labels
# --------------------------------------------------------------------------------------------
@dataclass
class LabCells:
    """The lab's labelled image files (``paths`` with their class ``labels``), the files
    without a label (``unlabelled``, with a labels CSV) and the non-image files skipped."""

    paths: list[str]
    labels: list[str]
    unlabelled: list[str] = field(default_factory=list)
    ignored_files: int = 0


def lab_cells(inputs: Sequence[str | Path], classes: Sequence[str],
              labels_csv: str | Path | None = None) -> LabCells:
    """The image files under ``inputs`` (as ``leuko classify`` walks them) with the class each
    is labelled with: from ``labels_csv`` or else the image's folder name, as ``leuko score``
    reads labels. AdaptError naming every label that names none of ``classes``, or when no
    file has a label."""

    skipped: Counter = Counter()
    files = [str(p) for p in iter_image_files(inputs, skipped)]
    if not files:
        raise AdaptError("no image files found in: " + ", ".join(map(str, inputs)))
    text = labels_for(pd.DataFrame({"path": files}), Path(labels_csv) if labels_csv else None)
    labelled = text != ""
    names = text[labelled].map(lambda t: normalise_label(t, list(classes)))
    unknown = text[labelled][names.isna()].value_counts()
    if len(unknown):
        raise AdaptError(
            "labels that name none of the model's classes " + str(list(classes)) + ": "
            + ", ".join(f"{k!r} ({v} cells)" for k, v in unknown.items())
            + (" (labels are the folder names: put each class's cells in a folder named "
               "after it, or pass --labels CSV)" if labels_csv is None else ""))
    if names.empty:
        raise AdaptError(f"none of the {len(files)} images has a label in {labels_csv}")
    return LabCells(paths=[files[i] for i in names.index], labels=list(names),
                    unlabelled=[files[i] for i in np.flatnonzero(~labelled.to_numpy())],
                    ignored_files=skipped["not an image"])


def lab_set_hash(paths: Sequence[str], labels: Sequence[str]) -> str:
    """sha256 over the sorted ``<file sha256> <label>`` lines: the same cells with the same
    labels give the same hash, whatever their names or order."""

    lines = sorted(f"{file_sha256(p)} {label}" for p, label in zip(paths, labels, strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def prepare_lab(paths: Sequence[str], classifier: Classifier, workers: int = 2,
                progress: bool = True) -> tuple[np.ndarray, list[int], list[BadImage]]:
    """The lab's images prepared as ``leuko classify`` prepares them, the indices of ``paths``
    they belong to, and the files that could not be read (with their reasons)."""

    images, kept, failures = [], [], []
    bar = progress_bar(total=len(paths), enabled=progress, desc="read lab cells")
    try:
        for i, (_, item) in enumerate(_decode_all(
                [Path(p) for p in paths], lambda p: classifier.prepare(load_rgb(p)), 32,
                workers)):
            bar.update(1)
            if isinstance(item, BadImage):
                failures.append(item)
            else:
                images.append(item)
                kept.append(i)
    finally:
        bar.close()
    h, w = classifier.image_size
    stack = np.stack(images) if images else np.zeros((0, h, w, 3), np.uint8)
    return stack, kept, failures


# --------------------------------------------------------------------------------------------
# the last layer
# --------------------------------------------------------------------------------------------
def softmax_probs(feats: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Class probabilities from features ``(views, N, D)`` (or ``(N, D)``), averaged over the
    views (:func:`leuko.cells.preprocess.average_views`), in float64."""
    feats = np.asarray(feats, np.float64)
    if feats.ndim == 2:
        feats = feats[None]
    return average_views(softmax(feats @ kernel + bias, axis=-1))


def fit_head(x: np.ndarray, y: np.ndarray, weight: np.ndarray, kernel0: np.ndarray,
             bias0: np.ndarray, free: Sequence[int], l2: float = L2_PULL,
             keep_absent: float = KEEP_ABSENT, max_iter: int = MAX_ITER
             ) -> tuple[np.ndarray, np.ndarray]:
    """The softmax layer refitted: minimise ``sum_i weight_i * CE(x_i, y_i) + l2/2 *
    ||theta - theta0||^2`` by L-BFGS from the base weights ``(kernel0, bias0)``, changing only
    the columns ``free`` (the other classes keep their base weights). When some classes are
    not free, ``keep_absent * sum_i weight_i * (LSE_i - LSE0_i)^2`` is added, LSE the
    log-sum-exp of the free classes' logits (LSE0 the base's): it keeps each cell's
    probability of the other classes near the base model's, so that fitting the free classes
    on cells of theirs alone does not teach them to claim every cell."""

    x = np.asarray(x, np.float64)
    y = np.asarray(y, int)
    weight = np.asarray(weight, np.float64)
    free = np.asarray(sorted(set(int(c) for c in free)), int)
    kernel0 = np.asarray(kernel0, np.float64)
    bias0 = np.asarray(bias0, np.float64)
    if free.size == 0 or len(x) == 0:
        return kernel0.copy(), bias0.copy()
    d = x.shape[1]
    onehot = np.zeros((len(y), kernel0.shape[1]))
    onehot[np.arange(len(y)), y] = 1.0
    theta0 = np.concatenate([kernel0[:, free], bias0[None, free]]).ravel()
    anchor = keep_absent if free.size < kernel0.shape[1] else 0.0

    def lse(z):
        top = z.max(axis=1, keepdims=True)
        return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]

    lse0 = lse(x @ kernel0[:, free] + bias0[free])

    def unpack(theta):
        kernel, bias = kernel0.copy(), bias0.copy()
        block = theta.reshape(d + 1, free.size)
        kernel[:, free], bias[free] = block[:d], block[d]
        return kernel, bias

    def loss(theta):
        kernel, bias = unpack(theta)
        raw = x @ kernel + bias
        logits = raw - raw.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        value = -(weight * (onehot * log_p).sum(axis=1)).sum()
        delta = weight[:, None] * (np.exp(log_p) - onehot)
        if anchor:
            z = raw[:, free]
            gap = lse(z) - lse0
            q = np.exp(z - lse(z)[:, None])
            value += anchor * (weight * gap ** 2).sum()
            delta = delta.copy()
            delta[:, free] += (2 * anchor * weight * gap)[:, None] * q
        grad = np.concatenate([x.T @ delta[:, free], delta[:, free].sum(axis=0)[None]])
        diff = theta - theta0
        return value + 0.5 * l2 * diff @ diff, grad.ravel() + l2 * diff

    # small products: one BLAS thread is ~50x faster than two on a busy 2-core machine
    with threadpool_limits(1, user_api="blas"):
        result = minimize(loss, theta0, jac=True, method="L-BFGS-B",
                          options={"maxiter": int(max_iter)})
    return unpack(result.x)


# --------------------------------------------------------------------------------------------
# the training sources' cells
# --------------------------------------------------------------------------------------------
@dataclass
class SourceCells:
    """Training-split cells of the model's sources from the study's cell cache (or none, with
    the reason), prepared as training prepared them."""

    images: np.ndarray | None
    labels: np.ndarray | None  # class indices of the model
    used: bool
    note: str
    per_class: dict = field(default_factory=dict)


def source_sample(classifier: Classifier, roots: Sequence[str | Path], per_class: int,
                  seed: int) -> SourceCells:
    """A class-balanced, seeded sample of ``per_class`` training-split cells per class of the
    model's training sources (``metadata['sources']``, else all), from the first of ``roots``
    that holds the study's cell cache (``build/cells/cells.npz``, built by the ``cells``
    stage). Not used, with the reason, when there is none or its cells are not the model's
    input size."""

    if per_class < 1:
        return SourceCells(None, None, False, "source cells not asked for (--source-per-class 0)")
    looked, unique = [], []
    for root in roots:
        if Path(root).resolve() not in [Path(r).resolve() for r in unique]:
            unique.append(root)
    for root in unique:
        paths = Paths(root=Path(root))
        if not (cache_path(paths).is_file() and paths.manifest(CACHE_NAME).is_file()):
            looked.append(str(cache_path(paths)))
            continue
        cache = load_cell_cache(paths)
        size = tuple(cache.images.shape[1:3])
        if size != tuple(classifier.image_size):
            return SourceCells(None, None, False,
                               f"{cache_path(paths)} holds {size[0]} px cells but the model "
                               f"takes {classifier.image_size[0]} px: not used")
        rows = cache.rows[cache.rows["split"] == "train"]
        sources = classifier.metadata.get("sources")
        if sources:
            rows = rows[rows["source"].isin(sources)]
        rows = rows.assign(cls=rows["label"].map(
            lambda t: normalise_label(t, classifier.classes))).dropna(subset=["cls"])
        rows = rows.sort_values("path", kind="stable")
        rng = np.random.default_rng([int(seed), 35])
        taken = []
        for name in classifier.classes:
            group = rows[rows["cls"] == name]
            if len(group):
                pick = rng.choice(len(group), size=min(per_class, len(group)), replace=False)
                taken.append(group.iloc[np.sort(pick)])
        if not taken:
            return SourceCells(None, None, False, f"{cache_path(paths)} holds no training "
                               "cell of the model's classes: not used")
        sample = pd.concat(taken)
        index = {c: i for i, c in enumerate(classifier.classes)}
        return SourceCells(cache.images[sample["index"].to_numpy(dtype=int)],
                           sample["cls"].map(index).to_numpy(dtype=int), True,
                           f"{len(sample)} training cells of {sorted(set(sample['source']))} "
                           f"from {cache_path(paths)}",
                           sample["cls"].value_counts().to_dict())
    return SourceCells(None, None, False,
                       "the study's cell cache is missing"
                       + (" (looked for " + ", ".join(looked) + ")" if looked else "")
                       + "; `dvc repro cells` builds it: adapted on the lab's cells only, "
                       "with an L2 pull towards the base weights")


# --------------------------------------------------------------------------------------------
# fitting, cross-validation, the whole run
# --------------------------------------------------------------------------------------------
def training_set(lab_x: np.ndarray, lab_y: np.ndarray, source_x, source_y,
                  source_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (every view of every lab cell; the source cells), labels and weights: the lab's
    classes weigh the same in total (sum 1); the source cells' classes likewise (sum
    ``source_weight``)."""
    views = lab_x.shape[0]
    x = lab_x.reshape(-1, lab_x.shape[-1])
    y = np.tile(lab_y, views)

    def balanced(labels):
        counts = Counter(labels.tolist())
        return np.array([1.0 / (len(counts) * counts[c]) for c in labels.tolist()])

    w = balanced(y)
    if source_x is not None and len(source_x):
        x = np.concatenate([x, source_x])
        y = np.concatenate([y, source_y])
        w = np.concatenate([w, source_weight * balanced(source_y)])
    return x, y, w


def n_folds(labels: Sequence[int]) -> int:
    """k of the cross-validation: min(5, the smallest class count), at least 2."""
    return max(2, min(5, min(Counter(labels).values())))


def cross_validate(lab_x: np.ndarray, lab_y: np.ndarray, kernel0, bias0, source_x=None,
                   source_y=None, source_weight: float = 1.0, l2: float = L2_PULL,
                   seed: int = 0, progress: bool = True) -> tuple[np.ndarray, int]:
    """Out-of-fold probabilities of the adapted layer for every lab cell (stratified k-fold,
    the layer refitted per fold on the other folds' cells and the source cells), and k."""
    k = n_folds(lab_y.tolist())
    out = np.zeros((len(lab_y), kernel0.shape[1]))
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=int(seed))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = list(folds.split(np.zeros(len(lab_y)), lab_y))
    for fit_on, test in progress_bar(splits, enabled=progress, desc="cross-validate",
                                     unit="fold"):
        x, y, w = training_set(lab_x[:, fit_on], lab_y[fit_on], source_x, source_y,
                                source_weight)
        kernel, bias = fit_head(x, y, w, kernel0, bias0, np.unique(lab_y[fit_on]), l2)
        out[test] = softmax_probs(lab_x[:, test], kernel, bias)
    return out, k


def backbone(model):
    """The network under a classifier's head: of its nested models that hold no model
    themselves, the one with the most weights (the study's MobileNetV2)."""
    def leaves(outer):
        for layer in outer.layers:
            if hasattr(layer, "layers"):
                inner = list(leaves(layer))
                yield from inner if inner else [layer]
    found = list(leaves(model))
    if not found:
        raise AdaptError(f"{model.name} has no nested network whose top blocks --finetune "
                         "could train; adapt its last layer instead (no --finetune)")
    return max(found, key=lambda m: len(m.weights))


def finetune_model(model_path: str | Path, images: np.ndarray, labels: np.ndarray,
                   source: SourceCells, blocks: int, seed: int, progress: bool = True):
    """A fresh copy of the model at ``model_path`` with its top ``blocks`` network blocks
    (``networks.set_trainable_top``: the frozen layers' BatchNorm in inference mode) and its
    head trained for :data:`FINETUNE_EPOCHS` on ``images`` (class indices ``labels``),
    repeated to weigh as much as the source cells mixed in, with flips, turns and stain
    jitter (``leuko.core.inputs.make_epochs_dataset``). Seeded before the model is loaded (its
    layers' random state is drawn then): every call with the same seed gives the same model,
    the first of a process too."""
    train.set_determinism(int(seed))
    model = load_model(model_path)
    network = backbone(model)
    if not set_trainable_top(network, blocks):
        raise AdaptError(f"--finetune {blocks} trains no layer of {network.name} (a network "
                         "other than MobileNetV2 counts its layers in tenths): ask for more")
    repeat = max(1, round(len(source.labels) / len(labels))) if source.used else 1
    x = np.concatenate([np.repeat(images, repeat, axis=0)]
                       + ([source.images] if source.used else []))
    y = np.concatenate([np.repeat(labels, repeat)] + ([source.labels] if source.used else []))
    fit = train.FitConfig(epochs=FINETUNE_EPOCHS, batch_size=FINETUNE_BATCH_SIZE,
                          learning_rate=FINETUNE_LEARNING_RATE, seed=int(seed))
    train.compile_model(model, fit)
    n_classes = int(model.outputs[0].shape[-1])
    batches = make_epochs_dataset(x, np.eye(n_classes, dtype=np.float32)[y], fit.batch_size,
                                  fit.epochs, 0, True, int(seed), FINETUNE_STAIN_JITTER)
    bar = progress_bar(total=fit.epochs, enabled=progress, desc="fine-tune", unit="epoch")
    try:
        model.fit(batches, epochs=fit.epochs, verbose=0,
                  steps_per_epoch=steps_per_epoch(len(x), fit.batch_size),
                  callbacks=[keras.callbacks.LambdaCallback(
                      on_epoch_end=lambda epoch, logs: bar.update(1))])
    finally:
        bar.close()
    return model


def cross_validate_finetuned(model_path: str | Path, images: np.ndarray, lab_y: np.ndarray,
                             source: SourceCells, blocks: int, views: int, seed: int = 0,
                             progress: bool = True) -> tuple[np.ndarray, int]:
    """:func:`cross_validate` with :func:`finetune_model` per fold: out-of-fold probabilities
    (over ``views``) of a copy fine-tuned on the other folds' cells, and k."""
    k = n_folds(lab_y.tolist())
    out = None
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=int(seed))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = list(folds.split(np.zeros(len(lab_y)), lab_y))
    for fold, (fit_on, test) in enumerate(splits):
        if progress:
            print(f"cross-validate: fold {fold + 1}/{k}", flush=True)
        tuned = finetune_model(model_path, images[fit_on], lab_y[fit_on], source, blocks,
                               seed + fold, progress)
        probs = view_probabilities(tuned, images[test], views).astype(np.float64)
        out = np.zeros((len(lab_y), probs.shape[1])) if out is None else out
        out[test] = probs
        del tuned
        keras.backend.clear_session(free_memory=True)
    return out, k


def _scores(y: np.ndarray, probs: np.ndarray, classes: list[str], n_boot: int,
            seed: int) -> dict:
    """Accuracy and macro F1 (over the classes present) with 95 % bootstrap intervals, as
    ``leuko score`` computes them (:func:`leuko.core.score.score_labels`)."""
    intervals = score_labels(y, probs.argmax(axis=1), classes, n_boot=n_boot,
                             seed=seed)["intervals"]
    return {name: intervals[name] for name in ("accuracy", "macro_f1")}


@dataclass
class Adapted:
    """What :func:`adapt` did (:meth:`to_dict` is what ``--json`` prints)."""

    output: str
    metadata: dict
    failures: list[BadImage]
    unlabelled: list[str]
    ignored_files: int
    seconds: float
    failed_output: str | None = None

    @property
    def exit_code(self) -> int:
        return 2 if self.failures else 0

    def to_dict(self) -> dict:
        m = self.metadata
        return {"output": self.output, "metadata": str(metadata_path(self.output)),
                "adapted_from": m["adapted_from"], "lab_set": m["lab_set"],
                "cells_per_class": m["cells_per_class"], "scores": m["scores"],
                "temperature": m["temperature"], "abstain": m["abstain"],
                "method": m["adaptation"],
                "failed": [{"path": str(f.path), "reason": f.reason} for f in self.failures],
                "failed_output": self.failed_output, "unlabelled": self.unlabelled,
                "ignored_non_image_files": self.ignored_files,
                "seconds": round(self.seconds, 2), "exit_code": self.exit_code}


def adapt(inputs: Sequence[str | Path], model: str | Path, output: str | Path,
          labels_csv: str | Path | None = None, seed: int = 0,
          source_roots: Sequence[str | Path] | None = None,
          source_per_class: int = SOURCE_PER_CLASS, l2: float = L2_PULL,
          n_boot: int = 2000, workers: int = 2, progress: bool = True,
          finetune_blocks: int = 0) -> Adapted:
    """Adapt ``model``'s last layer (or with ``finetune_blocks`` its top blocks and head) to
    the labelled cells under ``inputs`` and write ``output`` (``.keras``) with its metadata
    JSON beside it (see the module doc). ``source_roots``: checkouts whose ``build/cells/``
    cache to mix in (default: the current folder, then the checkout leuko is installed from)."""

    start = time.perf_counter()
    output = Path(output)
    if output.suffix != ".keras":
        raise AdaptError(f"the output must be a .keras file, got {output}")
    if finetune_blocks < 0:
        raise AdaptError(f"--finetune takes a number of blocks >= 1 (0: the last layer "
                         f"only), got {finetune_blocks}")
    classifier = load_classifier(model)
    classes = classifier.classes
    try:
        head = split_head(classifier.model)
    except HeadError as error:
        raise AdaptError(f"`leuko adapt` retrains a single last layer: {error}") from error
    kernel0, bias0 = head.weights
    cells = lab_cells(inputs, classes, labels_csv)
    images, kept, failures = prepare_lab(cells.paths, classifier, workers, progress)
    if not kept:
        raise AdaptError(f"none of the {len(cells.paths)} labelled images could be read")
    paths = [cells.paths[i] for i in kept]
    names = [cells.labels[i] for i in kept]
    index = {c: i for i, c in enumerate(classes)}
    lab_y = np.array([index[n] for n in names], int)
    lab_x = features(head, images, classifier.views, progress=progress)

    # the split is faithful: the base layer on these features gives the model's output
    check = min(len(images), 8)
    direct = np.asarray(classifier.model(images[:check].astype(np.float32), training=False))
    if not np.allclose(direct, softmax_probs(lab_x[0, :check], kernel0, bias0), atol=1e-3):
        raise AdaptError("the model's output is not its last Dense layer's softmax of the "
                         "features before it; `leuko adapt` cannot retrain this model")

    if source_roots is None:
        source_roots = [Path.cwd()] + ([package_checkout()] if package_checkout() else [])
    source = source_sample(classifier, source_roots, source_per_class, seed)
    source_x = source_y = None
    if source.used:
        source_x = features(head, source.images, 1, progress=progress)[0]
        source_y = source.labels

    if finetune_blocks and not source.used:
        raise AdaptError(f"--finetune retrains the network's top and its head: it needs the "
                         f"study's training cells mixed in, so that no class is forgotten, and "
                         f"{source.note}")
    before = softmax_probs(lab_x, kernel0, bias0)
    if finetune_blocks:
        after, k = cross_validate_finetuned(model, images, lab_y, source, finetune_blocks,
                                            classifier.views, seed, progress)
    else:
        after, k = cross_validate(lab_x, lab_y, kernel0, bias0, source_x, source_y, 1.0, l2,
                                  seed, progress)
    scores = {"before": _scores(lab_y, before, classes, n_boot, seed),
              "after": _scores(lab_y, after, classes, n_boot, seed),
              "cross_validation": {"folds": k, "stratified": True, "seed": int(seed),
                                   "cells": int(len(lab_y)), "n_boot": int(n_boot)}}

    temperature = fit_temperature(after, lab_y)
    base_abstain = classifier.metadata.get("abstain") or {}
    coverage = float(base_abstain.get("val_coverage", DEFAULT_COVERAGE))
    threshold = abstention_threshold(temperature_scale(after, temperature).max(axis=1),
                                     coverage)

    present = sorted(set(lab_y.tolist()))
    counts = Counter(names)
    output.parent.mkdir(parents=True, exist_ok=True)
    lab_hash = lab_set_hash(paths, names)
    if finetune_blocks:
        save_model(finetune_model(model, images, lab_y, source, finetune_blocks, seed,
                                  progress), output)
        novelty_path(output).unlink(missing_ok=True)
        novelty = {"file": None, "note": "the model was fine-tuned (--finetune): its features "
                                         "moved, so the base model's distance to its training "
                                         "cells no longer applies and none was written"}
        method = {"method": f"top {finetune_blocks} network blocks and the head fine-tuned "
                            f"({FINETUNE_EPOCHS} epochs, Adam at {FINETUNE_LEARNING_RATE:g}, "
                            "flips, turns and stain jitter), the lab's cells repeated to weigh "
                            "as much as the source cells",
                  "blocks": int(finetune_blocks), "epochs": FINETUNE_EPOCHS,
                  "learning_rate": FINETUNE_LEARNING_RATE,
                  "stain_jitter": FINETUNE_STAIN_JITTER,
                  "classes_from_source_cells_only": [c for c in classes if c not in counts]}
    else:
        x, y, w = training_set(lab_x, lab_y, source_x, source_y, 1.0)
        kernel, bias = fit_head(x, y, w, kernel0, bias0, present, l2)
        dtype = head.dense.get_weights()[0].dtype
        head.dense.set_weights([kernel.astype(dtype), bias.astype(dtype)])
        save_model(classifier.model, output)
        novelty = adapted_novelty(model, output, lab_x.mean(axis=0), names,
                                  f"lab {lab_hash[:12]}")
        method = {"method": "last layer (softmax Dense) refitted: multinomial logistic "
                            "regression, L-BFGS from the base weights",
                  "l2_pull_to_base": l2,
                  "keep_absent_classes": KEEP_ABSENT if len(present) < len(classes) else 0.0}
    base_meta = classifier.metadata
    metadata = copy.deepcopy(base_meta)
    base_test = metadata.pop("test", None)
    metadata.update({
        "model_id": f"{base_meta.get('model_id', Path(model).stem)}-adapted",
        "model_file": str(output),
        "temperature": temperature,
        "abstain": {**base_abstain, "val_coverage": coverage, "threshold": threshold,
                    "calibrated_on": "the adapted layer's out-of-fold probabilities of the "
                                     "lab's cells"},
        "adapted_from": {"model": str(model), "model_id": base_meta.get("model_id"),
                         "sha256": file_sha256(model),
                         "temperature": base_meta.get("temperature", 1.0),
                         "abstain": base_abstain or None, "test": base_test},
        "lab_set": {"sha256": lab_hash, "cells": len(paths),
                    "inputs": [str(p) for p in inputs],
                    "labels": str(labels_csv) if labels_csv else "folder names"},
        "cells_per_class": {c: int(counts.get(c, 0)) for c in classes},
        "scores": scores,
        "adaptation": {
            **method,
            "layer": head.dense.name,
            "source_cells": source.used,
            "source_note": source.note,
            "source_cells_per_class": {str(k2): int(v) for k2, v in source.per_class.items()},
            "lab_weight": 1.0, "source_weight": 1.0 if source.used else 0.0,
            "class_balanced": True,
            "views": classifier.views,
            "classes_updated": [classes[i] for i in present],
            "classes_kept_from_base": [] if finetune_blocks else [c for c in classes
                                                                   if c not in counts],
            "seed": int(seed),
        },
        "novelty": novelty,
        "failed": [{"path": str(f.path), "reason": f.reason} for f in failures],
        "file_bytes": output.stat().st_size,
        "sha256": file_sha256(output),
    })
    write_json_atomic(metadata_path(output), metadata)
    failed_csv = output.with_name(f"{output.stem}-failed.csv")  # as `leuko classify` lists them
    if failures:
        write_csv_atomic(failed_csv, bad_images_frame(failures))
    else:
        failed_csv.unlink(missing_ok=True)
    return Adapted(str(output), metadata, failures, cells.unlabelled, cells.ignored_files,
                   time.perf_counter() - start, str(failed_csv) if failures else None)


def adapted_novelty(model: str | Path, output: Path, lab_features: np.ndarray,
                    labels: Sequence[str], lab: str) -> dict:
    """The adapted model's novelty file (``leuko.cells.novelty``): the base model's refitted with the
    lab's labelled cells (view-averaged penultimate features) as classes of their own, so that
    ``leuko classify`` with the adapted model does not call the lab's cells far, written
    beside ``output``. When the base model has none, none is written (a stale one beside
    ``output`` is removed) and the record says so."""
    base_file = novelty_path(model)
    target = novelty_path(output)
    if not base_file.is_file():
        target.unlink(missing_ok=True)
        return {"file": None,
                "note": f"no {base_file} beside the base model: the adapted model has no "
                        "distance to its training cells either"}
    refit = Novelty.load(base_file, model).with_lab_cells(lab_features, labels, lab,
                                                          file_sha256(output))
    refit.save(target)
    return {"file": str(target), "base_file": str(base_file), "lab_cells": len(labels),
            "thresholds": dict(zip(refit.groups, refit.thresholds.tolist(), strict=True)),
            "note": "the base model's distance refitted with the lab's labelled cells as "
                    "classes of their own"}


def format_adapted(result: Adapted) -> str:
    """The run as text: cells per class, before/after table, calibration, where written."""
    m = result.metadata
    scores = m["scores"]

    def cell(interval):
        return format_interval(interval["value"], interval["low"], interval["high"], width=5)

    a = m["adaptation"]
    per_class = ", ".join(f"{c} {n}" for c, n in m["cells_per_class"].items() if n)
    lines = [f"Adapted {m['adapted_from']['model']} to {m['lab_set']['cells']} labelled cells "
             f"({per_class}) in {result.seconds:.1f} s",
             f"Source cells: {a['source_note']}"]
    if a.get("classes_from_source_cells_only"):
        lines.append("No lab cells (learnt from the source cells only): "
                     + ", ".join(a["classes_from_source_cells_only"]))
    if a["classes_kept_from_base"]:
        lines.append("No lab cells (base model's weights kept): "
                     + ", ".join(a["classes_kept_from_base"]))
    cv = scores["cross_validation"]
    lines += ["", f"Expected on your cells ({cv['folds']}-fold cross-validation, 95 % "
                  "bootstrap intervals):",
              f"  {'':<10}{'accuracy':<26}{'macro F1':<26}"]
    for when in ("before", "after"):
        lines.append(f"  {when:<10}{cell(scores[when]['accuracy']):<26}"
                     f"{cell(scores[when]['macro_f1']):<26}")
    lines += ["", f"Calibration (on out-of-fold cells): temperature {m['temperature']:.3f}, "
                  f"abstention threshold {m['abstain']['threshold']:.3f} "
                  f"({100 * m['abstain']['val_coverage']:.0f} % coverage)",
              f"Wrote {result.output} and {metadata_path(result.output)}"]
    novelty = m["novelty"]
    lines.append(f"Distance to the training cells: {novelty['file']} (refitted with your "
                 "cells)" if novelty["file"] else f"Distance to the training cells: "
                 f"{novelty['note']}")
    return "\n".join(lines)

