"""The leukemia study's stages (ALL blast vs healthy cell): the C-NMC 2019 report's recipe.

prepare (``study.prepare``: 6:3:1 train/val/test, stratified, grouped by patient and content
hash) -> augment (centre crop, then a balanced, seeded, materialised train and validation set of
``N`` images per class; test never augmented) -> train (Solution A, the custom CNN
``leukemia_cnn``, or Solution B, ``efficientnet_b2`` from scratch; EarlyStopping,
ReduceLROnPlateau(0.5, min 1e-6), checkpoint on the best validation accuracy) -> evaluate
(``evaluation.evaluate_model`` on the test split: confusion matrix, per-class report, bootstrap
intervals; galleries of the false positives and false negatives).

Model ids, models, curves and metrics follow the 4-class study's scheme (``study.Paths``,
``study.model_id(dataset, network, "scratch")``), so the compare notebook and
``leuko.reporting.report.results_table`` read both studies alike; what only this study writes has its
own paths in ``LeukemiaPaths``. The crop is chosen per dataset layout and recorded once, by the
augment stage, so training and evaluation cannot disagree about it.

Optional k-fold cross-validation (``folds`` >= 2 at prepare): fold ``f`` is the test set, fold
``f + 1`` the validation set, the rest the training set; each fold is augmented and trained like
the main split, its test fold predicted, and the evaluation reports per-fold and pooled figures
(mean ± sd with ``metrics.kfold_summary``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from dvclive import Live
from dvclive.utils import standardize_metric_name

from leuko.core import accel
from leuko.core.atomic import write_csv_atomic
from leuko.core.crops import centre_crop, channel_mean
from leuko.core.datasets import LEUKEMIA_CLASSES, detect_layout
from leuko.core.figures import image_gallery
from leuko.core.images import load_rgb
from leuko.core.inputs import load_resized, make_dataset, make_epochs_dataset, steps_per_epoch
from leuko.core.params import read_block, typed
from leuko.leukemia.augment import AugmentConfig, apply_transform, enabled_transforms, materialise
from leuko.models import networks, train
from leuko.models.train import PHASE_COLUMNS
from leuko.thesis import study

REGIME = "scratch"  # both solutions start from random weights
POSITIVE = LEUKEMIA_CLASSES[0]  # "ALL": a false positive is a healthy cell called a blast
AUGMENTED_SPLITS = ("train", "val")
RECIPE = AugmentConfig()  # the report's augmentation (leuko.leukemia.augment's defaults)
GALLERY_KINDS = {"false-positives": "false positives (healthy cells called ALL)",
                 "false-negatives": "false negatives (ALL blasts called healthy)"}


@dataclass(frozen=True)
class LeukemiaPaths(study.Paths):
    """``study.Paths`` plus what only the leukemia study writes."""

    def augmented(self, dataset: str) -> Path:
        return self.root / "build" / "augmented" / dataset

    def augmented_manifest(self, dataset: str) -> Path:
        return self.augmented(dataset) / "manifest.csv"

    def augment_info(self, dataset: str) -> Path:
        return self.augmented(dataset) / "augment.json"

    def kfold_predictions(self, model_id: str) -> Path:
        return self.root / "build" / "kfold" / f"{model_id}.csv"

    def figures(self) -> Path:
        return self.root / "reports" / "figures" / "leukemia"

    def augment_figure(self, dataset: str) -> Path:
        return self.figures() / f"augment-{dataset}.png"

    def gallery(self, model_id: str, kind: str) -> Path:
        if kind not in GALLERY_KINDS:
            raise ValueError(f"gallery kind must be one of {sorted(GALLERY_KINDS)}, got {kind!r}")
        return self.figures() / f"{model_id}-{kind}.png"

    def kfold_figure(self, model_id: str) -> Path:
        return self.figures() / f"{model_id}-kfold.png"


def leukemia_model_id(dataset: str, network: str, repeat_seed: int | None = None) -> str:
    """``<dataset>-<network>-scratch`` (a repeat: ``-seed<n>`` after it): the 4-class study's
    id scheme."""
    return study.model_id(dataset, network, REGIME, repeat_seed)


@dataclass(frozen=True)
class Solution:
    """How one solution trains: ``params/leukemia.yaml``'s ``leukemia.solutions.<a|b>``."""

    network: str  # leukemia_cnn (A) | efficientnet_b2 (B)
    image_size: int
    epochs: int
    extra_epochs: int  # more epochs without early stopping (Solution B)
    batch_size: int
    learning_rate: float
    patience: int  # EarlyStopping on val_loss; 0 = off
    reduce_lr_patience: int  # ReduceLROnPlateau(0.5, min 1e-6); 0 = off
    head_units: int
    head_layers: int
    head_dropout: float
    head_l1: float
    head_l2: float
    bn_momentum: float  # BatchNormalization moving-average momentum (Keras default: 0.99)
    eager: bool  # train without graph tracing (leuko.core.accel.eager_execution): the smoke preset

    @classmethod
    def from_params(cls, solution: str, leukemia: dict | None = None) -> Solution:
        """Solution ``solution`` of the ``leukemia`` block (papermill ``-f
        params/leukemia.yaml``), or, when None, of that file."""

        solutions = read_block("leukemia", leukemia).get("solutions") or {}
        if solution not in solutions:
            raise ValueError(f"params/leukemia.yaml: no solution {solution!r} under "
                             f"leukemia.solutions (found {sorted(solutions)})")
        return typed(cls, solutions[solution],
                     f"params/leukemia.yaml: leukemia.solutions.{solution}")


def solution_of(network: str, leukemia: dict | None = None) -> str:
    """The key of the one solution that trains ``network`` (``leukemia.repeats`` names the
    repeated solutions by network, which their model ids carry)."""

    solutions = read_block("leukemia", leukemia).get("solutions") or {}
    keys = [k for k, v in solutions.items() if v.get("network") == network]
    if len(keys) != 1:
        raise ValueError(f"params/leukemia.yaml: {len(keys)} solutions train {network!r} "
                         f"(leukemia.solutions: {sorted(solutions)}); a repeat needs exactly one")
    return keys[0]


# --- crop -------------------------------------------------------------------------------------


def resolve_crop(data_path: str | Path, crops: dict[str, int | float]) -> tuple[str, int | float]:
    """The dataset layout at ``data_path`` and its centre crop (int pixels or float fraction
    per side) from ``crops`` (layout -> margin), e.g. ``{"all-idb2": 0.1, "cnmc": 100}``."""
    layout = detect_layout(data_path)
    if layout not in crops:
        raise ValueError(f"no crop given for layout {layout!r} of {data_path}; "
                         f"crops are given for {sorted(crops)}")
    margin = crops[layout]
    if isinstance(margin, float) and margin.is_integer() and margin >= 1:
        margin = int(margin)  # 100.0 from a YAML/papermill round trip means pixels
    return layout, margin


def cropped_loader(crop: int | float | None):
    """``path -> uint8 RGB image`` with the centre crop applied (no crop for 0 / None)."""

    def load(path):
        image = load_rgb(path)
        return centre_crop(image, crop) if crop else image

    return load


# --- splits of the main run and of the k folds --------------------------------------------------


def n_folds(manifest: pd.DataFrame) -> int:
    """Number of cross-validation folds the prepare stage assigned (0 when none)."""
    if "fold" not in manifest.columns:
        return 0
    folds = pd.to_numeric(manifest["fold"], errors="coerce")
    folds = folds[folds >= 0]
    return int(folds.max()) + 1 if len(folds) else 0


def fold_split(manifest: pd.DataFrame, fold: int) -> pd.DataFrame:
    """The labelled rows with ``split`` set for cross-validation fold ``fold``: that fold is the
    test set, the next one (cyclically) the validation set, the rest the training set."""
    k = n_folds(manifest)
    if not 0 <= fold < k:
        raise ValueError(f"fold must be in 0..{k - 1}, got {fold}")
    folds = pd.to_numeric(manifest["fold"], errors="coerce")
    rows = manifest[folds >= 0].copy()
    folds = folds[folds >= 0].astype(int)
    rows["split"] = np.where(folds == fold, "test",
                             np.where(folds == (fold + 1) % k, "val", "train"))
    return rows


def run_splits(manifest: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``"main"`` (the 6:3:1 split) and ``"fold<f>"`` for each cross-validation fold."""
    runs = {"main": manifest}
    for fold in range(n_folds(manifest)):
        runs[f"fold{fold}"] = fold_split(manifest, fold)
    return runs


def _split_seed(seed: int, run: str, split: str) -> int:
    """A seed per (run, split), so train and validation items never share transform draws."""
    words = [int(seed), AUGMENTED_SPLITS.index(split)] + [ord(c) for c in run]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


# --- augment ----------------------------------------------------------------------------------


def augment_stage(dataset: str, data_path: str | Path, train_per_class: int, val_per_class: int,
                  seed: int, crops: dict[str, int | float], size: int | None,
                  config: AugmentConfig = RECIPE, paths: LeukemiaPaths = LeukemiaPaths(),
                  progress: bool = True) -> pd.DataFrame:
    """Materialise the balanced, augmented train and validation sets of the dataset's split
    (and of each cross-validation fold); return their manifest.

    Each source is centre-cropped (``crops`` per layout), augmented by the recipe
    (``leuko.leukemia.augment``) and resized to ``size`` px (None: the cropped size). The test split is
    never augmented. Writes ``build/augmented/<dataset>/{main,fold<f>}/{train,val}/<label>/*.png``,
    ``manifest.csv`` (paths relative to the project root) and ``augment.json`` (the crop).
    """
    manifest = study.read_manifest(paths.manifest(dataset))
    layout, crop = resolve_crop(data_path, crops)
    counts = {"train": int(train_per_class), "val": int(val_per_class)}
    out_root = paths.augmented(dataset)
    shutil.rmtree(out_root, ignore_errors=True)  # no stale images of a larger earlier run
    load = cropped_loader(crop)
    frames = []
    for run, rows in run_splits(manifest).items():
        for split in AUGMENTED_SPLITS:
            sources = rows[rows["split"] == split]
            if sources.empty:
                raise ValueError(f"{dataset} ({run}) has no {split} images to augment")
            out = materialise(sources, out_root / run, counts[split],
                              _split_seed(seed, run, split), config, split,
                              size=int(size) if size else None, load=load, progress=progress)
            out["path"] = [(out_root / run / p).as_posix() for p in out["path"]]
            out.insert(3, "run", run)
            frames.append(out)
    augmented = pd.concat(frames, ignore_index=True)
    write_csv_atomic(paths.augmented_manifest(dataset), augmented)
    study.write_json(paths.augment_info(dataset), {
        "dataset": dataset, "layout": layout, "crop": crop, "size": size, "seed": seed,
        "train_per_class": counts["train"], "val_per_class": counts["val"],
        "transforms": list(enabled_transforms(config)), "config": {
            k: getattr(config, k) for k in config.__dataclass_fields__}})
    return augmented


def read_augment_info(dataset: str, paths: LeukemiaPaths = LeukemiaPaths()) -> dict:
    """What the augment stage recorded: layout, crop, size, counts."""
    return study.read_json(paths.augment_info(dataset))


def augment_figure(dataset: str, crop: int | float | None, seed: int,
                   config: AugmentConfig = RECIPE,
                   paths: LeukemiaPaths = LeukemiaPaths()):
    """One training cell per class, cropped, then under each transform of the recipe."""

    manifest = study.read_manifest(paths.manifest(dataset))
    train = manifest[manifest["split"] == "train"].sort_values("path")
    load = cropped_loader(crop)
    names = ["original (cropped)", *enabled_transforms(config)]
    images, titles = [], []
    for label, rows in train.groupby("label", sort=True):
        image = load(rows["path"].iloc[0])
        for i, name in enumerate(names):
            rng = np.random.default_rng([seed, i])
            images.append(image if i == 0 else apply_transform(image, name, rng, config))
            titles.append(f"{label}: {name}")
    return image_gallery(images, titles, ncols=len(names),
                         title=f"{dataset}: one cell per class under each transform")


# --- train ------------------------------------------------------------------------------------


def load_augmented(dataset: str, run: str, split: str, size: int, classes=LEUKEMIA_CLASSES,
                   paths: LeukemiaPaths = LeukemiaPaths(), progress: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (resized to ``size``) and one-hot labels of one augmented split."""

    frame = pd.read_csv(paths.augmented_manifest(dataset), keep_default_na=False)
    rows = frame[(frame["run"] == run) & (frame["split"] == split)]
    if rows.empty:
        raise ValueError(f"no augmented {split} images for {dataset} ({run}) in "
                         f"{paths.augmented_manifest(dataset)}: run the augment stage")
    images = load_resized(list(rows["path"]), size, progress=progress)
    return images, study.one_hot_labels(rows["label"].to_numpy(), list(classes))


def append_live(live_dir: Path, history: pd.DataFrame, first_step: int) -> None:
    """Add epochs to a DVCLive folder after those already there (steps ``first_step`` on),
    named as ``DVCLiveCallback`` names them (``train/accuracy``, ``eval/loss``, ...)."""

    live = Live(str(live_dir), resume=True, save_dvc_exp=False, dvcyaml=None)
    live.step = int(first_step)

    curves = history.drop(columns=["phase", "epoch", *PHASE_COLUMNS], errors="ignore")
    for row in curves.to_dict("records"):
        for name, value in row.items():
            if pd.notna(value):
                live.log_metric(standardize_metric_name(name, "dvclive.keras"), float(value))
        live.next_step()
    live.end()


def fit_recipe(model, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
               y_val: np.ndarray, config, extra_epochs: int, live_dir: Path | None,
               work_dir: Path) -> pd.DataFrame:
    """The report's schedule: ``config.epochs`` with early stopping, then ``extra_epochs`` more
    without it (Solution B: 30 + 20); ReduceLROnPlateau and the best-val-accuracy checkpoint
    throughout; the weights of the best validation accuracy over both phases are kept: phase
    2's checkpoint unless phase 1's measured a higher validation accuracy (``train.fit``
    measures each on the model), and the history's saved-weights columns say which.
    The training images are the materialised augmented set, so no augmentation on the fly."""


    steps = steps_per_epoch(len(x_train), config.batch_size)
    val = make_dataset(x_val, y_val, config.batch_size)
    history = train.fit(model, study.epochs_of(x_train, y_train, config.batch_size,
                                               config.epochs, False, config.seed),
                        steps, val, config, live_dir, work_dir / "phase1",
                        label="early stopping")
    if extra_epochs > 0:
        done = int(history["phase_epochs"].iloc[-1])  # a resumed phase 1 counts them all
        kept = model.get_weights()  # phase 1's best (checkpoint) weights
        more = replace(config, epochs=int(extra_epochs), patience=0)

        def batches(start: int):  # epochs done + start .. done + extra - 1 of one shuffle
            return make_epochs_dataset(x_train, y_train, config.batch_size,
                                       done + int(extra_epochs), done + start, False,
                                       config.seed)

        second = train.fit(model, batches, steps, val, more, None, work_dir / "phase2",
                           label="no early stopping")
        second["epoch"] += done
        second["saved_epoch"] += done
        if live_dir is not None:  # the curves go on where phase 1's stopped
            append_live(live_dir, second, done)
        first = history.iloc[-1]
        if float(second["saved_val_accuracy"].iloc[-1]) < float(first["saved_val_accuracy"]):
            model.set_weights(kept)  # the run ends with phase 1's weights: say so
            second = second.assign(**{c: first[c] for c in ("saved_epoch", "saved_by",
                                                            "saved_val_accuracy")})
        history = pd.concat([history, second], ignore_index=True)
    return history


def train_solution(dataset: str, solution: str, network: str, image_size: int, seed: int,
                   epochs: int, batch_size: int, learning_rate: float, extra_epochs: int = 0,
                   patience: int = 0, reduce_lr_patience: int = 0, head_units: int = 1024,
                   head_layers: int = 2, head_dropout: float = 0.0, head_l1: float = 7e-4,
                   head_l2: float = 7e-4, bn_momentum: float | None = None,
                   eager: bool = False, repeat_seed: int | None = None,
                   paths: LeukemiaPaths = LeukemiaPaths(), progress: bool = True):
    """Train one solution on the augmented set; save the model, its DVCLive curves and a
    training summary (and, with k folds, every fold's test predictions).

    ``seed``: ``data.seed`` (the split and the augmented set come from it); ``repeat_seed``:
    a repeat (``leukemia.repeats``) trains with that seed instead and is saved as
    ``<id>-seed<n>``; None: the main run, trained with ``seed``. ``eager``: no graph tracing
    (``accel.eager_execution``; the smoke preset)."""
    seed = seed if repeat_seed is None else int(repeat_seed)
    train.set_determinism(seed)
    the_id = leukemia_model_id(dataset, network, repeat_seed)
    info = read_augment_info(dataset, paths)
    classes = list(LEUKEMIA_CLASSES)
    size = study.resolve_image_size(network, image_size)
    config = train.FitConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                             patience=patience, reduce_lr_patience=reduce_lr_patience,
                             checkpoint_best=True, seed=seed)
    head = networks.HeadConfig((int(head_units),) * int(head_layers), head_dropout, head_l1,
                               head_l2)
    manifest = study.read_manifest(paths.manifest(dataset))
    start = time.perf_counter()
    model = history = None
    fold_predictions = []
    for run, rows in run_splits(manifest).items():
        x_train, y_train = load_augmented(dataset, run, "train", size, classes, paths, progress)
        x_val, y_val = load_augmented(dataset, run, "val", size, classes, paths, progress)
        mean = channel_mean(x_train)
        candidate = networks.build_solution_model(network, size, head, mean, len(classes),
                                                  bn_momentum)
        train.compile_model(candidate, config)
        main = run == "main"
        with accel.eager_execution(eager):
            run_history = fit_recipe(candidate, x_train, y_train, x_val, y_val, config,
                                     extra_epochs, paths.live(the_id) if main else None,
                                     paths.work(the_id) / run)
        if main:
            model, history, n_train, n_val = candidate, run_history, len(x_train), len(x_val)
            channel = mean
            seconds = time.perf_counter() - start
        else:
            fold_predictions.append(_predict_rows(candidate, rows[rows["split"] == "test"], size,
                                                  info["crop"], classes).assign(fold=run))
    study.save_model(model, paths.model(the_id))
    columns = ["fold", "path", "group", "actual", "predicted", *[f"p_{c}" for c in classes]]
    write_csv_atomic(paths.kfold_predictions(the_id),
                     pd.concat(fold_predictions, ignore_index=True)[columns]
                     if fold_predictions else pd.DataFrame(columns=columns))
    result = train.RunResult(model, history, seconds, extra={
        "model": the_id, "dataset": dataset, "network": network, "regime": REGIME,
        "solution": solution, "training_seed": seed, "image_size": size, "crop": info["crop"],
        "layout": info["layout"], "classes": classes, "channel_mean": list(map(float, channel)),
        "n_train": n_train, "n_val": n_val, "extra_epochs": int(extra_epochs),
        "bn_momentum": bn_momentum, "eager": bool(eager),
        "folds": len(fold_predictions), "seconds_with_folds": round(
            time.perf_counter() - start, 2), "params": networks.count_params(model)})
    study.write_json(paths.train_summary(the_id), result.summary())
    return result


def _predict_rows(model, rows: pd.DataFrame, size: int, crop, classes: list[str]
                  ) -> pd.DataFrame:
    """Predictions of ``model`` for manifest rows (original images, cropped and resized)."""

    probs = study.predict(model, load_resized(list(rows["path"]), size, crop=crop,
                                              progress=False))
    frame = pd.DataFrame({"path": rows["path"].to_numpy(), "group": rows["group"].to_numpy(),
                          "actual": rows["label"].to_numpy(),
                          "predicted": [classes[i] for i in probs.argmax(axis=1)]})
    for i, name in enumerate(classes):
        frame[f"p_{name}"] = probs[:, i].round(5)
    return frame


# --- the report's section ---------------------------------------------------------------------


def is_leukemia_result(result: dict) -> bool:
    """Whether a metrics dict is one of this study's (classes ALL / HEM)."""
    return list(result.get("classes", [])) == list(LEUKEMIA_CLASSES)
