"""The cell classifier for other labs: PBC on its real files, its split, calibration and doubt,
the leave-one-source-out scoring, and the whole path from real images to `leuko classify`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import DATA, require
from leuko.cells import crosssource, multisource
from leuko.cells import outputs as cell_outputs
from leuko.cells.preprocess import mean_over_views
from leuko.core import calibration, datasets
from leuko.core.splits import shared_between

DUPLICATE_BASOPHILS = [("BA_20201", "BA_809918"), ("BA_251042", "BA_988506"),
                       ("BA_381452", "BA_80990")]


@pytest.fixture(scope="module")
def pbc_split():
    require(DATA / "pbc")
    frame, bad = multisource.prepare_pbc(DATA / "pbc", seed=0, progress=False)
    return frame, bad


# --- PBC ----------------------------------------------------------------------------------------


def test_pbc_adapter_reads_the_published_layout(pbc_split):
    frame, bad = pbc_split
    assert bad.empty
    counts = frame["label"].value_counts().to_dict()
    assert counts == {**dict.fromkeys(datasets.DIFFERENTIAL_CLASSES, 700),
                      **dict.fromkeys(datasets.OTHER_CELL_CLASSES, 150)}
    assert frame["height"].between(300, 400).all() and frame["width"].between(300, 400).all()
    for record in frame.sample(20, random_state=0).itertuples():
        assert Path(record.path).parent.name == record.label.lower()


def test_pbc_duplicates_share_a_group_and_one_side(pbc_split):
    frame, _ = pbc_split
    stem = frame["path"].map(lambda p: Path(p).stem)
    for a, b in DUPLICATE_BASOPHILS:
        rows = frame[stem.isin([a, b])]
        assert len(rows) == 2
        assert rows["sha256"].nunique() == 1 and rows["group"].nunique() == 1
        assert rows["split"].nunique() == 1
    assert not shared_between(frame, "sha256") and not shared_between(frame, "group")


def test_pbc_split_is_stratified_6_2_2_and_seeded(pbc_split):
    frame, _ = pbc_split
    shares = frame.groupby("label")["split"].value_counts(normalize=True).unstack()
    assert np.allclose(shares["train"], 0.6, atol=0.03)
    assert np.allclose(shares["val"], 0.2, atol=0.03)
    assert np.allclose(shares["test"], 0.2, atol=0.03)
    again, _ = multisource.prepare_pbc(DATA / "pbc", seed=0, progress=False)
    assert again["split"].tolist() == frame["split"].tolist()
    other, _ = multisource.prepare_pbc(DATA / "pbc", seed=1, progress=False)
    assert other["split"].tolist() != frame["split"].tolist()


def test_pbc_adapter_names_a_bad_layout(tmp_path):
    (tmp_path / "basophil").mkdir()
    with pytest.raises(datasets.DatasetError, match="missing"):
        datasets.pbc(tmp_path)
    for name in ("eosinophil", "lymphocyte", "monocyte", "neutrophil", "ig", "erythroblast",
                 "platelet", "blast"):
        (tmp_path / name).mkdir()
    with pytest.raises(datasets.DatasetError, match="unknown class folder.*blast"):
        datasets.pbc(tmp_path)


def test_detect_layout_knows_pbc():
    assert datasets.detect_layout(require(DATA / "pbc")) == "pbc"


# --- calibration and doubt ----------------------------------------------------------------------


def test_temperature_scaling_softens_an_overconfident_model():
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 4, n)
    right = rng.random(n) < 0.7  # right 70 % of the time ...
    pred = np.where(right, y, (y + 1) % 4)
    probs = np.full((n, 4), 0.01 / 3)
    probs[np.arange(n), pred] = 0.99  # ... but always 99 % sure
    t = calibration.fit_temperature(probs, y)
    assert t > 1.5
    scaled = calibration.temperature_scale(probs, t)
    assert abs(scaled.max(axis=1).mean() - 0.7) < 0.05
    np.testing.assert_allclose(calibration.temperature_scale(probs, 1.0), probs, rtol=1e-9)
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0)


def test_abstention_threshold_keeps_the_asked_share_of_validation_cells():
    confidence = np.linspace(0.3, 1.0, 101)
    threshold = calibration.abstention_threshold(confidence, 0.9)
    assert abs((confidence >= threshold).mean() - 0.9) <= 0.011
    assert calibration.abstention_threshold(confidence, 1.0) == 0.0
    with pytest.raises(ValueError, match="coverage"):
        calibration.abstention_threshold(confidence, 0.0)


def test_ece_and_reliability_by_hand():
    # bin [0.9, 1.0): confidences 0.95 x 2, one right -> |0.5 - 0.95| = 0.45, weight 2/4
    # bin [0.6, 0.7): confidences 0.65 x 2, both right -> |1 - 0.65| = 0.35, weight 2/4
    confidence = np.array([0.95, 0.95, 0.65, 0.65])
    correct = np.array([1, 0, 1, 1])
    assert calibration.expected_calibration_error(confidence, correct) == pytest.approx(0.4)
    table = calibration.reliability_table(confidence, correct)
    assert table["n"].sum() == 4
    assert table.loc[9, "accuracy"] == 0.5 and table.loc[6, "accuracy"] == 1.0


def test_coverage_curve_drops_the_least_confident_first():
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 1, 0, 0])
    curve = calibration.coverage_curve(confidence, correct, points=5)
    assert curve["accuracy"].iloc[0] == pytest.approx(0.6)  # all five
    assert curve.set_index("n").loc[3, "accuracy"] == 1.0  # the three most confident


# --- scoring one held-out part -----------------------------------------------------------------


def test_score_part_by_hand():
    classes = ["EOSINOPHIL", "LYMPHOCYTE"]
    rows = pd.DataFrame({
        "path": list("abcdef"), "source": "x", "split": "test",
        "label": ["EOSINOPHIL", "EOSINOPHIL", "LYMPHOCYTE", "LYMPHOCYTE", "LYMPHOCYTE",
                  "BASOPHIL"],
        "group": ["1", "1", "2", "3", "4", "5"]})
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45], [0.1, 0.9],
                      [0.5, 0.5]])
    metrics, frame = crosssource.score_part(probs, rows, classes, threshold=0.7, n_boot=200,
                                            seed=0)
    assert metrics["n_unknown_class"] == 1  # the basophil: a class the model does not know
    assert metrics["n"] == 5 and metrics["n_cells"] == 4
    assert metrics["accuracy"] == pytest.approx(4 / 5)
    # F1: eosinophil 2*2/(3+2) = 0.8, lymphocyte 2*2/(2+3) = 0.8
    assert metrics["macro_f1"] == pytest.approx(0.8)
    assert metrics["abstain"]["uncertain"] == 2  # 0.6 and 0.55 < 0.7
    assert metrics["abstain"]["accuracy_kept"] == 1.0
    assert frame["uncertain"].tolist() == [False, True, False, True, False]
    low, high = metrics["intervals"]["accuracy"]["low"], metrics["intervals"]["accuracy"]["high"]
    assert low <= 0.8 <= high


def test_macro_f1_counts_only_the_classes_a_part_holds():
    # class 0: precision 1/1, recall 1/2 -> F1 2/3; class 1 is predicted but never true, and
    # class 2 neither: only class 0 counts
    assert crosssource.present_macro_f1(np.array([0, 0]), np.array([0, 1]), 3) == \
        pytest.approx(2 / 3)
    assert np.isnan(crosssource.present_macro_f1(np.array([], dtype=int), np.array([], dtype=int),
                                                 3))


def test_classes_of_keeps_the_differential_first():
    assert multisource.classes_of(["PLATELET", "EOSINOPHIL", "BASOPHIL"]) == [
        "BASOPHIL", "EOSINOPHIL", "PLATELET"]
    with pytest.raises(ValueError, match="unknown class"):
        multisource.classes_of(["MEGAKARYOCYTE"])


def test_study_parameters_are_the_params_file():
    study = multisource.CellStudy.from_params()
    assert study.data.image_size >= 32
    assert set(study.trainings) == {"blood-cell-images", "pbc", "both"}
    with pytest.raises(ValueError, match="training must be one of"):
        multisource.cell_model_id("everything")


# --- sharpness jitter ----------------------------------------------------------------------------


def _laplacian_sd(images: np.ndarray) -> np.ndarray:
    """``cells.detail`` of each image of a batch."""
    from leuko.cells.preprocess import detail

    return np.array([detail(image) for image in np.asarray(images)])


def test_gaussian_blur_keeps_flat_images_and_the_mean_and_removes_fine_detail():
    rng = np.random.default_rng(0)
    flat = np.full((2, 16, 16, 3), 100.0, np.float32)
    np.testing.assert_allclose(multisource.gaussian_blur(flat, 1.0).numpy(), flat, atol=1e-3)
    noise = rng.uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    blurred = multisource.gaussian_blur(noise, 1.0).numpy()
    assert blurred.shape == noise.shape
    assert abs(blurred.mean() - noise.mean()) < 1.0  # reflected borders: no dark frame
    assert (_laplacian_sd(blurred) < 0.25 * _laplacian_sd(noise)).all()
    # one bright pixel spreads into a symmetric Gaussian whose weights sum to the pixel
    dot = np.zeros((1, 15, 15, 1), np.float32)
    dot[0, 7, 7, 0] = 1.0
    spot = multisource.gaussian_blur(dot, 1.0).numpy()[0, :, :, 0]
    assert spot.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(spot, spot.T, atol=1e-7)
    assert spot[7, 8] / spot[7, 7] == pytest.approx(np.exp(-0.5), rel=1e-3)


def test_sharpness_jitter_is_seeded_per_image_and_between_sharp_and_blurred():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    images = np.repeat(rng.uniform(0, 255, (1, 24, 24, 3)), 64, axis=0).astype(np.float32)
    seed = tf.constant([3, 5], tf.int64)
    out = multisource.sharpness_jitter(images, seed, 1.0).numpy()
    np.testing.assert_array_equal(out, multisource.sharpness_jitter(images, seed, 1.0).numpy())
    detail = _laplacian_sd(out)
    sharp = _laplacian_sd(images[:1])[0]
    soft = _laplacian_sd(multisource.gaussian_blur(images[:1], 1.0).numpy())[0]
    assert (detail <= sharp + 1e-3).all() and (detail >= soft - 1e-3).all()
    assert detail.std() > 0.1 * (sharp - soft)  # each image its own share, not one per batch
    other = multisource.sharpness_jitter(images, tf.constant([3, 6], tf.int64), 1.0).numpy()
    assert not np.allclose(out, other)


def test_batch_detail_is_cells_detail_of_each_image():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (5, 20, 20, 3)).astype(np.uint8)
    images[1] = 128  # flat: no detail
    detail = multisource.batch_detail(images.astype(np.float32)).numpy()
    np.testing.assert_allclose(detail, _laplacian_sd(images), rtol=1e-4, atol=1e-4)
    assert detail[1] == 0


def test_sharpness_jitter_with_a_floor_leaves_soft_cells_and_stops_near_the_floor():
    import tensorflow as tf

    rng = np.random.default_rng(5)
    sharp = rng.uniform(0, 255, (1, 32, 32, 3))
    soft = multisource.gaussian_blur(sharp.astype(np.float32), 1.5).numpy()  # softer than floor
    images = np.concatenate([np.repeat(sharp, 32, 0), np.repeat(soft, 32, 0)]).astype(np.float32)
    blurred_detail = _laplacian_sd(multisource.gaussian_blur(images[:1], 1.0).numpy())[0]
    sharp_detail, soft_detail = _laplacian_sd(images[:1])[0], _laplacian_sd(images[32:33])[0]
    floor = (sharp_detail + blurred_detail) / 2
    assert soft_detail < floor < sharp_detail
    seed = tf.constant([1, 2], tf.int64)
    out = multisource.sharpness_jitter(images, seed, 1.0, floor).numpy()
    np.testing.assert_array_equal(out[32:], images[32:])  # no sharper than the floor: untouched
    detail = _laplacian_sd(out[:32])
    assert (detail <= sharp_detail + 1e-3).all()
    assert detail.min() > 0.8 * floor  # about no softer than the floor, not the whole blur
    assert detail.min() < 0.5 * (floor + sharp_detail)  # the shares reach down towards it
    # floor 0 is the jitter without one
    np.testing.assert_array_equal(multisource.sharpness_jitter(images, seed, 1.0, 0.0).numpy(),
                                  multisource.sharpness_jitter(images, seed, 1.0).numpy())


def test_sharpness_randomisation_gives_each_image_a_drawn_detail_soft_or_sharp():
    import tensorflow as tf

    rng = np.random.default_rng(6)
    noise = rng.uniform(0, 255, (1, 48, 48, 3)).astype(np.float32)
    sharp = multisource.gaussian_blur(noise, 0.7).numpy()  # textured, as a cell at 64 px
    soft = multisource.gaussian_blur(sharp, 1.0).numpy()
    images = np.concatenate([np.repeat(sharp, 16, 0), np.repeat(soft, 16, 0)])
    own = _laplacian_sd(images[[0, 16]])
    floor, ceiling = 1.2 * own[1], 0.8 * own[0]  # one image sharper than the range, one softer
    seed = tf.constant([7, 8], tf.int64)
    out = multisource.sharpness_jitter(images, seed, 1.0, floor, ceiling).numpy()
    np.testing.assert_array_equal(out, multisource.sharpness_jitter(images, seed, 1.0, floor,
                                                                    ceiling).numpy())
    assert out.min() >= 0 and out.max() <= 255
    detail = _laplacian_sd(out)
    assert (detail[:16] < own[0]).all()  # the sharp image blurred
    assert (detail[16:] > own[1]).all()  # the soft one sharpened (unsharp mask)
    target = floor + (ceiling - floor) * tf.random.stateless_uniform([32], seed).numpy()
    assert np.corrcoef(detail, target)[0, 1] > 0.9
    assert (np.abs(detail - target) < 0.15 * target).all()


def test_sharpness_jittered_batches_resume_where_they_left_off():
    from leuko.thesis.study import epochs_of

    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (8, 12, 12, 3)).astype(np.uint8)
    y = np.eye(2, dtype=np.float32)[np.arange(8) % 2]
    batches = multisource.sharpness_jittered(epochs_of(x, y, 4, 3, True, 0), 2, 0, 1.0)
    whole = [b[0].numpy() for b in batches(0)]
    resumed = [b[0].numpy() for b in batches(1)]
    assert len(whole) == 6 and len(resumed) == 4
    for a, b in zip(whole[2:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    plain = [b[0].numpy() for b in epochs_of(x, y, 4, 3, True, 0)(0)]
    assert not np.allclose(whole[0], plain[0])


def test_contrast_jitter_shrinks_the_lightness_spread_by_its_drawn_factor_and_keeps_chroma():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    images = rng.uniform(40, 215, (64, 8, 8, 3)).astype(np.float32)
    seed = tf.constant([5, 0], tf.int64)
    out = multisource.contrast_jitter(images, seed, 0.4).numpy()
    grey, grey_out = images.mean(-1, keepdims=True), out.mean(-1, keepdims=True)
    factor = grey_out.std(axis=(1, 2, 3)) / grey.std(axis=(1, 2, 3))
    assert 0.6 <= factor.min() and factor.max() <= 1.0 + 1e-5  # drawn from [0.6, 1]
    assert factor.max() - factor.min() > 0.3  # one draw per image, spread over the range
    np.testing.assert_allclose(images - grey, out - grey_out, atol=1e-3)  # chroma kept
    np.testing.assert_allclose(grey.mean(axis=(1, 2, 3)), grey_out.mean(axis=(1, 2, 3)),
                               atol=1e-3)  # about each image's own mean
    np.testing.assert_array_equal(out, multisource.contrast_jitter(images, seed, 0.4).numpy())
    np.testing.assert_array_equal(multisource.contrast_jitter(images, seed, 0.0).numpy(),
                                  images)


def test_sharpness_settings_are_checked():
    from dataclasses import replace

    train = multisource.CellStudy.from_params().train
    with pytest.raises(ValueError, match="blur_sigma"):
        replace(train, blur_sigma=-1.0)
    with pytest.raises(ValueError, match="detail_floor"):
        replace(train, blur_sigma=1.0, detail_floor=-1.0)
    with pytest.raises(ValueError, match="detail_ceiling"):
        replace(train, blur_sigma=1.0, detail_floor=10.0, detail_ceiling=8.0)
    with pytest.raises(ValueError, match="blur_sigma > 0"):  # a floor without the jitter
        replace(train, blur_sigma=0.0, detail_floor=10.0)
    with pytest.raises(ValueError, match="low_contrast"):
        replace(train, low_contrast=1.0)


# --- the whole path on real images ---------------------------------------------------------------


def _small_rows(pbc: pd.DataFrame, per: int) -> pd.DataFrame:
    """A few real images per source, split and class (blood-cell-images: TRAIN / TEST_SIMPLE
    of the published split, validation = a few TRAIN source cells)."""
    root = require(DATA / "blood-cell-images" / "images")
    rows = []
    for split, folder in (("train", "TRAIN"), ("val", "TRAIN"), ("test_simple", "TEST_SIMPLE"),
                          ("test", "TEST")):
        for label in datasets.WBC_CLASSES:
            files = sorted((root / folder / label).iterdir())
            files = files[per:2 * per] if split == "val" else files[:per]
            rows += [{"path": str(f), "source": "blood-cell-images", "label": label,
                      "split": split, "group": f"{folder}/{f.stem}", "sha256": f.stem}
                     for f in files]
    bci = pd.DataFrame(rows)
    small = pbc.groupby(["split", "label"], group_keys=False).head(per).assign(source="pbc")
    return pd.concat([bci, small[bci.columns]], ignore_index=True)


@pytest.mark.slow
def test_cells_pipeline_on_real_images_to_classify(tmp_path, pbc_split, capsys):
    """Real images -> prepared cells -> a (1-epoch) two-source model and a repeat -> their
    ensemble -> evaluation -> export -> `leuko classify` with its 5-part differential and
    uncertain count."""
    from dataclasses import replace

    from leuko.cells import ensemble
    from leuko.thesis.study import Paths, load_model, predict
    from leuko.tool import cli, export

    paths = Paths(tmp_path)
    study = multisource.CellStudy.from_params()
    data = replace(study.data, image_size=32)
    rows = _small_rows(pbc_split[0], per=4)
    multisource.build_cell_cache(rows, data, study.preprocess, paths, workers=1,
                                 progress=False)
    cache = multisource.load_cell_cache(paths)
    assert len(cache.images) == len(rows) and cache.images.shape[1:] == (32, 32, 3)
    summary, history = multisource.train_cell_model(
        "both", cache, replace(study.train, epochs=1, batch_size=16), study.abstain,
        study.preprocess, seed=0, paths=paths)
    assert summary["classes"] == list(multisource.CLASS_ORDER)
    assert summary["temperature"] > 0 and 0 <= summary["abstain"]["threshold"] <= 1
    assert len(history) == 1
    repeat, _ = multisource.train_cell_model(
        "both", cache, replace(study.train, epochs=1, batch_size=16), study.abstain,
        study.preprocess, seed=0, paths=paths, repeat_seed=1)
    assert (repeat["model"], repeat["training_seed"]) == ("cells-both-seed1", 1)
    averaged = ensemble.build_cell_ensemble("both", cache, replace(study, repeat_seeds=(1,)),
                                            paths)
    assert averaged["members"] == ["cells-both", "cells-both-seed1"]
    assert averaged["train_seconds"] == pytest.approx(
        summary["train_seconds"] + repeat["train_seconds"], abs=0.02)
    with pytest.raises(FileNotFoundError, match="cells-both-seed1"):  # runs scored first
        crosssource.evaluate_cell_models(["cells-both", "cells-both-ensemble"], cache,
                                         n_boot=50, seed=0, shift_per_class=2, paths=paths)
    ids = ["cells-both", "cells-both-seed1", "cells-both-ensemble"]
    results = crosssource.evaluate_cell_models(ids, cache, n_boot=50, seed=0,
                                               shift_per_class=2, paths=paths)
    parts = results["cells-both"]["splits"]
    assert set(parts) == {f"{s}/{p}" for s, p in multisource.TEST_PARTS}
    assert parts["pbc/test"]["n"] == 8 * 4
    assert results["cells-both-ensemble"]["members"] == averaged["members"]
    # the ensemble is scored from its runs' saved probabilities: as its network predicts
    saved = crosssource.load_probabilities(paths.probabilities("cells-both-ensemble"))
    rows, images = cache.part("pbc", "test")
    assert list(saved["paths/pbc/test"]) == rows["path"].tolist()
    network = load_model(paths.model("cells-both-ensemble"))
    for part, part_rows, part_images in crosssource.held_out_parts(cache):
        assert list(saved[f"paths/{part}"]) == part_rows["path"].tolist()
        predicted = mean_over_views(lambda x: predict(network, x), part_images,
                                    averaged["views"])
        np.testing.assert_allclose(saved[part], predicted, atol=1e-5, err_msg=part)
    shifted = crosssource.shift_probabilities(network, cache, averaged, 2, 0)
    for key, value in shifted.items():
        if key.startswith("paths/"):
            assert list(value) == list(saved[key]), key
        else:
            np.testing.assert_allclose(saved[key], value, atol=1e-5, err_msg=key)
    # each run's forward pass is kept for novelty and adapt-cells: features and probabilities
    outputs = cell_outputs.load_outputs(cell_outputs.outputs_path("cells-both", paths),
                                        paths.model("cells-both"))
    assert outputs.features["cells"].shape[:2] == (averaged["views"], len(cache.images))
    run = crosssource.load_probabilities(paths.probabilities("cells-both"))
    np.testing.assert_array_equal(outputs.rows("cells", rows)[1], run["pbc/test"])
    head = cell_outputs.split_head(load_model(paths.model("cells-both")))
    np.testing.assert_allclose(outputs.rows("cells", rows)[0][0, :4],
                               head.features.predict(images[:4].astype("float32"), verbose=0),
                               atol=1e-5)
    (tmp_path / "data.dvc").write_text((Path(__file__).parents[1] / "data.dvc").read_text())
    assert set(export.candidates("wbc", paths)) == {"cells-both", "cells-both-seed1",
                                                     "cells-both-ensemble"}
    meta = export.export_task("wbc", "val_macro_f1", paths=paths, out_dir=tmp_path / "export",
                              dvc_file=tmp_path / "data.dvc", model_ids=["cells-both-ensemble"])
    assert meta["model_id"] == "cells-both-ensemble"
    assert meta["sources"] == ["blood-cell-images", "pbc"]
    assert meta["members"] == averaged["members"] and meta["preprocessing"]["inside_model"]
    assert meta["cell_preprocess"] == study.preprocess.to_dict()
    assert meta["differential_classes"] == list(datasets.DIFFERENTIAL_CLASSES)
    out = tmp_path / "cells.csv"
    images = [DATA / "pbc" / "ig", DATA / "blood-cell-images/images/TEST_SIMPLE/MONOCYTE"]
    capsys.readouterr()  # what training printed
    code = cli.main(["classify", *map(str, images), "--model", meta["model_file"], "-o",
                     str(out), "--no-progress", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    table = pd.read_csv(out)
    assert len(table) == 150 + 4 == summary["cells"]
    assert set(table["predicted"]) <= set(multisource.CLASS_ORDER)
    uncertain = table["uncertain"].astype(bool)
    assert summary["uncertain"] == int(uncertain.sum())
    counted = Counter(table.loc[~uncertain, "predicted"])
    assert {r["class"]: r["cells"] for r in summary["differential"]} == {
        c: counted.get(c, 0) for c in datasets.DIFFERENTIAL_CLASSES}
    assert summary["other_cells"] == {c: counted.get(c, 0) for c in datasets.OTHER_CELL_CLASSES}
    # every cell is counted once: in the differential, among the others, or as uncertain
    assert (sum(r["cells"] for r in summary["differential"]) + sum(summary["other_cells"].values())
            + summary["uncertain"]) == 154
    # scored against the folder names (ig, MONOCYTE) as a lab scores its own labels
    assert cli.main(["score", str(out), "--json", "--n-boot", "100"]) == 0
    scored = json.loads(capsys.readouterr().out)
    truth = table["path"].map(lambda p: Path(p).parent.name.upper())
    assert scored["scored"] == 154 and scored["classes_present"] == ["MONOCYTE", "IG"]
    assert scored["accuracy"]["value"] == pytest.approx((table["predicted"] == truth).mean())
