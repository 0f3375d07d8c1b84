"""leuko.thesis.evaluation: the models of params/wbc.yaml, and the evaluate-wbc notebook scoring several
models in one process with the per-model files the compare stage and ``dvc plots`` read."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import DATA, require
from leuko.thesis import evaluation, study

ROOT = Path(__file__).resolve().parents[1]


def test_wbc_models_are_networks_x_regimes_plus_the_pooled_ones_and_the_repeats():
    models = study.wbc_models({"networks": ["a", "b"], "regimes": ["x", "y"],
                               "pooled_regimes": ["x"],
                               "repeats": {"regimes": ["x"], "seeds": [1, 2]}})
    assert models == [("blood-cell-images", "a", "x", None, ""),
                      ("blood-cell-images", "a", "y", None, ""),
                      ("blood-cell-images", "b", "x", None, ""),
                      ("blood-cell-images", "b", "y", None, ""),
                      ("blood-cell-images-pooled", "a", "x", None, ""),
                      ("blood-cell-images-pooled", "b", "x", None, ""),
                      ("blood-cell-images", "a", "x", 1, ""), ("blood-cell-images", "a", "x", 2, ""),
                      ("blood-cell-images", "b", "x", 1, ""), ("blood-cell-images", "b", "x", 2, "")]
    assert [m.model_id for m in models[-2:]] == ["blood-cell-images-b-x-seed1",
                                                  "blood-cell-images-b-x-seed2"]
    assert models[0].model_id == "blood-cell-images-a-x"
    assert study.wbc_models({"networks": ["a"], "regimes": ["x"]}) == [
        ("blood-cell-images", "a", "x", None, "")]
    with pytest.raises(ValueError, match="networks"):
        study.wbc_models({"regimes": ["x"]})


def test_the_head_only_regimes_at_the_thesis_input_size_are_models_named_by_their_size():
    wbc = {"networks": ["a", "b"], "regimes": ["imagenet", "scratch"],
           "thesis_input": {"image_size": 224, "networks": ["a"],
                            "regimes": ["imagenet", "imagenet-long"],
                            "pooled_regimes": ["imagenet"]}}
    sized = [m for m in study.wbc_models(wbc) if m.regime.endswith("px")]
    assert [m.model_id for m in sized] == ["blood-cell-images-a-imagenet-224px",
                                           "blood-cell-images-a-imagenet-long-224px",
                                           "blood-cell-images-pooled-a-imagenet-224px"]
    assert study.regime_and_size("imagenet-long-224px") == ("imagenet-long", 224)
    assert study.regime_and_size("imagenet-finetune") == ("imagenet-finetune", None)
    assert study.sized_regime("imagenet", None) == "imagenet"
    run = study.WbcRun.from_params("blood-cell-images", "mobilenet_v2", "imagenet-224px",
                                   {"seed": 0}, {**SMALL_WBC, "image_size": 96})
    assert (run.base_regime, run.own_size, run.settings.image_size) == ("imagenet", 224, 224)
    assert run.training == study.RegimeSettings.from_params("imagenet")
    assert run.model_id == "blood-cell-images-mobilenet_v2-imagenet-224px"
    assert study.Paths().features("d", "n", 224).name == "d-n-224px.npz"
    assert study.Paths().features("d", "n").name == "d-n.npz"
    with pytest.raises(ValueError, match="regime must be one of"):
        study.WbcRun.from_params("blood-cell-images", "mobilenet_v2", "nope-224px",
                                 {"seed": 0}, SMALL_WBC)


SMALL_WBC = {"image_size": 96, "train_per_class": 5, "val_per_class": 2, "feature_batch": 8,
             "precision": "float32", "strategy": "auto", "eager": False, "bottleneck": "avg",
             "weights": "imagenet"}


def test_a_network_trained_in_one_stage_has_its_models_in_its_own_folder():
    wbc = {"networks": ["a", "b"], "regimes": ["x"], "pooled_regimes": ["x"],
           "stages": {"per_model": ["a"], "per_network": ["b"]}}
    assert study.stage_groups(wbc) == {"a": "", "b": "b"}
    assert [(m.network, m.group) for m in study.wbc_models(wbc)] == [
        ("a", ""), ("b", "b"), ("a", ""), ("b", "b")]
    key = study.wbc_models(wbc)[1]
    paths = key.paths(Path("/r"))
    assert paths.model(key.model_id) == Path("/r/build/models/b/blood-cell-images-b-x.keras")
    assert paths.train_summary("m") == Path("/r/reports/train/b/m.json")
    assert paths.live("m") == Path("/r/reports/live/b/m")
    # what one stage per model writes stays where it was; the evaluation files are shared
    assert study.Paths(Path("/r")).model("m") == Path("/r/build/models/m.keras")
    assert paths.metrics("m") == study.Paths(Path("/r")).metrics("m")
    assert paths.manifest("d") == study.Paths(Path("/r")).manifest("d")


@pytest.mark.parametrize("stages, wrong", [
    ({"per_model": ["a"], "per_network": []}, "['b']"),  # b in neither list
    ({"per_model": ["a", "b"], "per_network": ["b"]}, "['b']"),  # b in both
    ({"per_model": ["a", "b", "c"], "per_network": []}, "['c']"),  # c is no network
])
def test_every_network_must_be_in_exactly_one_stage_layout(stages, wrong):
    with pytest.raises(ValueError, match=f"exactly one of per_model and per_network; check "
                                         f"{re.escape(wrong)}"):
        study.wbc_models({"networks": ["a", "b"], "regimes": ["x"], "stages": stages})


def test_trained_models_finds_each_summary_in_its_stages_folder(tmp_path):
    flat, grouped = study.Paths(tmp_path), study.Paths(tmp_path, "vgg16")
    for where, the_id in ((flat, "cells-both"), (grouped, "blood-cell-images-vgg16-imagenet")):
        study.write_json(where.train_summary(the_id), {"model": the_id})
    assert study.trained_models(flat) == {"blood-cell-images-vgg16-imagenet": grouped,
                                          "cells-both": flat}
    assert study.model_paths("blood-cell-images-vgg16-imagenet", flat) == grouped
    assert study.model_paths("not-trained", flat) == flat
    # the same id left at the top by another preset's stage per model: the group's wins
    study.write_json(flat.train_summary("blood-cell-images-vgg16-imagenet"), {"model": "old"})
    assert study.model_paths("blood-cell-images-vgg16-imagenet", flat) == grouped


def test_the_report_reads_a_groups_summaries_and_curves(tmp_path):
    from leuko.reporting import report
    flat, grouped = study.Paths(tmp_path), study.Paths(tmp_path, "vgg16")
    the_id = "blood-cell-images-vgg16-imagenet"
    for where, seconds in ((flat, 1.0), (grouped, 2.0)):  # a stale file at the top, the group's
        study.write_json(where.train_summary(the_id), {"model": the_id, "train_seconds": seconds})
        (where.live(the_id) / "plots").mkdir(parents=True)
    study.write_json(flat.train_summary("cells-both"), {"model": "cells-both"})
    times = report.training_times(tmp_path / "reports" / "train")
    assert list(times["model"]) == [the_id, "cells-both"]
    assert times.loc[0, "train_seconds"] == 2.0
    assert report.live_folder(tmp_path / "reports" / "live", the_id) == grouped.live(the_id)
    assert report.live_folder(tmp_path / "reports" / "live", "cells-both") is None


def test_source_cells_join_rows_that_share_a_cell_hash_or_near_duplicate_group():
    rows = pd.DataFrame({"group": ["a", "a", "b", "c", "d"],
                         "sha256": ["1", "2", "3", "3", "4"],
                         "near": [0, 1, 2, 3, 3]})
    cells = evaluation.source_cells(rows)
    assert cells[0] == cells[1] and cells[2] == cells[3] == cells[4]
    assert len(set(cells)) == 2
    assert len(set(evaluation.source_cells(rows[["group"]]))) == 4  # the keys it has
    with pytest.raises(ValueError, match="group"):
        evaluation.source_cells(rows[["sha256"]])


def test_held_out_metrics_exact_interval_only_for_distinct_cells():
    y_true = np.array([0, 0, 1, 1, 1, 0])
    y_pred = np.array([0, 1, 1, 1, 1, 0])  # 5 of 6
    distinct = evaluation.held_out_metrics(y_true, y_pred, ["A", "B"], np.arange(6), 50, 0)
    assert distinct["n_cells"] == 6 and distinct["exact_interval"]["k"] == 5
    # Clopper-Pearson of 5/6 by hand: high solves x^6 = 0.975 (Beta(6, 1)), low solves
    # 6 x^5 - 5 x^6 = 0.025 (the CDF of Beta(5, 2))
    low, high = distinct["exact_interval"]["low"], distinct["exact_interval"]["high"]
    assert high == pytest.approx(0.975 ** (1 / 6))
    assert 6 * low ** 5 - 5 * low ** 6 == pytest.approx(0.025)
    copies = evaluation.held_out_metrics(y_true, y_pred, ["A", "B"], np.arange(6) // 2, 50, 0)
    assert copies["n_cells"] == 3 and "exact_interval" not in copies
    assert copies["intervals"]["accuracy"]["value"] == pytest.approx(5 / 6)


def _result(model: str, accuracy: float) -> dict:
    split = {"accuracy": accuracy, "macro_f1": accuracy - 0.1, "n": 10,
             "intervals": {"accuracy": {"low": accuracy - 0.2, "high": accuracy + 0.1}}}
    return {"model": model, "splits": {"test": split},
            "stain_shift": {"split": "test", "n": 8,
                            "kinds": {"none": {"accuracy": accuracy},
                                      "warm": {"accuracy": accuracy / 2}}}}


def test_index_and_tables_list_every_model():
    results = [_result("m1", 0.8), _result("m2", 0.6)]
    index = evaluation.evaluation_index(results)["models"]
    assert set(index) == {"m1", "m2"}
    assert index["m1"]["metrics"] == "reports/metrics/m1.json"
    assert index["m2"]["splits"]["test"]["accuracy_low"] == pytest.approx(0.4)
    frame = evaluation.results_frame(results)
    assert list(frame["model"]) == ["m1", "m2"]
    assert list(frame["low"]) == pytest.approx([0.6, 0.4])
    shifts = evaluation.stain_shift_frame(results)
    assert shifts.loc["m2", "warm"] == pytest.approx(0.3)


def test_evaluate_study_gathers_the_models_their_network_stage_scored(tmp_path):
    """The smoke layout: every network in wbc.stages.per_network, so evaluate-wbc scores
    nothing itself; it reads the metrics each train-network stage wrote, in the order of
    params/wbc.yaml, and indexes them. A model its stage did not score stops it, naming the
    stage to run."""
    wbc = {"networks": ["a", "b"], "regimes": ["x"], "pooled_regimes": ["x"],
           "stages": {"per_model": [], "per_network": ["a", "b"]}, "image_size": 32}
    evaluate = {"n_boot": 10, "robustness_split": "none", "robustness_per_class": 1,
                "eval_per_class": 1}
    paths = study.Paths(tmp_path)
    models = study.wbc_models(wbc)
    for i, key in enumerate(models[:-1]):
        study.write_json(paths.metrics(key.model_id), _result(key.model_id, 0.5 + i / 10))
    missing = models[-1].model_id
    with pytest.raises(FileNotFoundError, match=f"{missing}.*train-network@b"):
        evaluation.evaluate_study(wbc, evaluate, 0, paths)
    study.write_json(paths.metrics(missing), _result(missing, 0.9))
    results = evaluation.evaluate_study(wbc, evaluate, 0, paths)
    assert [r["model"] for r in results] == [m.model_id for m in models]
    index = json.loads((tmp_path / "reports" / "evaluation" / "wbc.json").read_text())
    assert list(index["models"]) == [m.model_id for m in models]
    assert index["models"][missing]["splits"]["test"]["accuracy"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="eval_per_class"):
        evaluation.evaluate_options({k: v for k, v in evaluate.items() if k != "eval_per_class"})


def test_confusion_panels_are_network_rows_and_model_kind_columns():
    def result(dataset, network, model, cm):
        return {"dataset": dataset, "network": network, "model": model,
                "splits": {"test": {"confusion_matrix": cm}}}

    results = [result("blood-cell-images", "vgg16", "blood-cell-images-vgg16-scratch",
                      [[1, 0], [0, 1]]),
               result("blood-cell-images", "vgg16", "blood-cell-images-vgg16-imagenet-seed1",
                      [[2, 0], [1, 1]]),
               result("blood-cell-images-pooled", "resnet50",
                      "blood-cell-images-pooled-resnet50-imagenet", [[0, 1], [1, 0]])]
    matrices, rows, cols = evaluation.confusion_panels(results, "test")
    assert rows == ["vgg16", "resnet50"]
    assert cols == ["scratch", "imagenet-seed1", "imagenet (pooled)"]
    assert matrices[("vgg16", "imagenet-seed1")].tolist() == [[2, 0], [1, 1]]
    assert evaluation.confusion_panels(results, "test_simple") == ({}, [], [])


@pytest.mark.slow
def test_evaluate_notebook_scores_several_models_in_one_run(tmp_path):
    """Two untrained models on a few real images: per-model metrics, predictions and
    confusion files, the index, and the stage's time record (through leuko.pipeline.stagetimes)."""
    manifest = ROOT / "build" / "manifests" / "blood-cell-images.csv"
    if not manifest.is_file():
        pytest.skip("no manifest: dvc repro prepare-wbc")
    from leuko.core.machine import describe
    from leuko.models import networks
    from leuko.thesis import study

    work = tmp_path
    (work / "data").symlink_to(ROOT / "data")
    (work / "dvc.yaml").write_text("stages: {}\n")
    paths = study.Paths(work)
    frame = study.read_manifest(manifest)
    held_out = frame[frame["split"].isin(["test", "test_simple"])]
    small = held_out.groupby(["split", "label"]).head(3)
    ids = []
    for dataset in ("blood-cell-images", "blood-cell-images-pooled"):
        study.write_manifest(small, paths.manifest(dataset))
        the_id = study.model_id(dataset, "mobilenet_v2", "scratch")
        model = networks.build_classifier("mobilenet_v2", 4, 96, pretrained=False)
        study.save_model(model, paths.model(the_id))
        study.write_json(paths.train_summary(the_id), {
            "train_seconds": 1.0, "epochs_run": 1, "epochs_per_phase": {"end-to-end": 1},
            "saved_phase": "end-to-end", "saved_epoch": 1, "saved_by": "last epoch",
            "saved_val_accuracy": 0.25, "best_val_accuracy": 0.25,
            "final_train_accuracy": 0.25, "machine": describe()})
        ids.append(the_id)
    params = work / "params.yaml"
    params.write_text(json.dumps({
        "wbc": {"networks": ["mobilenet_v2"], "regimes": ["scratch"],
                "pooled_regimes": ["scratch"], "image_size": 96},
        "evaluate": {"n_boot": 20, "robustness_split": "test_simple",
                     "robustness_per_class": 2, "eval_per_class": 0}}))
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [sys.executable, "-m", "leuko.pipeline.stagetimes", "evaluate-wbc", "--",
         str(bin_dir / "papermill"), "-k", "leuko", "--no-progress-bar",
         str(ROOT / "notebooks" / "04-evaluate.ipynb"), "evaluate-wbc.ipynb",
         "-f", str(params), "-p", "seed", "0"],
        cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[evaluate-wbc] started" in done.stderr and "[evaluate-wbc] done" in done.stderr
    index = json.loads((work / "reports" / "evaluation" / "wbc.json").read_text())
    assert sorted(index["models"]) == sorted(ids)
    for the_id in ids:
        metrics = json.loads(paths.metrics(the_id).read_text())
        assert set(metrics["splits"]) == {"test", "test_simple"}
        assert metrics["machine"]["cpu"] and metrics["training"]["saved_epoch"] == 1
        simple, copies = metrics["splits"]["test_simple"], metrics["splits"]["test"]
        # TEST_SIMPLE's images are distinct cells: exact interval; TEST's 12 images are
        # copies of fewer cells: none, the bootstrap over cells is the interval
        assert simple["n_cells"] == simple["n"] == 12
        assert simple["exact_interval"]["n"] == 12
        assert copies["n_cells"] < copies["n"] and "exact_interval" not in copies
        assert metrics["stain_shift"]["n"] == 8
        assert len(pd.read_csv(paths.predictions(the_id))) == len(small)
        assert len(pd.read_csv(paths.confusion_plot(the_id, "test"))) == 12
    record = json.loads((work / "reports" / "times" / "evaluate-wbc.json").read_text())
    assert record["seconds"] > 0 and record["machine"]["cores"] >= 1


def test_decoded_images_are_decoded_once_per_files_and_size_and_read_only():
    from leuko.core.inputs import load_resized

    files = sorted((ROOT / "data" / "blood-cell-images" / "images" / "TEST_SIMPLE").rglob("*.jp*g"))[:3]
    assert len(files) == 3
    decode = evaluation.DecodedImages()
    first = decode(files, 32, progress=False)
    assert decode(files, 32, progress=False) is first  # the second model reads the first's
    assert decode(files, 48, progress=False).shape == (3, 48, 48, 3)  # another size: decoded
    np.testing.assert_array_equal(first, load_resized(files, 32, progress=False))
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0, 0, 0] = 1


def _frozen_classifier(base, seed: int, size: int = 32):
    import keras

    from leuko.models import networks
    keras.utils.set_random_seed(seed)
    head = networks.build_head(base.output_shape[-1], 4)
    return networks.build_classifier("mobilenet_v2", 4, size, pretrained=False, base=base,
                                     head_model=head)


def test_shared_frozen_base_predicts_as_the_whole_model_and_computes_features_once(tmp_path):
    """Two head-only models over one frozen base (saved and loaded, as evaluate-wbc reads
    them) get the whole models' probabilities, their base's features computed once; a model
    whose base trains, or whose base has other weights, is never served those features."""
    import keras

    from leuko.models import networks
    from leuko.thesis import study
    require(DATA / "pretrained")
    base = networks.build_base("mobilenet_v2", (32, 32, 3), pretrained=True)  # varied features
    base.trainable = False
    models = []
    for seed in (1, 2):
        path = tmp_path / f"head{seed}.keras"
        study.save_model(_frozen_classifier(base, seed), path)
        models.append(study.load_model(path))
    images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    shared = evaluation.SharedFrozenBase()
    for model in models:
        assert shared.frozen_parts(model) is not None
        np.testing.assert_allclose(shared(model, images), study.predict(model, images),
                                   rtol=1e-5, atol=1e-6)
    assert shared.shared == 1  # the second model reused the first one's features
    assert not np.allclose(shared(models[0], images), shared(models[1], images))
    other = images.copy()
    other[0, 0, 0, 0] ^= 1  # one pixel: other images, other features
    shared(models[1], other)
    assert shared.shared == 3
    # another base (other weights) under the same head structure: its own features
    keras.utils.set_random_seed(5)  # random weights: near-constant features, so equality only
    base_b = networks.build_base("mobilenet_v2", (32, 32, 3), pretrained=False)
    base_b.trainable = False
    model_b = _frozen_classifier(base_b, 1)
    np.testing.assert_allclose(shared(model_b, images), study.predict(model_b, images),
                               rtol=1e-5, atol=1e-6)
    assert shared.shared == 3
    assert len(shared._features) == 1  # only the current base's features are kept
    # a fine-tuned (trainable) base is predicted whole
    tuned = networks.build_classifier("mobilenet_v2", 4, 32, pretrained=False)
    assert shared.frozen_parts(tuned) is None
    np.testing.assert_array_equal(shared(tuned, images), study.predict(tuned, images))
