"""Crops and intensity normalisation: the C-NMC centre crop, box crops from smears, and the
report's scaling to [0, 1] minus the training set's channel mean."""

from __future__ import annotations

import numpy as np


def crop_margin(size: int, margin: int | float) -> int:
    """Pixels to cut from each side: an int is pixels, a float in [0, 0.5) a fraction of ``size``.

    The C-NMC recipe cuts 100 px from each side of a 450 px image (fraction 100/450 = 0.2222).
    """
    if isinstance(margin, bool) or not isinstance(margin, int | float | np.integer | np.floating):
        raise TypeError(f"crop margin must be an int (pixels) or a float (fraction), got {margin!r}")
    if isinstance(margin, int | np.integer):
        pixels = int(margin)
    else:
        if not 0 <= margin < 0.5:
            raise ValueError(f"crop margin as a fraction must be in [0, 0.5), got {margin}")
        pixels = int(round(size * float(margin)))
    if pixels < 0 or 2 * pixels >= size:
        raise ValueError(f"crop margin {margin} leaves nothing of a {size} px side")
    return pixels


def centre_crop(image: np.ndarray, margin: int | float) -> np.ndarray:
    """Cut ``margin`` (pixels or fraction, see ``crop_margin``) from every side of an HxWxC image."""
    h, w = image.shape[:2]
    dy, dx = crop_margin(h, margin), crop_margin(w, margin)
    return image[dy:h - dy, dx:w - dx]


def square_box(xmin: float, ymin: float, xmax: float, ymax: float, scale: float = 1.0,
               image_shape: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """The square box around a box's centre, its side ``scale`` times the longer side, clipped
    to the image when ``image_shape`` (H, W) is given."""
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    half = max(xmax - xmin, ymax - ymin) * scale / 2
    box = [round(cx - half), round(cy - half), round(cx + half), round(cy + half)]
    if image_shape is not None:
        h, w = image_shape
        box = [max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])]
    return tuple(int(v) for v in box)


def crop_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of ``image`` inside ``box`` = (xmin, ymin, xmax, ymax)."""
    xmin, ymin, xmax, ymax = box
    if xmax <= xmin or ymax <= ymin:
        raise ValueError(f"empty box {box}")
    return image[ymin:ymax, xmin:xmax]


def channel_mean(images: np.ndarray) -> np.ndarray:
    """Per-channel mean of uint8 images (N, H, W, 3) after scaling to [0, 1]."""
    return images.reshape(-1, images.shape[-1]).astype(np.float64).mean(axis=0) / 255.0

