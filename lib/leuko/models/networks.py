"""The one registry of networks: name -> builder, preprocessing, input sizes, weights source.

Every model of the study is ``Input(0..255 RGB) -> Preprocess -> base -> head``: the
preprocessing travels inside the saved ``.keras`` file (as a registered layer, so it loads
with ``safe_mode=True``), and the classifier needs nothing but the file.

Pretrained weights never fall back to random ones: MobileNetV2's come from the torchvision
file in ``data/pretrained`` (offline), the thesis networks' from ``keras.applications``'s
download into the Keras cache; offline and not cached, ``PretrainedWeightsMissing`` names the
file and the folder to place it in.
"""

from __future__ import annotations

import http.client
import os
import socket
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers, regularizers

from leuko.models import mobilenet_torch

# --- preprocessing as a serialisable layer --------------------------------------------------

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
PREPROCESSING = ("torch", "caffe", "tf", "none", "unit", "unit_centred")


@keras.saving.register_keras_serializable(package="leuko")
class Preprocess(layers.Layer):
    """Map RGB pixel values in [0, 255] to what a network expects.

    ``torch``: /255 then ImageNet mean/std; ``caffe``: RGB->BGR minus ImageNet means (VGG,
    ResNet50); ``tf``: to [-1, 1] (Inception, Xception); ``none``: unchanged (EfficientNet
    rescales inside); ``unit``: /255; ``unit_centred``: /255 minus ``mean`` (the C-NMC recipe:
    the training set's channel mean).
    """

    def __init__(self, kind: str, mean: Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        if kind not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {kind!r}")
        if kind == "unit_centred" and mean is None:
            raise ValueError("preprocessing 'unit_centred' needs the training set's channel mean")
        self.kind = kind
        self.mean = None if mean is None else [float(m) for m in mean]

    def call(self, x):
        x = keras.ops.cast(x, "float32")
        if self.kind == "torch":
            return mobilenet_torch.preprocess_torch(x)
        if self.kind == "caffe":
            return x[..., ::-1] - keras.ops.convert_to_tensor(_CAFFE_MEAN_BGR, "float32")
        if self.kind == "tf":
            return x / 127.5 - 1.0
        if self.kind == "unit":
            return x / 255.0
        if self.kind == "unit_centred":
            return x / 255.0 - keras.ops.convert_to_tensor(self.mean, "float32")
        return x

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "mean": self.mean}


# --- the registry ---------------------------------------------------------------------------


class PretrainedWeightsMissing(FileNotFoundError):
    """ImageNet weights are neither cached nor downloadable."""


@dataclass(frozen=True)
class Network:
    """One entry of the registry."""

    name: str
    build: Callable[..., keras.Model]  # (input_shape, pretrained, pooling) -> base
    preprocessing: str
    min_size: int
    native_size: int
    weights_file: str | None  # file name in the Keras cache (keras.applications) or None
    thesis: bool = False  # one of the thesis's eight ILSVRC networks
    description: str = ""
    short: str = ""  # a figure label of a few characters (``short_name``)


def keras_cache_dir() -> Path:
    """Where keras.applications keeps downloaded weights: ``$KERAS_HOME/models`` or
    ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


DOWNLOAD_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                   TimeoutError, socket.gaierror)
"""What a failed download raises (Keras re-raises them as a bare ``Exception`` whose context
is one of these)."""


def download_failure(error: BaseException) -> BaseException | None:
    """The network error behind ``error`` (itself or an exception in its cause/context chain),
    or None when ``error`` did not come from a failed download."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, DOWNLOAD_ERRORS):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _keras_application(constructor_path: str, weights_file: str):
    """A builder for ``keras.applications.<constructor>`` that loads cached ImageNet weights
    from the Keras cache, or downloads them once, or fails naming file and folder."""

    def build(input_shape: tuple[int, int, int], pretrained: bool,
              pooling: str | None = "avg") -> keras.Model:
        module_name, constructor_name = constructor_path.rsplit(".", 1)
        constructor = getattr(getattr(keras.applications, module_name), constructor_name)
        if not pretrained:
            return constructor(include_top=False, weights=None, input_shape=input_shape,
                               pooling=pooling)
        cached = keras_cache_dir() / weights_file
        if cached.is_file():
            model = constructor(include_top=False, weights=None, input_shape=input_shape,
                                pooling=pooling)
            model.load_weights(cached)
            return model
        try:
            return constructor(include_top=False, weights="imagenet", input_shape=input_shape,
                               pooling=pooling)
        except Exception as error:
            cause = download_failure(error)
            if cause is None:  # not a failed download: a real error, with its own cause
                raise
            raise PretrainedWeightsMissing(
                f"ImageNet weights for {constructor_name} are not cached and could not be "
                f"downloaded ({type(cause).__name__}: {cause}). Place the file {weights_file} "
                f"in {keras_cache_dir()} (or set KERAS_HOME) and run again.") from error

    return build


def _mobilenet_v2_torch(input_shape: tuple[int, int, int], pretrained: bool,
                        pooling: str | None = "avg") -> keras.Model:
    weights = mobilenet_torch.DEFAULT_WEIGHTS if pretrained else None
    return mobilenet_torch.build_mobilenet_v2_torch(input_shape, include_top=False,
                                                    weights=weights, pooling=pooling)


def _leukemia_cnn(input_shape: tuple[int, int, int], pretrained: bool,
                  pooling: str | None = None) -> keras.Model:
    """The report's Solution A body: five modules of Conv-BN-ReLU x2 + MaxPool, then Flatten
    (its own design: it always flattens, whatever ``pooling`` asks)."""
    if pretrained:
        raise ValueError("leukemia_cnn has no pretrained weights: use regime 'scratch'")
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((16, 32, 64, 128, 256), start=1):
        for j in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              name=f"module{i}_conv{j}")(x)
            x = layers.BatchNormalization(name=f"module{i}_bn{j}")(x)
            x = layers.ReLU(name=f"module{i}_relu{j}")(x)
        x = layers.MaxPooling2D(2, name=f"module{i}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, x, name="leukemia_cnn")


def _application(name: str, constructor_path: str, weights_file: str, preprocessing: str,
                 min_size: int, native_size: int, thesis: bool = False,
                 description: str = "", short: str = "") -> Network:
    """A registry entry for a ``keras.applications`` network (its weights file named once)."""
    return Network(name, _keras_application(constructor_path, weights_file), preprocessing,
                   min_size, native_size, weights_file, thesis, description, short)


_NOTOP = "_weights_tf_dim_ordering_tf_kernels_notop.h5"  # keras.applications' file names

NETWORKS: dict[str, Network] = {
    n.name: n
    for n in [
        _application("vgg16", "vgg16.VGG16", f"vgg16{_NOTOP}", "caffe", 32, 224, True,
                     short="VGG16"),
        _application("vgg19", "vgg19.VGG19", f"vgg19{_NOTOP}", "caffe", 32, 224, True,
                     short="VGG19"),
        _application("inception_v3", "inception_v3.InceptionV3", f"inception_v3{_NOTOP}",
                     "tf", 75, 299, True, short="IncV3"),
        _application("xception", "xception.Xception", f"xception{_NOTOP}", "tf", 71, 299,
                     True, short="Xcept"),
        _application("densenet121", "densenet.DenseNet121", f"densenet121{_NOTOP}", "torch",
                     32, 224, True, short="DN121"),
        _application("densenet169", "densenet.DenseNet169", f"densenet169{_NOTOP}", "torch",
                     32, 224, True, short="DN169"),
        _application("densenet201", "densenet.DenseNet201", f"densenet201{_NOTOP}", "torch",
                     32, 224, True, short="DN201"),
        _application("resnet50", "resnet50.ResNet50", f"resnet50{_NOTOP}", "caffe", 32, 224,
                     True, short="RN50"),
        Network("mobilenet_v2", _mobilenet_v2_torch, "torch", 32, 224, None,
                description="torchvision's MobileNetV2 rebuilt in Keras; ImageNet weights offline",
                short="MNv2"),
        _application("efficientnet_b2", "efficientnet.EfficientNetB2", "efficientnetb2_notop.h5",
                     "none", 32, 260,
                     description="the leukemia report's Solution B (trained from scratch)",
                     short="EffB2"),
        Network("leukemia_cnn", _leukemia_cnn, "unit_centred", 32, 250, None,
                description="the leukemia report's Solution A, a custom CNN", short="CNN-A"),
    ]
}

THESIS_NETWORKS = tuple(n.name for n in NETWORKS.values() if n.thesis)


def get_network(name: str) -> Network:
    """The registry entry for ``name``, or a ValueError listing the known names."""
    if name not in NETWORKS:
        raise ValueError(f"network must be one of {sorted(NETWORKS)}, got {name!r}")
    return NETWORKS[name]


def short_name(name: str) -> str:
    """A network's label of a few characters for figures (``VGG16``, ``DN201``, ``MNv2``);
    a name outside the registry stays as it is."""
    entry = NETWORKS.get(name)
    return entry.short or entry.name if entry else name


def check_input_size(network: Network, size: int) -> int:
    """``size`` if the network accepts it, else a ValueError naming the minimum."""
    if size < network.min_size:
        raise ValueError(f"image_size {size} is below {network.name}'s minimum of "
                         f"{network.min_size} px")
    return size


# --- the bottleneck and the weights a base starts from ---------------------------------------

BOTTLENECKS = ("avg", "flatten")
"""How a base's last convolutional block becomes the head's input: ``avg``, global average
pooling (one value per channel: 1,280 for MobileNetV2); ``flatten``, the thesis's head on the
flattened block (7 x 7 x 512 = 25,088 for VGG16 at 224 px)."""

WEIGHTS = ("imagenet", "random")
"""Where a pretrained regime's base starts: ``imagenet`` (the real study; missing weights
raise ``PretrainedWeightsMissing``) or ``random`` (a plumbing run that exercises the pipeline
without any weights file, named as such in every output)."""


def check_bottleneck(bottleneck: str) -> str:
    """``bottleneck`` if known, else a ValueError naming the allowed values."""
    if bottleneck not in BOTTLENECKS:
        raise ValueError(f"bottleneck must be one of {BOTTLENECKS}, got {bottleneck!r}")
    return bottleneck


def uses_imagenet(weights: str) -> bool:
    """True for ``imagenet``, False for ``random``; a ValueError for anything else."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    return weights == "imagenet"


def build_base(network: str, input_shape: tuple[int, int, int], pretrained: bool,
               bottleneck: str = "avg") -> keras.Model:
    """The registry's base of ``network`` ending in the chosen bottleneck (``BOTTLENECKS``).

    ``flatten`` adds a ``Flatten`` to the unpooled base as a layer of the same functional
    model, so freezing (``set_trainable_top``) and BatchNorm settings still see every layer."""
    entry = get_network(network)
    if check_bottleneck(bottleneck) == "avg":
        return entry.build(input_shape, pretrained, pooling="avg")
    base = entry.build(input_shape, pretrained, pooling=None)
    if len(base.output_shape) == 2:  # already flat (leukemia_cnn)
        return base
    flat = layers.Flatten(name="bottleneck_flatten")(base.output)
    return keras.Model(base.input, flat, name=base.name)


# --- heads and whole models -----------------------------------------------------------------


@dataclass(frozen=True)
class HeadConfig:
    """The classifier on top of a base: Dense layers (ReLU) each followed by dropout."""

    units: tuple[int, ...] = (256,)
    dropout: float = 0.5
    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        if not 0 <= self.dropout < 1:
            raise ValueError(f"head dropout must be in [0, 1), got {self.dropout}")
        if self.l1 < 0 or self.l2 < 0:
            raise ValueError(f"head l1/l2 must be >= 0, got l1={self.l1}, l2={self.l2}")


def build_head(input_dim: int, n_classes: int, config: HeadConfig = HeadConfig(),
               name: str = "head") -> keras.Model:
    """The thesis head by default: Dense(256, relu) -> Dropout(0.5) -> Dense(n, softmax)."""
    regularizer = (regularizers.L1L2(l1=config.l1, l2=config.l2)
                   if config.l1 or config.l2 else None)
    inputs = keras.Input((input_dim,), name=f"{name}_features")
    x = inputs
    for i, units in enumerate(config.units, start=1):
        x = layers.Dense(units, activation="relu", kernel_regularizer=regularizer,
                         name=f"{name}_dense{i}")(x)
        x = layers.Dropout(config.dropout, name=f"{name}_dropout{i}")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32",
                           name=f"{name}_softmax")(x)
    return keras.Model(inputs, outputs, name=name)


def build_classifier(network: str, n_classes: int, image_size: int, pretrained: bool,
                     head: HeadConfig = HeadConfig(), channel_mean: Sequence[float] | None = None,
                     base: keras.Model | None = None, head_model: keras.Model | None = None,
                     bottleneck: str = "avg", base_bn_inference: bool = False
                     ) -> keras.Model:
    """Input(0..255 RGB) -> Preprocess -> base -> head, as one model.

    ``base`` / ``head_model`` may be passed in (e.g. a head trained on cached features);
    otherwise the base is built with ``bottleneck`` (``build_base``). ``base_bn_inference``
    keeps the base's BatchNorm layers in inference mode while the rest of the base is
    fine-tuned (``freeze_batch_norm``), as the Keras transfer-learning guide advises.
    """
    entry = get_network(network)
    check_input_size(entry, image_size)
    shape = (image_size, image_size, 3)
    base = base if base is not None else build_base(network, shape, pretrained, bottleneck)
    head_model = head_model if head_model is not None else build_head(
        base.output_shape[-1], n_classes, head)
    inputs = keras.Input(shape, name="image")
    x = Preprocess(entry.preprocessing, mean=channel_mean, name="preprocess")(inputs)
    if base_bn_inference:
        freeze_batch_norm(base)
    outputs = head_model(base(x))
    return keras.Model(inputs, outputs, name=f"{network}_classifier")


# --- model surgery (the leukemia recipe's centred, from-scratch models) ---------------------


def set_input_mean(base: keras.Model, mean: Sequence[float]) -> bool:
    """Centre a keras.applications EfficientNet's input on ``mean`` (of [0, 1] pixels): its
    built-in Rescaling(1/255) -> Normalization becomes x/255 - mean. Saved with the model."""
    for layer in base.layers:
        if isinstance(layer, keras.layers.Normalization) and layer.input_mean is None:
            layer.adapt_mean.assign(np.asarray(mean, dtype="float32"))
            layer.adapt_variance.assign(np.ones(len(mean), dtype="float32"))
            layer.finalize_state()
            return True
    return False


def set_bn_momentum(base: keras.Model, momentum: float | None) -> int:
    """Set the moving-statistics momentum of every BatchNormalization layer of ``base``
    (None: keep Keras's 0.99); returns the number of layers changed.

    The statistics used at inference are a moving average over training batches; with 0.99
    they still carry ~15 % of their initial values (mean 0, variance 1) after 190 steps, and
    a small training set (the default preset's ~30 steps per epoch) gives a network that is
    right in training mode and constant at inference (validation accuracy stuck at 0.5).
    The report's 20000 images (1250 steps per epoch) never met this."""
    if momentum is None:
        return 0
    if not 0 < float(momentum) < 1:
        raise ValueError(f"bn_momentum must be in (0, 1), got {momentum}")
    changed = 0
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            changed += 1
    return changed


def build_solution_model(network: str, image_size: int, head: HeadConfig,
                         mean: Sequence[float], n_classes: int,
                         bn_momentum: float | None = None) -> keras.Model:
    """Input(0..255) -> [/255 - training channel mean] -> base (random weights) -> head.

    The custom CNN centres in its ``Preprocess("unit_centred", mean)`` layer; EfficientNet
    rescales inside, and its Normalization layer subtracts the mean (``set_input_mean``).
    ``bn_momentum`` sets the base's BatchNormalization momentum (``set_bn_momentum``).
    """
    entry = get_network(network)
    base = entry.build((image_size, image_size, 3), False)
    set_bn_momentum(base, bn_momentum)
    if entry.preprocessing != "unit_centred" and not set_input_mean(base, mean):
        raise ValueError(
            f"{network} cannot be centred on the training channel mean: its preprocessing is "
            f"{entry.preprocessing!r} and its base has no Normalization layer to hold the mean. "
            "Use a network with 'unit_centred' preprocessing (leukemia_cnn) or an EfficientNet "
            "(efficientnet_b2)")
    return build_classifier(network, n_classes, image_size, pretrained=False, head=head,
                            channel_mean=mean, base=base)


def freeze_batch_norm(model: keras.Model) -> int:
    """Every BatchNormalization layer of ``model`` (nested models included) made
    non-trainable: Keras 3 runs a non-trainable BatchNormalization in inference mode, with
    its moving (pretrained) statistics, and leaves its scale and offset as they are. Calling
    the base with ``training=False`` does not do this in Keras 3: ``fit`` passes
    ``training=True`` down to every layer and overrides it (keras-team/keras#20285). Returns
    the number of layers frozen."""
    frozen = 0
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
        elif isinstance(layer, keras.Model):
            frozen += freeze_batch_norm(layer)
    return frozen


def set_trainable_top(base: keras.Model, blocks: str | int) -> int:
    """Freeze a base except its top ``blocks`` (``"all"`` unfreezes everything); BatchNorm
    layers stay in inference mode when frozen. Returns the number of trainable layers."""
    base.trainable = True
    if blocks == "all":
        for layer in base.layers:
            layer.trainable = True
        return sum(bool(layer.weights) for layer in base.layers)
    blocks = int(blocks)
    if blocks < 0:
        raise ValueError(f"finetune_blocks must be 'all' or >= 0, got {blocks}")
    block_ids = [mobilenet_torch.block_index(layer.name) for layer in base.layers]
    known = sorted({b for b in block_ids if b is not None})
    if known:  # MobileNetV2: freeze by features block
        keep = set(known[-blocks:]) if blocks else set()
        for layer, block in zip(base.layers, block_ids, strict=True):
            layer.trainable = block is None or block in keep
    else:  # other networks: the top fraction of layers with weights
        weighted = [layer for layer in base.layers if layer.weights]
        cut = len(weighted) - max(0, round(len(weighted) * blocks / 10))
        for i, layer in enumerate(weighted):
            layer.trainable = i >= cut
    return sum(layer.trainable and bool(layer.weights) for layer in base.layers)


def count_params(model: keras.Model) -> dict[str, int]:
    """Trainable and total parameter counts."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(sum(np.prod(w.shape) for w in model.weights))
    return {"trainable": trainable, "total": total}
