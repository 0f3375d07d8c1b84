"""One cell at one scale and one stain: the preprocessing that makes a cell image look the same
whichever lab, microscope or camera framed it.

Cells arrive framed in every way: blood-cell-images' 320x240 crops show a cell off centre among
red cells, PBC's 360x363 CellaVision images a centred cell filling half the frame, a user's
own images anything from a tight crop to a fifth of the field. Before a network sees a cell:

0. **Paint out what is not the slide** (:func:`fill_dark_margin`, when
   ``fill_dark_margin``): near-black regions touching the border (the corners a rotated copy
   was filled with, as in every image of blood-cell-images' TRAIN and TEST, or a round field
   stop) get the image's median colour. Left in, they enter the crop and, worse, the
   background's statistics in step 3, which then wash the cell out.
1. **Find it** (:func:`find_cell`): the stained cell is the pixels high on a nuclear stain
   map (blue minus green: violet nuclei against pink red cells and a pale background, under
   any Romanowsky-type stain), thresholded by Otsu: the nucleus, and the cytoplasm where it
   stains as strongly (a lymphocyte's or monocyte's blue rim; a neutrophil's pale cytoplasm
   stays out); the lobes of one nucleus are merged by a dilation; of the nuclei found, the one
   that is large and near the middle of the image wins (``area * exp(-(distance / 0.35
   side)^2)``), since a single-cell image is taken around its cell. Some stains colour the red
   cells bluish or grey-violet too (half of ``data/bionet``'s fields): Otsu's threshold then
   separates the glass from the red cells, not the red cells from the nucleus, and the winner
   is a net of red cells spanning the field. A winner larger than ``max_area`` of the image, or
   filling less than ``min_fill`` of its box (a nucleus with its lobes fills most of its box,
   touching red cells' rims a small part), has its threshold raised to Otsu's over the pixels
   above it, up to three times, as long as a nucleus is still found above it.
2. **Frame it** (:func:`cell_box`): a square around the nucleus, its side ``scale`` times the
   nucleus' longer side (so the cytoplasm and a ring of context are inside), moved into the
   image where it can be and padded with the image's border colour where it cannot (a tightly
   cropped cell then sits on plain background, as on glass; a reflection would add mirrored
   copies of its edge that no training image shows). When no nucleus is found the
   whole image is used, squared, and the result says so (``found=False``): nothing is dropped
   silently, the count of such images is reported by training, evaluation and ``classify``.
3. **Normalise the stain** (:func:`reinhard`): Reinhard et al. (2001) colour transfer in CIE
   L*a*b*: each channel's mean and standard deviation are mapped to a fixed target. The
   statistics are taken on the *background* (the pixels outside the dilated nucleus: red
   cells, plasma, glass), which differ between labs but not between cell classes; taken on the
   whole image they would also remove the colour of the cell itself (an eosinophil's red
   granules, a basophil's dark ones).

:class:`CellPreprocess` holds the parameters; its ``to_dict`` goes into every trained model's
summary and the exported model's metadata, and :func:`prepare_cell` applies it, so training,
evaluation and ``leuko classify`` run the same code.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.color import lab2rgb, rgb2lab
from skimage.filters import threshold_otsu

from leuko.cells.detect import disk, nuclear_stain
from leuko.core.images import resize
from leuko.core.params import typed

__all__ = ["CellPreprocess", "CellBox", "dark_margin", "fill_dark_margin", "find_cell",
           "cell_box", "reinhard", "prepare_cell", "frame_cell", "normalise_cell", "detail",
           "cap_detail", "raise_detail", "STAIN_NORMS", "VIEW_COUNTS", "dihedral_views",
           "mean_over_views", "average_views"]

STAIN_NORMS = ("none", "reinhard")

# Target L*a*b* statistics of the background (mean, sd per channel): the median over PBC and
# blood-cell-images training images' backgrounds, rounded (measured with
# ``background_lab_stats``); any fixed value works, the point is that every image gets the same.
TARGET_LAB_MEAN = (78.0, 8.0, 4.0)
TARGET_LAB_STD = (9.0, 5.0, 5.0)


@dataclass(frozen=True)
class CellPreprocess:
    """How a cell image is framed and normalised (see the module doc)."""

    scale: float = 2.2  # crop side / the nucleus' longer side
    work_size: int = 128  # px: the longer side the image is searched at
    merge: float = 0.04  # dilation radius merging lobes, fraction of work_size
    min_area: float = 0.004  # smallest nucleus, fraction of the working image's area
    # largest nucleus, fraction of the working image's area, and the least share of its box it
    # fills: a larger or sparser one holds red cells and the threshold is raised (``find_cell``).
    # 1 and 0 = off: the metadata of a model trained before the options existed has no such keys
    max_area: float = 1.0
    min_fill: float = 0.0
    stain_norm: str = "reinhard"  # none | reinhard (on the background)
    cell_crop: bool = True  # False: the whole image (squared by padding), no search
    # sharpness ceiling (``cap_detail``): a prepared cell with more fine detail than this
    # (``detail``, at the prepared size) is blurred down to it; 0 = off
    max_detail: float = 0.0
    # sharpness floor (``raise_detail``): a prepared cell with less fine detail than this is
    # sharpened up to it (an unsharp mask); 0 = off
    min_detail: float = 0.0
    # paint the black margins a rotation or a round field stop leaves (``fill_dark_margin``)
    # in the image's background colour before anything else. False by default: the metadata
    # of a model trained before the option existed has no such key, and it had no fill
    fill_dark_margin: bool = False

    def __post_init__(self):
        if self.stain_norm not in STAIN_NORMS:
            raise ValueError(f"stain_norm must be one of {STAIN_NORMS}, got {self.stain_norm!r}")
        if not self.scale >= 1.0:
            raise ValueError(f"cell crop scale must be >= 1, got {self.scale!r}")
        if int(self.work_size) < 32:
            raise ValueError(f"work_size must be >= 32 px, got {self.work_size!r}")
        if self.max_detail < 0:
            raise ValueError(f"max_detail must be >= 0 (0 = off), got {self.max_detail!r}")
        if self.min_detail < 0 or (self.max_detail and self.min_detail > self.max_detail):
            raise ValueError(f"min_detail must be >= 0 (0 = off) and at most max_detail, got "
                             f"{self.min_detail!r}")
        if not 0 <= self.min_fill < 1:
            raise ValueError(f"min_fill must be in [0, 1), got {self.min_fill!r}")
        if not 0 <= self.merge < 0.5 or not 0 < self.min_area < self.max_area <= 1:
            raise ValueError(f"merge must be in [0, 0.5) and 0 < min_area < max_area <= 1, got "
                             f"{self.merge!r}, {self.min_area!r}, {self.max_area!r}")

    @classmethod
    def from_dict(cls, values: dict | None) -> CellPreprocess:
        """A config from a dict such as a model's metadata, naming unknown keys."""

        return typed(cls, values or {}, "cell preprocessing")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CellBox:
    """The nucleus found in an image, in input pixels."""

    nucleus_box: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax
    area: float  # nucleus pixels (input scale)
    mask: np.ndarray  # the nucleus mask at the working scale (for the background statistics)
    threshold: float  # the nuclear-stain level it was found above (raised where red cells passed)


def nuclear_map(rgb: np.ndarray) -> np.ndarray:
    """Blue minus green, in levels: high on violet nuclei, low on red cells and background
    (``leuko.cells.detect.nuclear_stain``'s default map, shared with the smear detector)."""
    return nuclear_stain(rgb, "blue_green")


def _working(rgb: np.ndarray, work_size: int) -> tuple[np.ndarray, float]:
    height, width = rgb.shape[:2]
    factor = min(1.0, work_size / max(height, width))
    if factor == 1.0:
        return rgb, 1.0
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR)), factor


def find_cell(rgb: np.ndarray, config: CellPreprocess = CellPreprocess()) -> CellBox | None:
    """The nucleus of the image's cell (see the module doc), or None when there is none."""
    rgb = _check_rgb(rgb)
    small, factor = _working(rgb, config.work_size)
    stain = ndi.gaussian_filter(nuclear_map(small), 1.0)
    threshold = nucleus_threshold(stain)
    found = _likeliest_nucleus(stain, threshold, config)
    for _ in range(NUCLEUS_ROUNDS):
        if found is None or not _stains_red_cells(found, config):
            break
        raised = nucleus_threshold(stain[stain > threshold])
        nucleus = _likeliest_nucleus(stain, raised, config)
        if nucleus is None:  # nothing stains more: keep what was found
            break
        found, threshold = nucleus, raised
    if found is None:
        return None
    nucleus, area = found
    ys, xs = np.nonzero(nucleus)
    height, width = rgb.shape[:2]
    # the box at full resolution: the same threshold inside a window one working pixel wider
    x0, y0 = max(0, math.floor((xs.min() - 1) / factor)), max(0, math.floor((ys.min() - 1) / factor))
    x1 = min(width, math.ceil((xs.max() + 2) / factor))
    y1 = min(height, math.ceil((ys.max() + 2) / factor))
    window = nuclear_map(rgb[y0:y1, x0:x1])
    inside = np.nonzero(ndi.gaussian_filter(window, 1.0 / factor) > threshold)
    if inside[0].size:
        nucleus_box = (x0 + int(inside[1].min()), y0 + int(inside[0].min()),
                       x0 + int(inside[1].max()) + 1, y0 + int(inside[0].max()) + 1)
    else:
        nucleus_box = (max(0, math.floor(xs.min() / factor)), max(0, math.floor(ys.min() / factor)),
                       min(width, math.ceil((xs.max() + 1) / factor)),
                       min(height, math.ceil((ys.max() + 1) / factor)))
    return CellBox(nucleus_box, area / factor ** 2, nucleus, threshold)


# how many times find_cell raises a threshold that lets red cells through
NUCLEUS_ROUNDS = 3


def _likeliest_nucleus(stain: np.ndarray, threshold: float, config: CellPreprocess
                       ) -> tuple[np.ndarray, float] | None:
    """The mask (working scale) and area of the stained component above ``threshold`` that is
    large and near the middle (``area * exp(-(distance / 0.35 side)^2)``, lobes merged), or
    None when no component reaches ``min_area``."""

    if threshold == float("inf"):  # a flat image: no stained nucleus
        return None
    mask = ndi.binary_opening(stain > threshold, disk(1))
    merging = disk(config.merge * max(stain.shape))
    merged = ndi.binary_dilation(mask, merging) if merging is not None else mask
    labels, n = ndi.label(merged)
    if n == 0:
        return None
    labels = np.where(mask, labels, 0)
    index = np.arange(1, n + 1)
    areas = ndi.sum_labels(mask, labels, index)
    centres = ndi.center_of_mass(mask, labels, index)
    h, w = stain.shape
    reach = 0.35 * max(h, w)
    scores = [a * math.exp(-(((cy - h / 2) ** 2 + (cx - w / 2) ** 2) / reach ** 2))
              if a >= config.min_area * h * w else -1.0
              for a, (cy, cx) in zip(areas, centres, strict=True)]
    best = int(np.argmax(scores))
    if scores[best] <= 0:
        return None
    return labels == best + 1, float(areas[best])


def _stains_red_cells(found: tuple[np.ndarray, float], config: CellPreprocess) -> bool:
    """Whether the component found is red cells that passed the threshold with the nucleus
    (under a stain that colours them bluish or grey-violet): larger than ``max_area`` of the
    image, or filling less than ``min_fill`` of its box (their rims, touching, make a sparse
    net; a nucleus with its lobes fills most of its box)."""

    nucleus, area = found
    ys, xs = np.nonzero(nucleus)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    return area > config.max_area * nucleus.size or area < config.min_fill * box


def cell_box(nucleus_box: tuple[int, int, int, int], scale: float
             ) -> tuple[int, int, int, int]:
    """The square crop around a nucleus: side ``scale`` x its longer side, same centre
    (may reach past the image; :func:`crop_square` pads)."""
    xmin, ymin, xmax, ymax = nucleus_box
    side = max(xmax - xmin, ymax - ymin) * scale
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    side = max(1, round(side))
    return (x0, y0, x0 + side, y0 + side)


def crop_square(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of a square ``box``, moved into the image where the image is large enough and
    padded with the median colour of the image's border where it is not."""
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = box
    side = x1 - x0
    if side <= width:
        x0 = min(max(0, x0), width - side)
    if side <= height:
        y0 = min(max(0, y0), height - side)
    x1, y1 = x0 + side, y0 + side
    pad = ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)), (0, 0))
    inside = rgb[max(0, y0):min(height, y1), max(0, x0):min(width, x1)]
    if any(p for pair in pad[:2] for p in pair):
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        colour = np.median(border, axis=0).astype(rgb.dtype)
        inside = np.stack([np.pad(inside[..., c], pad[:2], constant_values=colour[c])
                           for c in range(3)], axis=-1)
    return inside


def whole_square(rgb: np.ndarray) -> np.ndarray:
    """The whole image, squared by padding its shorter side with the border colour (centred)."""
    height, width = rgb.shape[:2]
    side = max(height, width)
    return crop_square(rgb, (round((width - side) / 2), round((height - side) / 2),
                             round((width - side) / 2) + side, round((height - side) / 2) + side))


def _lab(rgb: np.ndarray) -> np.ndarray:

    return rgb2lab(rgb.astype(np.float64) / 255.0)


def background_lab_stats(rgb: np.ndarray, background: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of L*a*b* over ``background`` pixels (all when None)."""
    lab = _lab(rgb).reshape(-1, 3)
    if background is not None and background.sum() >= 16:
        lab = lab[background.reshape(-1)]
    return lab.mean(axis=0), lab.std(axis=0)


def reinhard(rgb: np.ndarray, background: np.ndarray | None = None,
             target_mean=TARGET_LAB_MEAN, target_std=TARGET_LAB_STD) -> np.ndarray:
    """Reinhard colour transfer: L*a*b* channels shifted and scaled so that the ``background``
    pixels' (all pixels' when None) mean and standard deviation become the target's."""

    rgb = _check_rgb(rgb)
    mean, std = background_lab_stats(rgb, background)
    lab = _lab(rgb)
    # a flat background (std below one L*a*b* unit) is shifted, never amplified
    scaled = (lab - mean) / np.maximum(std, 1.0) * np.asarray(target_std) + np.asarray(
        target_mean)
    with warnings.catch_warnings():  # colours outside sRGB are clipped, as intended
        warnings.simplefilter("ignore", UserWarning)
        out = lab2rgb(scaled)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def dark_margin(rgb: np.ndarray, level: int = 24, grow: int = 2) -> np.ndarray:
    """Where an image is not the slide: the near-black regions (every channel below
    ``level``) that touch its border, the corners a rotated copy was filled with or the
    edge of a round field stop, grown by ``grow`` px over the JPEG fringe. A stained smear
    has no black; a black region inside the image (not touching the border) is kept."""
    dark = np.asarray(rgb).max(axis=-1) < level
    labels, n = ndi.label(dark)
    if n == 0:
        return dark
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    margin = np.isin(labels, edge[edge > 0])
    return ndi.binary_dilation(margin, iterations=grow) if grow and margin.any() else margin


def fill_dark_margin(rgb: np.ndarray) -> np.ndarray:
    """The image with its :func:`dark_margin` painted in the median colour of the rest (the
    slide's background: plasma and red cells), as :func:`crop_square` pads; unchanged when
    it has none or when nearly all of it is dark."""
    rgb = _check_rgb(rgb)
    margin = dark_margin(rgb)
    if not margin.any() or margin.mean() > 0.9:
        return rgb
    out = rgb.copy()
    out[margin] = np.median(rgb[~margin], axis=0).astype(np.uint8)
    return out


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {rgb.shape} "
                         f"dtype {rgb.dtype}")
    return rgb


def tight_frame(rgb: np.ndarray, config: CellPreprocess = CellPreprocess(), margin: float = 1.15
                ) -> np.ndarray:
    """The image cut to its cell with little context (``margin`` x the stained cell's box): how
    another lab may frame its single-cell images. A training augmentation: the prepared cell
    then sits on padding, as a user's tight crop will. The image itself when no cell is found."""
    found = find_cell(_check_rgb(rgb), config)
    if found is None:
        return rgb
    height, width = rgb.shape[:2]
    xmin, ymin, xmax, ymax = found.nucleus_box
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    half_w, half_h = (xmax - xmin) * margin / 2, (ymax - ymin) * margin / 2
    x0, x1 = max(0, round(cx - half_w)), min(width, round(cx + half_w))
    y0, y1 = max(0, round(cy - half_h)), min(height, round(cy + half_h))
    return np.ascontiguousarray(rgb[y0:y1, x0:x1]) if x1 - x0 > 4 and y1 - y0 > 4 else rgb


def prepare_cell(rgb: np.ndarray, size: int, config: CellPreprocess = CellPreprocess()
                 ) -> tuple[np.ndarray, bool]:
    """The cell framed, resized to ``size`` x ``size`` (bilinear) and stain-normalised (uint8),
    and whether a nucleus was found (False: the whole image was used): :func:`frame_cell`,
    then :func:`normalise_cell`."""

    square, found = frame_cell(rgb, size, config)
    return normalise_cell(square, config), found is not None or not config.cell_crop


def frame_cell(rgb: np.ndarray, size: int, config: CellPreprocess = CellPreprocess()
               ) -> tuple[np.ndarray, CellBox | None]:
    """Steps 0 to 2 of the module doc: the square around the nucleus found (the whole image,
    squared, when none is or ``cell_crop`` is off) resized to ``size`` x ``size``, and the
    nucleus found (None: none, or not searched)."""

    rgb = _check_rgb(rgb)
    if config.fill_dark_margin:
        rgb = fill_dark_margin(rgb)
    found = find_cell(rgb, config) if config.cell_crop else None
    if found is not None:
        square = crop_square(rgb, cell_box(found.nucleus_box, config.scale))
    else:
        square = whole_square(rgb)
    return resize(np.ascontiguousarray(square), int(size), int(size)), found


def normalise_cell(square: np.ndarray, config: CellPreprocess = CellPreprocess(),
                   nucleus_level: float | None = None) -> np.ndarray:
    """Step 3 of the module doc and the sharpness bounds on a framed cell (uint8): the
    Reinhard statistics taken outside the pixels whose nuclear stain exceeds ``nucleus_level``
    (Otsu's threshold on the square when None), dilated."""

    if config.stain_norm == "reinhard":
        stain = nuclear_map(square)
        level = nucleus_threshold(stain) if nucleus_level is None else nucleus_level
        background = ~ndi.binary_dilation(stain > level, disk(max(1, square.shape[0] / 48)))
        square = reinhard(square, background if background.sum() >= 16 else None)
    if config.max_detail:
        square = cap_detail(square, config.max_detail)
    if config.min_detail:
        square = raise_detail(square, config.min_detail)
    return square


def detail(rgb: np.ndarray) -> float:
    """Fine detail of an image: the standard deviation of the 4-neighbour Laplacian of its
    grey level (0..255 scale), over the interior pixels. At 64 px a PBC (CellaVision) cell
    measures ~22, a blood-cell-images one ~14: the optics and the JPEGs, not the cell type."""
    grey = np.asarray(rgb, np.float64).mean(axis=-1)
    lap = (4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2]
           - grey[1:-1, 2:])
    return float(lap.std())


def cap_detail(rgb: np.ndarray, max_detail: float, iterations: int = 12) -> np.ndarray:
    """``rgb`` (uint8) blurred by the Gaussian that brings its :func:`detail` down to
    ``max_detail`` (bisection on sigma in (0, 4] px); unchanged when it has no more than that.
    Sharpness normalisation: cells as sharp as a CellaVision's and as soft as a phone's
    through a microscope reach the network alike (one cannot sharpen, only soften)."""
    if detail(rgb) <= max_detail:
        return rgb
    image = np.asarray(rgb, np.float64)

    def blurred(sigma: float) -> np.ndarray:
        return ndi.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect")

    return _first_reaching(blurred, lambda d: d <= max_detail, 4.0, iterations)


def raise_detail(rgb: np.ndarray, min_detail: float, sigma: float = 1.0, iterations: int = 12
                 ) -> np.ndarray:
    """``rgb`` (uint8) sharpened by the unsharp mask ``x + a (x - blur_sigma(x))`` whose amount
    ``a`` (bisection in (0, 8]) brings its :func:`detail` up to ``min_detail``; unchanged when it
    has at least that. The mirror of :func:`cap_detail`: it adds no information a soft lens
    lost, only contrast at the finest scale, so soft and sharp labs' cells measure alike."""
    if detail(rgb) >= min_detail:
        return rgb
    image = np.asarray(rgb, np.float64)
    edges = image - ndi.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect")

    def sharpened(amount: float) -> np.ndarray:
        return np.clip(image + amount * edges, 0, 255)

    return _first_reaching(sharpened, lambda d: d >= min_detail, 8.0, iterations)


def _first_reaching(image_of, reached, high: float, iterations: int) -> np.ndarray:
    """``image_of(t)`` (float) for about the smallest ``t`` in (0, ``high``] whose
    :func:`detail` is ``reached`` (bisection; ``reached`` must turn true once and stay so as
    ``t`` grows), as uint8."""
    low = 0.0
    for _ in range(iterations):
        middle = (low + high) / 2
        if reached(detail(image_of(middle))):
            high = middle
        else:
            low = middle
    return np.clip(np.rint(image_of(high)), 0, 255).astype(np.uint8)


#: How many views of a prepared cell a cell model's probabilities are averaged over: 1 (the
#: cell as prepared) or 8 (the symmetries of the square: test-time augmentation).
VIEW_COUNTS = (1, 8)


def dihedral_views(images: np.ndarray, views: int = 8) -> list[np.ndarray]:
    """The first ``views`` of the 8 symmetries of the square of a batch (N, H, W, C): each
    quarter turn, then its mirror image; view 0 is the batch itself. A white cell has no up
    or left (training flips and turns it), so each is another look at the same cell."""
    if views not in VIEW_COUNTS:
        raise ValueError(f"views must be one of {VIEW_COUNTS}, got {views!r}")
    images = np.asarray(images)
    if views == 1:
        return [images]
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be square, (N, H, H, C), got shape {images.shape}")
    turns = [np.rot90(images, k, axes=(1, 2)) for k in range(4)]
    every = [np.ascontiguousarray(v) for t in turns for v in (t, t[:, :, ::-1])]
    return every[:views]


def mean_over_views(predict, images: np.ndarray, views: int) -> np.ndarray:
    """``predict``'s class probabilities (``predict(batch) -> (N, classes)``) averaged over
    ``views`` views of each image (``dihedral_views``); one view is ``predict(images)``.
    Training (calibration on validation cells), evaluation and ``leuko classify`` all predict
    through this, with the ``views`` the model's summary records."""
    return average_views([np.asarray(predict(view)) for view in dihedral_views(images, views)])


def average_views(probs) -> np.ndarray:
    """Class probabilities of each view ``(views, N, classes)`` averaged over the views (in
    float64, returned in the views' dtype); one view is itself. The one average of views."""
    if len(probs) == 1:
        return probs[0]
    return np.mean(probs, axis=0, dtype=np.float64).astype(probs[0].dtype)


def nucleus_threshold(stain: np.ndarray, floor: float = 10.0) -> float:
    """The nuclear-stain level above which a pixel is nucleus: Otsu's, at least ``floor``;
    infinite (nothing is nucleus) on a flat map, whose range is under ``floor``."""

    if float(stain.max()) - float(stain.min()) < floor:
        return float("inf")
    return max(float(threshold_otsu(stain)), floor)
