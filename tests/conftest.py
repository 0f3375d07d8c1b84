"""Shared fixtures and helpers: the real data pulled by `make data` (tests skip with a reason
without it), a tiny saved classifier, and the headless browser. Helpers live here, never in
another test module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def require(path: Path) -> Path:
    """Skip the test when a real-data path is absent (run `make data`)."""
    if not path.exists():
        pytest.skip(f"{path} missing: run `make data` (dvc pull) first")
    return path


@pytest.fixture(scope="session")
def wbc_root() -> Path:
    return require(DATA / "blood-cell-images")


@pytest.fixture(scope="session")
def allidb_root() -> Path:
    return require(DATA / "all-idb2")


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    return require(DATA / "bccd")


@pytest.fixture()
def in_root(monkeypatch):
    """Run the test from the project root (paths in manifests are relative to it)."""
    monkeypatch.chdir(ROOT)
    return ROOT

# tests/browser.py is a helper module for the browser tests
import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))


# --- a tiny classifier ------------------------------------------------------------------------

WBC_CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


def tiny_model(n_classes: int = 4, size: int = 16, colour_weights=None):
    """Input(0..255) -> Preprocess('unit') -> mean colour -> Dense(softmax): tiny and fast."""
    import keras

    from leuko.networks import Preprocess

    inputs = keras.Input((size, size, 3), name="image")
    x = Preprocess("unit", name="preprocess")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(n_classes, activation="softmax", name="head")
    outputs = dense(x)
    model = keras.Model(inputs, outputs, name="tiny")
    if colour_weights is not None:
        dense.set_weights([np.asarray(colour_weights, np.float32),
                           np.zeros(n_classes, np.float32)])
    return model


def save_tiny_model(folder: Path, size: int = 16, crop=None) -> Path:
    """A tiny 4-class classifier (mean colour -> softmax) saved as ``.keras`` with the metadata
    ``leuko classify`` reads."""
    from leuko.study import save_model

    model = tiny_model(size=size, colour_weights=[[4, 0, 0, -4], [0, 4, 0, 0],
                                                  [0, 0, 4, 4]])
    path = save_model(model, Path(folder) / "tiny.keras")
    (Path(folder) / "tiny.json").write_text(json.dumps(
        {"classes": WBC_CLASSES, "input_size": [size, size], "crop": crop}))
    return path


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    """The path of a saved :func:`save_tiny_model` classifier."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))
