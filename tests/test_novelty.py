"""leuko.cells.novelty: the distance of a cell to the cells a model was trained on, the far rule,
its file beside the model, and `leuko classify`'s warning, on real cells.

Figures are never copied from a run: the far share of the validation cells follows from the
quantile by construction; the separation of a third lab (bionet) from the sources' test cells
is checked against the stage's recorded AUROC within a stated margin."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from conftest import DATA, built, require, save_tiny_model
from leuko.cells import novelty, outputs
from leuko.cells.multisource import load_cell_cache
from leuko.cells.unseen import load_unseen_cache
from leuko.core.images import file_sha256, load_rgb
from leuko.core.params import read_block
from leuko.thesis.study import Paths, load_model
from leuko.tool import classify, cli

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "build/export/wbc.keras"
RECORDED = ROOT / "reports/cells-novelty/metrics.json"
TEST_SIMPLE = DATA / "blood-cell-images/images/TEST_SIMPLE"
SETTINGS = novelty.NoveltySettings.from_params(read_block("export",
                                                          path=ROOT / "params/export.yaml"))


# --------------------------------------------------------------------------- the distance
def test_the_distance_is_mahalanobis_to_the_nearest_class_mean_of_unit_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6)) * 2
    groups = np.repeat(["A", "B", "C"], 40)
    train = centres[np.searchsorted(["A", "B", "C"], groups)] + rng.normal(size=(120, 6))
    val = centres[rng.integers(0, 3, 300)] + rng.normal(size=(300, 6)) * [1, 1, 1, 1, 1, 3]
    settings = novelty.NoveltySettings(quantile=0.9, folder_share=0.4, group_min_cells=50)
    fitted = novelty.fit(train, groups, val, settings, "sha", {})
    z = train / np.linalg.norm(train, axis=1, keepdims=True)
    means = {g: z[groups == g].mean(axis=0) for g in "ABC"}
    residuals = z - np.stack([means[g] for g in groups])
    precision = LedoitWolf(assume_centered=True).fit(residuals).precision_

    def brute(cells):
        unit = cells / np.linalg.norm(cells, axis=1, keepdims=True)
        d = np.array([[mahalanobis(u, means[g], precision) for g in "ABC"] for u in unit])
        return d.min(axis=1), d.argmin(axis=1)

    cells = rng.normal(size=(5, 6)) * 3
    raw, nearest = brute(cells)
    np.testing.assert_allclose(fitted.distance(cells), raw / fitted.thresholds[nearest],
                               rtol=1e-9)
    np.testing.assert_allclose(fitted.distance(10 * cells), fitted.distance(cells))  # direction
    # each group's threshold: the quantile of the validation cells nearest it
    raw_val, nearest_val = brute(val)
    for i in range(3):
        assert fitted.thresholds[i] == pytest.approx(np.quantile(raw_val[nearest_val == i], 0.9))
        far = fitted.is_far(fitted.distance(val[nearest_val == i]))
        assert far.mean() == pytest.approx(0.1, abs=1 / (nearest_val == i).sum() + 1e-9)
    assert fitted.pooled_threshold == pytest.approx(np.quantile(raw_val, 0.9))
    few = novelty.fit(train, groups, val[:30], settings, "sha", {})  # < 50 nearest each
    assert (few.thresholds == few.pooled_threshold).all()
    assert few.info["pooled_threshold_for"] == ["A", "B", "C"]
    assert fitted.flags(far=5, cells=10) and not fitted.flags(far=4, cells=10)
    assert not fitted.flags(far=0, cells=0)


def test_settings_come_from_params_only_and_are_checked():
    block = read_block("export", path=ROOT / "params/export.yaml")
    assert {k: getattr(SETTINGS, k) for k in ("quantile", "folder_share", "group_min_cells")} \
        == {k: v for k, v in block["novelty"].items() if k != "target_auroc"}
    with pytest.raises(ValueError, match=r"export\.novelty: unknown key\(s\) \['quantil'\]"):
        novelty.NoveltySettings.from_params({"novelty": {"quantil": 0.9, "folder_share": 0.4,
                                                         "group_min_cells": 5}})
    with pytest.raises(ValueError, match="quantile must be between 0 and 1"):
        novelty.NoveltySettings(quantile=95, folder_share=0.4, group_min_cells=5)
    with pytest.raises(ValueError, match="group_min_cells must be an integer >= 1"):
        novelty.NoveltySettings(quantile=0.95, folder_share=0.4, group_min_cells=0)


# --------------------------------------------------------------------------- a tiny model
@pytest.fixture()
def tiny_with_novelty(tmp_path) -> dict:
    """The tiny classifier (mean colour -> softmax) with a distance fitted on 40 real
    blood-cell-images cells and thresholded on 31 others."""
    require(TEST_SIMPLE)
    model = save_tiny_model(tmp_path / "model")
    classifier = classify.load_classifier(model)
    files = sorted(TEST_SIMPLE.rglob("*.jpeg"))
    images = np.stack([classifier.prepare(load_rgb(f)) for f in files])
    labels = [f.parent.name for f in files]
    head = outputs.split_head(load_model(model))
    feats = outputs.mean_features(head, images, 1, progress=False)
    fitted = novelty.fit(feats[::2], labels[::2], feats[1::2], SETTINGS, file_sha256(model),
                         {"sources": ["blood-cell-images"]})
    fitted.save(novelty.novelty_path(model))
    return {"model": model, "novelty": fitted, "files": files, "features": feats}


def test_classify_gives_the_distance_of_the_fit_and_a_far_flag(tiny_with_novelty, tmp_path):
    model = tiny_with_novelty["model"]
    classifier = classify.load_classifier(model)
    assert classifier.novelty is not None and classifier.novelty_note == ""
    out = tmp_path / "cells.csv"
    summary = classify.run([TEST_SIMPLE], model, out, progress=False, classifier=classifier)
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns[:7]) == ["path", "predicted", "confidence", "uncertain",
                                       "cell_found", "distance", "far"]
    # the same distance as the fit computes from its own feature pass
    expected = tiny_with_novelty["novelty"].distance(tiny_with_novelty["features"])
    np.testing.assert_allclose(table["distance"].to_numpy(float), expected, atol=1e-3)
    far = table["far"].astype(str).str.lower() == "true"
    assert (far == (table["distance"] > 1)).all()
    assert summary.far == far.sum() and summary.novelty_file == str(
        novelty.novelty_path(model))
    # the probabilities from the two-output pass are the model's own
    plain = classify.load_classifier(model, novelty=False)
    assert plain.novelty is None and plain.novelty_note == "not asked for"
    alone = classify.run([TEST_SIMPLE], model, tmp_path / "plain.csv", progress=False,
                         classifier=plain)
    assert alone.novelty_file is None
    p = [c for c in table.columns if c.startswith("p_")]
    np.testing.assert_allclose(table[p].to_numpy(float),
                               pd.read_csv(tmp_path / "plain.csv")[p].to_numpy(float), atol=2e-5)


def test_a_folder_unlike_the_fit_is_warned_about_once(tiny_with_novelty, tmp_path, capsys):
    """Cells of the fitted kind pass; cells of another colour (the same cells with red and
    blue swapped, as another stain would shift them) are far, and the command says so once."""
    model = tiny_with_novelty["model"]
    shifted = tmp_path / "other-lab"
    shifted.mkdir()
    for f in tiny_with_novelty["files"][:30]:
        Image.fromarray(load_rgb(f)[..., ::-1]).save(shifted / f"{f.stem}.png")
    own = tmp_path / "own"
    for f in tiny_with_novelty["files"][1::2][:30]:  # validation cells: few are far
        (own / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, own / f.parent.name / f.name)
    assert cli.main(["classify", str(own), "--model", str(model), "-o",
                     str(tmp_path / "own.csv"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Warning" not in printed and "leuko adapt" not in printed
    assert cli.main(["classify", str(shifted), "--model", str(model), "-o",
                     str(tmp_path / "other.csv"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "other.csv", keep_default_na=False)
    far = int((table["far"].astype(str).str.lower() == "true").sum())
    assert far / len(table) > SETTINGS.folder_share
    assert printed.count("Warning:") == 1 and printed.count("leuko adapt") == 1
    assert f"{far} of {len(table)} cells" in printed
    assert cli.main(["classify", str(shifted), "--model", str(model), "-o",
                     str(tmp_path / "other.csv"), "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)["novelty"]
    assert report["warning"] and report["far_cells"] == far
    assert report["folder_share"] == SETTINGS.folder_share
    assert captured.err.count("leuko adapt") == 1  # said on stderr beside the JSON


def test_a_novelty_file_of_another_model_is_refused_naming_it(tiny_with_novelty, tmp_path,
                                                               capsys):
    other = save_tiny_model(tmp_path / "other", size=8)
    target = novelty.novelty_path(other)
    shutil.copyfile(novelty.novelty_path(tiny_with_novelty["model"]), target)
    with pytest.raises(novelty.NoveltyError, match="fitted for another model"):
        classify.load_classifier(other)
    assert cli.main(["classify", str(TEST_SIMPLE), "--model", str(other), "--no-progress",
                     "-o", str(tmp_path / "x.csv")]) == cli.EXIT_USAGE
    assert str(target) in capsys.readouterr().err


def test_the_file_round_trips(tiny_with_novelty):
    model = tiny_with_novelty["model"]
    fitted = tiny_with_novelty["novelty"]
    loaded = novelty.Novelty.load(novelty.novelty_path(model), model)
    assert loaded.groups == fitted.groups
    np.testing.assert_array_equal(loaded.thresholds, fitted.thresholds)
    assert loaded.settings == SETTINGS and loaded.info["sources"] == ["blood-cell-images"]
    feats = tiny_with_novelty["features"]
    np.testing.assert_allclose(loaded.distance(feats), fitted.distance(feats))


# --------------------------------------------------------------------------- the study's model
@pytest.fixture(scope="module")
def shipped() -> dict:
    """The exported model's view-averaged features of a seeded sample of real cells: its
    sources' training (60 per class and source), validation (150 per source) and test cells
    (150 per test part), and 150 cells of the unseen lab bionet."""
    built(EXPORTED)
    built(ROOT / "build/cells/cells.npz")
    built(ROOT / "build/cells/bionet.npz")
    cache, unseen = load_cell_cache(Paths(ROOT)), load_unseen_cache("bionet", Paths(ROOT))
    meta = json.loads(EXPORTED.with_suffix(".json").read_text())
    rows = cache.rows[cache.rows["source"].isin(meta["sources"])]

    def sample(frame, keys, n, seed):
        return frame.sample(frac=1, random_state=seed).groupby(keys).head(n)

    train = sample(rows[rows["split"] == "train"], ["source", "label"], 60, 0)
    val = sample(rows[rows["split"] == "val"], "source", 150, 1)
    test = sample(rows[rows["split"].isin(novelty.TEST_SPLITS)], ["source", "split"], 150, 2)
    lab = unseen.rows.sample(150, random_state=3)
    head = outputs.split_head(load_model(EXPORTED))

    def feats(frame, images):
        return outputs.mean_features(head, images[frame["index"].to_numpy(int)],
                                     int(meta["views"]), progress=False)

    return {"train": feats(train, cache.images), "train_labels": train["label"].to_numpy(),
            "val": feats(val, cache.images), "test": feats(test, cache.images),
            "test_parts": (test["source"] + "/" + test["split"]).to_numpy(),
            "lab": feats(lab, unseen.images), "lab_labels": lab["label"].to_numpy(),
            "sha": file_sha256(EXPORTED)}


@pytest.mark.slow
def test_the_unseen_lab_lies_farther_than_the_sources_test_cells(shipped):
    fitted = novelty.fit(shipped["train"], shipped["train_labels"], shipped["val"], SETTINGS,
                         shipped["sha"], {})
    own, lab = fitted.distance(shipped["test"]), fitted.distance(shipped["lab"])
    auroc = roc_auc_score(np.r_[np.zeros(len(own)), np.ones(len(lab))], np.r_[own, lab])
    assert auroc > 0.5  # better than chance, and near the stage's figure on every cell:
    if RECORDED.is_file():  # a fit on a sample of 150 cells a part: within 0.1
        recorded = json.loads(RECORDED.read_text())["models"]
        exported = next(v for k, v in recorded.items() if k.startswith("exported"))
        assert auroc == pytest.approx(exported["auroc"]["bionet/unseen"], abs=0.1)
    # the rule: the lab is flagged, no test part of the sources is
    assert fitted.flags(int(fitted.is_far(lab).sum()), len(lab))
    for part in sorted(set(shipped["test_parts"])):
        d = own[shipped["test_parts"] == part]
        assert not fitted.flags(int(fitted.is_far(d).sum()), len(d)), part


@pytest.mark.slow
def test_the_lab_cells_added_to_the_fit_are_no_longer_far(shipped):
    fitted = novelty.fit(shipped["train"], shipped["train_labels"], shipped["val"], SETTINGS,
                         shipped["sha"], {})
    lab, labels = shipped["lab"], shipped["lab_labels"]
    half = np.arange(len(lab)) % 2 == 0
    refit = fitted.with_lab_cells(lab[half], labels[half], "lab x", "other-sha")
    assert refit.model_sha256 == "other-sha" and refit.info["lab_cells"] == {"lab x": half.sum()}
    lab_groups = [i for i, g in enumerate(refit.groups) if g.startswith("lab x/")]
    assert lab_groups and (refit.thresholds[lab_groups] >= refit.pooled_threshold).all()
    held_out = refit.is_far(refit.distance(lab[~half])).mean()
    assert held_out < SETTINGS.folder_share < fitted.is_far(fitted.distance(lab[~half])).mean()
    own = refit.distance(shipped["test"])
    assert refit.is_far(own).mean() <= SETTINGS.folder_share  # the sources still pass


def test_the_stage_file_belongs_to_the_exported_model_and_the_params():
    path = built(novelty.novelty_path(EXPORTED))
    fitted = novelty.Novelty.load(path, EXPORTED)
    assert fitted.settings == SETTINGS, "the novelty file is from other params: rerun the stage"
    meta = json.loads(EXPORTED.with_suffix(".json").read_text())
    assert fitted.info["sources"] == meta["sources"]
    assert set(fitted.groups) <= set(meta["classes"])
    # each class's threshold: the quantile of its own validation cells' distances
    distance, nearest = novelty._nearest(fitted.val_features.astype(np.float64), fitted.means,
                                         fitted.precision)
    for i, group in enumerate(fitted.groups):
        if (nearest == i).sum() >= SETTINGS.group_min_cells:
            expected = np.quantile(distance[nearest == i], SETTINGS.quantile)
        else:
            expected = np.quantile(distance, SETTINGS.quantile)
            assert group in fitted.info["pooled_threshold_for"]
        assert fitted.thresholds[i] == pytest.approx(expected, rel=1e-5), group


@pytest.mark.slow
def test_leuko_classify_warns_on_the_unseen_lab_and_not_on_a_source(tmp_path, capsys):
    built(novelty.novelty_path(EXPORTED))
    bionet = require(DATA / "bionet")
    assert cli.main(["classify", str(bionet), "--model", str(EXPORTED), "-o",
                     str(tmp_path / "bionet.csv"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("Warning:") == 1 and "leuko adapt" in printed
    assert cli.main(["classify", str(require(TEST_SIMPLE)), "--model", str(EXPORTED), "-o",
                     str(tmp_path / "own.csv"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Warning:" not in printed and "not available" not in printed
