"""The real notebooks, run headlessly through papermill on a tiny slice of the real data:
prepare -> features -> train (three regimes) -> evaluate -> compare -> HTML report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
pytestmark = pytest.mark.slow


def run_notebook(name: str, cwd: Path, **params) -> Path:
    """Execute notebooks/<name>.ipynb with papermill in ``cwd``; fail with its traceback."""
    import papermill

    out = cwd / "executed" / f"{name}.ipynb"
    out.parent.mkdir(exist_ok=True)
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=params,
                               kernel_name="leuko", cwd=str(cwd), progress_bar=False)
    return out


@pytest.fixture(scope="module")
def tiny_wbc(tmp_path_factory, wbc_root) -> Path:
    """A small real copy of blood-cell-images: a few cells per class and split (symlinks)."""
    root = tmp_path_factory.mktemp("wbc") / "blood-cell-images"
    per_split = {"TRAIN": 24, "TEST": 6, "TEST_SIMPLE": 3}
    for split, n in per_split.items():
        for label in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"):
            folder = root / "images" / split / label
            folder.mkdir(parents=True)
            for src in sorted((wbc_root / "images" / split / label).iterdir())[:n]:
                (folder / src.name).symlink_to(src)
    return root


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, tiny_wbc) -> Path:
    """A working folder with the pretrained weights where the study expects them."""
    work = tmp_path_factory.mktemp("study")
    (work / "data").mkdir()
    (work / "data" / "pretrained").symlink_to(ROOT / "data" / "pretrained")
    return work


def test_notebooks_run_end_to_end_on_real_data(study_dir, tiny_wbc):
    common = {"dataset": "blood-cell-images", "network": "mobilenet_v2", "image_size": 32,
              "train_per_class": 12, "val_per_class": 4, "seed": 0}
    run_notebook("01-prepare", study_dir, dataset="blood-cell-images", data_path=str(tiny_wbc),
                 val_fraction=0.2)
    manifest = study_dir / "build" / "manifests" / "blood-cell-images.csv"
    assert manifest.is_file()
    run_notebook("02-features", study_dir, **{k: v for k, v in common.items()},
                 batch_size=16)
    assert (study_dir / "build" / "features" / "blood-cell-images-mobilenet_v2.npz").is_file()
    for regime in ("imagenet", "imagenet-finetune", "scratch"):
        run_notebook("03-train", study_dir, regime=regime, epochs=2, warmup_epochs=1,
                     **common)
        run_notebook("04-evaluate", study_dir, regime=regime, n_boot=50,
                     **{k: common[k] for k in ("dataset", "network", "image_size", "seed")})
        model_id = f"blood-cell-images-mobilenet_v2-{regime}"
        assert (study_dir / "build" / "models" / f"{model_id}.keras").is_file()
        metrics = json.loads((study_dir / "reports" / "metrics" / f"{model_id}.json")
                             .read_text())
        assert set(metrics["splits"]) == {"test", "test_simple"}
        test = metrics["splits"]["test"]
        assert test["n"] == 24 and 0.0 <= test["accuracy"] <= 1.0
        assert len(test["confusion_matrix"]) == 4
        assert test["intervals"]["accuracy"]["low"] <= test["accuracy"] \
            <= test["intervals"]["accuracy"]["high"]
        assert (study_dir / "reports" / "live" / model_id / "plots" / "metrics").is_dir()
    compare = run_notebook("05-compare", study_dir)
    html = study_dir / "study.html"
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--no-input",
                    "--output-dir", str(study_dir), "--output", "study", str(compare)],
                   check=True, capture_output=True)
    text = html.read_text()
    assert "Summary" in text and "imagenet-finetune" in text and "data:image/png;base64" in text
    table = (study_dir / "reports" / "tables" / "results.csv").read_text()
    assert table.count("blood-cell-images-mobilenet_v2-") == 6  # 3 models x 2 test splits
