"""Stain and colour robustness: a seeded, batched augmentation and fixed simulated lab shifts.

Smears from another lab differ in stain (more or less hematoxylin and eosin), in the lamp's
colour, in exposure and in magnification. Two tools address that:

* :func:`stain_jitter` -- a ``tf`` function for the training pipeline: per image, a random
  perturbation in HED (hematoxylin-eosin-DAB) optical-density space (Tellez et al., "Whole-slide
  mitosis detection in H&E breast histology using PHH3 as a reference to train distilled
  stain-invariant convolutional networks", IEEE TMI 2018), hue and saturation jitter, brightness
  and contrast, and a scale jitter (zoom in or out by up to ``0.15 * strength``). Batched (one
  call per batch, any batch size), stateless and seeded: the same ``seed`` gives the same output.
* :func:`stain_shift` -- a *fixed*, named perturbation (e.g. ``"hematoxylin_heavy"``,
  ``"warm_light"``) that simulates one other lab, so a notebook can measure accuracy under shift:
  ``predict(model, stain_shift(images, kind))`` for each kind in :data:`STAIN_SHIFTS`.

HED space
---------
Optical density per channel is ``od = -ln((x + 1) / 256)`` for 8-bit values ``x`` (the ``+ 1``
keeps black finite); ``hed = od @ HED_FROM_RGB`` with scikit-image's stain matrix (Ruifrok and
Johnston 2001, ``skimage.color.hed_from_rgb``). Perturbed stains go back with ``RGB_FROM_HED``
(its exact inverse) and ``x = 256 * exp(-od) - 1``, clipped to [0, 255]. Unlike
``skimage.color.rgb2hed`` nothing is clipped in between, so a zero perturbation is an exact
round trip. Stain amounts here are in natural-log optical density (skimage's values times
``ln(1e6) = 13.8``): a nucleus has a hematoxylin density of about 0.5-1.0, background about 0.
"""

from __future__ import annotations

import numpy as np
from skimage.color import hed_from_rgb, rgb_from_hed

# TensorFlow is imported inside the functions that need it: importing it takes 3.6 s
# (python -X importtime, AMD EPYC), and the numpy stain shifts load without it.

__all__ = ["HED_FROM_RGB", "RGB_FROM_HED", "STAIN_SHIFTS", "jitter_ranges",
           "rgb_to_hed", "hed_to_rgb", "stain_jitter", "stain_shift"]

HED_FROM_RGB = np.asarray(hed_from_rgb, dtype=np.float64)
"""RGB optical density -> (hematoxylin, eosin, DAB) densities (row vectors: ``od @ M``)."""
RGB_FROM_HED = np.asarray(rgb_from_hed, dtype=np.float64)
"""(hematoxylin, eosin, DAB) densities -> RGB optical density; the inverse of HED_FROM_RGB."""


# --------------------------------------------------------------------------------------------
# numpy: HED conversion and the fixed shifts
# --------------------------------------------------------------------------------------------
def rgb_to_hed(images: np.ndarray) -> np.ndarray:
    """0..255 RGB (any leading shape, channel last) -> HED optical densities (float64)."""
    x = np.asarray(images, dtype=np.float64)
    if x.shape[-1] != 3:
        raise ValueError(f"images must have 3 channels last, got shape {x.shape}")
    od = -np.log((np.clip(x, 0, 255) + 1.0) / 256.0)
    return od @ HED_FROM_RGB


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """HED optical densities -> 0..255 RGB (float64, clipped); the inverse of ``rgb_to_hed``."""
    od = np.asarray(hed, dtype=np.float64) @ RGB_FROM_HED
    return np.clip(256.0 * np.exp(-od) - 1.0, 0.0, 255.0)


# kind -> (HED density factors, HED density offsets, RGB gains applied after, description)
STAIN_SHIFTS: dict[str, dict] = {
    "none": {"scale": (1.0, 1.0, 1.0), "shift": (0.0, 0.0, 0.0), "gain": (1.0, 1.0, 1.0),
             "description": "no change (the reference)"},
    "hematoxylin_heavy": {"scale": (1.4, 1.0, 1.0), "shift": (0.0, 0.0, 0.0),
                          "gain": (1.0, 1.0, 1.0),
                          "description": "40 % more hematoxylin: darker, bluer nuclei"},
    "eosin_heavy": {"scale": (1.0, 1.6, 1.0), "shift": (0.0, 0.05, 0.0),
                    "gain": (1.0, 1.0, 1.0),
                    "description": "60 % more eosin: redder cells and background"},
    "faded": {"scale": (0.7, 0.7, 0.7), "shift": (0.0, 0.0, 0.0), "gain": (1.0, 1.0, 1.0),
              "description": "30 % less of every stain (old or under-stained slide)"},
    "overstained": {"scale": (1.3, 1.3, 1.3), "shift": (0.0, 0.0, 0.0), "gain": (1.0, 1.0, 1.0),
                    "description": "30 % more of every stain"},
    "warm_light": {"scale": (1.0, 1.0, 1.0), "shift": (0.0, 0.0, 0.0), "gain": (1.0, 0.95, 0.8),
                   "description": "yellowish illumination (halogen lamp, no white balance)"},
    "cool_light": {"scale": (1.0, 1.0, 1.0), "shift": (0.0, 0.0, 0.0), "gain": (0.85, 0.95, 1.0),
                   "description": "bluish illumination (LED, no white balance)"},
    "dark": {"scale": (1.0, 1.0, 1.0), "shift": (0.0, 0.0, 0.0), "gain": (0.75, 0.75, 0.75),
             "description": "under-exposed by a quarter"},
}
"""Named simulated labs for :func:`stain_shift`."""


def stain_shift(image: np.ndarray, kind: str) -> np.ndarray:
    """Simulate another lab's stain or light on a uint8 RGB image or batch (same shape, uint8).

    ``kind`` is a key of :data:`STAIN_SHIFTS`; the perturbation is fixed (no randomness), so
    the accuracy under each kind is a reproducible number.
    """
    if kind not in STAIN_SHIFTS:
        raise ValueError(f"stain shift kind must be one of {sorted(STAIN_SHIFTS)}, got {kind!r}")
    image = np.asarray(image)
    if image.ndim < 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) or (N, H, W, 3), got shape {image.shape}")
    spec = STAIN_SHIFTS[kind]
    if kind == "none":
        return image.astype(np.uint8, copy=True)
    hed = rgb_to_hed(image) * np.asarray(spec["scale"]) + np.asarray(spec["shift"])
    rgb = hed_to_rgb(hed) * np.asarray(spec["gain"])
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# TensorFlow: the random, batched jitter for training
# --------------------------------------------------------------------------------------------
def jitter_ranges(strength: float) -> dict[str, float]:
    """What ``strength`` means: each value is the half-width of a uniform draw per image.

    At strength 1: stain density factors 1 +- 0.3 and offsets +- 0.1 (per H, E, D channel),
    hue +- 0.03 of the colour circle, saturation factor 1 +- 0.2, brightness +- 20 levels,
    contrast factor 1 +- 0.2, zoom factor in [1/1.15, 1.15]. Ranges scale linearly.
    """
    strength = float(strength)
    if not 0.0 <= strength <= 3.0:
        raise ValueError(f"stain jitter strength must be in [0, 3], got {strength}")
    return {"stain_scale": 0.3 * strength, "stain_shift": 0.1 * strength,
            "hue": 0.03 * strength, "saturation": 0.2 * strength,
            "brightness": 20.0 * strength, "contrast": 0.2 * strength, "zoom": 0.15 * strength}


def _seed_tensor(seed):
    import tensorflow as tf

    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    return tf.cast(seed, tf.int64)


def _zoom(images, factors):
    """Zoom each image about its centre by its factor (>1 in, <1 out; reflected borders)."""
    import tensorflow as tf

    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    pad_h, pad_w = h // 4, w // 4  # zoom out by up to 1/(1 - 2 * 0.25 / 1.5) is covered
    padded = tf.pad(images, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]], mode="REFLECT")
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    ph, pw = tf.cast(pad_h, tf.float32), tf.cast(pad_w, tf.float32)
    half_h = hf / (2.0 * factors)
    half_w = wf / (2.0 * factors)
    cy, cx = ph + hf / 2.0, pw + wf / 2.0
    norm_h, norm_w = hf + 2.0 * ph - 1.0, wf + 2.0 * pw - 1.0
    boxes = tf.stack([(cy - half_h) / norm_h, (cx - half_w) / norm_w,
                      (cy + half_h - 1.0) / norm_h, (cx + half_w - 1.0) / norm_w], axis=1)
    return tf.image.crop_and_resize(padded, boxes, tf.range(n), tf.stack([h, w]),
                                    method="bilinear")


def stain_jitter(images, seed, strength: float = 1.0):
    """Random stain, colour, brightness/contrast and scale jitter of a batch (seeded, batched).

    ``images``: (N, H, W, 3) RGB values in 0..255 (uint8 or float); ``seed``: an int or a
    shape-[2] integer tensor (as ``tf.random.stateless_*`` takes; pass a per-batch seed in a
    ``tf.data`` map); ``strength``: 0 (identity) .. 3, see :func:`jitter_ranges`. Returns
    float32 (N, H, W, 3) in [0, 255]. Each image gets its own draw; the same seed gives the
    same result.
    """
    import tensorflow as tf

    ranges = jitter_ranges(strength)
    images = tf.cast(images, tf.float32)
    if float(strength) == 0.0:
        return images
    seeds = tf.random.experimental.stateless_split(_seed_tensor(seed), num=8)
    n = tf.shape(images)[0]

    def uniform(i, shape, half):
        return tf.random.stateless_uniform(shape, seeds[i], -half, half)

    # 1. scale: zoom factor in [1 / (1 + z), 1 + z]
    log_zoom = uniform(0, [n], float(np.log1p(ranges["zoom"])))
    x = _zoom(images, tf.exp(log_zoom))

    # 2. stains: per image, per H/E/D channel factor and offset in optical density
    hed_from_rgb_t = tf.constant(HED_FROM_RGB, tf.float32)
    rgb_from_hed_t = tf.constant(RGB_FROM_HED, tf.float32)
    od = -tf.math.log((tf.clip_by_value(x, 0.0, 255.0) + 1.0) / 256.0)
    hed = tf.einsum("nhwc,cd->nhwd", od, hed_from_rgb_t)
    alpha = 1.0 + uniform(1, [n, 1, 1, 3], ranges["stain_scale"])
    beta = uniform(2, [n, 1, 1, 3], ranges["stain_shift"])
    od = tf.einsum("nhwd,dc->nhwc", hed * alpha + beta, rgb_from_hed_t)
    x = tf.clip_by_value(256.0 * tf.exp(-od) - 1.0, 0.0, 255.0)

    # 3. hue and saturation
    hsv = tf.image.rgb_to_hsv(x / 255.0)
    hue = tf.math.floormod(hsv[..., 0] + uniform(3, [n, 1, 1], ranges["hue"]), 1.0)
    sat = tf.clip_by_value(hsv[..., 1] * (1.0 + uniform(4, [n, 1, 1], ranges["saturation"])),
                           0.0, 1.0)
    x = tf.image.hsv_to_rgb(tf.stack([hue, sat, hsv[..., 2]], axis=-1)) * 255.0

    # 4. contrast about the image mean, then brightness
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    contrast = 1.0 + uniform(5, [n, 1, 1, 1], ranges["contrast"])
    brightness = uniform(6, [n, 1, 1, 1], ranges["brightness"])
    x = (x - mean) * contrast + mean + brightness
    return tf.clip_by_value(x, 0.0, 255.0)
