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
