"""The C-NMC centre crop and box crops."""

from __future__ import annotations

import numpy as np
import pytest

from leuko.core import crops


def test_cnmc_crop_450_to_250():
    image = np.zeros((450, 450, 3), np.uint8)
    image[100:350, 100:350] = 255
    out = crops.centre_crop(image, 100)
    assert out.shape == (250, 250, 3) and out.min() == 255


def test_fraction_crop_on_allidb_size(allidb_root):
    from leuko.core.images import load_rgb

    image = load_rgb(allidb_root / "Im001_1.tif")
    assert image.shape == (257, 257, 3)
    out = crops.centre_crop(image, 100 / 450)  # the C-NMC proportion on a 257 px image
    margin = round(257 * 100 / 450)
    assert out.shape == (257 - 2 * margin, 257 - 2 * margin, 3)
    np.testing.assert_array_equal(out, image[margin:-margin, margin:-margin])


@pytest.mark.parametrize("margin", [0.5, -1, 225, "10"])
def test_bad_margins_are_named(margin):
    with pytest.raises((ValueError, TypeError), match="margin"):
        crops.centre_crop(np.zeros((450, 450, 3), np.uint8), margin)


def test_channel_mean_is_of_unit_pixels():
    images = np.full((2, 4, 4, 3), 51, np.uint8)
    np.testing.assert_allclose(crops.channel_mean(images), [0.2, 0.2, 0.2])


def test_square_box_is_clipped():
    assert crops.square_box(0, 0, 10, 20, scale=1.0) == (-5, 0, 15, 20)
    assert crops.square_box(0, 0, 10, 20, image_shape=(30, 30)) == (0, 0, 15, 20)
