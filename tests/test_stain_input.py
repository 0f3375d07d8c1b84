"""The stain-density input of a cell model (leuko.models.stain_input): skimage's colour
deconvolution, scaled to [0, 255], inside a model that saves and loads."""

import keras
import numpy as np
import pytest
from skimage.color import rgb2hed

from leuko.models.stain_input import StainDensities, with_input_colour


def test_densities_are_skimage_colour_deconvolution_scaled_to_255():
    rng = np.random.default_rng(0)
    rgb = rng.integers(1, 256, size=(2, 8, 8, 3)).astype(np.uint8)
    got = np.asarray(StainDensities()(rgb.astype(np.float32)))
    want = rgb2hed(rgb)
    # each channel's scale: skimage's density of the darkest colour for that stain
    scale = got.reshape(-1, 3).max(axis=0) / want.reshape(-1, 3).max(axis=0)
    np.testing.assert_allclose(got, want * scale, rtol=1e-4, atol=1e-3)
    # haematoxylin, eosin, DAB: at most 255, reached by an 8-bit colour
    assert got.max() <= 255.0 + 1e-3
    corners = np.array([[[[r, g, b] for r in (1, 255) for g in (1, 255) for b in (1, 255)]]],
                       np.float32)
    np.testing.assert_allclose(np.asarray(StainDensities()(corners)).max(axis=(0, 1, 2)), 255.0,
                               rtol=1e-5)
    # white glass has no stain; a violet nucleus is mostly haematoxylin
    white, violet = np.asarray(StainDensities()(np.array([[[[255, 255, 255], [90, 40, 150]]]],
                                                          np.float32)))[0, 0]
    np.testing.assert_allclose(white, 0.0, atol=1e-4)
    assert violet[0] > violet[1] and violet[0] > violet[2]


def test_a_hed_model_takes_rgb_and_saves_and_loads(tmp_path):
    inputs = keras.Input((8, 8, 3))
    rgb_model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(inputs)))
    assert with_input_colour(rgb_model, "rgb") is rgb_model
    model = with_input_colour(rgb_model, "hed")
    images = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3)).astype(np.float32)
    expected = rgb_model(StainDensities()(images))
    np.testing.assert_allclose(model(images), expected, rtol=1e-6)
    model.save(tmp_path / "hed.keras")
    loaded = keras.models.load_model(tmp_path / "hed.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(images), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="input colour must be one of"):
        with_input_colour(rgb_model, "lab")


def test_the_penultimate_features_of_a_hed_model_are_found_through_it():
    """Novelty, adaptation and ``leuko adapt`` read a cell model's penultimate features
    (``outputs.split_head``): through the stain-density layer too."""
    from leuko.cells.outputs import split_head

    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    rgb_model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled))
    head = split_head(with_input_colour(rgb_model, "hed"))
    images = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(head.features(images),
                               np.asarray(StainDensities()(images)).mean(axis=(1, 2)), rtol=1e-5)
