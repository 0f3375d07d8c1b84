"""Image decoding for the study: every image enters through here, and nothing fails silently.

Every pixel the study sees comes from :func:`load_rgb` (or :func:`scan_images`, which uses
the same decoder), so every image is handled the same way: a ``uint8`` array of shape
``(height, width, 3)`` in RGB order. A file that cannot be turned into one raises
:class:`BadImageError`, whose ``reason`` says exactly what is wrong with it.

How each kind of file is handled
--------------------------------
* File checks, in this order: missing -> ``"file not found"``; a folder or other non-file ->
  ``"not a regular file (...)"``; a suffix outside :data:`SUPPORTED_SUFFIXES` (case does not
  matter) -> ``"unsupported file type ..."``; zero bytes -> ``"empty file (0 bytes)"``.
* Bytes that no image decoder accepts (a text file named ``.jpg``) -> ``"not a decodable
  image (...)"``, with the first bytes of the file. A recognised format whose header is cut
  short or broken -> ``"truncated or corrupt image data (in the header: ...)"``.
* Size: the width and height are read from the header, *before* any pixel is decoded. More
  than :data:`MAX_PIXELS` pixels -> ``"too large: WxH pixels > MAX_PIXELS"`` (a decompression
  bomb is never decoded). Pillow's own ``Image.MAX_IMAGE_PIXELS`` check is kept out of the way
  (its warning is silenced and its error is turned into the reason above), and the global
  setting is left as found.
* Pixel data that ends early or is corrupt -> ``"truncated or corrupt image data (...)"``.
  ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is never honoured here: if some other code set it
  to True, decoding here still runs with False, so a truncated file is never accepted
  half-grey. (A JPEG missing only its final 2-byte end marker still decodes completely and is
  accepted: no pixel is missing.)
* Pixel modes -> RGB:

  - ``RGB``: as is. ``CMYK`` (JPEG, Adobe-inverted or not) and ``YCbCr``, ``LAB``, ``HSV``,
    ``RGBX``: Pillow's conversion to RGB. Embedded ICC colour profiles are *not* applied.
  - ``L`` (grayscale) -> the gray value repeated in R, G, B. ``1`` (bilevel) -> 0 or 255.
  - ``P`` (palette) -> the palette colours; with transparency, as ``RGBA`` below.
  - Anything with alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, palette with
    transparency) is **composited onto a white background**, then the alpha is dropped:
    transparent areas become white, like the bright background of a brightfield slide, and
    no colour hidden under alpha 0 leaks in.
  - 16-bit gray (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``): the full 0..65535 range maps to
    0..255 as ``round(v / 257)`` (so 65535 -> 255, 32896 -> 128), never clipped at 255.
  - ``I`` (32-bit integer; Pillow's mode for some 16-bit files): values within 0..65535 are
    taken as 16-bit and scaled as above; values outside that range are rejected
    (``"unsupported pixel data ..."``), since no mapping to 8 bits would be more than a guess.
  - 16-bit RGB / RGBA PNG and TIFF: Pillow already reduces each sample to its high byte
    (``v >> 8``), which differs from ``round(v / 257)`` by at most 1 level.
  - ``F`` (32-bit float TIFF) is **rejected** (``"unsupported pixel data ..."``): float data
    has no standard 8-bit mapping and a per-image min-max stretch would silently change
    intensities between images of the study. Convert such files to 8 or 16 bit first.
* Multi-frame files (multi-page TIFF): the **first frame** only; the others are ignored.
* EXIF / TIFF orientation tag: **applied** (the array is rotated / flipped the way a viewer
  shows the image), so ``height`` and ``width`` are those of the upright image.

Policy for bad images (:func:`check_policy`, parameter ``bad_images`` of callers):
``"fail"`` (default) scans *all* files and then raises one :class:`BadImagesError` listing
every bad file with its reason; ``"skip"`` leaves them out and returns them so a report can
list them (:func:`bad_images_frame`).
"""

from __future__ import annotations

import hashlib
import io
import stat
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile

from leuko.core.progress import progress_bar

if TYPE_CHECKING:  # pandas is imported only when a frame is built (keeps decoding workers light)
    import pandas as pd

__all__ = [
    "MAX_PIXELS",
    "POLICIES",
    "SUPPORTED_SUFFIXES",
    "BadImage",
    "BadImageError",
    "BadImagesError",
    "ImageInfo",
    "bad_images_frame",
    "check_policy",
    "dhash",
    "dihedral_dhashes",
    "file_sha256",
    "load_rgb",
    "resize",
    "scan_images",
]

SUPPORTED_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
"""File suffixes (lower case) accepted as images; the check ignores case (``.JPG`` is fine)."""

MAX_PIXELS: int = 50_000_000
"""Images with more pixels (width * height) are rejected from the header, never decoded."""

POLICIES: tuple[str, ...] = ("fail", "skip")
"""Allowed values of the ``bad_images`` policy."""

_CHUNK = 1 << 20
# Pillow's header parsing and its global settings (MAX_IMAGE_PIXELS, LOAD_TRUNCATED_IMAGES)
# are touched only while holding this lock, so threads using this module do not race.
_PIL_LOCK = threading.Lock()
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# EXIF orientation value -> numpy operation on an (H, W, C) array that makes it upright.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


class BadImageError(ValueError):
    """One image that cannot be decoded; ``str()`` is ``"{path}: {reason}"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(path, reason)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class BadImage:
    """A file left out of the study and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class ImageInfo:
    """A good image: its path, the SHA-256 of its bytes, and its decoded height and width."""

    path: Path
    sha256: str
    height: int
    width: int


class BadImagesError(ValueError):
    """All bad images of a scan under policy 'fail', listed one per line with their reasons."""

    def __init__(self, bad: list[BadImage], total: int | None = None) -> None:
        super().__init__(bad, total)
        self.bad = list(bad)
        self.total = total

    def __str__(self) -> str:
        n = len(self.bad)
        of = f" of {self.total}" if self.total is not None else ""
        lines = [f"{n}{of} image file(s) cannot be used:"]
        lines += [f"  {b.path}: {b.reason}" for b in self.bad]
        lines.append(
            "Fix or remove these files, or pass bad_images='skip' (policy 'skip') to leave "
            "them out of the study; they are then listed in the report."
        )
        return "\n".join(lines)


def check_policy(policy: str) -> str:
    """Return ``policy`` if it is 'fail' or 'skip', else raise ValueError naming ``bad_images``."""
    if isinstance(policy, str) and policy in POLICIES:
        return policy
    allowed = ", ".join(repr(p) for p in POLICIES)
    raise ValueError(f"bad_images must be one of {allowed}, got {policy!r}")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 digest of the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def resize(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """An HxWx3 uint8 image resized to ``height`` x ``width`` (``width`` defaults to
    ``height``: a square), bilinear with antialiasing (PIL), aspect not kept; the image itself
    when it already has that size. The one resize of training, augmentation and classifying."""
    width = height if width is None else width
    if image.shape[0] == height and image.shape[1] == width:
        return image
    return np.asarray(Image.fromarray(image).resize((int(width), int(height)),
                                                    Image.Resampling.BILINEAR))


def dhash(image: np.ndarray, size: int = 16) -> np.ndarray:
    """The difference hash of an RGB image: its grey levels at ``size + 1`` x ``size`` pixels,
    one bit per pixel pair (left brighter than right), packed into ``size**2 / 64`` uint64
    words (``size`` a multiple of 8). Near-identical images (re-encoded, resized, slightly
    shifted) differ in few bits, unrelated ones in about half."""
    if size < 8 or size % 8:
        raise ValueError(f"dhash size must be a multiple of 8, got {size}")
    grey = np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("L").resize(
        (size + 1, size), Image.Resampling.BILINEAR), dtype=np.int16)
    return np.packbits(grey[:, 1:] > grey[:, :-1]).view(">u8").astype(np.uint64)


def dihedral_dhashes(image: np.ndarray, size: int = 16) -> np.ndarray:
    """:func:`dhash` of the image under each of the square's 8 symmetries (quarter turns, each
    also mirrored), the image itself first: uint64 (8, words), for finding turned or flipped
    copies (:func:`leuko.core.splits.near_duplicates`)."""
    out = []
    for turns in range(4):
        turned = np.rot90(image, turns)
        out += [dhash(turned, size), dhash(turned[:, ::-1], size)]
    return np.stack(out)


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to a uint8 (H, W, 3) RGB array; raise BadImageError with the reason."""
    path = Path(path)
    return _decode(path, _read_bytes(path))


def scan_images(
    paths: Iterable[Path], policy: str = "fail", progress: bool = True
) -> tuple[list[ImageInfo], list[BadImage]]:
    """Decode each image once; return good ones (sha256, size) and bad ones with reasons."""
    check_policy(policy)
    paths = [Path(p) for p in paths]
    good: list[ImageInfo] = []
    bad: list[BadImage] = []
    iterator: Iterable[Path] = paths
    if progress:

        iterator = progress_bar(paths, total=len(paths), desc="Checking images")
    for path in iterator:
        try:
            data = _read_bytes(path)
            rgb = _decode(path, data)
        except BadImageError as err:
            bad.append(BadImage(path=path, reason=err.reason))
            continue
        digest = hashlib.sha256(data).hexdigest()
        good.append(ImageInfo(path=path, sha256=digest, height=rgb.shape[0], width=rgb.shape[1]))
    if bad and policy == "fail":
        raise BadImagesError(bad, total=len(paths))
    return good, bad


def bad_images_frame(bad: list[BadImage]) -> pd.DataFrame:
    """Bad images as a DataFrame with columns ``path`` (str) and ``reason``."""
    import pandas as pd  # lazy: see the TYPE_CHECKING import above


    return pd.DataFrame(
        {"path": [str(b.path) for b in bad], "reason": [b.reason for b in bad]},
        columns=["path", "reason"],
        dtype=object,
    )


# --------------------------------------------------------------------------- internals


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, after the checks that need no decoder (exists, file, suffix, empty)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except OSError as err:
        raise BadImageError(path, f"cannot read file ({err.strerror or err})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a file"
        raise BadImageError(path, f"not a regular file ({kind})")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        allowed = ", ".join(sorted(SUPPORTED_SUFFIXES))
        shown = repr(path.suffix) if path.suffix else "no suffix"
        raise BadImageError(path, f"unsupported file type {shown} (supported: {allowed})")
    if st.st_size == 0:
        raise BadImageError(path, "empty file (0 bytes)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BadImageError(path, f"cannot read file ({err.strerror or err})") from None
    if not data:  # emptied between stat and read
        raise BadImageError(path, "empty file (0 bytes)")
    return data


def _open_header(path: Path, data: bytes) -> Image.Image:
    """Parse the header only (no pixels), with Pillow's own size check kept out of the way."""
    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            try:
                return Image.open(io.BytesIO(data))
            except Image.DecompressionBombError:
                # Only for the size: ours is checked by the caller, before any decoding.
                saved = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
                try:
                    return Image.open(io.BytesIO(data))
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
        except Image.UnidentifiedImageError:
            raise BadImageError(
                path,
                f"not a decodable image (no decoder accepts the data; starts with {data[:16]!r})",
            ) from None
        except Exception as err:  # a format was recognised, but its header is cut or broken
            detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            raise BadImageError(
                path, f"truncated or corrupt image data (in the header: {detail})"
            ) from None


def _load_pixels(path: Path, im: Image.Image) -> None:
    """Decode the pixels; truncated or corrupt data is an error whatever the global setting."""
    try:
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            with _PIL_LOCK:
                saved = ImageFile.LOAD_TRUNCATED_IMAGES
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                try:
                    im.load()
                finally:
                    ImageFile.LOAD_TRUNCATED_IMAGES = saved
        else:
            im.load()
    except MemoryError:
        raise BadImageError(path, "too large: out of memory while decoding") from None
    except Exception as err:
        detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise BadImageError(path, f"truncated or corrupt image data ({detail})") from None


def _orientation(im: Image.Image) -> int:
    """EXIF/TIFF orientation (1..8), 1 when absent or unreadable."""
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not reject the pixels
        return 1
    return value if value in _ORIENT else 1


def _to_rgb(path: Path, im: Image.Image) -> np.ndarray:
    """Convert a loaded image of any supported mode to a uint8 (H, W, 3) array."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(im)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise BadImageError(
                path,
                "unsupported pixel data (32-bit integer values "
                f"{int(values.min())}..{int(values.max())} outside the 16-bit range 0..65535)",
            )
        gray = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        raise BadImageError(
            path,
            "unsupported pixel data (32-bit float, mode F: no standard 8-bit mapping; "
            "convert the file to 8 or 16 bit)",
        )
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as err:
        raise BadImageError(
            path, f"unsupported pixel data (mode {mode!r} cannot be converted to RGB: {err})"
        ) from None


def _decode(path: Path, data: bytes) -> np.ndarray:
    """Header, size check, pixels, RGB, orientation: the single decoder of the module."""
    im = _open_header(path, data)
    try:
        width, height = im.size
        if width * height > MAX_PIXELS:
            raise BadImageError(path, f"too large: {width}x{height} pixels > {MAX_PIXELS}")
        if width <= 0 or height <= 0:
            raise BadImageError(path, f"not a decodable image (size {width}x{height})")
        _load_pixels(path, im)  # first frame of a multi-frame file
        rgb = _to_rgb(path, im)
        rgb = _ORIENT.get(_orientation(im), lambda a: a)(rgb)
    finally:
        im.close()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if not rgb.flags.writeable:  # callers (augmentation) may modify the array in place
        rgb = rgb.copy()
    if rgb.ndim != 3 or rgb.shape[2] != 3:  # defensive: never hand out a wrong shape
        raise BadImageError(path, f"unsupported pixel data (decoded shape {rgb.shape})")
    return rgb
