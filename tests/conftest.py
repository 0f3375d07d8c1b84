"""Shared fixtures and helpers: the real data pulled by `make data` (tests skip with a reason
without it), a tiny saved classifier, and the headless browser. Helpers live here, never in
another test module."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
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


def built(path: Path, stage: str = "") -> Path:
    """Skip the test when a file the study builds is absent (``dvc repro`` writes it; a fresh
    clone has none)."""
    if not path.exists():
        command = f"dvc repro {stage}".strip()
        pytest.skip(f"{path} missing: run the study first ({command})")
    return path


def study_params(name: str) -> dict:
    """The study's parameters of ``params/<name>.yaml`` (its top-level block ``name``)."""
    import yaml

    return yaml.safe_load((ROOT / "params" / f"{name}.yaml").read_text())[name]


@pytest.fixture(scope="session")
def wbc_root() -> Path:
    return require(DATA / "blood-cell-images")


@pytest.fixture(scope="session")
def allidb_root() -> Path:
    return require(DATA / "all-idb2")


@pytest.fixture(scope="session")
def unseen_root() -> Path:
    """data/bionet: the third lab, never trained on."""
    return require(DATA / "bionet")


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    return require(DATA / "bccd")


@pytest.fixture()
def in_root(monkeypatch):
    """Run the test from the project root (paths in manifests are relative to it)."""
    monkeypatch.chdir(ROOT)
    return ROOT


# --- a tiny classifier ------------------------------------------------------------------------

WBC_CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


def tiny_model(n_classes: int = 4, size: int = 16, colour_weights=None):
    """Input(0..255) -> Preprocess('unit') -> mean colour -> Dense(softmax): tiny and fast."""
    import keras

    from leuko.models.networks import Preprocess

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
    from leuko.thesis.study import save_model

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


# --- the headless browser -----------------------------------------------------------------------
# Open a page from disk in headless Chromium (Debian's, via chromedriver) and report what a reader
# would notice: broken images, console errors, requests that left the machine.

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PAGE_LOAD_SECONDS = 30


@dataclass
class PageCheck:
    """What the browser saw on one page."""

    images: int
    broken_images: list[str]
    console_errors: list[str]
    external_requests: list[str]
    text: str


def browser_available() -> bool:
    """Whether Chromium and chromedriver are installed (`make browser` installs them)."""
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def check_page(html: Path, screenshot: Path, timeout: float = PAGE_LOAD_SECONDS) -> PageCheck:
    """Load ``html`` from disk, wait until ``document.readyState`` is ``complete`` (a
    TimeoutException after ``timeout`` seconds), and collect images, errors and requests."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-default-apps", "--disable-sync", "--no-first-run",
                 "--disable-extensions", "--window-size=1280,2000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(Path(html).resolve().as_uri())
        WebDriverWait(driver, timeout).until(
            lambda d: d.execute_script("return document.readyState") == "complete",
            f"{html} did not finish loading within {timeout} s")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.src.slice(0, 60), i.complete,"
            " i.naturalWidth])")
        text = driver.execute_script("return document.body.innerText")
        driver.save_screenshot(str(screenshot))
        console = [entry["message"] for entry in driver.get_log("browser")
                   if entry["level"] in ("SEVERE", "ERROR")]
        requests = []
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                url = message["params"]["request"]["url"]
                if not url.startswith(("file:", "data:", "about:", "blob:")):
                    requests.append(url)
    finally:
        driver.quit()
    broken = [src for src, complete, width in images if not complete or not width]
    return PageCheck(len(images), broken, console, requests, text)


@pytest.fixture()
def browser():
    """:func:`check_page`, once Chromium is known to be there. Without it the test skips on a
    developer's machine and FAILS under CI (``CI=true``), so CI cannot pass without it."""
    if not browser_available():
        message = (f"Chromium / chromedriver missing ({CHROMIUM}, {CHROMEDRIVER}): "
                   "`make browser` installs them (as root)")
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message + "; CI requires them")
        pytest.skip(message)
    return check_page
