"""Tests of leuko.smear (white cells on whole smears, measured on real BCCD smears), of
`leuko classify --smear`, and of leuko.stain (stain jitter and simulated lab shifts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leuko import cli, smear, stain
from leuko.images import load_rgb

ROOT = Path(__file__).resolve().parents[1]
BCCD = ROOT / "data/bccd"


@pytest.fixture(scope="module")
def bccd() -> Path:
    if not (BCCD / "Annotations").is_dir():
        pytest.skip(f"{BCCD} missing: run `make data` (dvc pull) first")
    return BCCD


@pytest.fixture(scope="module")
def truth(bccd) -> pd.DataFrame:
    return smear.bccd_ground_truth(bccd)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from test_classify import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("model"))


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
    assert smear.DetectConfig.from_dict({"cell_size": 100}).cell_size == 100
    with pytest.raises(ValueError, match=r"unknown detect parameter\(s\) \['cellsize'\]"):
        smear.DetectConfig.from_dict({"cellsize": 100})
    with pytest.raises(ValueError, match="feature must be one of"):
        smear.DetectConfig(feature="red")
    with pytest.raises(ValueError, match="cell_size must be > 0"):
        smear.DetectConfig(cell_size=0)
    with pytest.raises(ValueError, match="min_area"):
        smear.DetectConfig(min_area=2.0, max_area=1.0)


def test_crop_window_keeps_the_training_geometry():
    config = smear.DetectConfig(cell_size=100, crop_height=2.0, crop_aspect=4 / 3)
    # a nucleus near the top-left corner: the window shifts inside, never shrinks
    box = smear.cell_crop_box((0, 0, 30, 30), (600, 800), config)
    assert box == (0, 0, 267, 200)
    box = smear.cell_crop_box((700, 500, 760, 560), (600, 800), config)
    assert box == (800 - 267, 600 - 200, 800, 600)
    centred = smear.cell_crop_box((380, 280, 420, 320), (600, 800), config)
    assert centred == (266, 200, 533, 400)
    # a smear smaller than the window: the window is the smear
    assert smear.cell_crop_box((10, 10, 20, 20), (100, 120), config) == (0, 0, 120, 100)


# --------------------------------------------------------------------------- detection
def test_lobes_of_one_nucleus_make_one_cell_and_platelets_none():
    found = smear.detect_cells(synthetic_smear())
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].nucleus_box
    assert x0 <= 146 and y0 <= 101 and x1 >= 256 and y1 >= 189  # all three lobes
    assert smear.iou(found[0].box, (120, 70, 280, 230)) > 0.5


def test_no_white_cell_no_detection(bccd):
    assert smear.detect_cells(synthetic_smear(lobes=False)) == []
    rgb = load_rgb(bccd / "JPEGImages/BloodImage_00000.jpg")
    assert smear.detect_cells(rgb[:, :250]) == []  # red cells and background only


def test_cell_size_scales_the_search(bccd):
    rgb = load_rgb(bccd / "JPEGImages/BloodImage_00000.jpg")
    big = np.asarray(Image.fromarray(rgb).resize((1280, 960), Image.BILINEAR))
    small = smear.detect_cells(rgb)
    large = smear.detect_cells(big, smear.DetectConfig(cell_size=380))
    assert len(small) == len(large) == 1
    assert smear.iou(tuple(2 * v for v in small[0].box), large[0].box) > 0.9


def test_bccd_ground_truth_has_every_smear(truth):
    assert len(truth) == 364
    assert (truth["boxes"].map(len) == 0).sum() == 6  # smears without a WBC box
    assert set(truth["split"]) == {"train", "val", "test"}


def test_detection_on_20_real_bccd_smears(truth):
    """Measured on the first 20 VOC test smears: precision 1.0, recall 1.0 (22 cells); on
    all 364: precision 0.98, recall 0.99 (reports/detection/metrics.json)."""
    per_smear = smear.evaluate_detection(truth[truth["split"] == "test"].head(20))
    summary = smear.detection_summary(per_smear)
    assert summary["true_cells"] == 22
    assert summary["recall"] >= 0.95
    assert summary["precision"] >= 0.9
    assert summary["mean_iou_of_matches"] > 0.7


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
    assert smear.detection_summary(fixed)["mean_iou_of_matches"] == pytest.approx(0.85)


def test_detection_study_writes_its_reports(tmp_path, bccd, tiny):
    result = smear.detection_study(bccd, ROOT / "data/blood-cell-images/labels.csv",
                                   smear.DetectConfig(), tmp_path, model=tiny, limit=8,
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
    per_smear = cells.groupby(cells["path"].map(lambda p: Path(p).name)).size()
    assert per_smear.to_dict() == {"BloodImage_00000.jpg": 1, "BloodImage_00031.jpg": 2,
                                   "BloodImage_00113.jpg": 1}
    smears = pd.read_csv(out.with_name("smears-smears.csv"))
    assert len(smears) == 4 and smears["cells"].sum() == 4
    annotated = out.with_name("smears-annotated")
    assert sorted(p.name for p in annotated.iterdir()) == [
        "BloodImage_00000.png", "BloodImage_00031.png", "BloodImage_00113.png", "no-cell.png"]
    with Image.open(annotated / "BloodImage_00031.png") as image:
        assert image.size == (640, 480)
    assert "White cells found: 4" in printed.out
    assert "1 smear(s) without a white cell found" in printed.out
    assert "Differential count (4 cells):" in printed.out
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
        assert code == 0 and report["files"] == 1 and report["cells"] == 1
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
