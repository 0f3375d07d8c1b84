"""The network registry: every network builds with its own preprocessing, pretrained weights
load from the Keras cache with no network access, and never fall back to random weights."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from leuko.models import networks
from leuko.thesis import study


@pytest.fixture()
def offline(monkeypatch):
    """Any attempt to open a network connection fails, as on the study's machines."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_registry_has_the_thesis_eight_and_the_extras():
    assert set(networks.THESIS_NETWORKS) == {"vgg16", "vgg19", "inception_v3", "xception",
                                             "densenet121", "densenet169", "densenet201",
                                             "resnet50"}
    assert {"mobilenet_v2", "efficientnet_b2", "leukemia_cnn"} <= set(networks.NETWORKS)
    assert networks.get_network("inception_v3").native_size == 299
    with pytest.raises(ValueError, match="network must be one of"):
        networks.get_network("alexnet")
    with pytest.raises(ValueError, match="minimum of 75"):
        networks.check_input_size(networks.get_network("inception_v3"), 64)


def test_cached_imagenet_weights_load_offline(tmp_path, monkeypatch, offline):
    """A weights file placed in a temporary Keras cache is loaded with no download."""
    from keras.src.legacy.saving import legacy_h5_format

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    entry = networks.get_network("densenet121")
    keras.utils.set_random_seed(1)
    reference = keras.applications.DenseNet121(include_top=False, weights=None,
                                               input_shape=(32, 32, 3), pooling="avg")
    cache = tmp_path / "models"
    cache.mkdir()
    with h5py.File(cache / entry.weights_file, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    keras.utils.set_random_seed(2)  # a fresh random init differs from the reference
    loaded = entry.build((32, 32, 3), True)
    for a, b in zip(reference.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_missing_weights_offline_name_file_and_folder(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    entry = networks.get_network("resnet50")
    with pytest.raises(networks.PretrainedWeightsMissing) as error:
        entry.build((32, 32, 3), True)
    message = str(error.value)
    assert entry.weights_file in message and str(tmp_path / "models") in message


def test_efficientnet_input_is_centred_on_the_training_mean(tmp_path):
    mean = [0.7, 0.6, 0.5]
    model = networks.build_solution_model("efficientnet_b2", 32, networks.HeadConfig((8,)), mean,
                                          2, bn_momentum=0.9)
    study.save_model(model, tmp_path / "b.keras")
    loaded = study.load_model(tmp_path / "b.keras")
    base = next(layer for layer in loaded.layers if isinstance(layer, keras.Model))
    norm = next(layer for layer in base.layers if isinstance(layer, keras.layers.Normalization))
    probe = keras.Model(base.input, norm.output)
    out = probe.predict(np.full((1, 32, 32, 3), 255.0, np.float32), verbose=0)
    assert out[0, 0, 0] == pytest.approx(1 - np.array(mean), abs=1e-5)
    momenta = {layer.momentum for layer in base.layers
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}
    with pytest.raises(ValueError, match="bn_momentum must be in"):
        networks.set_bn_momentum(base, 1.5)


def test_a_network_that_cannot_hold_the_channel_mean_is_an_error():
    """No silent skip: a base with neither 'unit_centred' preprocessing nor a Normalization
    layer cannot be centred, and says so."""
    with pytest.raises(ValueError, match="mobilenet_v2 cannot be centred"):
        networks.build_solution_model("mobilenet_v2", 32, networks.HeadConfig((8,)),
                                      [0.5, 0.5, 0.5], 2)


def test_a_failed_download_is_named_and_other_errors_are_not(tmp_path, monkeypatch):
    """Only a network failure becomes PretrainedWeightsMissing; any other error keeps its type
    and message."""
    import urllib.error

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    entry = networks.get_network("resnet50")

    def keras_download_failure(*args, **kwargs):  # as keras.utils.get_file raises it
        try:
            raise urllib.error.URLError("no route to host")
        except urllib.error.URLError as error:
            raise Exception(f"URL fetch failure on https://x: None -- {error.reason}")  # noqa: B904

    monkeypatch.setattr(keras.applications.resnet50, "ResNet50", keras_download_failure)
    with pytest.raises(networks.PretrainedWeightsMissing, match="URLError"):
        entry.build((32, 32, 3), True)

    def broken(*args, **kwargs):
        raise ValueError("input_shape is not supported")

    monkeypatch.setattr(keras.applications.resnet50, "ResNet50", broken)
    with pytest.raises(ValueError, match="input_shape is not supported") as error:
        entry.build((32, 32, 3), True)
    assert not isinstance(error.value, networks.PretrainedWeightsMissing)
    assert networks.download_failure(ValueError("x")) is None


@pytest.mark.parametrize("name", ["mobilenet_v2", "leukemia_cnn", "densenet121",
                                  "efficientnet_b2"])
def test_classifier_saves_and_loads_safely(tmp_path, name):
    """Input(0..255) -> Preprocess -> base -> head survives .keras with safe_mode=True."""
    mean = [0.5, 0.4, 0.3] if name == "leukemia_cnn" else None
    model = networks.build_classifier(name, 2, 32, pretrained=False, channel_mean=mean)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    before = model.predict(images, verbose=0)
    assert before.shape == (2, 2)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-5)
    path = study.save_model(model, tmp_path / f"{name}.keras")
    after = study.load_model(path).predict(images, verbose=0)
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_preprocessing_matches_keras_applications():
    x = np.random.default_rng(0).uniform(0, 255, (1, 8, 8, 3)).astype("float32")
    for kind, fn in [("caffe", keras.applications.vgg16.preprocess_input),
                     ("tf", keras.applications.xception.preprocess_input),
                     ("torch", keras.applications.densenet.preprocess_input)]:
        ours = np.asarray(networks.Preprocess(kind)(x))
        np.testing.assert_allclose(ours, fn(x.copy()), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        networks.Preprocess("imagenet")


def test_finetune_top_blocks_freezes_the_rest():
    base = networks.get_network("mobilenet_v2").build((32, 32, 3), False)
    networks.set_trainable_top(base, 2)
    trainable = {layer.name for layer in base.layers if layer.trainable and layer.weights}
    assert trainable and all(name.startswith(("features_17", "features_18"))
                             for name in trainable)
    networks.set_trainable_top(base, "all")
    assert all(layer.trainable for layer in base.layers)


def test_flatten_bottleneck_is_the_thesis_head_input():
    """The thesis's head sits on VGG16's flattened last block: 7 x 7 x 512 = 25,088 inputs at
    224 px; ``avg`` pools the same block to 512. Random weights: no download."""
    flat = networks.build_classifier("vgg16", 4, 224, pretrained=False, bottleneck="flatten")
    assert tuple(flat.get_layer("head").inputs[0].shape) == (None, 25088)
    base = networks.build_base("vgg16", (224, 224, 3), False, "avg")
    assert tuple(base.output_shape) == (None, 512)
    with pytest.raises(ValueError, match="bottleneck must be one of"):
        networks.build_base("vgg16", (224, 224, 3), False, "max")


def test_flatten_base_keeps_its_layers_for_freezing_and_saves(tmp_path):
    """A flattened MobileNetV2 still freezes by block and survives save/load."""
    base = networks.build_base("mobilenet_v2", (32, 32, 3), False, "flatten")
    assert tuple(base.output_shape) == (None, 1 * 1 * 1280)
    networks.set_trainable_top(base, 1)
    trainable = {layer.name for layer in base.layers if layer.trainable and layer.weights}
    assert trainable and all(name.startswith("features_18") for name in trainable)
    model = networks.build_classifier("mobilenet_v2", 4, 32, pretrained=False, base=base)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    before = model.predict(images, verbose=0)
    after = study.load_model(study.save_model(model, tmp_path / "m.keras")).predict(
        images, verbose=0)
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_weights_parameter_is_explicit(tmp_path, monkeypatch, offline):
    """``random`` is a named choice; ``imagenet`` with the file missing still raises."""
    assert networks.uses_imagenet("imagenet") and not networks.uses_imagenet("random")
    with pytest.raises(ValueError, match="weights must be one of"):
        networks.uses_imagenet("none")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(networks.PretrainedWeightsMissing, match="vgg16"):
        networks.build_base("vgg16", (32, 32, 3), networks.uses_imagenet("imagenet"), "flatten")


@pytest.mark.parametrize("bn_inference", [True, False])
def test_bn_inference_keeps_the_base_statistics_while_its_weights_train(bn_inference):
    """``base_bn_inference`` (``bn_inference`` of a fine-tuning regime): the base's BatchNorm
    moving statistics stay as loaded while its convolutions train; without it they move."""
    keras.utils.set_random_seed(0)
    model = networks.build_classifier("mobilenet_v2", 4, 32, pretrained=True,
                                      base_bn_inference=bn_inference)  # ImageNet statistics
    base = model.get_layer(index=2)
    bn = next(layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization))
    conv = [layer for layer in base.layers if isinstance(layer, keras.layers.Conv2D)][-1]
    before_mean, before_kernel = bn.moving_mean.numpy().copy(), conv.kernel.numpy().copy()
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32"),
              np.eye(4, dtype="float32")[rng.integers(0, 4, 16)], batch_size=8, epochs=1,
              verbose=0)
    assert not np.allclose(conv.kernel.numpy(), before_kernel)  # the base trains either way
    assert np.allclose(bn.moving_mean.numpy(), before_mean) == bn_inference


def test_bn_inference_is_refused_for_training_from_scratch():
    run = study.WbcRun.from_params("blood-cell-images", "mobilenet_v2", "scratch")
    run = study.WbcRun(run.dataset, run.network, run.regime, run.settings,
                       dataclasses.replace(run.training, bn_inference=True))
    with pytest.raises(ValueError, match="bn_inference is for fine-tuning"):
        study.train_wbc(run, paths=study.Paths(Path("/nonexistent")))
