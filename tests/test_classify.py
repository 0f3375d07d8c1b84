"""Tests of leuko.tool.classify and the `leuko classify` command: real cell images, bad files,
exit codes, streaming, and (when the study has run) the real model."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import WBC_CLASSES, save_tiny_model
from leuko.tool import classify, cli

ROOT = Path(__file__).resolve().parents[1]
TEST_SIMPLE = ROOT / "data/blood-cell-images/images/TEST_SIMPLE"
CLASSES = WBC_CLASSES


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture()
def test_simple() -> Path:
    if not TEST_SIMPLE.is_dir():
        pytest.skip(f"{TEST_SIMPLE} missing: run `make data` (dvc pull) first")
    return TEST_SIMPLE


def bad_folder(folder: Path) -> dict[str, str]:
    """Three bad files (zero bytes, text named .jpg, a truncated JPEG) and a note; returns
    name -> expected words of the reason."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes-as-image.jpg").write_text("these are my notes, not an image\n")
    good = next(TEST_SIMPLE.glob("NEUTROPHIL/*.jpeg")).read_bytes()
    (folder / "truncated.jpeg").write_bytes(good[: len(good) // 3])
    (folder / "README.txt").write_text("not an image, and not named like one: ignored\n")
    return {"empty.jpg": "empty file", "notes-as-image.jpg": "not a decodable image",
            "truncated.jpeg": "truncated or corrupt"}


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


# --------------------------------------------------------------------------- file discovery
def test_iter_image_files_is_recursive_sorted_and_keeps_explicit_files(tmp_path):
    for name in ["b/2.png", "b/1.JPG", "a/x.tif", "a/deep/y.bmp", ".hidden/z.png", "a/.h.png",
                 "a/notes.txt", "top.jpeg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "explicit.txt").write_text("named on purpose")
    skipped = Counter()
    found = list(classify.iter_image_files([tmp_path, tmp_path / "explicit.txt"], skipped))
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["top.jpeg", "a/x.tif", "a/deep/y.bmp", "b/1.JPG", "b/2.png", "explicit.txt"]
    assert skipped["not an image"] == 2  # notes.txt, explicit.txt inside the folder walk
    assert classify.count_image_files([tmp_path]) == 5


def test_differential_count_and_table():
    rows = classify.differential_count(Counter(NEUTROPHIL=3, LYMPHOCYTE=1), CLASSES)
    assert rows == [{"class": "EOSINOPHIL", "cells": 0, "percent": 0.0},
                    {"class": "LYMPHOCYTE", "cells": 1, "percent": 25.0},
                    {"class": "MONOCYTE", "cells": 0, "percent": 0.0},
                    {"class": "NEUTROPHIL", "cells": 3, "percent": 75.0}]
    text = classify.format_differential(rows, "Differential count (4 cells):")
    assert "NEUTROPHIL        3    75.0" in text
    assert text.splitlines()[-1].split() == ["total", "4", "100.0"]


def test_prepare_applies_the_metadata_crop(tmp_path):
    path = save_tiny_model(tmp_path, size=8, crop=0.25)
    classifier = classify.load_classifier(path)
    image = np.zeros((40, 40, 3), np.uint8)
    image[10:30, 10:30] = 200  # the centre survives the crop, the black border does not
    prepared = classifier.prepare(image)
    assert prepared.shape == (8, 8, 3) and prepared.dtype == np.uint8
    assert prepared.min() == 200


# --------------------------------------------------------------------------- the command
def test_classify_folder_with_bad_files(tmp_path, tiny, test_simple, capsys):
    expected = bad_folder(tmp_path / "incoming")
    out = tmp_path / "results" / "cells.csv"
    code = cli.main(["classify", str(test_simple), str(tmp_path / "incoming"), "--model",
                     str(tiny), "--output", str(out), "--batch-size", "16", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2  # some files failed; the others were classified
    table = read_csv(out)
    n_good = len(list(test_simple.rglob("*.jpeg")))
    assert n_good == 71
    assert len(table) == n_good
    assert list(table.columns) == ["path", "predicted", "confidence", "uncertain",
                                   "cell_found", "distance", "far",
                                   *[f"p_{c}" for c in CLASSES]]
    # a model without an abstention threshold calls nothing uncertain and finds no cells
    assert not table["uncertain"].astype(bool).any()
    assert set(table["cell_found"].astype(str)) == {""}
    # no novelty file beside the model: no distance, and the command says so, once
    assert set(table["distance"].astype(str)) == set(table["far"].astype(str)) == {""}
    assert captured.out.count("Distance to the training cells: not available") == 1
    assert "tiny-novelty.npz" in captured.out
    probs = table[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert set(table["predicted"]) <= set(CLASSES)
    assert (table["confidence"] == probs.max(axis=1)).all()
    # the differential count: cells and percent per class, and the total
    assert "Differential count (71 white cells):" in captured.out
    counts = table["predicted"].value_counts()
    for name in CLASSES:
        n = int(counts.get(name, 0))
        assert f"{name:<10}  {n:>7}  {100 * n / 71:>6.1f}" in captured.out
    # bad files: listed with their reason on stderr and in <stem>-failed.csv
    assert "3 file(s) could not be read" in captured.err
    failed = read_csv(out.with_name("cells-failed.csv"))
    assert sorted(Path(p).name for p in failed["path"]) == sorted(expected)
    for path, reason in zip(failed["path"], failed["reason"], strict=True):
        assert expected[Path(path).name] in reason
        assert f"{path}: {reason}" in captured.err
    assert "Ignored 1 file(s)" in captured.out  # README.txt


def test_json_output_and_exit_code_0(tmp_path, tiny, test_simple, capsys):
    folder = tmp_path / "cells"
    shutil.copytree(test_simple / "MONOCYTE", folder / "MONOCYTE")
    out = tmp_path / "r.csv"
    out.with_name("r-failed.csv").write_text("path,reason\nstale,old\n")
    code = cli.main(["classify", str(folder), "--model", str(tiny), "-o", str(out), "--json",
                     "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["exit_code"] == 0
    assert report["files"] == report["cells"] == 4 and report["failed"] == []
    assert sum(r["cells"] for r in report["differential"]) == 4
    assert report["output"] == str(out)
    assert not out.with_name("r-failed.csv").exists()  # a stale list is removed


def test_a_cell_whose_nucleus_was_not_found_is_uncertain(tmp_path, test_simple, capsys):
    """A cell model classifies an image without a nucleus on the whole image; whatever its
    probabilities, that cell is uncertain: left out of the count, and the CSV says so."""
    from leuko.cells.preprocess import CellPreprocess

    model = save_tiny_model(tmp_path / "model")
    meta = json.loads(model.with_suffix(".json").read_text())
    model.with_suffix(".json").write_text(json.dumps(
        {**meta, "cell_preprocess": CellPreprocess().to_dict()}))  # a cell model: finds nuclei
    folder = tmp_path / "cells"
    folder.mkdir()
    cell = next(test_simple.glob("NEUTROPHIL/*.jpeg"))
    shutil.copyfile(cell, folder / "a-cell.jpeg")
    Image.open(cell).convert("L").convert("RGB").save(folder / "b-grayscale.png")
    Image.new("RGB", (120, 90), (200, 200, 200)).save(folder / "c-blank.png")
    out = tmp_path / "cells.csv"
    assert cli.main(["classify", str(folder), "--model", str(model), "-o", str(out),
                     "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    table = read_csv(out).set_index(read_csv(out)["path"].map(lambda p: Path(p).name))
    found = table["cell_found"].astype(str).str.lower()
    uncertain = table["uncertain"].astype(str).str.lower()
    assert found.to_dict() == {"a-cell.jpeg": "true", "b-grayscale.png": "false",
                               "c-blank.png": "false"}
    assert (uncertain == "true").to_dict() == (found == "false").to_dict()  # threshold 0
    assert report["cells_not_found"] == report["uncertain"] == 2
    assert sum(r["cells"] for r in report["differential"]) == 1
    assert cli.main(["classify", str(folder), "--model", str(model), "-o", str(out),
                     "--no-progress"]) == 0
    assert "Uncertain (left out of the count): 2 of 3 cells (no nucleus found)" in (
        capsys.readouterr().out)


def test_usage_errors_exit_1(tmp_path, tiny, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["classify", str(tmp_path / "empty"), "--model", str(tiny)]) == 1
    assert "no image files found" in capsys.readouterr().err
    image = tmp_path / "a.png"
    Image.new("RGB", (20, 20)).save(image)
    assert cli.main(["classify", str(image), "--model", str(tmp_path / "none.keras")]) == 1
    assert "model not found" in capsys.readouterr().err
    assert cli.main(["classify", str(image), "--model", str(tiny), "--cell-size", "100"]) == 1
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["classify", str(image), "--batch-size", "0"])
    assert exit_info.value.code == 1
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["classify"])
    assert exit_info.value.code == 1


def test_console_script_usage_error_exit_1():
    script = Path(sys.executable).with_name("leuko")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "leuko.tool.cli"]
    done = subprocess.run([*command, "classify", "--no-such-option", "x"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "unrecognized arguments: --no-such-option" in done.stderr


def test_missing_metadata_is_explained(tmp_path, tiny):
    lonely = tmp_path / "lonely.keras"
    shutil.copyfile(tiny, lonely)
    with pytest.raises(classify.ModelMetadataError, match="lonely.json"):
        classify.load_classifier(lonely)


# --------------------------------------------------------------------------- streaming
def test_reading_is_streamed_and_batches_do_not_change_results(tmp_path, tiny):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(50):
        path = tmp_path / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    classifier = classify.load_classifier(tiny)
    pulled = []

    def lazily():
        for path in paths:
            pulled.append(path)
            yield path

    stream = classify.classify_cells(lazily(), classifier, batch_size=4, workers=1,
                                     prefetch=1)
    first = next(stream)
    # only a few batches were read when the first result came out, never the whole folder
    assert len(pulled) <= 4 * 4
    small = [first, *stream]
    large = list(classify.classify_cells(paths, classifier, batch_size=64))
    assert [p.path for p in small] == [str(p) for p in paths] == [p.path for p in large]
    np.testing.assert_allclose(np.stack([p.probabilities for p in small]),
                               np.stack([p.probabilities for p in large]), atol=1e-6)


def test_csv_rows_follow_input_order(tmp_path, tiny):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(7):
        Image.new("RGB", (10, 10), (30 * i, 0, 0)).save(folder / f"{i}.png")
    (folder / "3.png").write_bytes(b"")  # a bad one in the middle
    summary = classify.run([folder], tiny, tmp_path / "o.csv", batch_size=3, progress=False)
    assert summary.exit_code == 2 and summary.cells == 6
    with open(tmp_path / "o.csv") as handle:
        names = [Path(r["path"]).name for r in csv.DictReader(handle)]
    assert names == ["0.png", "1.png", "2.png", "4.png", "5.png", "6.png"]



def test_a_classifier_with_eight_views_averages_the_symmetries_of_each_cell(tiny):
    from leuko.cells.preprocess import dihedral_views

    classifier = classify.load_classifier(tiny)
    size = classifier.image_size[0]
    images = np.random.default_rng(2).integers(0, 255, (3, size, size, 3)).astype(np.uint8)

    def top_rows(batch):  # a model that sees orientation: brightness of the top rows
        p = np.asarray(batch)[:, : size // 4].mean(axis=(1, 2, 3)) / 255
        return np.stack([p, 1 - p, np.zeros_like(p), np.zeros_like(p)], axis=1)

    classifier._predict = top_rows
    one = classifier.predict_batch(images, batch_size=4)
    classifier.views = 8
    eight = classifier.predict_batch(images, batch_size=4)
    expected = np.mean([top_rows(v) for v in dihedral_views(images)], axis=0)
    np.testing.assert_allclose(one, top_rows(images), atol=1e-6)  # one view: as prepared
    np.testing.assert_allclose(eight, expected, atol=1e-6)
    assert not np.allclose(eight, one, atol=1e-3)
