"""Tests of leuko.leukemia.augment: the seeded, deterministic C-NMC 2019 augmentation recipe."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from leuko.core import images
from leuko.leukemia import augment as augment_module
from leuko.leukemia.augment import (
    OPTIONAL_TRANSFORMS,
    TRANSFORMS,
    AugmentConfig,
    apply_transform,
    augment_image,
    enabled_transforms,
    materialise,
    plan_balanced,
)

IDB2 = Path(__file__).resolve().parents[1] / "data" / "all-idb2"
IDB2_FILES = ["Im001_1.tif", "Im002_1.tif", "Im131_0.tif", "Im132_0.tif"]


# ----------------------------------------------------------------------------- fixtures


def _synthetic(seed: int, shape: tuple[int, ...] = (24, 30, 3)) -> np.ndarray:
    """A non-symmetric test image: gradient + an off-centre bright block + noise."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    rows, cols = np.mgrid[0:h, 0:w]
    base = 40 + 120 * rows / h + 60 * cols / w
    base[2 : h // 3, 3 : w // 2] = 250
    img = base[..., None] + rng.normal(0, 8, size=(h, w, shape[2] if len(shape) == 3 else 1))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img if len(shape) == 3 else img[..., 0]


@pytest.fixture
def synthetic_source():
    """Frame of 3 'all' and 2 'hem' synthetic sources plus a loader that counts decodes."""
    images = {f"syn/all_{i}.png": _synthetic(i) for i in range(3)}
    images.update({f"syn/hem_{i}.png": _synthetic(10 + i) for i in range(2)})
    frame = pd.DataFrame(
        {"path": list(images), "label": [p.split("/")[1].split("_")[0] for p in images]}
    )
    calls: Counter[str] = Counter()

    def load(path: Path) -> np.ndarray:
        calls[Path(path).as_posix()] += 1
        return images[Path(path).as_posix()]

    return frame, load, calls


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


# ----------------------------------------------------------------------------- config


def test_defaults_match_recipe():
    cfg = AugmentConfig()
    assert cfg.rotation_range == (20.0, 340.0)
    assert cfg.shear_range == (5.0, 20.0)
    assert cfg.blur_sigma == (0.5, 1.5)
    assert cfg.p_shear == pytest.approx(1 / 3) and cfg.p_blur == pytest.approx(1 / 3)
    assert cfg.mirror is False and cfg.salt_pepper == 0.0
    assert TRANSFORMS == ("rotate_flip", "rotate_flip_shear", "rotate_flip_blur")
    assert enabled_transforms(cfg) == TRANSFORMS
    assert enabled_transforms(AugmentConfig(mirror=True, salt_pepper=0.01)) == (
        TRANSFORMS + OPTIONAL_TRANSFORMS
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rotation_range", (30.0, 10.0)),
        ("rotation_range", (-5.0, 10.0)),
        ("rotation_range", (0.0, 400.0)),
        ("rotation_range", (1.0,)),
        ("rotation_range", "abc"),
        ("shear_range", (5.0, 95.0)),
        ("shear_range", (-1.0, 5.0)),
        ("blur_sigma", (0.0, 1.0)),
        ("blur_sigma", (2.0, 1.0)),
        ("blur_sigma", (0.5, float("nan"))),
        ("p_shear", 1.5),
        ("p_blur", -0.1),
        ("p_blur", "half"),
        ("mirror", "yes"),
        ("salt_pepper", 1.0),
        ("salt_pepper", -0.01),
    ],
)
def test_invalid_config_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        AugmentConfig(**{field: value})


def test_probabilities_must_sum_to_at_most_one():
    with pytest.raises(ValueError, match="p_shear.*p_blur"):
        AugmentConfig(p_shear=0.7, p_blur=0.5)


def test_config_normalises_ranges_and_is_frozen():
    cfg = AugmentConfig(rotation_range=[10, 20])
    assert cfg.rotation_range == (10.0, 20.0)
    with pytest.raises(AttributeError):
        cfg.mirror = True  # type: ignore[misc]


# ----------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("shape", [(24, 30, 3), (17, 17, 3), (20, 26)])
def test_shape_and_dtype_preserved(shape):
    img = _synthetic(0, shape)
    rng = np.random.default_rng(1)
    cfg = AugmentConfig(salt_pepper=0.05)
    for name in TRANSFORMS + OPTIONAL_TRANSFORMS:
        out = apply_transform(img, name, rng, cfg)
        assert out.shape == img.shape and out.dtype == np.uint8, name
    out, chain = augment_image(img, rng, cfg)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert chain.endswith("+salt_pepper")


def test_rejects_non_uint8_and_unknown_names():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="uint8"):
        augment_image(np.zeros((8, 8, 3), np.float32), rng, AugmentConfig())
    with pytest.raises(ValueError, match="unknown transform"):
        apply_transform(_synthetic(0), "rotate", rng, AugmentConfig())
    with pytest.raises(ValueError, match="salt_pepper"):
        apply_transform(_synthetic(0), "salt_pepper", rng, AugmentConfig())


def test_chain_frequencies_roughly_one_third():
    img = _synthetic(0, (8, 8, 3))
    rng = np.random.default_rng(123)
    counts = Counter(augment_image(img, rng, AugmentConfig())[1] for _ in range(300))
    assert set(counts) == set(TRANSFORMS)
    for name in TRANSFORMS:  # expected 100, sd ~8: generous bounds
        assert 60 <= counts[name] <= 140, counts
    only_plain = Counter(
        augment_image(img, rng, AugmentConfig(p_shear=0.0, p_blur=0.0))[1] for _ in range(20)
    )
    assert only_plain == {"rotate_flip": 20}


def test_same_rng_seed_same_output():
    img = _synthetic(3)
    a = augment_image(img, np.random.default_rng(7), AugmentConfig())
    b = augment_image(img, np.random.default_rng(7), AugmentConfig())
    assert a[1] == b[1] and np.array_equal(a[0], b[0])


def test_rotation_changes_nonsymmetric_image():
    img = _synthetic(4, (25, 25, 3))
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = apply_transform(img, "rotate_flip", rng, AugmentConfig())
        assert np.abs(out.astype(int) - img).mean() > 10


def test_rotation_geometry_exact_at_90_degrees():
    # rotation by 90 deg counter-clockwise, then a horizontal or vertical flip, on an odd square
    img = _synthetic(5, (21, 21, 3))
    rot = np.rot90(img)
    allowed = [np.fliplr(rot), np.flipud(rot)]
    cfg = AugmentConfig(rotation_range=(90.0, 90.0))
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(12):
        out = apply_transform(img, "rotate_flip", rng, cfg)
        match = [i for i, ref in enumerate(allowed) if np.array_equal(out, ref)]
        assert match, "90-degree rotation + flip must be an exact pixel permutation"
        seen.add(match[0])
    assert seen == {0, 1}, "both flip directions should occur"


def _hf_energy(img: np.ndarray) -> float:
    grey = img.astype(np.float64).mean(axis=2)
    return float((ndimage.laplace(grey) ** 2).mean())


def test_blur_reduces_high_frequency_energy():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    cfg = AugmentConfig()
    # the blur sigma is drawn after the rotation/flip, so equal seeds give the same geometry
    plain = apply_transform(img, "rotate_flip", np.random.default_rng(9), cfg)
    blurred = apply_transform(img, "rotate_flip_blur", np.random.default_rng(9), cfg)
    assert _hf_energy(blurred) < 0.3 * _hf_energy(plain)


def test_shear_changes_image_and_keeps_centre_row():
    img = _synthetic(6, (25, 25, 3))
    cfg = AugmentConfig(rotation_range=(0.0, 0.0))
    plain = apply_transform(img, "rotate_flip", np.random.default_rng(2), cfg)
    sheared = apply_transform(img, "rotate_flip_shear", np.random.default_rng(2), cfg)
    assert np.abs(sheared.astype(int) - plain).mean() > 3
    # horizontal shear about the centre leaves the centre row in place
    assert np.array_equal(sheared[12], plain[12])


def test_mirror_and_salt_pepper():
    img = _synthetic(7)
    rng = np.random.default_rng(0)
    assert np.array_equal(apply_transform(img, "mirror", rng, AugmentConfig()), img[:, ::-1])
    noisy = apply_transform(img, "salt_pepper", rng, AugmentConfig(salt_pepper=0.2))
    changed = np.any(noisy != img, axis=2).mean()
    assert 0.1 < changed < 0.3
    pix = noisy.reshape(-1, 3)[np.any(noisy != img, axis=2).ravel()]
    assert np.all((pix == 0).all(axis=1) | (pix == 255).all(axis=1))


# ----------------------------------------------------------------------------- planning


def test_plan_balanced_even_usage(synthetic_source):
    frame, _, _ = synthetic_source
    plan = plan_balanced(frame, 7, seed=1)
    assert list(plan.columns[:3]) == ["source_path", "label", "index"]
    assert "seed_for_item" in plan.columns
    assert plan.groupby("label").size().to_dict() == {"all": 7, "hem": 7}
    for label, group in plan.groupby("label"):
        usage = group["source_path"].value_counts()
        sources = set(frame.loc[frame["label"] == label, "path"])
        assert set(usage.index) == sources
        assert usage.max() - usage.min() <= 1
        assert group["index"].tolist() == list(range(7))
    assert plan["seed_for_item"].is_unique and (plan["seed_for_item"] >= 0).all()


def test_plan_deterministic_order_free_and_prefix_stable(synthetic_source):
    frame, _, _ = synthetic_source
    a = plan_balanced(frame, 9, seed=5)
    b = plan_balanced(frame.sample(frac=1, random_state=3), 9, seed=5)
    pd.testing.assert_frame_equal(a, b)
    # item seeds depend on (seed, label, index) only: a shorter run is a prefix of a longer one
    short = plan_balanced(frame, 4, seed=5)
    long = a[a["index"] < 4].reset_index(drop=True)
    pd.testing.assert_frame_equal(short, long)
    other = plan_balanced(frame, 9, seed=6)
    assert not other["seed_for_item"].equals(a["seed_for_item"])


def test_plan_mirror_doubles_pool(synthetic_source):
    frame, _, _ = synthetic_source
    plan = plan_balanced(frame, 6, seed=0, mirror=True)
    hem = plan[plan["label"] == "hem"]
    pairs = Counter(zip(hem["source_path"], hem["mirrored"], strict=True))
    assert len(pairs) == 4 and max(pairs.values()) - min(pairs.values()) <= 1


def test_plan_rejects_bad_input(synthetic_source):
    frame, _, _ = synthetic_source
    with pytest.raises(ValueError, match="n_per_class"):
        plan_balanced(frame, 0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        plan_balanced(frame, 3, seed=-1)
    with pytest.raises(KeyError, match="label"):
        plan_balanced(frame.drop(columns="label"), 3, seed=0)


# ----------------------------------------------------------------------------- materialise


def test_materialise_deterministic_and_balanced(tmp_path, synthetic_source):
    frame, load, calls = synthetic_source
    cfg = AugmentConfig()
    m1 = materialise(frame, tmp_path / "a", 8, 11, cfg, "train", load=load, progress=False)
    # each source decoded once
    assert set(calls.values()) == {1} and len(calls) == len(frame)
    m2 = materialise(frame, tmp_path / "b", 8, 11, cfg, "train", load=load, progress=False)
    m3 = materialise(frame, tmp_path / "c", 8, 12, cfg, "train", load=load, progress=False)

    pd.testing.assert_frame_equal(m1, m2)
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a == files_b and len(files_a) == 16
    assert (m1["sha256"] != m3["sha256"]).mean() > 0.9

    assert list(m1.columns) == ["path", "label", "split", "source_path", "transform", "sha256"]
    assert m1.groupby("label").size().to_dict() == {"all": 8, "hem": 8}
    assert set(m1["split"]) == {"train"}
    assert m1["path"].iloc[0] == "train/all/all_000000.png"
    assert set(m1["path"]) == set(files_a)
    assert set(m1["transform"]) <= set(TRANSFORMS)
    for label, group in m1.groupby("label"):
        usage = group["source_path"].value_counts()
        assert set(usage.index) == set(frame.loc[frame["label"] == label, "path"])
        assert usage.max() - usage.min() <= 1
    data = files_a["train/hem/hem_000003.png"]
    assert b"tIME" not in data and b"tEXt" not in data
    img = np.asarray(Image.open(tmp_path / "a" / "train/hem/hem_000003.png"))
    assert img.shape == (24, 30, 3) and img.dtype == np.uint8


def test_materialise_items_reproducible_alone(tmp_path, synthetic_source):
    frame, load, _ = synthetic_source
    cfg = AugmentConfig()
    full = materialise(frame, tmp_path / "full", 6, 3, cfg, "val", load=load, progress=False)
    part = materialise(frame, tmp_path / "part", 2, 3, cfg, "val", load=load, progress=False)
    merged = full.merge(part, on=["path"], suffixes=("", "_part"))
    assert len(merged) == 4
    assert (merged["sha256"] == merged["sha256_part"]).all()


def test_materialise_mirror_salt_pepper_and_resize(tmp_path, synthetic_source):
    frame, load, _ = synthetic_source
    cfg = AugmentConfig(mirror=True, salt_pepper=0.01)
    m = materialise(frame, tmp_path, 12, 0, cfg, "train", size=16, load=load, progress=False)
    assert m["transform"].str.endswith("+salt_pepper").all()
    # 12 = whole cycles of both pools (6 and 4 entries): exactly half mirrored in each class
    mirrored = m["transform"].str.startswith("mirror+").groupby(m["label"]).sum()
    assert mirrored.to_dict() == {"all": 6, "hem": 6}
    img = np.asarray(Image.open(tmp_path / m["path"].iloc[0]))
    assert img.shape == (16, 16, 3)


@pytest.mark.parametrize("split", ["test", "TEST", " test "])
def test_materialise_refuses_test_split(tmp_path, synthetic_source, split):
    frame, load, _ = synthetic_source
    with pytest.raises(ValueError, match="test split is never augmented"):
        materialise(frame, tmp_path, 4, 0, AugmentConfig(), split, load=load, progress=False)
    assert not any(tmp_path.iterdir())


def test_materialise_default_loader_is_leuko_images(tmp_path, synthetic_source, monkeypatch):
    frame, load, calls = synthetic_source
    assert augment_module.load_rgb is images.load_rgb
    monkeypatch.setattr(augment_module, "load_rgb", load)
    m = materialise(frame, tmp_path, 3, 0, AugmentConfig(), "train", progress=False)
    assert len(m) == 6 and sum(calls.values()) == len(frame)


# ----------------------------------------------------------------------------- real images


@pytest.fixture
def idb2_frame():
    paths = [IDB2 / name for name in IDB2_FILES]
    if not all(p.exists() for p in paths):
        pytest.skip("ALL-IDB2 sample files not present")
    labels = ["all" if p.stem.endswith("_1") else "hem" for p in paths]
    return pd.DataFrame({"path": [str(p) for p in paths], "label": labels})


def _pil_load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_real_images_deterministic(tmp_path, idb2_frame):
    cfg = AugmentConfig()
    kw = {"load": _pil_load, "progress": False}
    m1 = materialise(idb2_frame, tmp_path / "a", 5, 2019, cfg, "train", **kw)
    m2 = materialise(idb2_frame, tmp_path / "b", 5, 2019, cfg, "train", **kw)
    m3 = materialise(idb2_frame, tmp_path / "c", 5, 2020, cfg, "train", **kw)
    pd.testing.assert_frame_equal(m1, m2)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert (m1["sha256"] != m3["sha256"]).all()
    assert m1.groupby("label").size().to_dict() == {"all": 5, "hem": 5}
    for _, group in m1.groupby("label"):
        usage = group["source_path"].value_counts()
        assert len(usage) == 2 and usage.max() - usage.min() <= 1
    for rel, src in zip(m1["path"], m1["source_path"], strict=True):
        out = np.asarray(Image.open(tmp_path / "a" / rel))
        original = _pil_load(Path(src))
        assert out.shape == original.shape == (257, 257, 3) and out.dtype == np.uint8
        assert not np.array_equal(out, original)
        # reflect fill: no black corners introduced by the rotation
        assert out[:8, :8].mean() > 60


def test_real_images_each_transform(idb2_frame):
    img = _pil_load(Path(idb2_frame["path"].iloc[0]))
    cfg = AugmentConfig(salt_pepper=0.02)
    for name in TRANSFORMS + OPTIONAL_TRANSFORMS:
        out = apply_transform(img, name, np.random.default_rng(0), cfg)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert not np.array_equal(out, img), name
