"""Tests of leuko.core.images: every kind of bad or unusual file is built here and its outcome checked."""

from __future__ import annotations

import hashlib
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile, ImageOps

from leuko.core import images
from leuko.core.images import (
    MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    BadImage,
    BadImageError,
    BadImagesError,
    ImageInfo,
    bad_images_frame,
    check_policy,
    file_sha256,
    load_rgb,
    scan_images,
)

REPO = Path(__file__).resolve().parents[1]
REAL_JPEG = REPO / "data/blood-cell-images/images/TRAIN/EOSINOPHIL/_0_1169.jpeg"
REAL_TIFF = REPO / "data/all-idb2/Im001_1.tif"


# ----------------------------------------------------------------------------- builders


def write_png(path: Path, width: int, height: int, bit_depth: int, color_type: int, raw: bytes):
    """Craft a PNG by hand (IHDR + one IDAT + IEND); ``raw`` is the filtered scanline data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


def noise_rgb(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def good_jpeg(path: Path, seed: int = 0) -> Path:
    Image.fromarray(noise_rgb(seed=seed)).save(path, quality=90)
    return path


def assert_rgb(arr: np.ndarray, h: int, w: int) -> None:
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.uint8
    assert arr.shape == (h, w, 3)


def reason_of(path: Path) -> str:
    with pytest.raises(BadImageError) as info:
        load_rgb(path)
    assert info.value.path == path
    assert str(info.value) == f"{path}: {info.value.reason}"
    return info.value.reason


# ----------------------------------------------------------------------------- constants


def test_constants():
    assert SUPPORTED_SUFFIXES == frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
    assert MAX_PIXELS == 50_000_000
    assert issubclass(BadImageError, ValueError) and issubclass(BadImagesError, ValueError)


# ----------------------------------------------------------------------------- real files


@pytest.mark.skipif(not REAL_JPEG.exists(), reason="dataset not pulled")
def test_real_jpeg():
    arr = load_rgb(REAL_JPEG)
    assert_rgb(arr, 240, 320)
    assert 0 < arr.mean() < 255 and arr.std() > 1


@pytest.mark.skipif(not REAL_TIFF.exists(), reason="dataset not pulled")
def test_real_tiff():
    arr = load_rgb(str(REAL_TIFF))  # str paths work too
    assert_rgb(arr, 257, 257)
    assert 0 < arr.mean() < 255 and arr.std() > 1


# ----------------------------------------------------------------------------- good files


def test_rgb_formats_roundtrip(tmp_path):
    src = noise_rgb()
    for suffix in (".png", ".bmp", ".tif", ".tiff", ".PNG"):
        path = tmp_path / f"img{suffix}"
        Image.fromarray(src).save(path, format={".bmp": "BMP"}.get(suffix.lower()))
        arr = load_rgb(path)
        np.testing.assert_array_equal(arr, src)
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)
    jpg = tmp_path / "img.JPG"  # upper-case suffix is accepted
    Image.fromarray(smooth).save(jpg, format="JPEG", quality=95)
    arr = load_rgb(jpg)
    assert_rgb(arr, 48, 64)
    assert np.abs(arr.astype(int) - smooth.astype(int)).mean() < 3  # lossy, but the same picture
    arr[0, 0] = 1  # writable: augmentation may work in place


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    cmyk = Image.new("CMYK", (16, 8), (255, 0, 0, 0))  # pure cyan
    cmyk.paste((0, 0, 0, 255), (8, 0, 16, 8))  # right half: pure black
    cmyk.save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    arr = load_rgb(path)
    assert_rgb(arr, 8, 16)
    np.testing.assert_allclose(arr[4, 2], [0, 255, 255], atol=6)
    np.testing.assert_allclose(arr[4, 13], [0, 0, 0], atol=6)


def test_16bit_gray_png_uses_full_range(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    arr = load_rgb(path)
    assert_rgb(arr, 1, 4)
    np.testing.assert_array_equal(arr[0, :, 0], [0, 1, 128, 255])
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_16bit_gray_tiff_both_byte_orders(tmp_path, byteorder):
    tifffile = pytest.importorskip("tifffile")
    values = np.array([[0, 32896], [65535, 1000]], dtype=np.uint16)
    path = tmp_path / "g16.tif"
    tifffile.imwrite(path, values, byteorder=byteorder)
    assert Image.open(path).mode == ("I;16B" if byteorder == ">" else "I;16")
    arr = load_rgb(path)
    assert_rgb(arr, 2, 2)
    np.testing.assert_array_equal(arr[..., 0], [[0, 128], [255, 4]])


def test_16bit_rgb_png(tmp_path):
    px = np.zeros((2, 3, 3), ">u2")
    px[0, 0] = [65535, 32896, 0]
    raw = b"".join(b"\x00" + row.tobytes() for row in px)
    path = write_png(tmp_path / "rgb16.png", 3, 2, 16, 2, raw)
    arr = load_rgb(path)
    assert_rgb(arr, 2, 3)
    np.testing.assert_array_equal(arr[0, 0], [255, 128, 0])


def test_mode_i_within_16_bit_range_is_scaled_and_outside_is_rejected(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    ok = tmp_path / "i32.tif"
    tifffile.imwrite(ok, np.array([[0, 32896, 65535]], dtype=np.int32))
    assert Image.open(ok).mode == "I"
    np.testing.assert_array_equal(load_rgb(ok)[0, :, 1], [0, 128, 255])
    bad = tmp_path / "i32big.tif"
    tifffile.imwrite(bad, np.array([[5, 100000]], dtype=np.int32))
    assert "unsupported pixel data" in reason_of(bad)


def test_float_tiff_is_rejected(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, np.array([[0.25, 0.5]], dtype=np.float32))
    reason = reason_of(path)
    assert reason.startswith("unsupported pixel data") and "float" in reason


def test_grayscale_and_bilevel(tmp_path):
    gray = np.arange(0, 256, 16, dtype=np.uint8).reshape(2, 8)
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    arr = load_rgb(path)
    assert_rgb(arr, 2, 8)
    for c in range(3):
        np.testing.assert_array_equal(arr[..., c], gray)

    bilevel = Image.new("1", (4, 2), 0)
    bilevel.putpixel((1, 0), 1)
    path = tmp_path / "bilevel.bmp"
    bilevel.save(path)
    arr = load_rgb(path)
    assert_rgb(arr, 2, 4)
    assert set(np.unique(arr)) == {0, 255}
    np.testing.assert_array_equal(arr[0, 1], [255, 255, 255])


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = [200, 10, 10, 255]  # opaque red stays red
    rgba[0, 1] = [0, 0, 0, 0]  # fully transparent black becomes white
    rgba[0, 2] = [0, 0, 0, 128]  # half-transparent black becomes mid gray
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    arr = load_rgb(path)
    assert_rgb(arr, 1, 3)
    np.testing.assert_array_equal(arr[0, 0], [200, 10, 10])
    np.testing.assert_array_equal(arr[0, 1], [255, 255, 255])
    assert np.all(np.abs(arr[0, 2].astype(int) - 127) <= 1)

    la = np.array([[[40, 255], [40, 0]]], np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    arr = load_rgb(path)
    assert_rgb(arr, 1, 2)
    np.testing.assert_array_equal(arr[0], [[40, 40, 40], [255, 255, 255]])


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (3, 1))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 0] + [0] * (256 * 3 - 9))
    pal.putdata([0, 1, 2])
    plain = tmp_path / "pal.png"
    pal.save(plain)
    assert Image.open(plain).mode == "P"
    np.testing.assert_array_equal(load_rgb(plain)[0], [[255, 0, 0], [0, 255, 0], [0, 0, 0]])

    transparent = tmp_path / "pal_t.png"
    pal.save(transparent, transparency=2)  # index 2 (black) is transparent
    assert "transparency" in Image.open(transparent).info
    np.testing.assert_array_equal(
        load_rgb(transparent)[0], [[255, 0, 0], [0, 255, 0], [255, 255, 255]]
    )
    bmp = tmp_path / "pal.bmp"
    pal.save(bmp)
    assert_rgb(load_rgb(bmp), 1, 3)


def test_multiframe_tiff_uses_first_frame(tmp_path):
    path = tmp_path / "multi.tif"
    first = Image.new("RGB", (5, 4), (10, 20, 30))
    second = Image.new("RGB", (7, 6), (200, 200, 200))
    first.save(path, save_all=True, append_images=[second])
    assert Image.open(path).n_frames == 2
    arr = load_rgb(path)
    assert_rgb(arr, 4, 5)
    assert (arr == [10, 20, 30]).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    src = Image.fromarray(noise_rgb(3, 5, seed=orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.png"
    src.save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    np.testing.assert_array_equal(load_rgb(path), expected)


# ----------------------------------------------------------------------------- bad files


def test_missing_empty_text_folder_and_suffix(tmp_path):
    assert reason_of(tmp_path / "missing.jpg") == "file not found"
    empty = tmp_path / "empty.png"
    empty.touch()
    assert reason_of(empty) == "empty file (0 bytes)"
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    reason = reason_of(text)
    assert reason.startswith("not a decodable image (") and "this is not" in reason
    folder = tmp_path / "folder.png"
    folder.mkdir()
    assert reason_of(folder).startswith("not a regular file")
    gif = tmp_path / "anim.gif"
    Image.new("RGB", (2, 2)).save(gif)
    reason = reason_of(gif)
    assert reason.startswith("unsupported file type '.gif'") and ".tiff" in reason


def test_truncated_jpeg_and_png(tmp_path):
    data = good_jpeg(tmp_path / "full.jpg").read_bytes()
    for cut in (300, len(data) // 2, len(data) - 20):
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(data[:cut])
        assert reason_of(path).startswith("truncated or corrupt image data ("), cut
    png = tmp_path / "full.png"
    Image.fromarray(noise_rgb()).save(png)
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    assert reason_of(cut).startswith("truncated or corrupt image data (")


def test_truncated_rejected_even_if_pillow_told_to_accept(tmp_path, monkeypatch):
    data = good_jpeg(tmp_path / "full.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert reason_of(path).startswith("truncated or corrupt image data (")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # someone else's setting is left as found


def test_huge_image_rejected_from_header_without_warning(tmp_path):
    # A crafted PNG header claiming 20000x20000 gray pixels: a few bytes, never decoded.
    path = write_png(tmp_path / "huge.png", 20000, 20000, 8, 0, b"")
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail here
        assert reason_of(path) == "too large: 20000x20000 pixels > 50000000"
    assert Image.MAX_IMAGE_PIXELS == before
    # Above our limit but below Pillow's own (89 M): our check still applies.
    mid = write_png(tmp_path / "mid.png", 8000, 7000, 8, 0, b"")
    assert reason_of(mid) == "too large: 8000x7000 pixels > 50000000"


def test_max_pixels_is_read_at_call_time(tmp_path, monkeypatch):
    path = good_jpeg(tmp_path / "small.jpg")
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    assert reason_of(path) == "too large: 64x48 pixels > 100"


# ----------------------------------------------------------------------------- errors, policy


def test_errors_pickle_and_message():
    err = BadImageError("a/b.jpg", "file not found")
    assert isinstance(err.path, Path) and str(err) == "a/b.jpg: file not found"
    again = pickle.loads(pickle.dumps(err))
    assert again.path == err.path and again.reason == err.reason
    bad = [BadImage(Path("x.jpg"), "empty file (0 bytes)")]
    many = pickle.loads(pickle.dumps(BadImagesError(bad, total=3)))
    assert many.bad == bad and "x.jpg: empty file (0 bytes)" in str(many)


def test_check_policy():
    assert check_policy("fail") == "fail"
    assert check_policy("skip") == "skip"
    for wrong in ("ignore", "Skip", None):
        with pytest.raises(ValueError) as info:
            check_policy(wrong)
        msg = str(info.value)
        assert "bad_images" in msg and "'fail'" in msg and "'skip'" in msg


def make_mixed_folder(tmp_path: Path) -> tuple[list[Path], dict[Path, str]]:
    good = [good_jpeg(tmp_path / "good1.jpg", 1), tmp_path / "good2.png"]
    Image.fromarray(noise_rgb(10, 12)).save(good[1])
    empty = tmp_path / "empty.jpg"
    empty.touch()
    text = tmp_path / "text.jpeg"
    text.write_text("hello")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good[0].read_bytes()[:200])
    huge = write_png(tmp_path / "huge.png", 20000, 20000, 1, 0, b"")
    missing = tmp_path / "missing.tif"
    expected = {
        empty: "empty file (0 bytes)",
        text: "not a decodable image (",
        cut: "truncated or corrupt image data (",
        huge: "too large: 20000x20000 pixels > 50000000",
        missing: "file not found",
    }
    order = [good[0], empty, text, good[1], cut, huge, missing]
    return order, expected


def test_scan_fail_lists_every_bad_file(tmp_path):
    paths, expected = make_mixed_folder(tmp_path)
    with pytest.raises(BadImagesError) as info:
        scan_images(paths, progress=False)  # 'fail' is the default
    err = info.value
    assert [b.path for b in err.bad] == list(expected)  # all of them, in input order
    for b in err.bad:
        assert b.reason.startswith(expected[b.path])
    lines = str(err).splitlines()
    for path in expected:
        assert sum(line.strip().startswith(f"{path}: ") for line in lines) == 1
    assert "bad_images='skip'" in str(err) and "5 of 7" in lines[0]


def test_scan_skip_returns_good_and_bad(tmp_path, capsys):
    paths, expected = make_mixed_folder(tmp_path)
    good, bad = scan_images(iter(paths), policy="skip", progress=True)
    assert [g.path for g in good] == [tmp_path / "good1.jpg", tmp_path / "good2.png"]
    assert all(isinstance(g, ImageInfo) for g in good)
    assert good[0].sha256 == file_sha256(good[0].path)
    assert (good[0].height, good[0].width) == (48, 64)
    assert (good[1].height, good[1].width) == (10, 12)
    assert {b.path for b in bad} == set(expected)
    frame = bad_images_frame(bad)
    assert list(frame.columns) == ["path", "reason"] and len(frame) == 5
    assert frame["path"].tolist() == [str(b.path) for b in bad]
    assert "Checking images" in capsys.readouterr().err  # tqdm progress on stderr


def test_scan_all_good_and_empty_and_bad_policy(tmp_path):
    path = good_jpeg(tmp_path / "a.jpg")
    good, bad = scan_images([path], progress=False)
    assert len(good) == 1 and bad == []
    assert scan_images([], progress=False) == ([], [])
    with pytest.raises(ValueError, match="bad_images"):
        scan_images([path], policy="drop", progress=False)


def test_bad_images_frame_empty():
    frame = bad_images_frame([])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["path", "reason"] and frame.empty


def test_file_sha256_streams_large_files(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 9000  # > 2 MiB: several chunks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == hashlib.sha256(data).hexdigest()
