"""The speed benchmark: every claim as a ratio of two variants measured side by side, in one
process, on this machine.

    make bench                                    # = .venv/bin/python benchmarks/run.py
    make bench BENCH_ARGS=--quick                 # every section, tiny: does it all run?
    .venv/bin/python benchmarks/run.py --per-class 25 --epochs 1       # a quick look
    .venv/bin/python benchmarks/run.py --sections precision,accuracy

Speed on small shared machines swings by up to 2x between epochs, so compared variants are
interleaved (A B B A ... after one warm-up run of each, which also builds the graphs) and
every figure is a median. Only the ratios mean something; absolute times depend on the load.
Every section must print at least one ratio; the run exits 1 naming a section that did not.
``--quick`` runs every section, the optional ones too, on a few small images and steps, with
the custom CNN where a full run trains MobileNetV2 (``--network``; the transfer section keeps
MobileNetV2's ImageNet base): a check in about a minute on 2 cores that the benchmark runs,
whose figures mean nothing.
Sections (``--sections``, comma-separated; default all but the optional ones):

pipeline   one epoch of MobileNetV2 (random init, whole network trained): the study's input
           pipeline (``load_resized`` once, then ``make_epochs_dataset`` with augmentation)
           against the seeds' way (Keras ``ImageDataGenerator.flow_from_directory``: decode,
           resize and augment every image in Python, every epoch) and against the same step
           on synthetic in-memory tensors (the input pipeline's overhead)
transfer   an epoch of the transfer regime: the head on cached bottleneck features against
           recomputing the frozen ImageNet base every epoch
precision  a training step in float32 against mixed_bfloat16, MobileNetV2 96 px and the custom
           CNN (leukemia_cnn) 128 px (synthetic in-memory batches)
accuracy   (not in the default run; ``--precision-accuracy``) a few epochs of real training
           under each policy: validation accuracy and epoch time (MobileNetV2 fine-tuned on
           the WBC classes, the custom CNN from scratch on ALL-IDB2)
classify   the classifier's throughput (cells per second) with a saved MobileNetV2 model:
           ``leuko.tool.classify.classify_cells`` from files, and ``study.predict`` on decoded images;
           and evaluate-cells' forward pass over 8 views (``cells.outputs.view_outputs``) with 2
           threads calling the model against 1 (their outputs must be identical)
tracing    (not in the default run) the first epoch of a new MobileNetV2 (its graphs traced),
           the optimizer's, loss's and metrics' variables built first
           (``train.build_training_state``, as ``train.fit`` does) against Keras 3's default
           (built while the training step is traced, which TensorFlow then traces again)
dvc        ``dvc status`` and, when the pipeline is up to date, real no-op ``dvc repro`` runs
           with ruamel.yaml's C parser and with its pure-Python one (median of
           ``--dvc-repros``, 3, each; none with ``--quick``); parsing ``dvc.lock`` alone with each
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("pipeline", "transfer", "precision", "classify", "dvc")  # the default run
OPTIONAL = ("accuracy", "tracing")  # minutes of training, or of graph tracing
#: The settings of a full run, and of ``--quick`` (each overridden by its option if given).
#: ``--quick`` trains the custom CNN where a full run trains MobileNetV2 (``--network``): the
#: same code, without tracing MobileNetV2's graph a dozen times (20-40 s each on 2 cores).
DEFAULTS = {"network": "mobilenet_v2", "per_class": 100, "size": 96, "cnn_size": 128,
            "batch": 16, "epochs": 2, "precision_steps": 8, "accuracy_epochs": 4,
            "accuracy_networks": "mobilenet_v2,leukemia_cnn", "dvc_repros": 3}
QUICK = {"network": "leukemia_cnn", "per_class": 8, "size": 32, "cnn_size": 32, "batch": 4,
         "epochs": 1, "precision_steps": 2, "accuracy_epochs": 1,
         "accuracy_networks": "leukemia_cnn", "dvc_repros": 0}
#: What counts as a section's ratio in the table's result column ("1.26x slower", "+6.7 %").
RATIO = re.compile(r"\d(\.\d+)?x\b|\d %")
#: A full run's figures, committed: ``leuko.reporting.results_docs`` renders them (block ``bench``).
RECORD = Path("reports/ablation/bench.json")
WBC_TRAIN = ROOT / "data" / "blood-cell-images" / "images" / "TRAIN"
WBC_TEST = ROOT / "data" / "blood-cell-images" / "images" / "TEST"
ALL_IDB2 = ROOT / "data" / "all-idb2"
# The seeds' on-the-fly augmentation: rotations and flips (the recipes' "rotation + flip").
SEEDS_AUGMENTATION = {"rotation_range": 90, "horizontal_flip": True, "vertical_flip": True,
                      "fill_mode": "nearest"}


def say(*args) -> None:
    print(*args, flush=True)


# --- the machine ----------------------------------------------------------------------------


def machine_lines() -> list[str]:
    """The machine (``leuko.core.machine.describe``, the one description the stage times use too),
    the software and the load."""
    import keras
    import tensorflow as tf

    from leuko.core import machine
    info = machine.describe()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [f"machine   {machine.machine_line(info)}; native bfloat16 (AVX512-BF16/AMX): "
            f"{'yes' if info['avx512_bf16'] or info['amx'] else 'no'}; "
            f"GPUs: {len(tf.config.list_physical_devices('GPU'))}",
            f"software  Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"Keras {keras.__version__}",
            f"load      {load} (1/5/15-min load average at the start)"]


# --- timing -----------------------------------------------------------------------------------


@dataclass
class Timing:
    """One timed epoch: its wall-clock seconds and the seconds of each training step."""

    seconds: float
    steps: np.ndarray
    logs: dict = field(default_factory=dict)


@dataclass
class Series:
    """The timings of one variant across the interleaved runs."""

    runs: list[Timing] = field(default_factory=list)
    warm: float = float("nan")  # wall-clock seconds of the warm-up call (graph building)

    @property
    def epoch(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def step(self) -> float:
        steps = np.concatenate([r.steps for r in self.runs])
        return float(np.median(steps)) if len(steps) else float("nan")


def make_step_timer():
    import keras

    class StepTimer(keras.callbacks.Callback):
        """Wall-clock time of an epoch and between consecutive batch ends (a whole training
        step: waiting for the batch included)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.marks = [time.perf_counter()]

        def on_train_batch_end(self, batch, logs=None):
            self.marks.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            self.end = time.perf_counter()
            self.logs = dict(logs or {})

        def timing(self) -> Timing:
            return Timing(self.end - self.marks[0], np.diff(self.marks), self.logs)

    return StepTimer()


def fit_epoch(model, data, steps: int | None = None) -> Timing:
    """Train ``model`` for one epoch on ``data``; its timing."""
    timer = make_step_timer()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
    return timer.timing()


def fit_epochs(model, data, steps: int, epochs: int) -> Timing:
    """Train ``model`` for ``epochs`` epochs in one ``fit`` call, as the study does; the wall
    clock per epoch (``fit``'s per-call overhead shared out)."""
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=epochs, verbose=0)
    return Timing((time.perf_counter() - start) / epochs, np.array([]))


def interleaved(variants: dict[str, Callable[[], Timing]], reps: int,
                warmup: dict[str, Callable[[], object]] | None = None) -> dict[str, Series]:
    """Run each variant once to warm up (graph building; discarded; ``warmup`` may give a
    cheaper call per variant), then ``reps`` times each, interleaved A B C, C B A, A B C ...
    so slow phases of the machine hit all variants alike."""
    names = list(variants)
    series = {name: Series() for name in names}
    for name in names:
        start = time.perf_counter()
        (warmup or variants)[name]()
        series[name].warm = time.perf_counter() - start
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            series[name].runs.append(variants[name]())
    return series


# --- data -----------------------------------------------------------------------------------


def pick_images(root: Path, per_class: int, seed: int) -> tuple[list[Path], list[str]]:
    """``per_class`` images of every class folder of ``root``, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jp*g"))
        if len(files) < per_class:
            raise SystemExit(f"{folder} has {len(files)} images, fewer than --per-class "
                             f"{per_class}")
        for i in sorted(rng.choice(len(files), per_class, replace=False)):
            paths.append(files[i])
            labels.append(folder.name)
    return paths, labels


def one_hot(labels: list[str]) -> tuple[np.ndarray, list[str]]:
    classes = sorted(set(labels))
    index = np.array([classes.index(label) for label in labels])
    return np.eye(len(classes), dtype=np.float32)[index], classes


def class_tree(paths: list[Path], labels: list[str], folder: Path) -> Path:
    """A ``class/image`` folder of links to the chosen images, for ``flow_from_directory``."""
    for path, label in zip(paths, labels, strict=True):
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / path.name).symlink_to(path.resolve())
    return folder


def synthetic_batches(batch: int, size: int, n_classes: int, seed: int):
    """An endless dataset repeating one in-memory float32 batch: training with no input
    pipeline to speak of (its element spec equals the real pipeline's, so a model traced on
    one runs the other without retracing)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (batch, size, size, 3)).astype(np.float32)
    y = np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, batch)]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()


def new_model(network: str, n_classes: int, size: int, seed: int, learning_rate: float = 1e-3,
              pretrained: bool = False, precision: str = "float32", channel_mean=None,
              head=None, steps_per_execution: int = 1):
    """A compiled classifier as the study builds it (same seed -> same initial weights); a
    network that centres its input (the custom CNN) on ``channel_mean``, by default 0.5."""
    import keras

    from leuko.core import accel
    from leuko.models import networks, train
    if channel_mean is None and networks.get_network(network).preprocessing == "unit_centred":
        channel_mean = (0.5, 0.5, 0.5)
    accel.set_precision(precision)
    try:
        keras.utils.set_random_seed(seed)
        kwargs = {"head": head} if head is not None else {}
        model = networks.build_classifier(network, n_classes, size, pretrained=pretrained,
                                          channel_mean=channel_mean, **kwargs)
        train.compile_model(model, train.FitConfig(
            batch_size=16, learning_rate=learning_rate, seed=seed,
            steps_per_execution=steps_per_execution))
    finally:
        accel.set_precision("float32")
    return model


# --- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    ours: str
    other: str
    result: str
    target: str = ""
    met: bool | None = None


def table(rows: list[Row]) -> str:
    """The rows as the fixed-width table printed here and in the docs (block ``bench``)."""
    from leuko.reporting.results_docs import bench_table

    return bench_table([vars(row) for row in rows])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


@dataclass
class Context:
    """What the sections share: the settings, the chosen images (decoded once per size) and
    the float32 model of ``--network`` (MobileNetV2), whose graph is built once (the slowest
    part of a run here)."""

    args: argparse.Namespace
    paths: list[Path]
    labels: list[str]
    images: dict[int, np.ndarray] = field(default_factory=dict)
    models: dict[str, object] = field(default_factory=dict)

    def decoded(self, size: int) -> np.ndarray:
        from leuko.core.inputs import load_resized

        if size not in self.images:
            self.images[size] = load_resized(self.paths, size, progress=False)
        return self.images[size]

    @property
    def network(self) -> str:
        """The name the rows give the network of ``--network``."""
        return "MobileNetV2" if self.args.network == "mobilenet_v2" else self.args.network

    def mobilenet(self):
        """The float32 model of ``--network`` (MobileNetV2, random init, whole network
        trained) of the study's size."""
        if "mobilenet_v2" not in self.models:
            self.models["mobilenet_v2"] = new_model(self.args.network, len(set(self.labels)),
                                                    self.args.size, self.args.seed)
        return self.models["mobilenet_v2"]


# --- sections ---------------------------------------------------------------------------------


def bench_pipeline(ctx: Context) -> list[Row]:
    """Our input pipeline vs the seeds' ImageDataGenerator vs synthetic tensors, one model."""
    import tensorflow as tf

    from leuko.core.inputs import load_resized, make_epochs_dataset, steps_per_epoch

    args = ctx.args
    y, classes = one_hot(ctx.labels)
    start = time.perf_counter()
    x = ctx.images[args.size] = load_resized(ctx.paths, args.size, progress=False)
    decode_s = time.perf_counter() - start
    steps = steps_per_epoch(len(x), args.batch)
    say(f"pipeline: {len(x)} images decoded and resized to {args.size} px once in "
        f"{decode_s:.1f} s ({len(x) / decode_s:.0f} img/s); {steps} steps per epoch")

    generator = tf.keras.preprocessing.image.ImageDataGenerator(**SEEDS_AUGMENTATION)
    tree = class_tree(ctx.paths, ctx.labels, Path(tempfile.mkdtemp(prefix="bench-flow-")))
    model = ctx.mobilenet()  # one model for all three: the same step, only the data differ
    try:
        flow = generator.flow_from_directory(
            str(tree), target_size=(args.size, args.size), batch_size=args.batch,
            class_mode="categorical", classes=classes, seed=args.seed, shuffle=True)
        synthetic = synthetic_batches(args.batch, args.size, len(classes), args.seed)
        epoch = {"n": 0}

        def ours() -> Timing:  # the study's way: a dataset per epoch, as train.fit resumes
            epoch["n"] += 1
            data = make_epochs_dataset(x, y, args.batch, epoch["n"], epoch["n"] - 1,
                                       augment=True, seed=args.seed)
            return fit_epoch(model, data, steps)

        series = interleaved({
            "ours": ours,
            "seeds": lambda: fit_epoch(model, flow),
            "synthetic": lambda: fit_epoch(model, synthetic, steps),
        }, args.epochs)

        def ours_data() -> Timing:  # the batches alone, no model
            epoch["n"] += 1
            data = make_epochs_dataset(x, y, args.batch, epoch["n"], epoch["n"] - 1,
                                       augment=True, seed=args.seed)
            start = time.perf_counter()
            for _ in data:
                pass
            return Timing(time.perf_counter() - start, np.array([]))

        def seeds_data() -> Timing:
            start = time.perf_counter()
            for i in range(len(flow)):
                flow[i]
            flow.on_epoch_end()
            return Timing(time.perf_counter() - start, np.array([]))

        data_only = interleaved({"ours": ours_data, "seeds": seeds_data}, 3)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    o, s, z = series["ours"], series["seeds"], series["synthetic"]
    for name, item in series.items():
        say(f"  {name:9s} epochs " + " ".join(f"{r.seconds:.1f}" for r in item.runs)
            + f" s; median step {ms(item.step)}")
    ratio = s.epoch / o.epoch
    overhead = o.step / z.step - 1
    od, sd = data_only["ours"].epoch, data_only["seeds"].epoch
    say(f"  batches alone (no model), one epoch: ours {od:.2f} s, seeds {sd:.2f} s")
    return [
        Row(f"epoch, {ctx.network} {args.size}px, {len(x)} images", f"{o.epoch:.1f} s",
            f"ImageDataGenerator {s.epoch:.1f} s", f"{ratio:.2f}x faster", ">= 3x",
            ratio >= 3),
        Row("  one-off decode+resize (load_resized)", f"{decode_s:.1f} s", "",
            f"{decode_s / o.epoch:.2f} epochs' time"),
        Row("step, real data vs synthetic tensors", ms(o.step), f"synthetic {ms(z.step)}",
            f"{overhead * 100:+.1f} % overhead", "<= 5 %", overhead <= 0.05),
        Row("  epoch, real data vs synthetic tensors", f"{o.epoch:.1f} s",
            f"synthetic {z.epoch:.1f} s", f"{(o.epoch / z.epoch - 1) * 100:+.1f} % overhead"),
        Row("  batches alone (no model), one epoch", f"{od:.2f} s",
            f"ImageDataGenerator {sd:.2f} s", f"{sd / od:.0f}x faster; ours = "
            f"{od / steps / o.step * 100:.1f} % of a step"),
    ]


def bench_transfer(ctx: Context) -> list[Row]:
    """The head on cached bottleneck features vs recomputing the frozen base every epoch."""
    from leuko.core.inputs import make_epochs_dataset, steps_per_epoch
    from leuko.models import networks, train
    from leuko.thesis import study

    args = ctx.args
    y, classes = one_hot(ctx.labels)
    x = ctx.decoded(args.size)
    steps = steps_per_epoch(len(x), args.batch)
    entry = networks.get_network("mobilenet_v2")
    base = entry.build((args.size, args.size, 3), True)
    base.trainable = False
    start = time.perf_counter()
    features = train.compute_features(base, networks.Preprocess(entry.preprocessing), x, 64)
    features_s = time.perf_counter() - start
    # train_wbc runs the head 50 steps per execution; Keras then needs steps per epoch to be a
    # multiple of it (else each epoch overruns into the next one's batches), so: the largest
    # divisor of the steps per epoch up to 50
    per_execution = max(d for d in range(1, 51) if steps % d == 0)
    head_config = train.FitConfig(batch_size=args.batch, seed=args.seed,
                                  steps_per_execution=per_execution)
    head = train.compile_model(networks.build_head(features.shape[1], len(classes)),
                               head_config)
    whole = networks.build_classifier("mobilenet_v2", len(classes), args.size, True,
                                      base=base)
    train.compile_model(whole, train.FitConfig(batch_size=args.batch, seed=args.seed))
    epoch = {"cached": 0, "recompute": 0}
    per_call = 10  # the head's epochs per fit call: the study runs all its epochs in one

    def cached() -> Timing:  # as train_wbc: epochs_of the features, many steps per execution
        epoch["cached"] += per_call
        data = study.epochs_of(features, y, args.batch, epoch["cached"], False,
                               args.seed)(epoch["cached"] - per_call)
        return fit_epochs(head, data, steps, per_call)

    def recompute() -> Timing:  # the frozen base runs forward over every image every epoch
        epoch["recompute"] += 1
        data = make_epochs_dataset(x, y, args.batch, epoch["recompute"], epoch["recompute"] - 1,
                                   augment=False, seed=args.seed)
        return fit_epochs(whole, data, steps, 1)

    series = interleaved({"cached": cached, "recompute": recompute}, max(args.epochs, 2))
    c, r = series["cached"], series["recompute"]
    say(f"transfer: features of {len(x)} images in {features_s:.1f} s (graph built once "
        f"included); s/epoch cached " + " ".join(f"{t.seconds:.3f}" for t in c.runs)
        + f" ({per_call} epochs per fit), recomputed "
        + " ".join(f"{t.seconds:.1f}" for t in r.runs))
    # the transfer regime's epochs, read as the study reads them (its ``training`` block)
    epochs = study.RegimeSettings.from_params("imagenet").epochs
    ratio = r.epoch / c.epoch
    # a whole run: graph building (the warm-up call minus its epochs) + its epochs; the
    # cached regime also pays the one forward pass for the features
    cached_total = features_s + max(0.0, c.warm - per_call * c.epoch) + epochs * c.epoch
    recompute_total = max(0.0, r.warm - r.epoch) + epochs * r.epoch
    total = recompute_total / cached_total
    return [
        Row("transfer epoch, cached features vs frozen base", f"{c.epoch:.3f} s",
            f"recompute {r.epoch:.1f} s", f"{ratio:.0f}x faster", ">= 20x", ratio >= 20),
        Row(f"  a {epochs}-epoch run, incl. feature pass+graphs", f"{cached_total:.0f} s",
            f"recompute {recompute_total:.0f} s", f"{total:.1f}x faster"),
    ]



def bench_tracing(ctx: Context) -> list[Row]:
    """A new model's first epoch, training state built before ``fit`` or while tracing."""
    import keras

    from leuko.core.inputs import make_dataset
    from leuko.models import train

    args = ctx.args
    images = ctx.decoded(args.size)
    y, classes = one_hot(ctx.labels)
    n_train, n_val = 4 * args.batch, 2 * args.batch
    if len(images) < n_train + n_val:
        raise SystemExit(f"tracing needs {n_train + n_val} images: raise --per-class")
    train_data = make_dataset(images[:n_train], y[:n_train], args.batch)
    val_data = make_dataset(images[n_train:n_train + n_val], y[n_train:n_train + n_val],
                            args.batch)

    def first_epoch(prebuilt: bool) -> Timing:
        keras.backend.clear_session()
        model = new_model(args.network, len(classes), args.size, args.seed)
        start = time.perf_counter()
        if prebuilt:
            train.build_training_state(model, val_data)
        model.fit(train_data, validation_data=val_data, epochs=1, verbose=0)
        return Timing(time.perf_counter() - start, np.array([]))

    variants = {"built first": partial(first_epoch, True),
                "while tracing": partial(first_epoch, False)}
    series = interleaved(variants, args.epochs, warmup={k: lambda: None for k in variants})
    first, default = series["built first"].epoch, series["while tracing"].epoch
    say(f"tracing: {args.network} {args.size}px first epoch ({n_train} images): state built "
        f"first {first:.1f} s, while tracing {default:.1f} s")
    return [Row(f"first epoch {args.network} {args.size}px, state built first", f"{first:.1f} s",
                f"while tracing {default:.1f} s", f"{default / first:.2f}x faster",
                "> 1x", default > first)]


def bench_precision(ctx: Context) -> list[Row]:
    """Training step time, float32 vs mixed_bfloat16, on synthetic in-memory batches."""
    args = ctx.args
    rows = []
    pairs = dict.fromkeys([(args.network, args.size), ("leukemia_cnn", args.cnn_size)])
    for network, size in pairs:
        shared = network == args.network and size == args.size  # ctx's model: built already
        models = {p: new_model(network, 4, size, args.seed, precision=p)
                  for p in ("float32", "mixed_bfloat16") if not (shared and p == "float32")}
        if shared:
            models = {"float32": ctx.mobilenet(), **models}
        data = synthetic_batches(args.batch, size, 4, args.seed)
        series = interleaved(
            {p: partial(fit_epoch, m, data, args.precision_steps) for p, m in models.items()},
            args.epochs, warmup={p: partial(fit_epoch, m, data, 2) for p, m in models.items()})
        f, b = series["float32"].step, series["mixed_bfloat16"].step
        say(f"precision: {network} {size}px step float32 {ms(f)}, mixed_bfloat16 {ms(b)}")
        rows.append(Row(f"train step {network} {size}px, float32 vs bf16", ms(f),
                        f"mixed_bfloat16 {ms(b)}",
                        f"bf16 {f / b:.2f}x faster" if b < f else f"bf16 {b / f:.2f}x slower"))
    return rows


def bench_precision_accuracy(ctx: Context) -> list[Row]:
    """A few epochs of real training under each policy: validation accuracy and epoch time."""
    from leuko.core.inputs import load_resized, make_dataset, make_epochs_dataset, steps_per_epoch

    args = ctx.args
    rows = []
    # MobileNetV2 fine-tuned from ImageNet on the 4 WBC classes (TRAIN -> a TEST sample)
    train_paths, train_labels = pick_images(WBC_TRAIN, args.per_class, args.seed)
    val_paths, val_labels = pick_images(WBC_TEST, max(10, args.per_class // 2), args.seed + 1)
    tasks = [("mobilenet_v2", args.size, train_paths, train_labels, val_paths, val_labels,
              True, 1e-4)]
    # the custom CNN from scratch on ALL-IDB2 (blast _1 vs healthy _0), a seeded 75:25 split;
    # the default head and rate 1e-3, so that a few epochs already learn something (with the
    # recipe's l1_l2 head and 1e-4, 4 epochs stay at the majority class under both policies)
    files = sorted(ALL_IDB2.glob("*.tif"))
    if files:  # all 260 images; at most 8 per class of --per-class (--quick: 64)
        order = np.random.default_rng(args.seed).permutation(len(files))
        order = order[:min(len(files), 8 * args.per_class)]
        cut = int(0.75 * len(order))
        label = [f.stem.rsplit("_", 1)[-1] for f in files]
        tasks.append(("leukemia_cnn", args.cnn_size, [files[i] for i in order[:cut]],
                      [label[i] for i in order[:cut]], [files[i] for i in order[cut:]],
                      [label[i] for i in order[cut:]], False, 1e-3))
    for network, size, tp, tl, vp, vl, pretrained, lr in tasks:
        if network not in args.accuracy_networks:
            continue
        y, classes = one_hot(tl)
        yv = np.eye(len(classes), dtype=np.float32)[[classes.index(v) for v in vl]]
        x, xv = load_resized(tp, size, progress=False), load_resized(vp, size, progress=False)
        mean = tuple(float(m) for m in x.reshape(-1, 3).mean(axis=0) / 255.0)
        steps = steps_per_epoch(len(x), args.batch)
        result = {}
        for policy in ("float32", "mixed_bfloat16"):
            model = new_model(network, len(classes), size, args.seed, lr, pretrained, policy,
                              mean if network == "leukemia_cnn" else None)
            runs = []
            for e in range(args.accuracy_epochs):
                data = make_epochs_dataset(x, y, args.batch, e + 1, e, augment=True,
                                           seed=args.seed)
                runs.append(fit_epoch(model, data, steps))
            loss, acc = model.evaluate(make_dataset(xv, yv, args.batch), verbose=0)
            train_acc = float(runs[-1].logs.get("accuracy", float("nan")))
            train_loss = float(runs[-1].logs.get("loss", float("nan")))
            seconds = statistics.median([r.seconds for r in runs[1:] or runs])
            result[policy] = (acc, loss, train_acc, seconds)
            say(f"accuracy: {network} {size}px {policy}: val accuracy {acc:.3f}, val loss "
                f"{loss:.3f}; last epoch's train accuracy {train_acc:.3f}, loss "
                f"{train_loss:.3f}; epochs " + " ".join(f"{r.seconds:.1f}" for r in runs) + " s")
        (fa, _, ftr, ft), (ba, _, btr, bt) = result["float32"], result["mixed_bfloat16"]
        rows.append(Row(f"{network} {size}px, {args.accuracy_epochs} epochs, "
                        f"{len(x)}/{len(xv)} img",
                        f"val acc {fa:.3f} (train {ftr:.3f}) {ft:.1f} s/ep",
                        f"bf16 val acc {ba:.3f} (train {btr:.3f}) {bt:.1f} s/ep",
                        f"val acc {ba - fa:+.3f}, time {bt / ft:.2f}x"))
    return rows


def bench_classify(ctx: Context) -> list[Row]:
    """Cells per second of the classifier with a saved MobileNetV2 model."""
    from leuko.thesis import study
    args, paths = ctx.args, ctx.paths
    classes = sorted(set(ctx.labels))
    folder = Path(tempfile.mkdtemp(prefix="bench-model-"))
    rows = []
    try:
        model_path = study.save_model(ctx.mobilenet(), folder / "wbc.keras")
        model_path.with_suffix(".json").write_text(json.dumps(
            {"classes": classes, "input_size": [args.size, args.size], "crop": None}))
        try:
            from leuko.tool import classify
        except ImportError:
            classify = None

        variants = {}
        if classify is not None and hasattr(classify, "classify_cells"):
            classifier = classify.load_classifier(model_path)

            def cells() -> Timing:
                start = time.perf_counter()
                done = sum(1 for _ in classify.classify_cells(paths, classifier))
                assert done == len(paths)
                return Timing(time.perf_counter() - start, np.array([]))

            variants["classify_cells"] = cells
        loaded = study.load_model(model_path)
        x = ctx.decoded(args.size)

        def predict() -> Timing:
            start = time.perf_counter()
            study.predict(loaded, x)
            return Timing(time.perf_counter() - start, np.array([]))

        variants["predict"] = predict
        from leuko.cells.outputs import view_outputs
        outputs = {}
        for threads in (1, 2):  # evaluate-cells' forward pass: 8 views, 1 or 2 calling threads
            def views(threads: int = threads) -> Timing:
                start = time.perf_counter()
                outputs[threads] = view_outputs(loaded, x, 8, progress=False, threads=threads)
                return Timing(time.perf_counter() - start, np.array([]))

            variants[f"views-{threads}"] = views
        series = interleaved(variants, 2)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    same = all(np.array_equal(a, b) for a, b in zip(outputs[1], outputs[2], strict=True))
    ratio = series["views-1"].epoch / series["views-2"].epoch
    rows.append(Row(f"forward pass, 8 views, {ctx.network} {args.size}px",
                    f"{8 * len(x) / series['views-2'].epoch:.0f} views/s",
                    "cells.outputs.view_outputs, 2 calling threads vs 1",
                    f"{ratio:.2f}x faster; outputs {'identical' if same else 'DIFFER'}",
                    "identical outputs", same))
    for name, item in series.items():
        rate = len(paths) / item.epoch
        say(f"classify: {name}: " + " ".join(f"{r.seconds:.1f}" for r in item.runs)
            + f" s for {len(paths)} cells -> {rate:.0f} cells/s")
    model_rate = len(paths) / series["predict"].epoch
    if "classify_cells" in series:
        rate = len(paths) / series["classify_cells"].epoch
        rows.append(Row(f"classifier, {ctx.network} {args.size}px, files in",
                        f"{rate:.0f} cells/s", "leuko.tool.classify.classify_cells",
                        f"{rate / model_rate:.2f}x the model's own rate",
                        ">= 100 cells/s", rate >= 100))
    rate = model_rate
    rows.append(Row("  model only (study.predict, decoded images)", f"{rate:.0f} cells/s",
                    "", "", ">= 100 cells/s", rate >= 100))
    return rows


def yaml_parse_rows() -> list[Row]:
    """``dvc.lock`` parsed as DVC parses it (ruamel.yaml, ``typ="safe"``): with the C parser
    (package ruamel.yaml.clib) against the pure-Python one, interleaved, median of 5 each."""
    from ruamel.yaml import YAML
    from ruamel.yaml.main import CParser

    text = (ROOT / "dvc.lock").read_text()
    if CParser is None:
        return [Row("dvc.lock parse, C vs pure-Python YAML", "no C parser", "", "ruamel.yaml"
                    ".clib is not installed: run make env")]
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(5):
        for pure in (False, True):
            start = time.perf_counter()
            YAML(typ="safe", pure=pure).load(text)
            times[pure].append(time.perf_counter() - start)
    c, py = statistics.median(times[False]), statistics.median(times[True])
    return [Row(f"dvc.lock parse ({len(text) // 1000} KB), C vs pure YAML", ms(c),
                f"pure Python {ms(py)}", f"{py / c:.1f}x faster")]


PURE_YAML_DVC = ("import sys, ruamel.yaml.main as m; m.CParser = m.CEmitter = None; "
                 "from dvc.cli import main; sys.exit(main(sys.argv[1:]))")
"""``dvc`` with ruamel.yaml's C parser switched off: what DVC costs without ruamel.yaml.clib."""


def bench_dvc(repros: int = 3) -> list[Row]:
    """``dvc status``; then, only when the pipeline is up to date and ``repros`` > 0, no-op
    ``dvc repro`` runs with ruamel.yaml's C parser and with its pure-Python one, interleaved
    (median of ``repros`` each); and the lock file's parse alone with each parser."""
    dvc = str(Path(sys.executable).parent / "dvc")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def timed(*cmd: str, pure: bool = False) -> tuple[float, subprocess.CompletedProcess]:
        program = [sys.executable, "-c", PURE_YAML_DVC] if pure else [dvc]
        start = time.perf_counter()
        done = subprocess.run([*program, *cmd], cwd=ROOT, capture_output=True, text=True,
                              env=env, timeout=600)
        return time.perf_counter() - start, done

    parse = yaml_parse_rows()
    status_s, status = timed("status")
    out = (status.stdout + status.stderr).strip()
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    if status.returncode == 0 and not errors and "up to date" in out and repros > 0:
        runs: dict[bool, list] = {False: [], True: []}
        for _ in range(repros):
            for pure in (False, True):
                runs[pure].append(timed("repro", pure=pure))
        noop = all(done.returncode == 0 and ("up to date" in done.stdout + done.stderr
                                             or "didn't change" in done.stdout + done.stderr)
                   for both in runs.values() for _, done in both)
        repro_s, pure_s = (statistics.median(s for s, _ in runs[p]) for p in (False, True))
        say(f"dvc: status {status_s:.1f} s (up to date); repro "
            f"{', '.join(f'{s:.1f}' for s, _ in runs[False])} s, with pure-Python YAML "
            f"{', '.join(f'{s:.1f}' for s, _ in runs[True])} s")
        return [Row(f"no-op dvc repro (median of {repros})", f"{repro_s:.1f} s",
                    f"pure-Python YAML {pure_s:.1f} s",
                    f"{pure_s / repro_s:.2f}x faster" if noop else "NOT a no-op", "<= 3 s",
                    noop and repro_s <= 3),
                Row("  dvc status", f"{status_s:.1f} s", "", ""), *parse]
    if status.returncode == 0 and not errors and "up to date" in out:
        why = "pipeline up to date; --dvc-repros 0"
    elif errors:
        busy = "is busy" in errors[0]
        why = ("another dvc process holds the lock (a pipeline is running)" if busy
               else f"dvc status failed: {errors[0][:80]}")
    else:
        changed = sum(1 for line in status.stdout.splitlines()
                      if line and not line[0].isspace() and line.rstrip().endswith(":"))
        why = f"pipeline not up to date ({changed} stage(s) changed)"
    say(f"dvc: status {status_s:.1f} s; {why}: no repro run"
        + ("" if repros == 0 else " (it would not be a no-op)"))
    return [Row("dvc status (no-op repro not run)", f"{status_s:.1f} s", "",
                f"{why}; no repro", "repro <= 3 s"), *parse]


# --- main -----------------------------------------------------------------------------------


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="every section, the optional ones too, on a few small images and "
                             "steps with the custom CNN (about a minute): a check that it all "
                             "runs; the figures mean nothing. Settings: " + ", ".join(
                                 f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    parser.add_argument("--sections", default=None,
                        help=f"comma-separated, of {', '.join(SECTIONS + OPTIONAL)} "
                             f"(default: {','.join(SECTIONS)}; with --quick all)")
    parser.add_argument("--per-class", type=int, default=None,
                        help="training images per class from blood-cell-images TRAIN (4 "
                             f"classes; default {DEFAULTS['per_class']})")
    parser.add_argument("--size", type=int, default=None,
                        help=f"MobileNetV2 input size (px; default {DEFAULTS['size']})")
    parser.add_argument("--cnn-size", type=int, default=None,
                        help=f"leukemia_cnn input size (default {DEFAULTS['cnn_size']})")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"default {DEFAULTS['batch']}")
    parser.add_argument("--epochs", type=int, default=None,
                        help="measured epochs per variant, after one warm-up epoch each "
                             f"(default {DEFAULTS['epochs']})")
    parser.add_argument("--precision-steps", type=int, default=None,
                        help="training steps per timed run in the precision section "
                             f"(default {DEFAULTS['precision_steps']})")
    parser.add_argument("--precision-accuracy", action="store_true",
                        help="add the section 'accuracy': a few epochs of training under "
                             "each precision (minutes)")
    parser.add_argument("--accuracy-epochs", type=int, default=None,
                        help=f"default {DEFAULTS['accuracy_epochs']}")
    parser.add_argument("--accuracy-networks", default=None,
                        help="networks of --precision-accuracy (comma-separated; default "
                             f"{DEFAULTS['accuracy_networks']})")
    parser.add_argument("--network", default=None,
                        help="the network of the sections pipeline, precision, classify and "
                             f"tracing (default {DEFAULTS['network']}; the transfer section "
                             "always uses MobileNetV2's ImageNet base)")
    parser.add_argument("--dvc-repros", type=int, default=None,
                        help="no-op `dvc repro` runs per YAML parser in the dvc section, when "
                             f"the pipeline is up to date (default {DEFAULTS['dvc_repros']}; "
                             "0: `dvc status` only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", type=Path, default=RECORD,
                        help="where a full run (default settings and sections, no --quick) "
                             f"writes its machine, settings and table (default {RECORD}; "
                             "`make results` renders it in docs/experiments/thesis.md)")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    sections = args.sections or ",".join(SECTIONS + OPTIONAL if args.quick else SECTIONS)
    args.sections = [s.strip() for s in sections.split(",") if s.strip()]
    args.accuracy_networks = [n.strip() for n in args.accuracy_networks.split(",")]
    if args.precision_accuracy and "accuracy" not in args.sections:
        args.sections.append("accuracy")
    unknown = sorted(set(args.sections) - set(SECTIONS + OPTIONAL))
    if unknown:
        parser.error(f"sections must be among {SECTIONS + OPTIONAL}, got {unknown}")
    return args


def is_full_run(args: argparse.Namespace, argv) -> bool:
    """Whether this run's figures are the benchmark's record: default settings and sections,
    no ``--quick`` (only ``--record`` and ``--seed`` may be given)."""
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--")]
    return (not args.quick and list(args.sections) == list(SECTIONS)
            and all(a.split("=")[0] in ("--record", "--seed") for a in given))


def write_record(path: Path, header: list[str], rows: list[Row], total_s: float) -> None:
    """The run's machine, settings, table rows, total time, commit and date as JSON."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    record = {"date": time.strftime("%Y-%m-%d"), "commit": commit, "total_s": round(total_s),
              "header": header, "rows": [vars(row) for row in rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def run_section(section: str, ctx: Context) -> list[Row]:
    """One section's rows."""
    benches = {"pipeline": bench_pipeline, "transfer": bench_transfer,
               "precision": bench_precision, "accuracy": bench_precision_accuracy,
               "classify": bench_classify, "tracing": bench_tracing,
               "dvc": lambda ctx: bench_dvc(ctx.args.dvc_repros)}
    return benches[section](ctx)


def main(argv=None) -> int:
    args = parse(argv)
    os.chdir(ROOT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT / "lib"))
    begin = time.perf_counter()
    from leuko.models import train
    header = machine_lines() + [
        f"settings  {' '.join(sys.argv[1:] if argv is None else argv) or '(defaults)'}; "
        f"seed {args.seed}; batch {args.batch}; {args.per_class} images per class at "
        f"{args.size} px; medians of {args.epochs} interleaved runs after a warm-up"]
    for line in header:
        say(line)
    if args.quick:
        say("quick     a check that every section runs: its figures mean nothing")
    train.set_determinism(args.seed)
    rows: list[Row] = []
    if not WBC_TRAIN.is_dir():
        raise SystemExit(f"{WBC_TRAIN} missing: run `make data` first")
    ctx = Context(args, *pick_images(WBC_TRAIN, args.per_class, args.seed))
    without_ratio = []
    for section in args.sections:
        start = time.perf_counter()
        found = run_section(section, ctx)
        if not any(RATIO.search(row.result) for row in found):
            without_ratio.append(section)
        rows += found
        say(f"[{section}: {time.perf_counter() - start:.0f} s]")
    say("")
    say(table(rows))
    total = time.perf_counter() - begin
    say(f"\ntotal {total:.0f} s")
    if is_full_run(args, argv):
        write_record(args.record, header, rows, total)
        say(f"recorded in {args.record}")
    if without_ratio:
        say(f"error: section(s) without a ratio in the table: {', '.join(without_ratio)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
