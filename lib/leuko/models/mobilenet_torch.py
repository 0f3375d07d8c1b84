"""MobileNetV2 built the torchvision way (symmetric padding) that loads torchvision ImageNet weights.

``keras.applications.MobileNetV2`` pads stride-2 convolutions 0 pixels top-left and 1 pixel
bottom-right, whereas torchvision pads 1 pixel on every side; torchvision weights run through
the Keras graph therefore give slightly wrong activations.  This module builds the torchvision
architecture in the Keras 3 functional API (explicit ``ZeroPadding2D(1)`` + ``padding="valid"``
for stride-2 3x3 convolutions, ``"same"`` - which is the same symmetric 1-pixel pad - for
stride-1 ones) and loads ``mobilenet_v2-b0353104.pth`` re-saved as an ``.npz`` of its
state_dict, so the outputs match torchvision's.

Layer names follow torchvision's ``features.N`` blocks so that "fine-tune the top N blocks"
is easy (see :func:`block_index`)::

    features_0_pad, features_0_conv, features_0_bn, features_0_relu      (stem, block 0)
    features_N_expand, features_N_expand_bn, features_N_expand_relu      (N = 2..17)
    features_N_pad (stride 2 only), features_N_depthwise,
    features_N_depthwise_bn, features_N_depthwise_relu                    (N = 1..17)
    features_N_project, features_N_project_bn, features_N_add (residual)  (N = 1..17)
    features_18_conv, features_18_bn, features_18_relu                   (last 1x1 conv, 1280)
    global_pool, classifier_dropout, classifier_fc                        (head, block None)

BatchNorm layers use epsilon 1e-5 and momentum 0.9 (torch's momentum 0.1).  The model takes
PREPROCESSED input: apply :func:`preprocess_torch` first, as with ``keras.applications``.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

__all__ = [
    "DEFAULT_WEIGHTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUM_BLOCKS",
    "block_index",
    "build_mobilenet_v2_torch",
    "load_torchvision_npz",
    "preprocess_torch",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_WEIGHTS = Path("data/pretrained/mobilenet_v2_imagenet_torchvision.npz")
NUM_BLOCKS = 19  # features.0 .. features.18

_PROJECT_ROOT = Path(__file__).resolve().parents[3]
_BN_EPS = 1e-5
_BN_MOMENTUM = 0.9
# torchvision's inverted-residual settings: expansion t, output channels c, repeats n, stride s
_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_BLOCK_RE = re.compile(r"^features_(\d+)_")


def preprocess_torch(x):
    """Map RGB 0..255 (uint8 or float, shape (..., H, W, 3)) to float32 (x/255 - mean)/std."""
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    if isinstance(x, (np.ndarray, list, tuple)):
        return ((np.asarray(x, dtype=np.float32) / 255.0 - mean) / std).astype(np.float32)
    x = ops.cast(x, "float32")
    return (x / 255.0 - ops.convert_to_tensor(mean)) / ops.convert_to_tensor(std)


def block_index(layer_name: str) -> int | None:
    """Return the torchvision ``features`` block number (0..18) of a layer, None for head/input."""
    m = _BLOCK_RE.match(layer_name)
    return int(m.group(1)) if m else None


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=_BN_EPS, momentum=_BN_MOMENTUM, name=name)


def _depthwise(x, stride: int, prefix: str):
    if stride == 2:
        x = layers.ZeroPadding2D(1, name=f"{prefix}_pad")(x)
        pad = "valid"
    else:
        pad = "same"  # k=3, s=1: symmetric 1-pixel pad, as torchvision
    x = layers.DepthwiseConv2D(
        3, strides=stride, padding=pad, use_bias=False, name=f"{prefix}_depthwise"
    )(x)
    x = _bn(f"{prefix}_depthwise_bn")(x)
    return layers.ReLU(6.0, name=f"{prefix}_depthwise_relu")(x)


def _inverted_residual(x, in_ch: int, out_ch: int, stride: int, expand: int, idx: int):
    prefix = f"features_{idx}"
    inputs = x
    if expand != 1:
        x = layers.Conv2D(in_ch * expand, 1, use_bias=False, name=f"{prefix}_expand")(x)
        x = _bn(f"{prefix}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{prefix}_expand_relu")(x)
    x = _depthwise(x, stride, prefix)
    x = layers.Conv2D(out_ch, 1, use_bias=False, name=f"{prefix}_project")(x)
    x = _bn(f"{prefix}_project_bn")(x)
    if stride == 1 and in_ch == out_ch:
        x = layers.Add(name=f"{prefix}_add")([inputs, x])
    return x


def _resolve_weights(weights: str | Path) -> Path:
    path = Path(weights)
    if path.is_file():
        return path
    if not path.is_absolute() and (_PROJECT_ROOT / path).is_file():
        return _PROJECT_ROOT / path  # relative paths also work from outside the repo root
    raise FileNotFoundError(
        f"MobileNetV2 ImageNet weights not found: {path} (also looked in {_PROJECT_ROOT}). "
        "Run `dvc pull` to fetch data/pretrained/, or pass weights=None for random init."
    )


def build_mobilenet_v2_torch(
    input_shape=(224, 224, 3),
    include_top: bool = False,
    weights: str | Path | None = DEFAULT_WEIGHTS,
    pooling: str | None = "avg",
    name: str = "mobilenet_v2_torch",
) -> keras.Model:
    """Build torchvision's MobileNetV2 (width 1.0) in Keras, loading the torchvision npz weights."""
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (H, W, 3), got {input_shape}")
    if any(d is not None and d < 32 for d in input_shape[:2]):
        raise ValueError(f"input height and width must be >= 32 px, got {input_shape}")
    if pooling not in ("avg", "max", None):
        raise ValueError(f"pooling must be 'avg', 'max' or None, got {pooling!r}")
    # Resolve before building, so a missing file fails fast and never yields random weights.
    weights_path = None if weights is None else _resolve_weights(weights)

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.ZeroPadding2D(1, name="features_0_pad")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="valid", use_bias=False, name="features_0_conv")(x)
    x = _bn("features_0_bn")(x)
    x = layers.ReLU(6.0, name="features_0_relu")(x)

    in_ch, idx = 32, 1
    for t, c, n, s in _SETTINGS:
        for i in range(n):
            x = _inverted_residual(x, in_ch, c, s if i == 0 else 1, t, idx)
            in_ch, idx = c, idx + 1

    x = layers.Conv2D(1280, 1, use_bias=False, name="features_18_conv")(x)
    x = _bn("features_18_bn")(x)
    x = layers.ReLU(6.0, name="features_18_relu")(x)

    if include_top:
        x = layers.GlobalAveragePooling2D(name="global_pool")(x)
        x = layers.Dropout(0.2, name="classifier_dropout")(x)
        x = layers.Dense(1000, activation="softmax", name="classifier_fc")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="global_pool")(x)

    model = keras.Model(inputs, x, name=name)
    if weights_path is not None:
        load_torchvision_npz(model, weights_path)
    return model


def _torch_prefix(layer_name: str) -> str | None:
    """torchvision state_dict prefix of a weighted layer of this module's models."""
    if layer_name == "classifier_fc":
        return "classifier.1"
    m = re.fullmatch(
        r"features_(\d+)_(conv|bn|expand|expand_bn|depthwise|depthwise_bn|"
        r"project|project_bn)",
        layer_name,
    )
    if m is None:
        return None
    n, part = int(m.group(1)), m.group(2)
    if n in (0, 18):
        return {"conv": f"features.{n}.0", "bn": f"features.{n}.1"}.get(part)
    d = 0 if n == 1 else 1  # block 1 has no expand conv, so its indices shift by one
    return {
        "expand": f"features.{n}.conv.0.0",
        "expand_bn": f"features.{n}.conv.0.1",
        "depthwise": f"features.{n}.conv.{d}.0",
        "depthwise_bn": f"features.{n}.conv.{d}.1",
        "project": f"features.{n}.conv.{d + 1}",
        "project_bn": f"features.{n}.conv.{d + 2}",
    }.get(part)


def _converted(layer, prefix: str, arrays) -> tuple[list[np.ndarray], list[str]]:
    """Keras-ordered weights for `layer` from torch arrays, plus the torch keys consumed."""

    def get(suffix):
        key = f"{prefix}.{suffix}"
        if key not in arrays:
            raise KeyError(f"{key} (for layer {layer.name}) is missing from the weights file")
        return key, arrays[key]

    if isinstance(layer, layers.BatchNormalization):
        keys_vals = [get(s) for s in ("weight", "bias", "running_mean", "running_var")]
        keys = [k for k, _ in keys_vals] + [f"{prefix}.num_batches_tracked"]
        return [v for _, v in keys_vals], keys
    if isinstance(layer, layers.DepthwiseConv2D):
        key, w = get("weight")  # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
        return [np.transpose(w, (2, 3, 0, 1))], [key]
    if isinstance(layer, layers.Conv2D):
        key, w = get("weight")  # torch (O, I, kh, kw) -> keras (kh, kw, I, O)
        return [np.transpose(w, (2, 3, 1, 0))], [key]
    if isinstance(layer, layers.Dense):
        (kw, w), (kb, b) = get("weight"), get("bias")  # torch (out, in) -> keras (in, out)
        return [w.T, b], [kw, kb]
    raise TypeError(f"don't know how to load torch weights into {type(layer).__name__}")


def load_torchvision_npz(model: keras.Model, path) -> None:
    """Assign torchvision state_dict arrays (npz) to the model's layers, checking every key."""
    path = _resolve_weights(path)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}

    used: set[str] = set()
    assignments = []
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_prefix(layer.name)
        if prefix is None:
            raise ValueError(f"layer {layer.name!r} has weights but no torchvision counterpart")
        values, keys = _converted(layer, prefix, arrays)
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ValueError(
                f"shape mismatch for layer {layer.name!r} <- {prefix}.*: "
                f"model expects {expected}, {path.name} gives {got}"
            )
        assignments.append((layer, values))
        used.update(keys)

    unused = set(arrays) - used
    if not any(layer.name == "classifier_fc" for layer in model.layers):
        unused -= {"classifier.1.weight", "classifier.1.bias"}  # headless model: skip classifier
    if unused:
        raise ValueError(f"{len(unused)} arrays of {path} were not used, e.g. {sorted(unused)[:5]}")
    for layer, values in assignments:
        layer.set_weights([v.astype(np.float32) for v in values])
