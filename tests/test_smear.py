"""Tests of leuko.cells.detect (white cells on whole smears), of the BCCD detection study
(leuko.tool.smear, on real BCCD smears), of `leuko classify --smear`, and of leuko.core.stain (stain
jitter and simulated lab shifts).

Counts are never copied from a run: they are derived from BCCD's annotations, from the library
itself (the command against ``detect_cells``), or from the study's own recorded measurement
(``reports/detection/metrics.json``, a DVC metric) with a binomial margin."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leuko.cells import detect
from leuko.core import datasets, stain
from leuko.core.images import load_rgb
from leuko.tool import cli, smear

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "reports/detection/metrics.json"
#: The study's detector, read from the one place its values live.
CONFIG = detect.DetectConfig.from_params(path=ROOT / "params" / "detect.yaml")


@pytest.fixture(scope="module")
def bccd(bccd_root) -> Path:
    return bccd_root


@pytest.fixture(scope="module")
def truth(bccd) -> pd.DataFrame:
    return smear.bccd_ground_truth(bccd)


@pytest.fixture(scope="module")
def tiny(tiny_classifier) -> Path:
    return tiny_classifier


def inside(box, width: int, height: int) -> bool:
    x0, y0, x1, y1 = box
    return 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def synthetic_smear(lobes: bool = True) -> np.ndarray:
    """A pale 400x300 field with pink red cells, purple platelets and (optionally) one
    neutrophil-like nucleus of three lobes close together, at BCCD's scale (cell ~190 px)."""
    h, w = 300, 400
    y, x = np.mgrid[:h, :w]
    image = np.empty((h, w, 3), np.float32)
    image[:] = (232, 226, 220)
    for cy, cx in [(40, 40), (250, 60), (60, 350), (260, 340), (150, 40)]:
        image[(y - cy) ** 2 + (x - cx) ** 2 < 38 ** 2] = (215, 160, 170)  # red cells
    for cy, cx in [(30, 200), (280, 200), (150, 380)]:
        image[(y - cy) ** 2 + (x - cx) ** 2 < 6 ** 2] = (120, 90, 190)  # platelets
    if lobes:
        image[(y - 150) ** 2 + (x - 200) ** 2 < 80 ** 2] = (205, 185, 210)  # cytoplasm
        for cy, cx in [(125, 170), (165, 195), (130, 232)]:
            image[(y - cy) ** 2 + (x - cx) ** 2 < 24 ** 2] = (105, 70, 185)  # nucleus lobes
    return np.clip(image + np.random.default_rng(0).normal(0, 3, image.shape), 0,
                   255).astype(np.uint8)


# --------------------------------------------------------------------------- boxes
def test_iou_and_greedy_matching():
    assert smear.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert smear.iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert smear.iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    predicted = [(0, 0, 10, 10), (1, 0, 11, 10), (50, 50, 60, 60)]
    truth = [(0, 0, 10, 10), (100, 100, 110, 110)]
    matches = smear.match_boxes(predicted, truth, 0.5)
    assert matches == [(0, 0, 1.0)]  # one truth box matches one prediction only


def test_config_validation():
    block = {"detector": {**CONFIG.to_dict(), "cell_size": 100}}
    assert detect.DetectConfig.from_params(block).cell_size == 100
    with pytest.raises(ValueError, match=r"detect\.detector: unknown key\(s\) \['cellsize'\]"):
        detect.DetectConfig.from_params({"detector": {**CONFIG.to_dict(), "cellsize": 100}})
    without = {k: v for k, v in CONFIG.to_dict().items() if k != "crop_aspect"}
    with pytest.raises(ValueError, match=r"missing key\(s\) \['crop_aspect'\]"):
        detect.DetectConfig.from_params({"detector": without})
    with pytest.raises(ValueError, match="no 'detector' sub-block"):
        detect.DetectConfig.from_params({"cell_size": 100})
    with pytest.raises(ValueError, match="feature must be one of"):
        dataclasses.replace(CONFIG, feature="red")
    with pytest.raises(ValueError, match="cell_size must be > 0"):
        dataclasses.replace(CONFIG, cell_size=0)
    with pytest.raises(ValueError, match="min_area"):
        dataclasses.replace(CONFIG, min_area=2.0, max_area=1.0)


def test_the_detector_has_no_value_outside_params():
    """params/detect.yaml is the one place of the detector's values: the config has no
    defaults, the notebook no detector parameter, and the stage passes the file whole."""
    import yaml

    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(detect.DetectConfig))
    notebook = json.loads((ROOT / "notebooks/09-detect.ipynb").read_text())
    cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    assigned = {line.split("=")[0].strip() for line in "".join(cell["source"]).splitlines()
                if "=" in line and not line.startswith("#")}
    assert assigned == {"detect", "out_dir"}
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["detect"]
    assert "-f params/detect.yaml" in stage["cmd"] and " -p " in stage["cmd"]
    assert not {f.name for f in dataclasses.fields(detect.DetectConfig)} & set(
        stage["cmd"].split())
    settings = smear.DetectionStudy.from_params(
        yaml.safe_load((ROOT / "params/detect.yaml").read_text())["detect"])
    assert settings.detector == CONFIG


def test_crop_window_keeps_the_training_geometry():
    config = dataclasses.replace(CONFIG, cell_size=100, crop_height=2.0, crop_aspect=4 / 3)
    # a nucleus near the top-left corner: the window shifts inside, never shrinks
    box = detect.cell_crop_box((0, 0, 30, 30), (600, 800), config)
    assert box == (0, 0, 267, 200)
    box = detect.cell_crop_box((700, 500, 760, 560), (600, 800), config)
    assert box == (800 - 267, 600 - 200, 800, 600)
    centred = detect.cell_crop_box((380, 280, 420, 320), (600, 800), config)
    assert centred == (266, 200, 533, 400)
    # a smear smaller than the window: the window is the smear
    assert detect.cell_crop_box((10, 10, 20, 20), (100, 120), config) == (0, 0, 120, 100)


# --------------------------------------------------------------------------- detection
def test_lobes_of_one_nucleus_make_one_cell_and_platelets_none():
    found = detect.detect_cells(synthetic_smear(), CONFIG)
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].nucleus_box
    assert x0 <= 146 and y0 <= 101 and x1 >= 256 and y1 >= 189  # all three lobes
    assert smear.iou(found[0].box, (120, 70, 280, 230)) > 0.5


def test_no_white_cell_no_detection(truth):
    assert detect.detect_cells(synthetic_smear(lobes=False), CONFIG) == []
    # the widest strip of a real smear beside its annotated white cells
    record = truth[truth["boxes"].map(len) == 1].iloc[0]
    rgb = load_rgb(record["path"])
    x0, _, x1, _ = record["boxes"][0]
    strip = rgb[:, :x0] if x0 >= rgb.shape[1] - x1 else rgb[:, x1:]
    assert strip.shape[1] > 100
    assert detect.detect_cells(strip, CONFIG) == []  # red cells and background only


def test_cell_size_scales_the_search(truth):
    rgb = load_rgb(truth[truth["boxes"].map(len) == 1].iloc[0]["path"])
    big = np.asarray(Image.fromarray(rgb).resize((2 * rgb.shape[1], 2 * rgb.shape[0]),
                                                 Image.BILINEAR))
    small = detect.detect_cells(rgb, CONFIG)
    large = detect.detect_cells(big, dataclasses.replace(CONFIG, cell_size=2 * CONFIG.cell_size))
    assert len(small) == len(large) >= 1
    for a, b in zip(small, large, strict=True):
        assert smear.iou(tuple(2 * v for v in a.box), b.box) > 0.9


def test_bccd_ground_truth_has_every_smear(truth, bccd):
    """One row per annotation file, the WBC boxes of each, smears without one kept."""
    xmls = sorted((bccd / "Annotations").glob("*.xml"))
    wbc = {x.stem: [b for b in datasets.read_voc_boxes(x) if b.name.upper() == "WBC"]
           for x in xmls}
    assert sorted(truth["smear"]) == sorted(wbc)
    assert truth.set_index("smear")["boxes"].map(len).to_dict() == {
        k: len(v) for k, v in wbc.items()}
    assert (truth["boxes"].map(len) == 0).sum() == sum(not v for v in wbc.values()) > 0
    assert set(truth["split"]) == {"train", "val", "test"}


def test_detection_on_real_bccd_smears(truth):
    """On 20 VOC test smears: every box lies inside its smear, the counts add up, the detector
    beats the same boxes placed at random, and it agrees with the study's recorded measurement
    on all test smears within a binomial margin."""
    from scipy.stats import binom

    sample = truth[truth["split"] == "test"].head(20)
    per_smear = smear.evaluate_detection(sample, CONFIG)
    summary = smear.detection_summary(per_smear)
    assert summary["true_cells"] == sum(map(len, sample["boxes"]))
    assert summary["tp"] + summary["fp"] == summary["found"]
    rng = np.random.default_rng(0)
    chance_tp = 0
    for record in per_smear.itertuples(index=False):
        with Image.open(record.path) as image:
            width, height = image.size
        for d in record.detections:
            assert inside(d.box, width, height) and inside(d.nucleus_box, width, height)
            assert d.nucleus_area > 0
        # the same boxes at random places: what matching alone would give
        moved = []
        for x0, y0, x1, y1 in record.found:
            dx = int(rng.integers(0, width - (x1 - x0) + 1))
            dy = int(rng.integers(0, height - (y1 - y0) + 1))
            moved.append((dx, dy, dx + x1 - x0, dy + y1 - y0))
        chance_tp += len(smear.match_boxes(moved, record.truth))
    found = summary["found"]
    assert found > 0
    chance = max(chance_tp / found, 1 / found)
    assert summary["tp"] > binom.ppf(0.999, found, chance), "no better than boxes at random"

    recorded = json.loads(RECORDED.read_text())
    same = {k: v for k, v in recorded["config"].items() if not k.startswith("crop_")}
    assert same == {k: v for k, v in CONFIG.to_dict().items()
                    if not k.startswith("crop_")}, "metrics.json is from another detector"
    test = recorded["detection"]["test"]
    # fewer hits than the recorded rates allow, at 1 in 1000: the detector got worse
    assert summary["tp"] >= binom.ppf(0.001, summary["true_cells"], test["recall"])
    assert summary["tp"] >= binom.ppf(0.001, found, test["precision"])


def test_reviewed_counts():
    frame = pd.DataFrame({"smear": ["a", "b", "c"], "split": ["test"] * 3,
                          "n_true": [0, 2, 1], "n_found": [1, 1, 1], "tp": [0, 1, 1],
                          "fp": [1, 0, 0], "fn": [0, 1, 0], "matched": [0, 1, 1],
                          "iou_sum": [0.0, 0.8, 0.9]})
    fixed = smear.reviewed(frame, unannotated_cells=["a"], wrong_annotations=["b"])
    assert fixed["tp"].tolist() == [1, 1, 1] and fixed["fp"].tolist() == [0, 0, 0]
    assert fixed["fn"].tolist() == [0, 0, 0] and fixed["n_true"].tolist() == [1, 1, 1]
    assert smear.detection_summary(frame)["precision"] == pytest.approx(2 / 3)
    assert smear.detection_summary(fixed)["mean_iou_of_matches"] == pytest.approx(0.85)


def test_detection_study_writes_its_reports(tmp_path, bccd, tiny):
    result = smear.detection_study(bccd, ROOT / "data/blood-cell-images/labels.csv",
                                   CONFIG, tmp_path, model=tiny, limit=8,
                                   example_smears=["BloodImage_00001", "nope"],
                                   unannotated_cells=["BloodImage_00003"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["detection"]["all"]["smears"] == 8
    assert {"precision", "recall", "f1", "tp", "fp", "fn"} <= set(metrics["detection"]["all"])
    assert metrics["detection_reviewed"]["unannotated_cells"] == ["BloodImage_00003"]
    assert metrics["classification"]["labelled_smears"] >= 1
    assert metrics["classification"]["from_detected_box"]["n"] >= 1
    table = pd.read_csv(tmp_path / "per-smear.csv", keep_default_na=False)
    assert len(table) == 8 and {"tp", "fp", "fn", "found_boxes", "predicted"} <= set(
        table.columns)
    for name in ("example", "errors"):
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.width >= 640
    assert result["figures"]["example"] == tmp_path / "example.png"


def test_detection_study_without_a_model_says_so_and_a_missing_model_is_an_error(tmp_path, bccd):
    labels = ROOT / "data/blood-cell-images/labels.csv"
    with pytest.raises(FileNotFoundError, match="nope.keras is missing"):
        smear.detection_study(bccd, labels, CONFIG, tmp_path,
                              model=tmp_path / "nope.keras", limit=2)
    assert not (tmp_path / "metrics.json").exists()
    result = smear.detection_study(bccd, labels, CONFIG, tmp_path, model=None, limit=2)
    assert result["metrics"]["classification"]["model"] is None
    assert "not classified" in result["metrics"]["classification"]["note"]


def test_the_stage_settings_read_the_smear_lists_and_the_detector():
    block = yaml_block()
    settings = smear.DetectionStudy.from_params({**block, "example_smears": "a,b",
                                                 "wrong_annotations": ""})
    assert settings.example_smears == ("a", "b") and settings.wrong_annotations == ()
    assert settings.detector == CONFIG and settings.limit == block["limit"]
    with pytest.raises(ValueError, match=r"missing key\(s\) \['iou_threshold'\]"):
        smear.DetectionStudy.from_params({k: v for k, v in block.items()
                                          if k != "iou_threshold"})


def yaml_block() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "params/detect.yaml").read_text())["detect"]


# --------------------------------------------------------------------------- the command
def test_classify_smears_writes_annotated_images(tmp_path, bccd, tiny, capsys):
    folder = tmp_path / "smears"
    folder.mkdir()
    names = ["BloodImage_00000.jpg", "BloodImage_00031.jpg", "BloodImage_00113.jpg"]
    for name in names:
        (folder / name).write_bytes((bccd / "JPEGImages" / name).read_bytes())
    Image.fromarray(synthetic_smear(lobes=False)).save(folder / "no-cell.png")
    (folder / "broken.jpg").write_bytes(b"hello, not an image")
    out = tmp_path / "out" / "smears.csv"
    code = cli.main(["classify", "--smear", str(folder), "--model", str(tiny), "-o", str(out),
                     "--batch-size", "2", "--no-progress"])
    printed = capsys.readouterr()
    assert code == 2  # broken.jpg
    cells = pd.read_csv(out)
    assert list(cells.columns[:8]) == ["path", "cell", "xmin", "ymin", "xmax", "ymax",
                                       "predicted", "confidence"]
    # the command finds what the library finds, smear by smear, inside each smear
    expected = {name: len(detect.detect_cells(load_rgb(folder / name), CONFIG))
                for name in names}
    per_smear = cells.groupby(cells["path"].map(lambda p: Path(p).name)).size()
    assert per_smear.to_dict() == {k: v for k, v in expected.items() if v}
    assert ((cells["xmin"] >= 0) & (cells["ymin"] >= 0) & (cells["xmax"] <= 640)
            & (cells["ymax"] <= 480)).all()
    total = sum(expected.values())
    smears = pd.read_csv(out.with_name("smears-smears.csv"))
    assert len(smears) == len(names) + 1 and smears["cells"].sum() == total
    annotated = out.with_name("smears-annotated")
    assert sorted(p.name for p in annotated.iterdir()) == sorted(
        [f"{Path(n).stem}.png" for n in names] + ["no-cell.png"])
    with Image.open(annotated / "BloodImage_00031.png") as image:
        assert image.size == (640, 480)
    empty = 1 + sum(v == 0 for v in expected.values())  # no-cell.png has none by design
    assert f"White cells found: {total}" in printed.out
    assert f"{empty} smear(s) without a white cell found" in printed.out
    assert f"Differential count ({total} white cells):" in printed.out
    assert "broken.jpg: not a decodable image" in printed.err


def test_annotated_images_inside_the_input_folder_are_not_classified(tmp_path, bccd, tiny,
                                                                     capsys):
    folder = tmp_path / "smears"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((bccd / "JPEGImages/BloodImage_00000.jpg").read_bytes())
    for _ in range(2):  # the second run must not take the first run's PNGs for smears
        code = cli.main(["classify", "--smear", str(folder), "--model", str(tiny), "-o",
                         str(folder / "results.csv"), "--json", "--no-progress"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["files"] == 1
        assert report["cells"] == len(detect.detect_cells(load_rgb(folder / "a.jpg"), CONFIG))
    assert (folder / "results-annotated" / "a.png").is_file()


# --------------------------------------------------------------------------- stain
def test_stain_shift_is_fixed_and_changes_colour():
    image = synthetic_smear()
    assert np.array_equal(stain.stain_shift(image, "none"), image)
    nucleus = (slice(120, 130), slice(165, 175))
    for kind in stain.STAIN_SHIFTS:
        shifted = stain.stain_shift(image, kind)
        assert shifted.shape == image.shape and shifted.dtype == np.uint8
        assert np.array_equal(shifted, stain.stain_shift(image, kind))  # no randomness
        if kind != "none":
            assert np.abs(shifted.astype(int) - image).mean() > 1.0, kind
    heavy = stain.stain_shift(image, "hematoxylin_heavy")
    assert heavy[nucleus].mean() < image[nucleus].mean()  # more hematoxylin: darker nuclei
    batch = stain.stain_shift(np.stack([image, image]), "warm_light")
    assert batch.shape == (2, *image.shape)
    with pytest.raises(ValueError, match="stain shift kind must be one of"):
        stain.stain_shift(image, "purple")


def test_hed_round_trip_is_exact():
    image = synthetic_smear()
    back = stain.hed_to_rgb(stain.rgb_to_hed(image))
    np.testing.assert_allclose(back, image, atol=1e-6)


def test_stain_jitter_is_seeded_batched_and_bounded():
    import tensorflow as tf

    images = np.stack([synthetic_smear()[:96, :128]] * 4)
    out = stain.stain_jitter(images, seed=7, strength=1.0).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    np.testing.assert_array_equal(out, stain.stain_jitter(images, 7, 1.0).numpy())
    assert not np.allclose(out, stain.stain_jitter(images, 8, 1.0).numpy())
    assert not np.allclose(out[0], out[1])  # each image gets its own draw
    np.testing.assert_array_equal(stain.stain_jitter(images, 7, 0.0).numpy(), images)
    mild = np.abs(stain.stain_jitter(images, 7, 0.2).numpy() - images).mean()
    strong = np.abs(out - images).mean()
    assert 0 < mild < strong
    with pytest.raises(ValueError, match="strength must be in"):
        stain.stain_jitter(images, 7, -1.0)

    # as the training pipeline would call it: in a tf.data map, a seed per batch
    ds = tf.data.Dataset.from_tensor_slices(images).batch(2)
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter())).map(
        lambda batch, step: stain.stain_jitter(batch, tf.stack([tf.constant(3, tf.int64), step]),
                                               0.5))
    batches = [b.numpy() for b in ds]
    assert [b.shape for b in batches] == [(2, 96, 128, 3)] * 2
    again = [b.numpy() for b in ds]
    np.testing.assert_array_equal(batches[0], again[0])
