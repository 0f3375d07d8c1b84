"""The real notebooks, run headlessly by papermill on the real data in a fresh folder, each
with the small defaults of its own parameters cell (what a student gets in JupyterLab):
prepare -> features -> train (every regime) -> evaluate -> compare -> HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
pytestmark = pytest.mark.slow


def run_notebook(name: str, cwd: Path, **params) -> Path:
    """Execute notebooks/<name>.ipynb with papermill in ``cwd``; fails with its traceback."""
    import papermill

    suffix = "".join(f"-{v}" for v in params.values() if isinstance(v, str | int))
    out = cwd / "reports" / "notebooks" / f"{name}{suffix}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=params,
                               kernel_name="leuko", cwd=str(cwd), progress_bar=False)
    return out


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, wbc_root) -> Path:
    """A fresh working folder that sees the real data."""
    work = tmp_path_factory.mktemp("study")
    (work / "data").symlink_to(ROOT / "data")
    return work


def test_wbc_notebooks_run_with_their_defaults(study_dir):
    run_notebook("01-prepare", study_dir)
    assert (study_dir / "build" / "manifests" / "blood-cell-images.csv").is_file()
    run_notebook("02-features", study_dir)
    assert (study_dir / "build" / "features" / "blood-cell-images-mobilenet_v2.npz").is_file()
    regimes = ["imagenet", "imagenet-long", "imagenet-finetune", "scratch"]
    for regime in regimes:
        run_notebook("03-train", study_dir, regime=regime)
    run_notebook("03-train", study_dir, regime="imagenet", repeat_seed=1)  # a repeat
    run_notebook("04-evaluate", study_dir, wbc={
        "networks": ["mobilenet_v2"], "regimes": regimes, "pooled_regimes": [],
        "repeats": {"regimes": ["imagenet"], "seeds": [1]}, "image_size": 96, "eager": False})
    # the repeat: its own training seed on the main run's data, scored like every model
    main_id = "blood-cell-images-mobilenet_v2-imagenet"
    repeat = json.loads((study_dir / "reports" / "metrics" / f"{main_id}-seed1.json")
                        .read_text())
    trained = json.loads((study_dir / "reports" / "train" / f"{main_id}-seed1.json").read_text())
    assert (repeat["training_seed"], trained["training_seed"], trained["data_seed"]) == (1, 1, 0)
    assert repeat["splits"]["test"]["n"] == 2487
    main_probs, repeat_probs = (
        pd.read_csv(study_dir / "reports" / "predictions" / f"{name}.csv")["p_EOSINOPHIL"]
        for name in (main_id, f"{main_id}-seed1"))
    assert not np.allclose(main_probs, repeat_probs)  # another draw, not a copy
    for regime in regimes:
        model_id = f"blood-cell-images-mobilenet_v2-{regime}"
        assert (study_dir / "build" / "models" / f"{model_id}.keras").is_file()
        metrics = json.loads((study_dir / "reports" / "metrics" / f"{model_id}.json")
                             .read_text())
        assert set(metrics["splits"]) == {"test", "test_simple"}
        test = metrics["splits"]["test"]
        assert test["n"] == 2487 and len(test["confusion_matrix"]) == 4
        assert metrics["splits"]["test_simple"]["n"] == 71
        interval = test["intervals"]["accuracy"]
        assert interval["low"] <= test["accuracy"] <= interval["high"]
        assert (study_dir / "reports" / "live" / model_id / "plots" / "metrics").is_dir()
    # what people read: no TensorFlow CUDA start-up lines, no widget warnings in any output
    for executed in (study_dir / "reports" / "notebooks").glob("*.ipynb"):
        streams = "".join("".join(output.get("text", "")) for cell in
                          json.loads(executed.read_text())["cells"]
                          for output in cell.get("outputs", []) if output.get("name") == "stderr")
        for noise in ("cuInit", "cuda drivers", "IProgress", "absl::InitializeLog"):
            assert noise not in streams, f"{executed.name} shows {noise!r}"
    # the frozen ImageNet features already separate the classes well above chance (25 %)
    imagenet = json.loads((study_dir / "reports" / "metrics" /
                           "blood-cell-images-mobilenet_v2-imagenet.json").read_text())
    assert imagenet["splits"]["test_simple"]["accuracy"] > 0.4


def test_the_network_stage_trains_all_its_models_into_its_own_folders(study_dir, tmp_path):
    """notebooks/03-train-network.ipynb (the smoke preset's stage per network) with its
    defaults, on the manifests prepared above: both splits' features, the model in
    build/models/<network>/, its summary and curves in the network's folders."""
    import shutil

    work = tmp_path / "grouped"
    (work / "build").mkdir(parents=True)
    (work / "data").symlink_to(ROOT / "data")
    shutil.copytree(study_dir / "build" / "manifests", work / "build" / "manifests")
    shutil.copytree(ROOT / "params" / "regimes", work / "params" / "regimes")  # as the stage
    run_notebook("03-train-network", work)
    epochs = yaml.safe_load((ROOT / "params" / "regimes" / "imagenet.yaml").read_text())[
        "training"]["epochs"]
    model_id = "blood-cell-images-mobilenet_v2-imagenet"
    for dataset in ("blood-cell-images", "blood-cell-images-pooled"):
        assert (work / "build" / "features" / f"{dataset}-mobilenet_v2.npz").is_file()
    assert [p.name for p in (work / "build" / "models").rglob("*.keras")] == [
        f"{model_id}.keras"]
    assert (work / "build" / "models" / "mobilenet_v2" / f"{model_id}.keras").is_file()
    summary = json.loads((work / "reports" / "train" / "mobilenet_v2" / f"{model_id}.json")
                         .read_text())
    assert (summary["model"], summary["eager"], summary["epochs_run"]) == (model_id, False,
                                                                          epochs)
    assert (work / "reports" / "live" / "mobilenet_v2" / model_id / "plots").is_dir()
    # scored in the stage, as evaluate-wbc scores (the notebook's default: 25 per class)
    metrics = json.loads((work / "reports" / "metrics" / f"{model_id}.json").read_text())
    assert metrics["splits"]["test"]["n"] == 4 * 25
    assert metrics["splits"]["test_simple"]["n"] == 13 + 6 + 4 + 25  # 48 neutrophils
    assert metrics["training"]["saved_epoch"] == summary["saved_epoch"]
    assert metrics["stain_shift"]["n"] == 10 + 6 + 4 + 10  # TEST_SIMPLE, 10 per class at most


def test_compare_and_report_render_every_model(study_dir):
    from leuko.reporting.render import main as render

    compare = run_notebook("05-compare", study_dir, params_dir="")  # every model it trained
    table = (study_dir / "reports" / "tables" / "results.csv").read_text()
    # 4 models and the repeat of one, x 2 test splits
    assert table.count("blood-cell-images-mobilenet_v2-") == 10
    # the spread over training seeds: per kind, its runs; for dvc metrics show, the same
    seeds = pd.read_csv(study_dir / "reports" / "tables" / "seed_summary.csv")
    imagenet = seeds[seeds["kind"] == "blood-cell-images-mobilenet_v2-imagenet"]
    assert sorted(imagenet["runs"]) == [2, 2] and set(imagenet["split"]) == {"test",
                                                                             "test_simple"}
    summary = json.loads((study_dir / "reports" / "metrics-summary.json").read_text())
    test = summary["blood-cell-images-mobilenet_v2-imagenet"]["test"]
    assert test["runs"] == 2 and test["accuracy"]["min"] <= test["accuracy"]["mean"] \
        <= test["accuracy"]["max"]
    assert summary["blood-cell-images-mobilenet_v2-scratch"]["test"]["accuracy"]["sd"] is None
    compare.rename(
        study_dir / "reports" / "notebooks" / "compare.ipynb")
    import os

    cwd = os.getcwd()
    os.chdir(study_dir)
    try:
        render([str(study_dir / "reports" / "notebooks")])
    finally:
        os.chdir(cwd)
    html = (study_dir / "reports" / "study.html").read_text()
    assert "Summary" in html and "imagenet-finetune" in html
    assert html.count("data:image/png;base64") >= 8
    assert "https://cdn" not in html and "<script src=\"http" not in html
    assert (study_dir / "reports" / "html" / "03-train-imagenet.html").is_file()


@pytest.mark.browser
def test_the_study_report_reads_cleanly_in_a_browser(study_dir, tmp_path, browser):
    seen = browser(study_dir / "reports" / "study.html", tmp_path / "study.png")
    assert seen.images >= 8 and seen.broken_images == []
    assert "Summary" in seen.text and "TEST_SIMPLE" in seen.text
    assert seen.console_errors == [] and seen.external_requests == []
