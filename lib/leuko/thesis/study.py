"""The study's stages as functions: each notebook calls one of these and shows its results.

Paths follow one scheme (see ``Paths``): derived machine outputs under ``build/``, what people
read under ``reports/``. A model is identified by ``<dataset>-<network>-<regime>``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import pandas as pd

from leuko.core import accel, datasets, splits
from leuko.core.atomic import atomic_write, write_csv_atomic, write_json_atomic
from leuko.core.datasets import WBC_CLASSES
from leuko.core.images import bad_images_frame, check_policy, dihedral_dhashes, load_rgb
from leuko.core.inputs import load_resized, make_dataset, make_epochs_dataset, steps_per_epoch
from leuko.core.params import PARAMS_DIR, read_block, typed
from leuko.core.progress import progress_bar
from leuko.models import networks, train
from leuko.models.networks import (
    HeadConfig,
    check_bottleneck,
    check_input_size,
    get_network,
    uses_imagenet,
)
from leuko.models.train import FitConfig, check_regime, one_hot


def project_root(start: Path | None = None) -> Path | None:
    """The folder holding ``dvc.yaml`` at or above ``start`` (default: the working directory)."""
    start = Path(start or Path.cwd()).resolve()
    return next((p for p in (start, *start.parents) if (p / "dvc.yaml").is_file()), None)


def chdir_project_root() -> Path:
    """Work from the project root, so a notebook opened in JupyterLab (whose kernel starts in
    ``notebooks/``) finds ``data/``, ``build/`` and ``reports/`` as papermill runs do."""

    root = project_root()
    if root is not None:
        os.chdir(root)
    return Path.cwd()


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes, for one model id.

    ``group``: the folder of a stage that trains several models in one process (the 4-class
    study's ``wbc.stages.per_network``: ``build/models/<network>/<id>.keras``,
    ``reports/train/<network>/<id>.json``, ``reports/live/<network>/<id>/``); "" for a stage
    per model. ``trained_models`` finds each model's group from its training summary."""

    root: Path = Path(".")
    group: str = ""

    def manifest(self, dataset: str) -> Path:
        return self.root / "build" / "manifests" / f"{dataset}.csv"

    def bad_images(self, dataset: str) -> Path:
        return self.root / "reports" / "data" / f"bad-images-{dataset}.csv"

    def features(self, dataset: str, network: str, own_size: int | None = None) -> Path:
        """The cached bottleneck features; ``own_size``: those of a regime run at an input
        size of its own (``sized_regime``), ``<dataset>-<network>-<size>px.npz``."""
        suffix = "" if own_size is None else f"-{int(own_size)}px"
        return self.root / "build" / "features" / f"{dataset}-{network}{suffix}.npz"

    def model(self, model_id: str) -> Path:
        return self.root / "build" / "models" / self.group / f"{model_id}.keras"

    def work(self, model_id: str) -> Path:
        return self.root / "build" / "work" / model_id

    def live(self, model_id: str) -> Path:
        return self.root / "reports" / "live" / self.group / model_id

    def train_summary(self, model_id: str) -> Path:
        return self.root / "reports" / "train" / self.group / f"{model_id}.json"

    def metrics(self, model_id: str) -> Path:
        return self.root / "reports" / "metrics" / f"{model_id}.json"

    def predictions(self, model_id: str) -> Path:
        return self.root / "reports" / "predictions" / f"{model_id}.csv"

    def probabilities(self, model_id: str) -> Path:
        """A cell model's uncalibrated class probabilities on what it was scored on
        (``crosssource.model_probabilities``): an ensemble is scored from its runs'."""
        return self.root / "build" / "probabilities" / f"{model_id}.npz"

    def confusion_plot(self, model_id: str, split: str) -> Path:
        """(actual, predicted) per image of one split: the data of ``dvc plots``' confusion
        matrix (one file per split, so TEST and TEST_SIMPLE are never pooled)."""
        return self.root / "reports" / "plots" / "confusion" / model_id / f"{split}.csv"


def summary_files(folder: Path) -> list[Path]:
    """The training summaries under ``folder`` (``reports/train``): its own files first, then
    its group folders', so that where one id is in both (a file another preset's stage per
    model left at the top), the group's comes last and wins."""
    return sorted(Path(folder).rglob("*.json"),
                  key=lambda p: (p.parent != Path(folder), p.as_posix()))


def trained_models(paths: Paths = Paths()) -> dict[str, Paths]:
    """Every model with a training summary under ``reports/train`` (a stage's own file or a
    group's folder: ``summary_files``), by id, with the ``Paths`` of its group; sorted by
    id."""
    folder = Paths(paths.root).train_summary("x").parent
    found = {}
    for summary in summary_files(folder):
        group = summary.parent.relative_to(folder).as_posix()
        found[summary.stem] = Paths(paths.root, "" if group == "." else group)
    return dict(sorted(found.items()))


def model_paths(the_id: str, paths: Paths = Paths()) -> Paths:
    """The ``Paths`` of a trained model: its group's where ``trained_models`` finds its
    training summary in a group folder, else ``paths`` (a stage of its own)."""
    return trained_models(paths).get(the_id, paths)


def repeat_id(base: str, training_seed: int | None = None) -> str:
    """A model id (``base``, its main run) for a repeat: the same model trained again with
    another training seed, the data fixed, adds ``-seed<n>`` (``report.SEED_SUFFIX`` reads
    it back); ``None``: the main run."""
    return base if training_seed is None else f"{base}-seed{training_seed}"


#: A regime run at an input size of its own: ``<regime>-<size>px`` (``wbc.thesis_input``).
SIZED_REGIME = re.compile(r"(?P<regime>.+)-(?P<size>\d+)px")


def sized_regime(regime: str, own_size: int | None) -> str:
    """The name of ``regime`` run at ``own_size`` px instead of ``wbc.image_size``
    (``imagenet-224px``); ``regime`` itself for None."""
    return regime if own_size is None else f"{regime}-{int(own_size)}px"


def regime_and_size(name: str) -> tuple[str, int | None]:
    """``(regime, own size)`` of a regime name (``sized_regime`` read back); the size is None
    for a regime at the study's ``wbc.image_size``."""
    match = SIZED_REGIME.fullmatch(name)
    return (name, None) if match is None else (match["regime"], int(match["size"]))


def model_id(dataset: str, network: str, regime: str, training_seed: int | None = None) -> str:
    """The name of one trained model: ``<dataset>-<network>-<regime>``; a repeat adds
    ``-seed<n>`` (:func:`repeat_id`)."""
    return repeat_id(f"{dataset}-{network}-{regime}", training_seed)


# --- prepare ----------------------------------------------------------------------------------


def prepare_wbc(data_root: Path, val_fraction: float, seed: int, pooled_test_fraction: float,
                policy: str = "fail", progress: bool = True) -> dict[str, pd.DataFrame]:
    """Manifests of the 4-class study, one per split scheme.

    ``blood-cell-images``: the official split; TEST and TEST_SIMPLE as published, a validation
    set cut from TRAIN by whole source cells. ``blood-cell-images-pooled``: TRAIN and TEST
    pooled and split at random (the thesis's likely, leaky split); TEST_SIMPLE kept as is.
    """
    prepared = datasets.blood_cell_images(data_root, policy=policy, progress=progress)
    frame = prepared.manifest
    official = frame.copy()
    train = official["split"] == "train"
    official.loc[train, "split"] = splits.split_off_validation(
        official[train], val_fraction, seed).to_numpy()

    pooled = frame.copy()
    pool = pooled["split"].isin(["train", "test"])
    side = splits.pooled_split(pooled[pool], pooled_test_fraction, seed)
    pooled.loc[pool, "split"] = side.to_numpy()
    train = pooled["split"] == "train"
    rng = np.random.default_rng(seed)
    val_rows = pooled.index[train][rng.random(train.sum()) < val_fraction]
    pooled.loc[val_rows, "split"] = "val"
    return {"blood-cell-images": official, "blood-cell-images-pooled": pooled,
            "_bad": datasets_bad_frame(prepared)}


def datasets_bad_frame(prepared: datasets.Prepared) -> pd.DataFrame:
    """The unreadable images of a preparation as a table (path, reason)."""

    return bad_images_frame(prepared.bad)


def write_manifest(frame: pd.DataFrame, path: Path) -> Path:
    """Write a manifest CSV atomically (sorted, so reruns are byte-identical)."""
    write_csv_atomic(path, frame.sort_values("path", kind="stable").reset_index(drop=True))
    return path


def read_manifest(path: Path) -> pd.DataFrame:
    """A manifest written by ``write_manifest`` (empty split stays ``""``)."""
    return pd.read_csv(path, keep_default_na=False, dtype={"split": str, "group": str})


# --- training data -----------------------------------------------------------------------------


def training_rows(manifest: pd.DataFrame, train_per_class: int | None, val_per_class: int | None,
                  seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The train and validation rows a model sees: balanced subsamples that cover as many
    source cells as possible (all rows when the count is 0 or None)."""
    train = splits.balanced_subsample(manifest[manifest["split"] == "train"], train_per_class,
                                      seed)
    val = splits.balanced_subsample(manifest[manifest["split"] == "val"], val_per_class, seed)
    return train.reset_index(drop=True), val.reset_index(drop=True)


def class_index(labels: pd.Series, classes: list[str]) -> np.ndarray:
    """Class names -> integer indices in ``classes`` order (ValueError naming unknown names)."""
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"unknown class name(s) {unknown}; expected {classes}")
    lookup = {c: i for i, c in enumerate(classes)}
    return labels.map(lookup).to_numpy(dtype=int)


def save_features(path: Path, **arrays) -> Path:
    """Save named arrays (features, labels, paths) as an uncompressed .npz, atomically."""
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return path


def load_features(path: Path) -> dict[str, np.ndarray]:
    """Arrays saved by ``save_features`` (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_model(model, path: Path) -> Path:
    """Save a Keras model in the ``.keras`` format, atomically."""
    with atomic_write(path) as tmp:  # the temporary name keeps the .keras suffix
        model.save(tmp)
    return Path(path)


def load_model(path: Path):
    """Load a ``.keras`` model with ``safe_mode=True`` (no arbitrary code)."""


    return keras.saving.load_model(path, safe_mode=True, compile=False)


def write_json(path: Path, payload: dict) -> Path:
    """JSON for DVC (metrics) and people, atomically."""
    write_json_atomic(path, payload)
    return path


def read_json(path: Path) -> dict:
    """A JSON file as a dict."""
    return json.loads(Path(path).read_text())


def prepare(dataset: str, data_path: Path, seed: int, policy: str = "fail",
            val_fraction: float = 0.1, pooled_test_fraction: float = 0.2,
            split_ratios=(0.6, 0.3, 0.1), folds: int = 0, progress: bool = True
            ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Manifests (name -> table with a final ``split`` column) and the unreadable images."""

    check_policy(policy)
    if dataset == "blood-cell-images":
        manifests = prepare_wbc(Path(data_path), val_fraction, seed, pooled_test_fraction,
                                policy, progress)
        return manifests, manifests.pop("_bad")
    return prepare_leukemia(dataset, Path(data_path), seed, policy, split_ratios, folds,
                            progress)


def prepare_leukemia(dataset: str, data_path: Path, seed: int, policy: str, split_ratios,
                     folds: int, progress: bool) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The leukemia manifest: 6:3:1 train/val/test, stratified, grouped by patient, content hash
    and near-duplicate group (``near``: images within ``splits.NEAR_DUPLICATE_DISTANCE`` of
    each other's fingerprints under any quarter turn or flip)."""
    layout = datasets.detect_layout(data_path)
    if layout not in ("all-idb2", "cnmc"):
        raise ValueError(f"leukemia dataset at {data_path} has layout {layout!r}; expected "
                         "ALL-IDB2 or C-NMC 2019")

    prepared = datasets.adapter_for(layout)(data_path, policy=policy, progress=progress)
    frame = prepared.manifest
    # shifted, turned or re-encoded copies of one cell (ALL-IDB2 has some) are one leak group
    hashes = np.stack([dihedral_dhashes(load_rgb(p)) for p in frame["path"]])
    frame["near"] = splits.near_duplicate_groups(hashes)
    keys = ("group", "sha256", "near")
    labelled = frame["split"] != "prelim"
    frame.loc[labelled, "split"] = splits.split_train_val_test(
        frame[labelled], split_ratios, seed, keys=keys).to_numpy()
    if folds and folds >= 2:
        frame["fold"] = -1
        frame.loc[labelled, "fold"] = splits.kfold(frame[labelled], folds, seed,
                                                   keys=keys).to_numpy()
    return {dataset: frame}, datasets_bad_frame(prepared)


def write_prepared(manifests: dict[str, pd.DataFrame], bad: pd.DataFrame,
                   paths: Paths = Paths()) -> list[Path]:
    """Write every manifest and the bad-image list of each."""
    written = []
    for name, frame in manifests.items():
        written.append(write_manifest(frame, paths.manifest(name)))
        write_csv_atomic(paths.bad_images(name), bad)
    return written


def resolve_image_size(network: str, image_size: int | str) -> int:
    """An explicit size, ``"native"`` for the network's own input size, or ``"minimum"`` for
    the smallest it accepts (the smoke preset: 32 px, 71 px for Xception, 75 px for
    InceptionV3)."""

    entry = get_network(network)
    named = {"native": entry.native_size, "minimum": entry.min_size}
    size = named[image_size] if image_size in named else int(image_size)
    return check_input_size(entry, size)


# --- the 4-class study's settings: params/wbc.yaml, params/data.yaml, params/regimes/ ---------


@dataclass(frozen=True)
class WbcSettings:
    """The 4-class study's data and model settings: ``params/wbc.yaml`` (where each value is
    set and explained) and the seed of ``params/data.yaml``."""

    image_size: int | str  # px, "native" or "minimum" (each network's own or smallest size)
    train_per_class: int
    val_per_class: int
    feature_batch: int
    precision: str  # leuko.core.accel.set_precision
    strategy: str  # leuko.core.accel.distribution_strategy
    eager: bool  # run without graph tracing (leuko.core.accel.eager_execution): the smoke preset
    bottleneck: str  # the head's input: networks.BOTTLENECKS (avg | flatten)
    weights: str  # the pretrained regimes' start: networks.WEIGHTS (imagenet | random)
    seed: int

    def __post_init__(self):

        check_bottleneck(self.bottleneck)
        uses_imagenet(self.weights)  # a ValueError naming the choices for anything else

    @property
    def pretrained(self) -> bool:
        """Whether the pretrained regimes' base loads ImageNet weights (``weights:
        imagenet``); ``random`` is a plumbing run, named in every output."""

        return uses_imagenet(self.weights)

    #: Keys of ``wbc`` that list the pipeline's models (dvc.yaml's matrix reads them).
    PIPELINE_KEYS = ("networks", "regimes", "pooled_regimes", "repeats", "stages", "thesis_input")

    @classmethod
    def from_params(cls, wbc: dict | None = None, data: dict | None = None) -> WbcSettings:
        """From the ``wbc`` and ``data`` blocks (papermill ``-f``), or, for a block that is
        None, read from its file in ``params/``."""

        seed = int(read_block("data", data)["seed"])
        return typed(cls, {**read_block("wbc", wbc), "seed": seed}, "params/wbc.yaml: wbc",
                     ignore=cls.PIPELINE_KEYS)


#: The official split and the leaky pooled split of the 4-class study.
WBC_DATASET = "blood-cell-images"
WBC_POOLED_DATASET = "blood-cell-images-pooled"


class ModelKey(NamedTuple):
    """One trained model of the 4-class study; ``repeat_seed`` None is the main run;
    ``group``: the folder its stage writes to (``Paths.group``; "" for a stage per model)."""

    dataset: str
    network: str
    regime: str
    repeat_seed: int | None = None
    group: str = ""

    @property
    def model_id(self) -> str:
        return model_id(self.dataset, self.network, self.regime, self.repeat_seed)

    def paths(self, root: Path = Path(".")) -> Paths:
        return Paths(root, self.group)


def stage_groups(wbc: dict) -> dict[str, str]:
    """Per network of ``wbc.networks``, the folder its models are written to: "" where
    ``wbc.stages.per_model`` lists it (a stage per model), the network's name where
    ``per_network`` does (one stage trains them all); without ``stages``, every network has
    a stage per model. ValueError unless each network is in exactly one list, and every
    listed network in ``networks``."""
    stages = wbc.get("stages") or {"per_model": list(wbc["networks"]), "per_network": []}
    lists = {kind: list(stages.get(kind) or []) for kind in ("per_model", "per_network")}
    listed = lists["per_model"] + lists["per_network"]
    wrong = sorted({n for n in listed if listed.count(n) > 1}
                   | (set(listed) ^ set(wbc["networks"])))
    if wrong:
        raise ValueError(f"params/wbc.yaml: wbc.stages must list each network of wbc.networks "
                         f"in exactly one of per_model and per_network; check {wrong}")
    return {n: n if n in lists["per_network"] else "" for n in wbc["networks"]}


def wbc_models(wbc: dict) -> list[ModelKey]:
    """Every model of the 4-class study, from the ``params/wbc.yaml`` block ``wbc``:
    ``networks x regimes`` on the official split, ``networks x pooled_regimes`` on the pooled
    split, ``thesis_input``'s networks x its regimes at its input size (``sized_regime``), and
    the repeats ``networks x repeats.regimes x repeats.seeds`` on the official split
    (duplicates dropped, order kept); each in the folder of its stage (``stage_groups``)."""
    missing = [k for k in ("networks", "regimes") if k not in wbc]
    if missing:
        raise ValueError(f"wbc parameters lack {missing}; expected networks, regimes and "
                         "optionally pooled_regimes, repeats and stages (params/wbc.yaml)")
    networks, groups = wbc["networks"], stage_groups(wbc)
    models = [ModelKey(WBC_DATASET, n, r) for n in networks for r in wbc["regimes"]]
    models += [ModelKey(WBC_POOLED_DATASET, n, r) for n in networks
               for r in wbc.get("pooled_regimes") or []]
    sized = wbc.get("thesis_input") or {}
    for dataset, key in ((WBC_DATASET, "regimes"), (WBC_POOLED_DATASET, "pooled_regimes")):
        models += [ModelKey(dataset, n, sized_regime(r, sized["image_size"]))
                   for n in sized.get("networks") or [] for r in sized.get(key) or []]
    repeats = wbc.get("repeats") or {}
    models += [ModelKey(WBC_DATASET, n, r, int(s)) for n in networks
               for r in repeats.get("regimes") or [] for s in repeats.get("seeds") or []]
    return list(dict.fromkeys(m._replace(group=groups[m.network]) for m in models))


@dataclass(frozen=True)
class RegimeSettings:
    """How one regime trains: ``params/regimes/<regime>.yaml``'s ``training`` block."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float  # decoupled (AdamW); 0 = Adam
    patience: int  # early stopping on the validation loss; 0 = off
    reduce_lr_patience: int  # halve the rate on a validation-loss plateau; 0 = off
    head_units: tuple[int, ...]
    head_dropout: float
    head_l1: float
    head_l2: float
    finetune_blocks: str | int  # "all" or the number of top blocks unfrozen
    warmup_epochs: int  # fine-tuning: head epochs on the cached features first
    warmup_learning_rate: float
    # fine-tuning: the pretrained base's BatchNorm layers stay in inference mode (the base is
    # called with training=False, as Keras' transfer-learning guide does), so its ImageNet
    # statistics are kept; false: they adapt to the batches. Pretrained regimes only.
    bn_inference: bool
    augment: bool  # flips and 90-degree turns
    stain_jitter: float  # leuko.core.stain.stain_jitter strength; 0 = off

    @classmethod
    def from_params(cls, regime: str, training: dict | None = None) -> RegimeSettings:
        """From the ``training`` block (papermill ``-f params/regimes/<regime>.yaml``), or,
        when None, read from that file."""

        path = PARAMS_DIR / "regimes" / f"{regime}.yaml"
        values = read_block("training", training, path)
        values["head_units"] = tuple(values.get("head_units", ()))
        return typed(cls, values, f"{path}: training")

    def fit_config(self, seed: int):
        """The end-to-end (or, frozen, the only) phase's ``train.FitConfig``."""

        return FitConfig(epochs=self.epochs, batch_size=self.batch_size,
                         learning_rate=self.learning_rate, weight_decay=self.weight_decay,
                         patience=self.patience, reduce_lr_patience=self.reduce_lr_patience,
                         seed=seed)

    def head_config(self):
        """The classifier head (``networks.HeadConfig``)."""

        return HeadConfig(self.head_units, self.head_dropout, self.head_l1, self.head_l2)


@dataclass(frozen=True)
class WbcRun:
    """One model of the 4-class study: which data, network and regime, and every setting.

    ``repeat_seed``: None for the study's main run, whose training seed is ``data.seed``; an
    int for a repeat (``wbc.repeats``), the same model trained again with that training seed
    (weights, batch order, augmentation, dropout) on the same data (the rows and features that
    ``data.seed`` chose), named ``<main id>-seed<n>``. ``regime`` may name an input size of
    its own (``imagenet-224px``: ``sized_regime``); ``settings.image_size`` is then that size.
    """

    dataset: str
    network: str
    regime: str
    settings: WbcSettings
    training: RegimeSettings
    repeat_seed: int | None = None

    @classmethod
    def from_params(cls, dataset: str, network: str, regime: str, data: dict | None = None,
                    wbc: dict | None = None, training: dict | None = None,
                    repeat_seed: int | None = None) -> WbcRun:
        """The blocks as papermill passes them; a block that is None is read from params/."""


        base, own_size = regime_and_size(regime)
        check_regime(base)
        settings = WbcSettings.from_params(wbc, data)
        if own_size is not None:
            settings = replace(settings, image_size=own_size)
        return cls(dataset, network, regime, settings,
                   RegimeSettings.from_params(base, training),
                   None if repeat_seed is None else int(repeat_seed))

    @property
    def base_regime(self) -> str:
        """The regime without its own input size (``imagenet`` for ``imagenet-224px``)."""
        return regime_and_size(self.regime)[0]

    @property
    def own_size(self) -> int | None:
        """The regime's own input size (``sized_regime``); None: ``wbc.image_size``."""
        return regime_and_size(self.regime)[1]

    @property
    def training_seed(self) -> int:
        """The seed of the training's randomness: the repeat's, else ``data.seed``."""
        return self.settings.seed if self.repeat_seed is None else self.repeat_seed

    @property
    def model_id(self) -> str:
        return model_id(self.dataset, self.network, self.regime, self.repeat_seed)

    def table(self) -> pd.DataFrame:
        """Every setting, one row each (what a notebook shows before it trains)."""

        values = {"dataset": self.dataset, "network": self.network, "regime": self.regime,
                  "training_seed": self.training_seed, **asdict(self.settings),
                  **asdict(self.training)}
        return pd.DataFrame({"value": [str(v) for v in values.values()]},
                            index=pd.Index(list(values), name="setting"))


def build_frozen_base(network: str, settings: WbcSettings):
    """The base whose bottleneck features the frozen regimes' heads train on: built from
    ``settings.weights`` after seeding with ``data.seed`` (so ``weights: random`` draws the
    same base in every stage), not trainable."""
    train.set_determinism(settings.seed)
    size = resolve_image_size(network, settings.image_size)
    base = networks.build_base(network, (size, size, 3), settings.pretrained,
                               settings.bottleneck)
    base.trainable = False
    return base


def compute_bottleneck_features(dataset: str, network: str, settings: WbcSettings,
                                paths: Paths = Paths(), base=None,
                                own_size: int | None = None) -> dict[str, np.ndarray]:
    """Bottleneck features (``settings.bottleneck``: ``networks.BOTTLENECKS``) of the frozen
    base for the train and validation rows; the base starts from ``settings.weights``. Both
    are saved with the features, and training checks them (``check_cached_features``).
    ``base``: the network's frozen base already built (``build_frozen_base``; ``train_network``
    shares one); None: built here. ``own_size``: the features of the regimes run at that input
    size instead of ``settings.image_size`` (``sized_regime``), saved apart
    (``Paths.features``)."""


    if own_size is not None:
        settings = replace(settings, image_size=int(own_size))
    base = base if base is not None else build_frozen_base(network, settings)
    train.set_determinism(settings.seed)
    size = resolve_image_size(network, settings.image_size)
    manifest = read_manifest(paths.manifest(dataset))
    rows = dict(zip(("train", "val"), training_rows(manifest, settings.train_per_class,
                                                    settings.val_per_class, settings.seed),
                    strict=True))
    entry = networks.get_network(network)
    preprocess = networks.Preprocess(entry.preprocessing)
    arrays = {"bottleneck": np.asarray(settings.bottleneck),
              "weights": np.asarray(settings.weights)}
    for split, frame in rows.items():
        images = load_resized(list(frame["path"]), size)
        with accel.eager_execution(settings.eager):
            arrays[f"{split}_features"] = train.compute_features(base, preprocess, images,
                                                                 settings.feature_batch)
        arrays[f"{split}_paths"] = frame["path"].to_numpy(dtype=str)
        arrays[f"{split}_labels"] = frame["label"].to_numpy(dtype=str)
    save_features(paths.features(dataset, network, own_size), **arrays)
    return arrays


def check_cached_features(cached: dict[str, np.ndarray], settings: WbcSettings,
                          path: Path) -> dict[str, np.ndarray]:
    """``cached`` if it was computed with ``settings``' bottleneck and weights, else a
    ValueError saying to rerun the features stage (a head must sit on the base it was trained
    for)."""
    found = {k: str(cached[k]) if k in cached else "unrecorded" for k in ("bottleneck", "weights")}
    wanted = {"bottleneck": settings.bottleneck, "weights": settings.weights}
    if found != wanted:
        raise ValueError(f"{path} holds features of {found}, not {wanted}: rerun the features "
                         "stage (dvc repro features)")
    return cached


def train_wbc(run: WbcRun, paths: Paths = Paths(), frozen_base=None):
    """Train one model of the 4-class study; save it, its curves and a training summary.

    Frozen regimes train the head on the cached features; fine-tuning warms the head up on
    them (``warmup_epochs`` at ``warmup_learning_rate``), then trains base and head end to
    end; scratch trains everything from random weights. ``frozen_base``: a frozen regime's
    base already built (``build_frozen_base``: the one its features came from;
    ``train_network`` shares it among the network's frozen models); None: built here."""


    # the data (rows, cached features) come from data.seed; the training's randomness from
    # the run's training seed (the same for the main run)
    settings, training, seed = run.settings, run.training, run.training_seed
    if frozen_base is not None and run.base_regime not in train.FROZEN_REGIMES:
        raise ValueError(f"{run.model_id}: a shared frozen base is for the frozen regimes "
                         f"{train.FROZEN_REGIMES}; {run.regime!r} trains its base")
    train.set_determinism(seed)
    precision = accel.set_precision(settings.precision)
    size = resolve_image_size(run.network, settings.image_size)
    classes = list(WBC_CLASSES)
    the_id = run.model_id
    fit_config = training.fit_config(seed)
    batch_size = training.batch_size
    n = len(classes)
    start = time.perf_counter()
    histories = []
    with (accel.distribution_strategy(settings.strategy).scope(),
          accel.eager_execution(settings.eager)):
        frozen = run.base_regime in train.FROZEN_REGIMES
        if run.base_regime in train.PRETRAINED_REGIMES:
            features = paths.features(run.dataset, run.network, run.own_size)
            cached = check_cached_features(load_features(features), settings, features)
            y_train = one_hot_labels(cached["train_labels"], classes)
            y_val = one_hot_labels(cached["val_labels"], classes)
            head = networks.build_head(cached["train_features"].shape[1], n,
                                       training.head_config())
            head_epochs = training.epochs if frozen else training.warmup_epochs
            if head_epochs:
                head_fit = train.FitConfig(**{
                    **train.config_dict(fit_config), "epochs": head_epochs,
                    "learning_rate": (training.learning_rate if frozen
                                      else training.warmup_learning_rate),
                    "steps_per_execution": execution_chunk(
                        steps_per_epoch(len(y_train), batch_size))})
                train.compile_model(head, head_fit)
                histories.append(train.fit(
                    head, epochs_of(cached["train_features"], y_train, batch_size, head_epochs,
                                    False, seed), steps_per_epoch(len(y_train), batch_size),
                    make_dataset(cached["val_features"], y_val, batch_size), head_fit,
                    paths.live(the_id) if frozen else None, paths.work(the_id) / "head",
                    label="head"))
            if frozen:
                base = (frozen_base if frozen_base is not None
                        else build_frozen_base(run.network, settings))
            else:
                base = networks.build_base(run.network, (size, size, 3), settings.pretrained,
                                           settings.bottleneck)
                networks.set_trainable_top(base, training.finetune_blocks)
            model = networks.build_classifier(run.network, n, size, pretrained=True, base=base,
                                              head_model=head,
                                              base_bn_inference=training.bn_inference)
        else:
            if training.bn_inference:
                raise ValueError(f"params/regimes/{run.base_regime}.yaml: bn_inference is for "
                                 "fine-tuning a pretrained base; a network trained from "
                                 "scratch must learn its BatchNorm statistics (set it false)")
            model = networks.build_classifier(run.network, n, size, pretrained=False,
                                              head=training.head_config(),
                                              bottleneck=settings.bottleneck)
        if not frozen:
            manifest = read_manifest(paths.manifest(run.dataset))
            train_rows, val_rows = training_rows(manifest, settings.train_per_class,
                                                 settings.val_per_class, settings.seed)
            x_train = load_resized(list(train_rows["path"]), size)
            x_val = load_resized(list(val_rows["path"]), size)
            y_train = one_hot_labels(train_rows["label"].to_numpy(), classes)
            y_val = one_hot_labels(val_rows["label"].to_numpy(), classes)
            train.compile_model(model, fit_config)
            histories.append(train.fit(
                model, epochs_of(x_train, y_train, batch_size, training.epochs,
                                 training.augment, seed, training.stain_jitter),
                steps_per_epoch(len(x_train), batch_size), make_dataset(x_val, y_val, batch_size),
                fit_config, paths.live(the_id), paths.work(the_id), label="end-to-end"))
    seconds = time.perf_counter() - start
    n_train_images = len(y_train)  # the images (or cached features) of the last fit
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    save_model(model, paths.model(the_id))
    result = train.RunResult(model, history, seconds, extra={
        "model": the_id, "dataset": run.dataset, "network": run.network, "regime": run.regime,
        "training_seed": seed, "data_seed": settings.seed, "image_size": size, "classes": classes, "precision": precision,
        "stain_jitter": float(training.stain_jitter), "bottleneck": settings.bottleneck,
        "weights": settings.weights, "eager": settings.eager,
        "n_train_images": n_train_images,
        "params": networks.count_params(model)})
    write_json(paths.train_summary(the_id), result.summary())
    return result


def train_network(network: str, data: dict | None = None, wbc: dict | None = None,
                  trainings: dict[str, dict] | None = None, paths: Paths = Paths(),
                  on_trained: Callable[[ModelKey, object], None] | None = None) -> list:
    """The stage of a network of ``wbc.stages.per_network``: its bottleneck features on both
    splits (as the features stages compute them), then every model of it (``wbc_models``:
    each regime, the pooled split, the repeats) in one process, into the network's folders
    (``Paths.group``). The frozen base is built once: the features and every frozen-regime
    model share it (a deep network takes seconds to build on a CPU). ``trainings``: each
    regime's ``training`` block; None (the stage): read from
    ``params/regimes/<regime>.yaml``. ``on_trained(key, result)`` runs after each model, while
    it is in memory (``evaluation.train_and_evaluate_network`` scores it there). Returns each
    model's ``train.RunResult``, in order."""


    wbc = read_block("wbc", wbc)
    settings = WbcSettings.from_params(wbc, data)
    keys = [key for key in wbc_models(wbc) if key.network == network]
    if not keys or keys[0].group != network:
        raise ValueError(f"{network!r} is not in params/wbc.yaml's wbc.stages.per_network "
                         f"({(wbc.get('stages') or {}).get('per_network')}): its models are "
                         "trained a stage each (notebooks/03-train.ipynb)")
    base = build_frozen_base(network, settings)
    for dataset in (WBC_DATASET, WBC_POOLED_DATASET):
        compute_bottleneck_features(dataset, network, settings, paths, base=base)
    # the regimes at an input size of their own (wbc.thesis_input) read features at that size
    for own_size in sorted({regime_and_size(key.regime)[1] for key in keys} - {None}):
        for dataset in (WBC_DATASET, WBC_POOLED_DATASET):
            compute_bottleneck_features(dataset, network, settings, paths, own_size=own_size)
    results = []
    for key in progress_bar(keys, desc=f"{network}: models", unit="model"):
        run = WbcRun.from_params(key.dataset, network, key.regime, data, wbc,
                                 None if trainings is None else trainings[key.regime],
                                 key.repeat_seed)
        frozen = run.base_regime in train.FROZEN_REGIMES and run.own_size is None
        shared = base if frozen else None
        results.append(train_wbc(run, key.paths(paths.root), frozen_base=shared))
        if on_trained is not None:
            on_trained(key, results[-1])
        keras.backend.clear_session()  # free the graphs of the model just trained
    return results


def one_hot_labels(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Class names -> one-hot rows in ``classes`` order."""

    return one_hot(class_index(pd.Series(labels), classes), len(classes))


def execution_chunk(steps: int, most: int = 50) -> int:
    """Steps run per call for a tiny head: a divisor of the epoch's steps (else Keras runs past
    an epoch's end into the next one's batches), at most ``most``."""
    return max(d for d in range(1, most + 1) if steps % d == 0)


def epochs_of(x: np.ndarray, y: np.ndarray, batch_size: int, epochs: int, augment: bool,
              seed: int, stain_jitter: float = 0.0):
    """The training-batch factory ``start_epoch -> dataset`` that ``train.fit`` resumes from."""

    return lambda start: make_epochs_dataset(x, y, batch_size, epochs, start, augment, seed,
                                             stain_jitter)


def predict(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for uint8 images."""

    return model.predict(make_dataset(images, None, batch_size), verbose=0)
