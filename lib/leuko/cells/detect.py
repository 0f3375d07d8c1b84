"""White cells on whole smears: find them by their stained nuclei, crop the classifier's
window around each, and draw them. Imports neither the classifier nor the BCCD study
(:mod:`leuko.tool.smear`), which measure and use what is found here.

How a smear is searched (:func:`detect_cells`)
----------------------------------------------
1. The smear is resized so that a white cell is about :data:`WORK_CELL_PX` pixels wide
   (``DetectConfig.cell_size`` says how wide one is in the input: 190 px on BCCD's 640x480
   smears, the median side of its WBC boxes). Every size below is relative to ``cell_size``,
   so another magnification needs one number changed.
2. A "nuclear stain" map: blue minus green (``B - G``, levels 0..255), lightly smoothed.
   Nuclei stained by Giemsa / Wright are purple-blue (B - G about 100), red cells pink and the
   background pale (about 0). ``feature="hematoxylin"`` uses the hematoxylin density of a
   stain deconvolution (:func:`leuko.core.stain.rgb_to_hed`) instead; on BCCD's trainval smears it
   did worse (precision 0.92, recall 0.97 against 0.99, 0.99), since the red cells and the
   background absorb in the hematoxylin channel too.
3. Otsu's threshold of that map, never below ``threshold_floor`` (so a smear with no white cell,
   whose histogram Otsu splits between red cells and background, yields no nucleus).
4. Morphology: an opening removes specks; small objects (platelets) are dropped later by area.
5. Lobes of one nucleus (a neutrophil's 2-5 lobes) are merged by a dilation of
   ``merge_radius`` before connected components are labelled; each component's nucleus pixels
   (undilated) give its area and its box.
6. Components with a nucleus area outside ``[min_area, max_area] * cell_size**2`` are dropped.
7. The cell's box is the nucleus box scaled by ``box_scale`` about its centre, clipped to the
   smear: the cytoplasm lies around the nucleus. (``box_shape="square"`` takes the square of
   :func:`leuko.core.crops.square_box` instead; on BCCD's trainval smears the scaled nucleus box
   matched the annotated boxes better: F1 0.992 vs 0.985 at IoU 0.5.)

The crop a classifier sees (:func:`cell_crop_box`) is not the cell's box. The study's classifier
was trained on blood-cell-images, whose 320x240 "crops" are in fact whole 640x480 BCCD smears
halved (measured: ``TEST_SIMPLE/EOSINOPHIL/_1_5031.jpeg`` is ``BloodImage_00139.jpg`` at half
size, mean squared difference 2.2 levels^2 against a median of 712 over the other smears; TRAIN
and TEST are shifted, rotated and flipped copies). A cell crop therefore keeps that geometry: a
window ``crop_height = 2.53`` cell sizes high (480 / 190) with aspect 4:3, centred on the
nucleus and shifted (not clipped) to stay inside the smear. On BCCD that window is the whole
smear, so two white cells of one smear share one window (and one class); on larger fields each
cell gets its own window. Measured on BCCD's 339 smears with one WBC box and one class in
``labels.csv`` (not independent of the training data: these smears are the sources of
blood-cell-images): accuracy 0.60 with windows of 1.26 cell sizes (a 320x240 window around
the cell), 0.86 with 1.9, 0.91 with 2.53.

How well this works on BCCD's annotated smears: :mod:`leuko.tool.smear` and
``notebooks/09-detect.ipynb``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from leuko.core.crops import crop_box, square_box
from leuko.core.params import read_block, typed
from leuko.core.stain import rgb_to_hed

__all__ = [
    "CLASS_COLOURS",
    "FEATURES",
    "WORK_CELL_PX",
    "Box",
    "Detection",
    "DetectConfig",
    "annotate",
    "cell_crop_box",
    "cell_crops",
    "detect_cells",
    "disk",
    "montage",
    "nuclear_stain",
]

WORK_CELL_PX = 95.0
"""Width of a white cell, in pixels, in the resized smear the segmentation runs on."""

FEATURES = ("blue_green", "hematoxylin")
"""Nuclear stain maps :func:`nuclear_stain` can compute."""

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class DetectConfig:
    """Parameters of :func:`detect_cells`; sizes are fractions of ``cell_size`` (see module doc).

    No field has a default: the values live in one place, ``params/detect.yaml``'s
    ``detect.detector`` block (chosen on BCCD's VOC ``trainval`` smears, checked on its
    ``test`` smears: ``reports/detection/metrics.json``), read by :meth:`from_params` in the
    detect stage and by ``leuko classify --smear`` alike.
    """

    cell_size: float  # px: a white cell's width in the input (BCCD 640x480: 190)
    feature: str  # "blue_green" (B - G) or "hematoxylin" (HED density x 100)
    smooth: float  # Gaussian sigma of the stain map, px at the working scale
    threshold_floor: float  # the threshold is max(Otsu, floor), in the map's units
    open_radius: float  # opening radius (specks), fraction of cell_size
    merge_radius: float  # dilation radius that merges lobes of one nucleus
    min_area: float  # nucleus area limits, fractions of cell_size**2
    max_area: float
    box_scale: float  # cell box / nucleus box (each side, about the centre)
    box_shape: str  # "rect": the nucleus box scaled; "square": crops.square_box
    crop_height: float  # classifier window height / cell_size (BCCD: 480 / 190)
    crop_aspect: float  # classifier window width / height (blood-cell-images: 4:3)

    def __post_init__(self):
        if self.box_shape not in ("rect", "square"):
            raise ValueError(f"detect box_shape must be 'rect' or 'square', got "
                             f"{self.box_shape!r}")
        if self.feature not in FEATURES:
            raise ValueError(f"detect feature must be one of {FEATURES}, got {self.feature!r}")
        positive = ("cell_size", "box_scale", "crop_height", "crop_aspect", "max_area")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"detect {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("smooth", "open_radius", "merge_radius", "min_area"):
            if getattr(self, name) < 0:
                raise ValueError(f"detect {name} must be >= 0, got {getattr(self, name)!r}")
        if self.min_area >= self.max_area:
            raise ValueError(f"detect min_area ({self.min_area}) must be below max_area "
                             f"({self.max_area})")

    @classmethod
    def from_params(cls, detect: dict | None = None, path: Path | None = None) -> DetectConfig:
        """From the ``detect`` block of ``params/detect.yaml`` (papermill ``-f`` passes it
        whole; None reads ``path``, default ``params/detect.yaml`` under the current folder):
        its ``detector`` sub-block, every field named, a missing or unknown key an error
        naming the file."""
        block = read_block("detect", detect, path)
        if "detector" not in block:
            raise ValueError(f"{path or 'params/detect.yaml'}: the detect block has no "
                             f"'detector' sub-block (found {sorted(block)})")
        return typed(cls, block["detector"], f"{path or 'params/detect.yaml'}: detect.detector")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Detection:
    """One white cell found on a smear: its box, its nucleus' box and area (input pixels)."""

    box: Box
    nucleus_box: Box
    nucleus_area: float
    stain: float = field(default=0.0)  # mean stain-map value of the nucleus (a confidence)


# --------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------
def disk(radius: float) -> np.ndarray | None:
    """A boolean disk of ``radius`` (rounded) pixels, a morphology footprint; None below 1."""
    r = int(round(radius))
    if r < 1:
        return None
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


def _otsu(values: np.ndarray) -> float:

    if values.size == 0 or float(values.max()) == float(values.min()):
        return float("inf")
    return float(threshold_otsu(values))


def nuclear_stain(rgb: np.ndarray, feature: str = "blue_green") -> np.ndarray:
    """The map that is high on stained nuclei: ``B - G`` in levels, or hematoxylin x 100."""
    if feature == "blue_green":
        return rgb[..., 2].astype(np.float32) - rgb[..., 1].astype(np.float32)
    if feature == "hematoxylin":

        return (rgb_to_hed(rgb)[..., 0] * 100.0).astype(np.float32)
    raise ValueError(f"detect feature must be one of {FEATURES}, got {feature!r}")


def detect_cells(rgb: np.ndarray, config: DetectConfig) -> list[Detection]:
    """White cells on a uint8 RGB smear, sorted top to bottom, left to right."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"smear must be an (H, W, 3) RGB array, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    factor = WORK_CELL_PX / float(config.cell_size)  # input px -> working px
    work_w, work_h = max(1, round(width * factor)), max(1, round(height * factor))
    small = rgb if (work_w, work_h) == (width, height) else np.asarray(
        Image.fromarray(rgb).resize((work_w, work_h), Image.BILINEAR))
    stain = nuclear_stain(small, config.feature)
    if config.smooth:
        stain = ndi.gaussian_filter(stain, config.smooth)
    threshold = max(_otsu(stain), config.threshold_floor)
    mask = stain > threshold
    opening = disk(config.open_radius * WORK_CELL_PX)
    if opening is not None:
        mask = ndi.binary_opening(mask, opening)
    merging = disk(config.merge_radius * WORK_CELL_PX)
    merged = ndi.binary_dilation(mask, merging) if merging is not None else mask
    labels, n = ndi.label(merged)
    if n == 0:
        return []
    labels = np.where(mask, labels, 0)
    index = np.arange(1, n + 1)
    areas = ndi.sum_labels(mask, labels, index)
    means = ndi.mean(stain, labels, index)
    cell_area = WORK_CELL_PX ** 2
    found = []
    for i, sl in enumerate(ndi.find_objects(labels, max_label=n)):
        if sl is None or not config.min_area * cell_area <= areas[i] <= config.max_area * cell_area:
            continue
        # the nucleus box back in input pixels
        nucleus = (sl[1].start / factor, sl[0].start / factor, sl[1].stop / factor,
                   sl[0].stop / factor)
        nucleus_box = tuple(int(v) for v in (
            max(0, math.floor(nucleus[0])), max(0, math.floor(nucleus[1])),
            min(width, math.ceil(nucleus[2])), min(height, math.ceil(nucleus[3]))))
        box = _cell_box(nucleus, config, (height, width))
        found.append(Detection(box=box, nucleus_box=nucleus_box,
                               nucleus_area=float(areas[i]) / factor ** 2,
                               stain=float(means[i])))
    return sorted(found, key=lambda d: (d.box[1], d.box[0]))


def _cell_box(nucleus: tuple[float, float, float, float], config: DetectConfig,
              image_shape: tuple[int, int]) -> Box:
    """The cell's box from its nucleus box: scaled about the centre, clipped to the image."""
    if config.box_shape == "square":
        return square_box(*nucleus, scale=config.box_scale, image_shape=image_shape)
    height, width = image_shape
    cx, cy = (nucleus[0] + nucleus[2]) / 2, (nucleus[1] + nucleus[3]) / 2
    half_w = (nucleus[2] - nucleus[0]) * config.box_scale / 2
    half_h = (nucleus[3] - nucleus[1]) * config.box_scale / 2
    return (max(0, round(cx - half_w)), max(0, round(cy - half_h)),
            min(width, round(cx + half_w)), min(height, round(cy + half_h)))


def cell_crop_box(detection: Detection | Box, image_shape: tuple[int, int],
                  config: DetectConfig) -> Box:
    """The classifier's window around a cell: ``crop_height * cell_size`` high, ``crop_aspect``
    wide, centred on the nucleus and shifted to lie inside the smear (clipped only when the
    smear is smaller than the window)."""
    box = detection.nucleus_box if isinstance(detection, Detection) else detection
    height, width = image_shape
    crop_h = min(height, max(1, round(config.crop_height * config.cell_size)))
    crop_w = min(width, max(1, round(crop_h * config.crop_aspect)))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(min(max(0, round(cx - crop_w / 2)), width - crop_w))
    y0 = int(min(max(0, round(cy - crop_h / 2)), height - crop_h))
    return (x0, y0, x0 + crop_w, y0 + crop_h)


def cell_crops(rgb: np.ndarray, detections: Sequence[Detection],
               config: DetectConfig) -> list[np.ndarray]:
    """The classifier's crop of every detection (uint8 arrays, views of ``rgb``)."""
    return [crop_box(rgb, cell_crop_box(d, rgb.shape[:2], config)) for d in detections]


# --------------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------------
CLASS_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
                 "#9a6324")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def annotate(rgb: np.ndarray, boxes: Sequence[Box], labels: Sequence[str] = (),
             colours: Sequence[str] = (), truth: Sequence[Box] = (),
             title: str = "") -> Image.Image:
    """The smear with one labelled box per cell (and annotated boxes ``truth`` dashed in
    white, when given); returns a PIL image, e.g. to ``.save("x.png")``."""
    image = Image.fromarray(np.asarray(rgb, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(image)
    scale = max(1, round(max(image.size) / 640))
    font = _font(12 * scale)
    for box in truth:
        x0, y0, x1, y1 = box
        dash = 6 * scale
        for x in range(x0, x1, 2 * dash):
            draw.line([(x, y0), (min(x + dash, x1), y0)], fill="white", width=scale)
            draw.line([(x, y1), (min(x + dash, x1), y1)], fill="white", width=scale)
        for y in range(y0, y1, 2 * dash):
            draw.line([(x0, y), (x0, min(y + dash, y1))], fill="white", width=scale)
            draw.line([(x1, y), (x1, min(y + dash, y1))], fill="white", width=scale)
    for i, box in enumerate(boxes):
        colour = colours[i] if i < len(colours) else CLASS_COLOURS[0]
        draw.rectangle(box, outline=colour, width=2 * scale)
        text = labels[i] if i < len(labels) else ""
        if text:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left, bottom - top
            x = min(max(0, box[0]), image.width - tw - 4)
            y = box[1] - th - 4 if box[1] - th - 4 >= 0 else box[1]
            draw.rectangle((x, y, x + tw + 4, y + th + 4), fill=colour)
            draw.text((x + 2 - left, y + 2 - top), text, fill="white", font=font)
    if title:
        left, top, right, bottom = draw.textbbox((0, 0), title, font=font)
        draw.rectangle((0, image.height - (bottom - top) - 6, right - left + 6, image.height),
                       fill="black")
        draw.text((3 - left, image.height - (bottom - top) - 3 - top), title, fill="white",
                  font=font)
    return image


def montage(images: Sequence[Image.Image], ncols: int = 3, title: str = "",
            width: int = 640) -> Image.Image:
    """Images side by side, ``ncols`` a row, each scaled to ``width`` pixels (full resolution
    for BCCD, so box labels stay legible), with a title line on top."""
    ncols = max(1, min(ncols, len(images) or 1))
    scaled = [im.resize((width, max(1, round(im.height * width / im.width)))) for im in images]
    cell_h = max([im.height for im in scaled] or [width * 3 // 4])
    rows = max(1, math.ceil(len(scaled) / ncols))
    font = _font(20)
    head = 34 if title else 0
    sheet = Image.new("RGB", (ncols * width + (ncols - 1) * 6, head + rows * (cell_h + 6)),
                      "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((8, 6), title, fill="black", font=font)
    if not scaled:
        draw.text((8, head + 8), "none", fill="black", font=font)
    for k, im in enumerate(scaled):
        r, c = divmod(k, ncols)
        sheet.paste(im, (c * (width + 6), head + r * (cell_h + 6)))
    return sheet
