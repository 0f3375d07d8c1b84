"""Seeded, deterministic data augmentation of the leukemia study (C-NMC 2019 report recipe).

The recipe materialises a class-balanced set of ``N`` images per class (the report used 10000
train / 2000 validation images per class) from the images of one split:

* every output image is drawn from its class's source images, cycling through the sources (each
  cycle in an order shuffled by the seed) so that all sources are used as evenly as possible --
  usage counts differ by at most one between the sources of a class;
* the drawn image is rotated by a random angle in ``rotation_range`` (default [20, 340] degrees,
  counter-clockwise) combined with a horizontal or vertical flip (random choice), and then, with
  probability ``p_shear`` / ``p_blur`` / the rest (1/3 each by default), additionally sheared
  (random angle with magnitude in ``shear_range`` and random sign), blurred with a gaussian
  (sigma in ``blur_sigma``) or left as it is. These are the three chains of :data:`TRANSFORMS`.
* options, off by default: the paper's "mirroring" (``mirror=True``: each source contributes an
  extra, left-right mirrored copy to the pool, so the pool is twice as large and the chain name
  gets a ``mirror+`` prefix) and salt-and-pepper noise (``salt_pepper`` = fraction of pixels set
  to black or white, half each, applied last to every image; chain suffix ``+salt_pepper``).

Rotation, flip and shear are composed into a single affine map about the image centre and applied
once with bilinear interpolation (one resampling instead of two). Pixels that fall outside the
source are filled by **reflection** (``scipy.ndimage`` mode ``"reflect"``) rather than with a
constant: black corners would appear only in augmented images and a CNN readily learns such an
artefact as a cue. The output keeps the input's height, width and channels (uint8).

Determinism: every output item carries ``seed_for_item``, an integer derived from the run seed,
the class label and the item index only (:func:`plan_balanced`). Each item is therefore
reproducible on its own, independently of the order in which items are processed, which makes
parallel or resumed materialisation produce the same bytes. PNGs are written losslessly with a
fixed compression level and no metadata, so same seed -> byte-identical files.

Output layout: ``out_dir/<split>/<label>/<label>_<index:06d>.png`` with ``index`` counted per class;
the manifest returned by :func:`materialise` gives ``path`` relative to ``out_dir`` (so manifests
of runs in different directories compare equal), plus label, split, source_path, the transform
chain name and the sha256 of the file bytes.

The test split is never augmented: :func:`materialise` refuses ``split="test"``.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from leuko.core.atomic import write_bytes_atomic
from leuko.core.images import load_rgb, resize
from leuko.core.progress import progress_bar

__all__ = [
    "AugmentConfig",
    "OPTIONAL_TRANSFORMS",
    "TRANSFORMS",
    "apply_transform",
    "augment_image",
    "enabled_transforms",
    "materialise",
    "plan_balanced",
]

#: The three chains of the recipe; each output image gets exactly one of them.
TRANSFORMS: tuple[str, ...] = ("rotate_flip", "rotate_flip_shear", "rotate_flip_blur")
#: Optional steps (off by default): a mirrored copy of each source, and salt-and-pepper noise.
OPTIONAL_TRANSFORMS: tuple[str, ...] = ("mirror", "salt_pepper")

_PNG_COMPRESS_LEVEL = 3  # zlib level: ~10 ms for 250x250, files within ~10% of level 6
_FORBIDDEN_SPLITS = frozenset({"test"})


def _as_range(name: str, value: object) -> tuple[float, float]:
    """Convert a (low, high) pair to floats or raise a ValueError naming the field."""
    try:
        low, high = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(
            f"AugmentConfig.{name} must be a pair (low, high) of numbers, got {value!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"AugmentConfig.{name} must be finite with low <= high, got {value!r}")
    return low, high


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the augmentation recipe (angles in degrees); validated on construction."""

    rotation_range: tuple[float, float] = (20.0, 340.0)
    shear_range: tuple[float, float] = (5.0, 20.0)
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    p_shear: float = 1 / 3
    p_blur: float = 1 / 3
    mirror: bool = False
    salt_pepper: float = 0.0

    def __post_init__(self) -> None:
        """Validate every field; raise ValueError naming the field and the allowed values."""
        rot = _as_range("rotation_range", self.rotation_range)
        if not (0.0 <= rot[0] and rot[1] <= 360.0):
            raise ValueError(
                "AugmentConfig.rotation_range must satisfy 0 <= low <= high <= 360 (degrees), "
                f"got {self.rotation_range!r}"
            )
        shear = _as_range("shear_range", self.shear_range)
        if not (0.0 <= shear[0] and shear[1] < 90.0):
            raise ValueError(
                "AugmentConfig.shear_range must satisfy 0 <= low <= high < 90 (degrees, "
                f"magnitude; the sign is random), got {self.shear_range!r}"
            )
        blur = _as_range("blur_sigma", self.blur_sigma)
        if not (blur[0] > 0.0):
            raise ValueError(
                "AugmentConfig.blur_sigma must satisfy 0 < low <= high (pixels), "
                f"got {self.blur_sigma!r}"
            )
        for name in ("p_shear", "p_blur"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {p!r}")
        if self.p_shear + self.p_blur > 1.0 + 1e-12:
            raise ValueError(
                "AugmentConfig.p_shear + AugmentConfig.p_blur must be <= 1 (the rest is the "
                f"plain rotate_flip chain), got {self.p_shear} + {self.p_blur}"
            )
        if not isinstance(self.mirror, bool | np.bool_):
            raise ValueError(f"AugmentConfig.mirror must be True or False, got {self.mirror!r}")
        sp = self.salt_pepper
        if isinstance(sp, bool) or not isinstance(sp, int | float) or not 0.0 <= sp < 1.0:
            raise ValueError(
                "AugmentConfig.salt_pepper must be a fraction of pixels in [0, 1) "
                f"(0 disables it), got {sp!r}"
            )
        object.__setattr__(self, "rotation_range", rot)
        object.__setattr__(self, "shear_range", shear)
        object.__setattr__(self, "blur_sigma", blur)
        object.__setattr__(self, "p_shear", float(self.p_shear))
        object.__setattr__(self, "p_blur", float(self.p_blur))
        object.__setattr__(self, "mirror", bool(self.mirror))
        object.__setattr__(self, "salt_pepper", float(sp))


def enabled_transforms(config: AugmentConfig) -> tuple[str, ...]:
    """The transform names a run with ``config`` uses: TRANSFORMS plus enabled optional steps."""
    extra = tuple(
        name
        for name, on in zip(
            OPTIONAL_TRANSFORMS, (config.mirror, config.salt_pepper > 0), strict=True
        )
        if on
    )
    return TRANSFORMS + extra


# --------------------------------------------------------------------------------------------
# image operations
# --------------------------------------------------------------------------------------------


def _check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as an array after checking it is a uint8 HxW or HxWxC image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"augmentation expects a uint8 image, got dtype {image.dtype}")
    if image.ndim not in (2, 3) or image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"augmentation expects an HxW or HxWxC image, got shape {image.shape}")
    return image


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Round and clip float pixel values to uint8."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _affine(image: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Apply the 2x2 map ``forward`` (row, col coordinates) about the centre; reflect fill."""
    height, width = image.shape[:2]
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    inverse = np.linalg.inv(forward)
    offset = centre - inverse @ centre
    planes = image[..., None] if image.ndim == 2 else image
    out = np.empty(planes.shape, dtype=np.float32)
    for c in range(planes.shape[2]):
        ndimage.affine_transform(
            planes[..., c],
            inverse,
            offset=offset,
            output=out[..., c],
            order=1,
            mode="reflect",
            prefilter=False,
        )
    return _to_uint8(out.reshape(image.shape))


def _rotate_flip_matrix(rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Draw a rotation angle and a flip axis; return flip @ rotation in (row, col) coordinates."""
    angle = math.radians(rng.uniform(*config.rotation_range))
    cos, sin = math.cos(angle), math.sin(angle)
    # counter-clockwise on screen (rows point down)
    rotation = np.array([[cos, -sin], [sin, cos]])
    horizontal = bool(rng.integers(2))
    flip = np.diag([1.0, -1.0]) if horizontal else np.diag([-1.0, 1.0])
    return flip @ rotation


def _shear_matrix(rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Draw a shear angle (magnitude in shear_range, random sign); horizontal shear matrix."""
    magnitude = rng.uniform(*config.shear_range)
    sign = 1.0 if rng.integers(2) else -1.0
    return np.array([[1.0, 0.0], [math.tan(math.radians(sign * magnitude)), 1.0]])


def _blur(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Gaussian blur with sigma drawn from blur_sigma (spatial axes only, reflect borders)."""
    sigma = rng.uniform(*config.blur_sigma)
    sigmas = (sigma, sigma) + (0.0,) * (image.ndim - 2)
    return _to_uint8(ndimage.gaussian_filter(image.astype(np.float32), sigmas, mode="reflect"))


def _salt_pepper(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Set a fraction ``amount`` of pixels (all channels) to 0 or 255, half each."""
    if amount <= 0.0:
        raise ValueError(
            f"salt_pepper needs AugmentConfig.salt_pepper > 0 (fraction of pixels), got {amount!r}"
        )
    out = image.copy()
    u = rng.random(image.shape[:2])
    out[u < amount / 2.0] = 0
    out[(u >= amount / 2.0) & (u < amount)] = 255
    return out


def _apply_step(
    image: np.ndarray, name: str, rng: np.random.Generator, config: AugmentConfig
) -> np.ndarray:
    """Apply one named step (an entry of TRANSFORMS or OPTIONAL_TRANSFORMS)."""
    if name == "mirror":
        return np.ascontiguousarray(image[:, ::-1])
    if name == "salt_pepper":
        return _salt_pepper(image, rng, config.salt_pepper)
    if name not in TRANSFORMS:
        known = ", ".join(TRANSFORMS + OPTIONAL_TRANSFORMS)
        raise ValueError(f"unknown transform {name!r}; known: {known} (chain them with '+')")
    forward = _rotate_flip_matrix(rng, config)
    if name == "rotate_flip_shear":
        forward = _shear_matrix(rng, config) @ forward
    out = _affine(image, forward)
    if name == "rotate_flip_blur":
        out = _blur(out, rng, config)
    return out


def apply_transform(
    image: np.ndarray, name: str, rng: np.random.Generator, config: AugmentConfig
) -> np.ndarray:
    """Apply one named chain (a TRANSFORMS/OPTIONAL_TRANSFORMS name, or several joined by '+')."""
    out = _check_image(image)
    for step in name.split("+"):
        out = _apply_step(out, step, rng, config)
    return out


def _choose_chain(rng: np.random.Generator, config: AugmentConfig) -> str:
    """Draw the chain name: shear with p_shear, blur with p_blur, plain rotate_flip otherwise."""
    u = rng.random()
    if u < config.p_shear:
        return "rotate_flip_shear"
    if u < config.p_shear + config.p_blur:
        return "rotate_flip_blur"
    return "rotate_flip"


def augment_image(
    image: np.ndarray, rng: np.random.Generator, config: AugmentConfig
) -> tuple[np.ndarray, str]:
    """Augment one uint8 image by the recipe; return the same-shape uint8 result and chain name."""
    name = _choose_chain(rng, config)
    if config.salt_pepper > 0:
        name += "+salt_pepper"
    return apply_transform(image, name, rng, config), name


# --------------------------------------------------------------------------------------------
# planning and materialisation
# --------------------------------------------------------------------------------------------


def _label_key(label: object) -> int:
    """A stable 32-bit key of a class label (independent of which other classes exist)."""
    return zlib.crc32(str(label).encode("utf-8"))


def _item_seed(seed: int, label_key: int, index: int) -> int:
    """A non-negative 63-bit seed derived from (seed, label, index) only."""
    state = np.random.SeedSequence([seed, label_key, 1, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)


def _check_seed(seed: int) -> int:
    """Return seed as int after checking it is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def plan_balanced(
    frame: pd.DataFrame,
    n_per_class: int,
    seed: int,
    label_col: str = "label",
    path_col: str = "path",
    mirror: bool = False,
) -> pd.DataFrame:
    """Assign a source row and a per-item seed to each of n_per_class outputs of every class."""
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int | np.integer):
        raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    seed = _check_seed(seed)
    for col in (label_col, path_col):
        if col not in frame.columns:
            raise KeyError(f"frame has no column {col!r} (columns: {list(frame.columns)})")
    if frame.empty:
        raise ValueError("frame has no rows to augment")
    if frame[label_col].isna().any() or frame[path_col].isna().any():
        raise ValueError(f"frame has missing values in {label_col!r} or {path_col!r}")

    rows = []
    for label in sorted(frame[label_col].unique(), key=str):
        # sort so the plan does not depend on the frame's row order
        sources = sorted(str(p) for p in frame.loc[frame[label_col] == label, path_col])
        pool = [(p, False) for p in sources]
        if mirror:
            pool += [(p, True) for p in sources]
        key = _label_key(label)
        shuffle_rng = np.random.default_rng([seed, key, 0])
        order: list[int] = []
        while len(order) < n_per_class:  # each cycle is a fresh permutation of the whole pool
            order.extend(shuffle_rng.permutation(len(pool)).tolist())
        for index, pick in enumerate(order[:n_per_class]):
            path, mirrored = pool[pick]
            rows.append(
                {
                    "source_path": path,
                    "label": label,
                    "index": index,
                    "mirrored": mirrored,
                    "seed_for_item": _item_seed(seed, key, index),
                }
            )
    plan = pd.DataFrame(
        rows, columns=["source_path", "label", "index", "mirrored", "seed_for_item"]
    )
    return plan.astype({"index": "int64", "mirrored": bool, "seed_for_item": "int64"})


def _encode_png(image: np.ndarray) -> bytes:
    """Encode losslessly as PNG, fixed compression, no metadata (deterministic bytes)."""

    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(
        buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL, optimize=False
    )
    return buffer.getvalue()


def materialise(
    frame: pd.DataFrame,
    out_dir: Path,
    n_per_class: int,
    seed: int,
    config: AugmentConfig,
    split: str,
    size: int | None = None,
    load: Callable[[Path], np.ndarray] | None = None,
    progress: bool = True,
    label_col: str = "label",
    path_col: str = "path",
) -> pd.DataFrame:
    """Write the balanced augmented PNGs of one split and return their manifest."""
    if not isinstance(split, str) or not split.strip() or split in (".", "..") or "/" in split:
        raise ValueError(f"split must be a plain name such as 'train' or 'val', got {split!r}")
    if split.strip().lower() in _FORBIDDEN_SPLITS:
        raise ValueError(
            f"refusing to augment split {split!r}: the test split is never augmented "
            "(evaluate on the original test images)"
        )
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be None or a positive integer, got {size!r}")
    if not isinstance(config, AugmentConfig):
        raise TypeError(f"config must be an AugmentConfig, got {type(config).__name__}")
    if load is None:
        load = load_rgb


    plan = plan_balanced(
        frame, n_per_class, seed, label_col=label_col, path_col=path_col, mirror=config.mirror
    )
    out_dir = Path(out_dir)
    for label in plan["label"].unique():
        name = str(label)
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            raise ValueError(f"label {label!r} cannot be used as a directory name")
        (out_dir / split / name).mkdir(parents=True, exist_ok=True)

    # Process grouped by source: each source is decoded once and dropped after its last use, so
    # memory stays bounded however many sources there are. Items are independent (own seed), so
    # the processing order does not change any output.
    items = plan.to_dict("records")
    order = sorted(
        range(len(items)),
        key=lambda i: (items[i]["source_path"], str(items[i]["label"]), items[i]["index"]),
    )
    last_use = {items[i]["source_path"]: pos for pos, i in enumerate(order)}
    cache: dict[str, np.ndarray] = {}
    records: dict[int, dict[str, object]] = {}
    with progress_bar(total=len(plan), desc=f"augment {split}", enabled=progress) as bar:
        for pos, row_id in enumerate(order):
            item = items[row_id]
            source = item["source_path"]
            if source not in cache:
                image = np.asarray(load(Path(source)))
                cache[source] = _check_image(image)
            image = cache[source]
            rng = np.random.default_rng(int(item["seed_for_item"]))
            prefix = ""
            if item["mirrored"]:
                image = _apply_step(image, "mirror", rng, config)
                prefix = "mirror+"
            out, chain = augment_image(image, rng, config)
            if size is not None:
                out = resize(out, size)
            data = _encode_png(out)
            label = item["label"]
            rel = Path(split) / str(label) / f"{label}_{int(item['index']):06d}.png"
            write_bytes_atomic(out_dir / rel, data)
            records[row_id] = {
                "path": rel.as_posix(),
                "label": label,
                "split": split,
                "source_path": source,
                "transform": prefix + chain,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            if last_use[source] == pos:
                del cache[source]
            bar.update(1)

    columns = ["path", "label", "split", "source_path", "transform", "sha256"]
    return pd.DataFrame([records[i] for i in range(len(items))], columns=columns)
