"""Adaptation curves (k labelled cells per class of a lab a model was not trained on) and the
shipped model's JPEG stability: draws, targets, and both on real cells."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import DATA, WBC_CLASSES, built, require, tiny_model
from leuko.cells import multisource, unseen
from leuko.core.images import load_rgb
from leuko.thesis.study import Paths, save_model
from leuko.tool import adaptation
from leuko.tool.classify import load_classifier

ROOT = Path(__file__).resolve().parents[1]


def test_settings_are_the_params_file_and_are_checked():
    settings = adaptation.AdaptationSettings.from_params()
    assert settings.ks == (0, 5, 10, 20, 50) and settings.draws >= 1
    assert settings.target_macro_f1 == ((10, 0.85), (50, 0.90))
    with pytest.raises(ValueError, match="ks"):
        replace(settings, ks=(10, 5))
    with pytest.raises(ValueError, match="jpeg_qualities"):
        replace(settings, jpeg_qualities=(100,))
    with pytest.raises(ValueError, match="draws"):
        replace(settings, draws=0)


def _pool(counts: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame([{"path": f"{c}/{i:03d}.jpg", "label": c, "at": n}
                         for n, (c, i) in enumerate((c, i) for c, k in counts.items()
                                                    for i in range(k))])


def test_a_draw_takes_k_per_class_nested_in_k_and_a_scored_lab_keeps_half():
    pool = _pool({"MONOCYTE": 5, "NEUTROPHIL": 30})
    drawn = {k: adaptation.draw_cells(pool, k, draw=0, seed=0, keep_half=True)
             for k in (1, 5, 10, 20)}
    counts = {k: d["label"].value_counts().to_dict() for k, d in drawn.items()}
    assert counts[1] == {"MONOCYTE": 1, "NEUTROPHIL": 1}
    assert counts[10] == {"MONOCYTE": 2, "NEUTROPHIL": 10}  # 5 monocytes: 2 drawn, 3 scored
    assert counts[20] == {"MONOCYTE": 2, "NEUTROPHIL": 15}  # half of 30
    for small, large in ((1, 5), (5, 10), (10, 20)):  # one lab labelling more and more
        assert set(drawn[small]["path"]) <= set(drawn[large]["path"])
    other = adaptation.draw_cells(pool, 10, draw=1, seed=0, keep_half=True)
    assert set(other["path"]) != set(drawn[10]["path"])
    again = adaptation.draw_cells(pool, 10, draw=0, seed=0, keep_half=True)
    assert again["path"].tolist() == drawn[10]["path"].tolist()
    apart = adaptation.draw_cells(pool, 10, draw=0, seed=0, keep_half=False)
    assert apart["label"].value_counts().to_dict() == {"MONOCYTE": 5, "NEUTROPHIL": 10}


def test_candidates_are_one_untight_image_per_source_cell_of_the_models_classes():
    rows = pd.DataFrame({
        "path": ["b.jpg", "a.jpg", "c.jpg", "d.jpg", "e.jpg"],
        "label": ["NEUTROPHIL", "NEUTROPHIL", "NEUTROPHIL", "BASOPHIL", "MONOCYTE"],
        "group": ["cell1", "cell1", "cell2", "cell3", "cell4"],
        "tight": [False, False, True, False, False]})
    pool = adaptation.candidates(rows, ["NEUTROPHIL", "MONOCYTE"])
    assert pool["path"].tolist() == ["a.jpg", "e.jpg"]  # c is cut tight, d no class
    assert pool["at"].tolist() == [1, 4]


def test_targets_are_read_off_the_pooled_curve():
    curves = pd.DataFrame({"scenario": "lab", "model": "cells-both", "tested on": "lab/unseen",
                           "k": [0, 10], "macro_f1": [0.6, 0.86], "macro_f1_low": [0.5, 0.8],
                           "macro_f1_high": [0.7, 0.9]})
    table = adaptation.targets_table(curves, [(10, 0.85), (50, 0.9)])
    assert table["reached"].tolist()[0] is True and pd.isna(table["reached"].iloc[1])
    assert table["macro F1"].tolist()[0] == 0.86


def test_jpeg_reencoding_changes_pixels_less_at_a_higher_quality(tmp_path):
    rgb = load_rgb(sorted((require(DATA / "bionet") / "NEUTROPHIL").iterdir())[0])
    diffs = {}
    for quality in (75, 95):
        again = adaptation.reencode_jpeg(rgb, quality, tmp_path)
        assert again.shape == rgb.shape and again.dtype == np.uint8
        diffs[quality] = np.abs(again.astype(int) - rgb).mean()
    assert 0 < diffs[95] < diffs[75]


@pytest.fixture(scope="module")
def tiny_cell_classifier(tmp_path_factory):
    """A tiny 4-class classifier that prepares cells as the study does (16 px, 8 views)."""
    folder = tmp_path_factory.mktemp("tiny-cells")
    rng = np.random.default_rng(1)
    path = save_model(tiny_model(4, 16, rng.normal(size=(3, 4)) * 4), folder / "tiny.keras")
    preprocess = multisource.CellStudy.from_params().preprocess.to_dict()
    (folder / "tiny.json").write_text(json.dumps({
        "classes": WBC_CLASSES, "input_size": [16, 16], "views": 8,
        "cell_preprocess": preprocess, "abstain": {"threshold": 0.3}}))
    return load_classifier(path), preprocess


def test_jpeg_stability_counts_the_cells_that_change_class(tiny_cell_classifier):
    classifier, preprocess = tiny_cell_classifier
    files = [f for c in ("EOSINOPHIL", "MONOCYTE")
             for f in sorted((require(DATA / "bionet") / c).iterdir())[:3]]
    rows = pd.DataFrame({"path": [str(f) for f in files], "label": [f.parent.name for f in files]})
    images = np.stack([classifier.prepare(load_rgb(f)) for f in files])  # as the caches hold
    summary, per_image = adaptation.jpeg_stability(
        classifier, [("bionet/unseen", rows, images)], (75, 95), preprocess, workers=2,
        progress=False)
    assert summary["quality"].tolist() == [75, 95] and (summary["images"] == 6).all()
    assert len(per_image) == 12
    for quality, group in per_image.groupby("quality"):
        changed = int((group["original"] != group["re-encoded"]).sum())
        row = summary.set_index("quality").loc[quality]
        assert row["changed"] == changed and row["share changed"] == changed / 6
        assert row["low"] <= row["share changed"] <= row["high"]
    original = classifier.predict_batch(images, 8).argmax(axis=1)
    assert per_image["original"][:6].tolist() == [WBC_CLASSES[i] for i in original]
    with pytest.raises(ValueError, match="prepares cells otherwise"):
        adaptation.jpeg_stability(classifier, [("bionet/unseen", rows, images)], (75,),
                                  {**preprocess, "scale": 3.0}, progress=False)


@pytest.fixture(scope="module")
def caches():
    paths = Paths(ROOT)
    built(multisource.cache_path(paths))
    built(unseen.cache_path("bionet", paths))
    return multisource.load_cell_cache(paths), unseen.load_unseen_caches(paths=paths)


def _settings(**values) -> adaptation.AdaptationSettings:
    return replace(adaptation.AdaptationSettings.from_params(), **values)


@pytest.mark.slow
def test_twenty_cells_per_class_raise_the_score_on_the_held_out_source(caches):
    """The blood-cell-images model on PBC's test part, before and after its last layer is
    refitted on 20 of PBC's training cells per class (one draw)."""
    built(ROOT / "build/models/cells-blood-cell-images.keras")
    built(ROOT / "build/cell-outputs/cells-blood-cell-images.npz", "evaluate-cells")
    cache, labs = caches
    scenario = next(s for s in adaptation.scenarios("bionet") if s.name == "pbc")
    curves, draws = adaptation.adapt_scenario(scenario, _settings(ks=(0, 20), draws=1,
                                                                  source_per_class=20),
                                              cache, labs, n_boot=200, seed=0, progress=False)
    before, after = (curves.set_index("k").loc[k] for k in (0, 20))
    known = cache.part("pbc", "test")[0]["label"].isin(WBC_CLASSES).sum()  # its 4 classes
    assert before["images"] == after["images"] == known  # no PBC test cell is drawn
    assert after["cells per class"] == ", ".join(f"{c} 20" for c in WBC_CLASSES)
    assert after["macro_f1"] > before["macro_f1"] + 0.05
    assert after["accuracy"] > before["accuracy"]
    assert len(draws) == 2 and draws["draw"].tolist() == [0, 0]


@pytest.mark.slow
def test_the_cells_drawn_from_the_unseen_lab_are_never_scored(caches):
    built(ROOT / "build/models/cells-both.keras")
    built(ROOT / "build/cell-outputs/cells-both.npz", "evaluate-cells")
    cache, labs = caches
    scenario = adaptation.scenarios("bionet")[0]
    assert scenario.model_id == "cells-both" and scenario.scored == (scenario.lab,)
    curves, draws = adaptation.adapt_scenario(scenario, _settings(ks=(0, 5), draws=2,
                                                                  source_per_class=10),
                                              cache, labs, n_boot=100, seed=0, progress=False)
    total = len(labs["bionet"].rows)
    at5 = draws[draws["k"] == 5]
    assert at5["cells per class"].tolist() == [
        "EOSINOPHIL 5, LYMPHOCYTE 5, MONOCYTE 2, NEUTROPHIL 5"] * 2  # 2 of its 5 monocytes
    assert at5["images"].tolist() == [total - 17] * 2
    assert draws[draws["k"] == 0]["images"].tolist() == [total]
    pooled = curves.set_index("k")
    assert pooled.loc[5, "draws"] == 2 and pooled.loc[0, "draws"] == 1
    assert pooled.loc[5, "macro_f1 min"] <= pooled.loc[5, "macro_f1 mean"] <= pooled.loc[
        5, "macro_f1 max"]
