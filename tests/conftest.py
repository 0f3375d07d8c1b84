"""Shared fixtures: the real data pulled by `make data` (tests skip with a reason without it)."""

from __future__ import annotations

import os
from pathlib import Path

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
