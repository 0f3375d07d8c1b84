"""The input pipeline: decode and resize every image once into memory, then feed batches with
``tf.data`` (shuffle, batched augmentation, prefetch)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from leuko.core import stain
from leuko.core.crops import centre_crop
from leuko.core.images import load_rgb, resize
from leuko.core.progress import progress_bar

# TensorFlow is imported inside the functions that need it: importing it takes 3.6 s
# (python -X importtime, AMD EPYC), and the decoding half of this module and the modules that
# import it for it load without it.


def load_resized(paths: Sequence[str | Path], size: int, crop: int | float | None = None,
                 progress: bool = True, workers: int | None = None) -> np.ndarray:
    """Decode, optionally centre-crop, and resize every image once: uint8 (N, size, size, 3).

    Decoding runs in a thread pool (PIL releases the GIL while decoding).
    """

    def one(path):
        image = load_rgb(path)
        if crop:
            image = centre_crop(image, crop)
        return resize(image, size)

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        iterator = pool.map(one, paths)
        for i, image in enumerate(progress_bar(iterator, total=len(paths), enabled=progress,
                                               desc=f"decode {size}px")):
            out[i] = image
    return out


def augment_batch(images, seed: int):
    """Label-preserving augmentation for cell crops on a batch: random flips and 90° turns.

    A white cell has no up or left, so the 8 symmetries of the square keep its class.
    Each image is picked whole (``Select`` with a per-image condition): a ``tf.where``
    broadcasting a (batch, 1, 1, 1) mask gives the same images at ~3x the CPU time.
    """
    import tensorflow as tf

    n = tf.shape(images)[0]

    def choose(images, transformed, salt: int):
        pick = tf.random.stateless_uniform([n], seed + salt) < 0.5
        return tf.raw_ops.Select(condition=pick, x=transformed, y=images)

    images = choose(images, tf.reverse(images, axis=[2]), 0)
    images = choose(images, tf.reverse(images, axis=[1]), 1)
    return choose(images, tf.transpose(images, [0, 2, 1, 3]), 2)


def make_dataset(images: np.ndarray, labels: np.ndarray | None, batch_size: int):
    """Batches in order (for validation, evaluation and prediction): float32 images, and the
    labels when given. Training batches come from ``make_epochs_dataset``."""
    import tensorflow as tf

    data = (images, labels) if labels is not None else images
    ds = tf.data.Dataset.from_tensor_slices(data).batch(batch_size)

    def to_float(*batch):
        return (tf.cast(batch[0], tf.float32), *batch[1:]) if len(batch) > 1 \
            else tf.cast(batch[0], tf.float32)

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches in one pass over ``n`` items."""
    return -(-int(n) // int(batch_size))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The item order of one epoch: a permutation that depends only on (seed, epoch), so a
    run resumed at epoch k sees the same batches as an uninterrupted one."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def make_epochs_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, epochs: int,
                        start_epoch: int = 0, augment: bool = False, seed: int = 0,
                        stain_jitter: float = 0.0):
    """Training batches for epochs ``start_epoch .. epochs-1``, shuffled and augmented as a
    function of (seed, epoch, step) only: resuming at any epoch reproduces the rest exactly.
    ``augment`` adds flips and 90° turns; ``stain_jitter`` > 0 adds the stain, colour and scale
    jitter of ``leuko.core.stain.stain_jitter`` at that strength.
    Use with ``fit(..., steps_per_epoch=steps_per_epoch(len(images), batch_size))``."""
    import tensorflow as tf

    n = len(images)
    orders = np.stack([epoch_order(n, seed, e) for e in range(start_epoch, epochs)]
                      or [np.zeros(n, dtype=np.int64)])[: max(0, epochs - start_epoch)]
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    ds = tf.data.Dataset.from_tensor_slices(orders.astype(np.int64)).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    counter = tf.data.Dataset.counter(start=start_epoch * steps_per_epoch(n, batch_size))

    def gather(idx, step):
        x = tf.cast(tf.gather(images_t, idx), tf.float32)
        batch_seed = tf.stack([tf.cast(seed, tf.int64), step])
        if augment:
            x = augment_batch(x, batch_seed)
        if stain_jitter:
            x = stain.stain_jitter(x, batch_seed + 7919, stain_jitter)
        return x, tf.gather(labels_t, idx)

    ds = tf.data.Dataset.zip((ds, counter)).map(gather, num_parallel_calls=tf.data.AUTOTUNE,
                                                 deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
