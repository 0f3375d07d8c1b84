"""torchvision-padded MobileNetV2 with the torchvision ImageNet weights (leuko.models.mobilenet_torch)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import skimage.data
from PIL import Image

from leuko.models.mobilenet_torch import (
    DEFAULT_WEIGHTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    block_index,
    build_mobilenet_v2_torch,
    load_torchvision_npz,
    preprocess_torch,
)

WEIGHTS = Path(__file__).resolve().parents[1] / DEFAULT_WEIGHTS
CAT_CLASSES = list(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
needs_weights = pytest.mark.skipif(
    not WEIGHTS.is_file(), reason=f"{DEFAULT_WEIGHTS} absent: run `dvc pull` to fetch it"
)


def chelsea_224() -> np.ndarray:
    """skimage's cat photo, torchvision eval transform: shorter side to 256, centre crop 224."""
    img = Image.fromarray(skimage.data.chelsea())
    w, h = img.size
    nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - 224) / 2)), int(round((nh - 224) / 2))
    return np.asarray(img.crop((left, top, left + 224, top + 224)))


@pytest.fixture(scope="module")
def cat_batch() -> np.ndarray:
    return preprocess_torch(chelsea_224()[None])


@pytest.fixture(scope="module")
def imagenet_model() -> keras.Model:
    if not WEIGHTS.is_file():
        pytest.skip(f"{DEFAULT_WEIGHTS} absent: run `dvc pull` to fetch it")
    return build_mobilenet_v2_torch(include_top=True, weights=WEIGHTS)


def _numpy_reference(x_hwc: np.ndarray) -> np.ndarray:
    """Independent NCHW numpy forward of torchvision's MobileNetV2 (eval mode): the logits."""
    sd = dict(np.load(WEIGHTS, allow_pickle=False))

    def conv(x, w, stride=1, depthwise=False):
        k = w.shape[-1]
        x = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))  # torch: padding=(k-1)//2
        ho, wo = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
        taps = [
            x[:, i : i + stride * ho : stride, j : j + stride * wo : stride]
            for i in range(k)
            for j in range(k)
        ]
        if depthwise:
            return sum(
                w[:, 0].reshape(len(w), -1)[:, t, None, None] * taps[t] for t in range(k * k)
            )
        return np.einsum("oct,cthw->ohw", w.reshape(len(w), x.shape[0], -1), np.stack(taps, 1))

    def bn_act(x, p, relu=True):
        g, b, m, v = (
            sd[f"{p}.{s}"][:, None, None] for s in ("weight", "bias", "running_mean", "running_var")
        )
        y = (x - m) / np.sqrt(v + 1e-5) * g + b
        return np.clip(y, 0, 6) if relu else y

    x = bn_act(
        conv(x_hwc.transpose(2, 0, 1).astype(np.float64), sd["features.0.0.weight"], 2),
        "features.0.1",
    )
    idx, cin = 1, 32
    for t, c, n, s in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]:
        for r in range(n):
            stride, p, j, h = (s if r == 0 else 1), f"features.{idx}.conv", 0, x
            if t != 1:
                h, j = bn_act(conv(h, sd[f"{p}.0.0.weight"]), f"{p}.0.1"), 1
            h = bn_act(conv(h, sd[f"{p}.{j}.0.weight"], stride, depthwise=True), f"{p}.{j}.1")
            h = bn_act(conv(h, sd[f"{p}.{j + 1}.weight"]), f"{p}.{j + 2}", relu=False)
            x = x + h if stride == 1 and cin == c else h
            idx, cin = idx + 1, c
    x = bn_act(conv(x, sd["features.18.0.weight"]), "features.18.1")
    return sd["classifier.1.weight"] @ x.mean((1, 2)) + sd["classifier.1.bias"]


@needs_weights
def test_imagenet_weights_recognise_cat(imagenet_model, cat_batch):
    probs = imagenet_model(cat_batch, training=False).numpy()[0]
    assert probs.shape == (1000,)
    assert int(np.argmax(probs)) in CAT_CLASSES
    assert probs[CAT_CLASSES].sum() > 0.9


@needs_weights
def test_matches_independent_numpy_reference(imagenet_model, cat_batch):
    # Catches what the cat test cannot: asymmetric (Keras-style) padding, kernel layouts.
    logits = _numpy_reference(cat_batch[0])
    ref = np.exp(logits - logits.max())
    ref /= ref.sum()
    probs = imagenet_model(cat_batch, training=False).numpy()[0]
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    assert list(np.argsort(-probs)[:5]) == list(np.argsort(-ref)[:5])


def test_random_weights_do_not_see_a_cat(cat_batch):
    keras.utils.set_random_seed(0)
    model = build_mobilenet_v2_torch(include_top=True, weights=None)
    probs = model(cat_batch, training=False).numpy()[0]
    assert probs[CAT_CLASSES].sum() < 0.5


def test_missing_weights_file_raises(tmp_path):
    missing = tmp_path / "no_such_weights.npz"
    with pytest.raises(FileNotFoundError, match="no_such_weights.npz.*dvc pull"):
        build_mobilenet_v2_torch(input_shape=(32, 32, 3), weights=missing)


@needs_weights
def test_96px_input_gives_pooled_features():
    model = build_mobilenet_v2_torch(input_shape=(96, 96, 3))
    x = preprocess_torch(np.full((1, 96, 96, 3), 128, np.uint8))
    feats = model(x, training=False).numpy()
    assert feats.shape == (1, 1280)
    assert np.isfinite(feats).all() and (feats >= 0).all() and (feats <= 6).all()


@needs_weights
def test_loader_rejects_missing_and_unused_keys(tmp_path):
    model = build_mobilenet_v2_torch(input_shape=(32, 32, 3), weights=None, pooling=None)
    assert model.output_shape == (None, 1, 1, 1280)
    sd = dict(np.load(WEIGHTS, allow_pickle=False))
    extra = tmp_path / "extra.npz"
    np.savez(extra, **sd, **{"features.19.0.weight": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match="not used.*features.19.0.weight"):
        load_torchvision_npz(model, extra)
    del sd["features.5.conv.1.0.weight"]
    missing = tmp_path / "missing.npz"
    np.savez(missing, **sd)
    with pytest.raises(KeyError, match="features.5.conv.1.0.weight"):
        load_torchvision_npz(model, missing)


def test_preprocess_and_block_index():
    import tensorflow as tf

    img = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    np_out = preprocess_torch(img)
    assert np_out.dtype == np.float32
    np.testing.assert_allclose(preprocess_torch(tf.constant(img)).numpy(), np_out, rtol=1e-6)
    expected = (np.array([0, 1, 2]) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(np_out[0, 0, 0], expected, rtol=1e-5)
    assert block_index("features_0_conv") == 0
    assert block_index("features_3_expand") == 3
    assert block_index("features_18_bn") == 18
    assert block_index("classifier_fc") is None
    assert block_index("global_pool") is None
