"""What colour a cell model sees: RGB as prepared, or the stains separated by colour
deconvolution.

``rgb``: the prepared cell as it is. ``hed``: its haematoxylin, eosin and DAB optical densities
(Ruifrok & Johnston, 2001, the vectors of ``skimage.color.rgb2hed``), each scaled so that its
largest value over the 8-bit colours is 255: the nucleus' haematoxylin and the granules' eosin
in channels of their own, whatever the lab's hue of each. The conversion is the model's first
layer (:class:`StainDensities`, saved inside the ``.keras`` file), so the cached cells, the
training augmentation (stain jitter in RGB) and ``leuko classify``'s input stay RGB. Loading a
model saved with it needs this module imported (it registers the layer).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers
from skimage.color import hed_from_rgb

INPUT_COLOURS = ("rgb", "hed")

# skimage.color.separate_stains: optical density -log(rgb) / -log(1e-6), then the stain matrix
_LOG_ADJUST = float(np.log(1e-6))
# the darkest 8-bit level above 0 (0 is taken as 1: uint8 input has nothing between)
_DARKEST = 1.0 / 255.0
_HED_FROM_RGB = np.asarray(hed_from_rgb, np.float32)
# each stain's largest density over the 8-bit colours (a linear map is largest at a corner)
_HED_MAX = (np.clip(_HED_FROM_RGB, 0, None).sum(axis=0) * np.log(_DARKEST) / _LOG_ADJUST
            ).astype(np.float32)


@keras.saving.register_keras_serializable(package="leuko")
class StainDensities(layers.Layer):
    """RGB in [0, 255] -> haematoxylin, eosin and DAB densities in [0, 255] (module doc)."""

    def call(self, x):
        rgb = keras.ops.maximum(keras.ops.cast(x, "float32") / 255.0, _DARKEST)
        density = keras.ops.log(rgb) / _LOG_ADJUST
        stains = keras.ops.maximum(keras.ops.matmul(density, _HED_FROM_RGB), 0.0)
        return stains / _HED_MAX * 255.0


def check_input_colour(colour: str) -> str:
    if colour not in INPUT_COLOURS:
        raise ValueError(f"input colour must be one of {INPUT_COLOURS}, got {colour!r}")
    return colour


def with_input_colour(model: keras.Model, colour: str) -> keras.Model:
    """``model`` (taking RGB in [0, 255]) as it is for ``rgb``; for ``hed``, a model taking the
    same RGB whose first layer converts it to :class:`StainDensities` for ``model``."""
    if check_input_colour(colour) == "rgb":
        return model
    inputs = keras.Input(model.inputs[0].shape[1:], name="image")
    return keras.Model(inputs, model(StainDensities(name="stain_densities")(inputs)),
                       name=f"{model.name}_hed")
