"""The kept forward pass of a cell model (leuko.cells.outputs): it serves only its model file
and the rows it was computed on. That it holds what the network gives is checked on real cells
in tests/test_multisource.py (the pipeline test)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leuko.cells import outputs
from leuko.core.images import file_sha256


def _outputs(model_file) -> outputs.ModelOutputs:
    feats = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # 2 views, 3 cells
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], np.float32)
    return outputs.ModelOutputs(file_sha256(model_file), 2, {"cells": feats},
                                {"cells": probs}, {"cells": np.array(["a.png", "b.png", "c.png"])})


def test_saved_outputs_round_trip_and_serve_rows_by_their_index(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"weights")
    path = outputs.save_outputs(tmp_path / "out.npz", _outputs(model))
    loaded = outputs.load_outputs(path, model)
    assert loaded.views == 2 and set(loaded.features) == {"cells"}
    rows = pd.DataFrame({"path": ["c.png", "a.png"], "index": [2, 0]})
    feats, probs = loaded.rows("cells", rows)
    assert feats.shape == (2, 2, 4)
    np.testing.assert_array_equal(feats[1, 0], np.arange(20, 24))  # view 1 of cell 2: 12 + 8
    np.testing.assert_array_equal(probs, np.array([[0.5, 0.5], [0.9, 0.1]], np.float32))


def test_outputs_of_another_model_file_or_other_rows_are_refused(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"weights")
    path = outputs.save_outputs(tmp_path / "out.npz", _outputs(model))
    model.write_bytes(b"retrained")
    with pytest.raises(outputs.StaleOutputsError, match="another file"):
        outputs.load_outputs(path, model)
    with pytest.raises(FileNotFoundError, match="evaluate-cells"):
        outputs.load_outputs(tmp_path / "none.npz", model)
    moved = pd.DataFrame({"path": ["b.png"], "index": [0]})  # the cache was rebuilt
    with pytest.raises(outputs.StaleOutputsError, match="other rows"):
        _outputs(model).rows("cells", moved)


def test_the_threaded_forward_pass_gives_each_view_what_the_model_gives_it():
    """2 threads calling the model on batches in turn change no output; the view-averaged
    probabilities are those ``mean_over_views`` gets from ``study.predict`` (the way the models
    were calibrated), bit for bit; a part not a multiple of the batch is padded, not cut."""
    import keras

    from leuko.cells.preprocess import dihedral_views, mean_over_views
    from leuko.thesis.study import predict

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    images = np.random.default_rng(0).integers(0, 256, (70, 16, 16, 3), dtype=np.uint8)
    one = outputs.view_outputs(model, images, 8, batch_size=16, progress=False, threads=1)
    two = outputs.view_outputs(model, images, 8, batch_size=16, progress=False, threads=2)
    assert one[0].shape == (8, 70, 3)
    np.testing.assert_array_equal(one[0], two[0])
    turned = dihedral_views(images, 8)[3]  # the mirror image of the second quarter turn
    np.testing.assert_allclose(two[0][3], model(turned.astype(np.float32)).numpy(), atol=1e-6)
    np.testing.assert_array_equal(outputs.view_probabilities(model, images, 8),
                                  mean_over_views(lambda x: predict(model, x), images, 8))
