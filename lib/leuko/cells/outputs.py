"""A cell model's penultimate features and class probabilities: the model split at its last
layer (:func:`split_head`, :func:`features_and_output`; novelty's distance, ``leuko adapt`` and
``leuko classify`` use it), and one forward pass over the study's cells, kept for the stages
that read it.

Three stages look at the same cells through the same models: evaluate-cells scores each
model's class probabilities on the test parts and the unseen lab, novelty fits a distance on
its penultimate features over the whole cache, adapt-cells refits its last layer on those
features. Each used to run the network itself, over 8 views of each cell: the same forward
passes two and three times. :func:`model_outputs` runs them once per model (evaluate-cells),
with both outputs of :func:`features_and_output` from each pass, and
:func:`save_outputs` keeps them in ``build/cell-outputs/<model id>.npz``
(:func:`outputs_path`); novelty and adapt-cells read them with :func:`load_outputs`,
which checks that they are of that model file and of the caches' rows.

Per group of cells (``cells``: the study's cell cache, ``build/cells/cells.npz``, in its row
order; then each unseen lab by name, its own cache):

- ``features``: the penultimate features of each view, ``(views, N, D)`` float32 (view 0 is the
  cell as prepared, :func:`leuko.cells.preprocess.dihedral_views`);
- ``probabilities``: the class probabilities averaged over the views, ``(N, classes)``,
  uncalibrated, as :func:`leuko.cells.preprocess.mean_over_views` averages them;
- ``paths``: the row paths they belong to.

The forward pass is batched in the caches' order and gives each row what a pass over that
row's part alone gives (oneDNN's kernels here do not mix rows of a batch): the figures of the
study did not move when the three stages began to share it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from leuko.cells.multisource import CellCache
from leuko.cells.preprocess import average_views, dihedral_views
from leuko.core.atomic import atomic_write
from leuko.core.images import file_sha256
from leuko.core.progress import progress_bar
from leuko.thesis.study import Paths


# --------------------------------------------------------------------------------------------
# a model split at its penultimate features
# --------------------------------------------------------------------------------------------
class HeadError(ValueError):
    """The model's output is not a softmax Dense on penultimate features; the message says
    what it is."""


@dataclass
class Head:
    """A model split at its last layer: ``features`` (a Keras model, image -> penultimate
    features) and ``dense`` (the model's softmax Dense layer itself, with its weights)."""

    features: object
    dense: object

    @property
    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        kernel, bias = self.dense.get_weights()
        return kernel.astype(np.float64), bias.astype(np.float64)


def _producer(tensor):
    operation, node_index, _ = tensor._keras_history
    return operation, operation._inbound_nodes[node_index]


def split_head(model) -> Head:
    """The model's penultimate-feature sub-model and its last (softmax Dense) layer, looking
    through nested functional models (``Input -> Preprocess -> base -> head``). HeadError for
    any other output (an averaged ensemble, a non-softmax output)."""

    def split(inner):
        if len(inner.outputs) != 1:
            raise HeadError(f"{inner.name} has {len(inner.outputs)} outputs; expected one")
        layer, node = _producer(inner.outputs[0])
        below = node.input_tensors
        if isinstance(layer, keras.layers.Dense):
            if getattr(layer.activation, "__name__", "") != "softmax":
                raise HeadError(f"the last layer {layer.name} is not a softmax Dense")
            return keras.Model(inner.inputs, below[0]), layer
        if isinstance(layer, keras.Model) and len(below) == 1:
            features, dense = split(layer)
            return keras.Model(inner.inputs, features(below[0])), dense
        raise HeadError(
            f"the model's output comes from {type(layer).__name__} {layer.name!r}, not a "
            "softmax Dense layer on penultimate features (for an averaged ensemble, use one "
            "of its members)")

    features, dense = split(model)
    return Head(features, dense)


def features_and_output(model) -> keras.Model:
    """The model with two outputs, its penultimate features and its class probabilities, from
    one pass (the softmax Dense applied to the features, as in the model)."""
    head = split_head(model)
    below = head.features.outputs[0]
    return keras.Model(head.features.inputs, [below, head.dense(below)])


#: Threads that call the traced model on batches in turn: on 2 cores one thread leaves a core
#: idle between TensorFlow's calls (NumPy copies, Python); a batch's outputs do not depend on
#: which thread ran it (``make bench``, section classify, measures the speed and checks it).
INFERENCE_THREADS = 2


def view_outputs(model: keras.Model, images: np.ndarray, views: int, batch_size: int = 64,
                 progress: bool = True, desc: str = "forward pass",
                 threads: int = INFERENCE_THREADS) -> list[np.ndarray]:
    """Each output of ``model`` for each of ``views`` symmetries of each image (view 0 is the
    image as it is; :func:`leuko.cells.preprocess.dihedral_views`): one ``(views, N, dim)``
    float32 array per output, in the model's order. One traced call per batch of
    ``batch_size``, the last padded with zeros; ``threads`` calls at a time."""
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    out = [np.zeros((views, len(images), int(t.shape[-1])), np.float32) for t in model.outputs]
    every_view = dihedral_views(images, views) if len(images) else []
    batches = [(v, start) for v in range(len(every_view))
               for start in range(0, len(images), batch_size)]

    def run(batch_at: tuple[int, int]) -> int:
        v, start = batch_at
        chunk = every_view[v][start:start + batch_size]
        batch = np.zeros((batch_size, *chunk.shape[1:]), np.float32)
        batch[:len(chunk)] = chunk
        results = call(batch)
        for array, result in zip(out, results if len(out) > 1 else [results], strict=True):
            array[v, start:start + len(chunk)] = np.asarray(result)[:len(chunk)]
        return len(chunk)

    bar = progress_bar(total=views * len(images), enabled=progress, desc=desc)
    try:
        if batches:  # the first call traces the graph, alone
            bar.update(run(batches[0]))
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for done in pool.map(run, batches[1:]):
                bar.update(done)
    finally:
        bar.close()
    return out


def features(head: Head, images: np.ndarray, views: int, batch_size: int = 64,
             progress: bool = True) -> np.ndarray:
    """Penultimate features of each of ``views`` symmetries of each image: ``(views, N, D)``
    (:func:`view_outputs` of ``head.features``)."""
    return view_outputs(head.features, images, views, batch_size, progress, "features")[0]


def mean_features(head: Head, images: np.ndarray, views: int, progress: bool = True
                  ) -> np.ndarray:
    """Penultimate features averaged over ``views`` symmetries of each image: ``(N, D)``."""
    return features(head, images, views, progress=progress).mean(axis=0)


# --------------------------------------------------------------------------------------------
# one pass over the study's cells, kept
# --------------------------------------------------------------------------------------------
#: The group of the study's cell cache (the unseen labs' groups are their names).
CACHE_GROUP = "cells"


def group_of(source: str, unseen: dict | None = None) -> str:
    """The group holding a source's cells: an unseen lab's own (``unseen``: its name -> its
    cache), else the study's cell cache."""
    return source if source in (unseen or {}) else CACHE_GROUP


def outputs_path(model_id: str, paths: Paths) -> Path:
    """Where evaluate-cells keeps a cell model's outputs: ``build/cell-outputs/<id>.npz``."""
    return paths.root / "build" / "cell-outputs" / f"{model_id}.npz"


class StaleOutputsError(ValueError):
    """Saved outputs of another model file or of other cells: rerun evaluate-cells."""


@dataclass
class ModelOutputs:
    """A model's penultimate features per view and view-averaged class probabilities on each
    group of cells (see the module doc)."""

    model_sha256: str
    views: int
    features: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray]
    paths: dict[str, np.ndarray]

    def rows(self, group: str, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(features (views, n, D), probabilities (n, classes))`` of ``rows`` (rows of the
        group's cache: their ``index`` column is their place in it)."""
        at = rows["index"].to_numpy(dtype=int)
        if not np.array_equal(self.paths[group][at], rows["path"].to_numpy(dtype=str)):
            raise StaleOutputsError(f"the saved outputs of group {group!r} are of other rows "
                                    "than the cache's (build/cells changed): rerun evaluate-cells")
        return self.features[group][:, at], self.probabilities[group][at]


def view_probabilities(model, images: np.ndarray, views: int, progress: bool = False
                       ) -> np.ndarray:
    """The model's class probabilities ``(N, classes)`` of uint8 ``images``, averaged over
    ``views`` views (:func:`view_outputs` of the whole model)."""
    return average_views(view_outputs(model, images, views, progress=progress,
                                       desc="probabilities")[0])


def forward_pass(model, images: np.ndarray, views: int, batch_size: int = 64,
                 progress: bool = True, desc: str = "forward pass"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features ``(views, N, D)`` and view-averaged class probabilities
    ``(N, classes)`` of uint8 ``images``: :func:`view_outputs` of the model split at its
    last layer (:func:`features_and_output`), the probabilities averaged by
    :func:`leuko.cells.preprocess.average_views`."""
    feats, probs = view_outputs(features_and_output(model), images, views, batch_size,
                                progress, desc)
    return feats, average_views(probs)


def model_outputs(model, model_path: str | Path, views: int, cache: CellCache,
                  unseen: dict[str, CellCache] | None = None, progress: bool = True
                  ) -> ModelOutputs:
    """The model's outputs on every cell of ``cache`` and of each lab of ``unseen``."""
    groups = {CACHE_GROUP: cache, **(unseen or {})}
    features, probabilities, paths = {}, {}, {}
    for group, cells in groups.items():
        features[group], probabilities[group] = forward_pass(
            model, cells.images, views, progress=progress, desc=f"forward pass {group}")
        order = cells.rows.sort_values("index")
        if not np.array_equal(order["index"].to_numpy(dtype=int), np.arange(len(cells.images))):
            raise ValueError(f"the rows of {group} do not number its images 0..n-1")
        paths[group] = order["path"].to_numpy(dtype=str)
    return ModelOutputs(file_sha256(model_path), int(views), features, probabilities, paths)


def save_outputs(path: str | Path, outputs: ModelOutputs) -> Path:
    """The outputs as one uncompressed ``.npz`` (written atomically)."""
    arrays = {"model_sha256": np.array(outputs.model_sha256), "views": np.array(outputs.views)}
    for group in outputs.features:
        arrays[f"features/{group}"] = outputs.features[group]
        arrays[f"probabilities/{group}"] = outputs.probabilities[group]
        arrays[f"paths/{group}"] = outputs.paths[group]
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def load_outputs(path: str | Path, model_path: str | Path) -> ModelOutputs:
    """The outputs saved for the model file ``model_path``; FileNotFoundError when there are
    none, StaleOutputsError when they are of another file (the model was retrained since)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved outputs {path} of {model_path}: run the stage that "
                                "scores the model first (dvc repro evaluate-cells)")
    with np.load(path) as saved:
        arrays = {key: saved[key] for key in saved.files}
    sha = file_sha256(model_path)
    if str(arrays["model_sha256"]) != sha:
        raise StaleOutputsError(f"{path} holds the outputs of another file than {model_path} "
                                "(retrained since): rerun evaluate-cells")
    groups = [k.split("/", 1)[1] for k in arrays if k.startswith("features/")]
    return ModelOutputs(sha, int(arrays["views"]),
                        {g: arrays[f"features/{g}"] for g in groups},
                        {g: arrays[f"probabilities/{g}"] for g in groups},
                        {g: arrays[f"paths/{g}"] for g in groups})
