"""The input pipeline: decode and resize every image once into memory, then feed batches with
``tf.data`` (shuffle, batched augmentation, prefetch)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from leuko.crops import centre_crop
from leuko.images import load_rgb


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an HxWx3 uint8 image to size x size (bilinear, antialiased)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def load_resized(paths: Sequence[str | Path], size: int, crop: int | float | None = None,
                 progress: bool = True, workers: int | None = None) -> np.ndarray:
    """Decode, optionally centre-crop, and resize every image once: uint8 (N, size, size, 3).

    Decoding runs in a thread pool (PIL releases the GIL while decoding).
    """

    def one(path):
        image = load_rgb(path)
        if crop:
            image = centre_crop(image, crop)
        return resize_square(image, size)

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        iterator = pool.map(one, paths)
        for i, image in enumerate(tqdm(iterator, total=len(paths), disable=not progress,
                                       desc=f"decode {size}px", unit="img")):
            out[i] = image
    return out


def augment_batch(images, seed: int):
    """Label-preserving augmentation for cell crops on a batch: random flips and 90° turns.

    A white cell has no up or left, so the 8 symmetries of the square keep its class.
    """
    import tensorflow as tf

    flip_lr = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed) < 0.5
    images = tf.where(flip_lr, tf.reverse(images, axis=[2]), images)
    flip_ud = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed + 1) < 0.5
    images = tf.where(flip_ud, tf.reverse(images, axis=[1]), images)
    transpose = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed + 2) < 0.5
    return tf.where(transpose, tf.transpose(images, [0, 2, 1, 3]), images)


def make_dataset(images: np.ndarray, labels: np.ndarray | None, batch_size: int,
                 shuffle: bool = False, augment: bool = False, seed: int = 0):
    """A ``tf.data.Dataset`` of (float32 image batch, one-hot label batch) from in-memory arrays.

    Shuffling and augmentation are seeded (the batch's step number enters the augmentation
    seed); with reshuffling every epoch an image meets new variants, and a rerun the same ones.
    """
    import tensorflow as tf

    data = (images, labels) if labels is not None else images
    ds = tf.data.Dataset.from_tensor_slices(data)
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip((ds, counter)).map(
            lambda batch, step: (augment_batch(tf.cast(batch[0], tf.float32),
                                               tf.stack([tf.cast(seed, tf.int64), step])),
                                 batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(lambda *b: (tf.cast(b[0], tf.float32), *b[1:]) if labels is not None
                    else tf.cast(b[0], tf.float32),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
