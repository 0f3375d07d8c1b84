"""Tests of leuko.tool.export: the choice rule, its fallback, and the exported model + metadata."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import tiny_model
from leuko.thesis.study import Paths, save_model, write_json
from leuko.tool import cli, export, export_stage

ROOT = Path(__file__).resolve().parents[1]

CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
DATA_DVC = "outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  size: 1\n  nfiles: 1\n" \
           "  hash: md5\n  path: data\n"


def make_study(root: Path, models: dict[str, float], with_val: bool = True) -> Paths:
    """A fake study under ``root``: tiny models, training summaries, a manifest, data.dvc."""
    paths = Paths(root)
    (root / "data.dvc").write_text(DATA_DVC)
    rng = np.random.default_rng(0)
    rows = []
    folder = root / "images"
    folder.mkdir()
    for i in range(8):
        label = CLASSES[i % 4]
        image = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        path = folder / f"{i}.png"
        Image.fromarray(image).save(path)
        rows.append({"path": str(path), "label": label,
                     "split": "val" if with_val else "train", "group": str(i)})
    paths.manifest("toy").parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(paths.manifest("toy"), index=False)
    for k, (model_id, val_acc) in enumerate(models.items()):
        model = tiny_model(colour_weights=np.eye(3, 4) * (k + 1))
        save_model(model, paths.model(model_id))
        write_json(paths.train_summary(model_id), {
            "model": model_id, "dataset": "toy", "network": "tiny", "regime": "scratch",
            "classes": CLASSES, "saved_val_accuracy": val_acc, "best_val_accuracy": 1.0,
            "epochs_run": 3,
            "image_size": 16, "train_seconds": 1.0, "params": {"total": 100 + k,
                                                               "trainable": 100}})
    return paths


@pytest.fixture()
def toy_task(monkeypatch):
    monkeypatch.setitem(export.TASKS, "toy", {"datasets": ("toy",), "description": "a toy"})


def test_data_version_reads_the_md5(tmp_path):
    (tmp_path / "data.dvc").write_text(DATA_DVC)
    assert export.data_version(tmp_path / "data.dvc") == "0123456789abcdef0123456789abcdef.dir"
    with pytest.raises(FileNotFoundError, match="data version"):
        export.data_version(tmp_path / "missing.dvc")


def test_choose_model_by_val_macro_f1(tmp_path):
    paths = make_study(tmp_path, {"a": 0.9, "b": 0.5})
    scores = {"a": 0.60, "b": 0.80}

    def scorer(model_id, paths, shifted=False):
        return {"macro_f1": scores[model_id], "accuracy": 0.0, "n": 8}

    choice = export.choose_model(["a", "b"], "val_macro_f1", paths, scorer=scorer)
    assert choice["model_id"] == "b"  # best macro F1 wins over best val accuracy
    assert choice["rule_used"] == "val_macro_f1" and choice["note"] == ""
    assert choice["scores"] == {"a": 0.60, "b": 0.80}
    by_accuracy = export.choose_model(["a", "b"], "saved_val_accuracy", paths, scorer=scorer)
    assert by_accuracy["model_id"] == "a"  # the saved weights' score, not the best epoch's
    assert by_accuracy["scores"] == {"a": 0.9, "b": 0.5}


def test_choose_model_by_val_macro_f1_under_stain_shifts(tmp_path):
    paths = make_study(tmp_path, {"a": 0.9, "b": 0.5})
    as_imaged, across_labs = {"a": 0.80, "b": 0.70}, {"a": 0.60, "b": 0.65}

    def scorer(model_id, paths, shifted=False):
        return {"macro_f1": (across_labs if shifted else as_imaged)[model_id]}

    assert export.choose_model(["a", "b"], "val_macro_f1", paths, scorer=scorer)[
        "model_id"] == "a"
    choice = export.choose_model(["a", "b"], "val_macro_f1_shifted", paths, scorer=scorer)
    assert choice["model_id"] == "b"  # the better model across labs, not as imaged
    assert choice["rule_used"] == "val_macro_f1_shifted"


def test_val_macro_f1_shifted_is_the_mean_over_the_stain_shifts(tmp_path):
    from leuko.core.stain import STAIN_SHIFTS

    paths = make_study(tmp_path, {"a": 0.9})
    plain = export.val_macro_f1("a", paths)
    shifted = export.val_macro_f1("a", paths, shifted=True)
    assert set(shifted["per_shift"]) == set(STAIN_SHIFTS)
    assert shifted["per_shift"]["none"] == pytest.approx(plain["macro_f1"])
    assert shifted["macro_f1"] == pytest.approx(np.mean(list(shifted["per_shift"].values())))
    assert shifted["n"] == 8  # 2 per class, all below SHIFTED_PER_CLASS


def test_choose_model_ties_and_bad_rule(tmp_path):
    paths = make_study(tmp_path, {"a": 0.7, "b": 0.9})

    def scorer(model_id, paths, shifted=False):
        return {"macro_f1": 0.5}

    assert export.choose_model(["a", "b"], "val_macro_f1", paths=paths,
                               scorer=scorer)["model_id"] == "b"
    with pytest.raises(ValueError, match="choice rule must be one of"):
        export.choose_model(["a"], "test_accuracy", paths)
    with pytest.raises(ValueError, match="no candidate models"):
        export.choose_model([], "val_macro_f1", paths=paths)


def test_a_rule_that_cannot_be_computed_stops_with_its_cause(tmp_path):
    paths = make_study(tmp_path, {"a": 0.9, "b": 0.5}, with_val=False)
    with pytest.raises(ValueError, match="no validation rows"):
        export.choose_model(["a", "b"], "val_macro_f1", paths)


def test_val_macro_f1_is_computed_on_the_val_rows(tmp_path):
    paths = make_study(tmp_path, {"a": 0.9})
    result = export.val_macro_f1("a", paths)
    assert result["n"] == 8
    assert 0.0 <= result["macro_f1"] <= 1.0


def test_export_task_writes_model_and_metadata(tmp_path, toy_task):
    from leuko.tool.classify import load_classifier

    paths = make_study(tmp_path, {"toy-tiny-a": 0.9, "toy-tiny-b": 0.5})
    write_json(paths.metrics("toy-tiny-a"), {"splits": {"test": {
        "n": 10, "n_cells": 10, "accuracy": 0.8, "macro_f1": 0.75,
        "intervals": {"accuracy": {"value": 0.8, "low": 0.6, "high": 0.9}},
        "exact_interval": {"value": 0.8, "low": 0.44, "high": 0.97, "k": 8, "n": 10}}}})
    out = tmp_path / "build" / "export"
    meta = export.export_task("toy", "val_macro_f1", paths=paths, out_dir=out,
                              dvc_file=tmp_path / "data.dvc")
    chosen = meta["model_id"]
    assert (out / "toy.keras").read_bytes() == paths.model(chosen).read_bytes()
    written = json.loads((out / "toy.json").read_text())
    assert written == json.loads(json.dumps(meta))
    assert written["classes"] == CLASSES
    assert written["input_size"] == [16, 16]
    assert written["preprocessing"]["kind"] == "unit"
    assert written["data_version"]["md5"] == "0123456789abcdef0123456789abcdef.dir"
    assert written["choice"]["rule_used"] == "val_macro_f1"
    assert set(written["choice"]["scores"]) == {"toy-tiny-a", "toy-tiny-b"}
    summary = json.loads(paths.train_summary(chosen).read_text())
    assert written["training"]["saved_val_accuracy"] == summary["saved_val_accuracy"]
    if chosen == "toy-tiny-a":
        assert written["test"]["test"]["accuracy"] == 0.8
        assert written["test"]["test"]["accuracy_ci95"] == {"low": 0.6, "high": 0.9}
        assert written["test"]["test"]["accuracy_exact_ci95"] == {"low": 0.44, "high": 0.97}
        assert written["test"]["test"]["n_cells"] == 10
    else:
        assert written["test"] == {} and "note_test" in written
    classifier = load_classifier(out / "toy.keras")
    assert classifier.classes == CLASSES and classifier.image_size == (16, 16)
    probs = classifier.predict_batch(np.zeros((3, 16, 16, 3), np.uint8), batch_size=4)
    assert probs.shape == (3, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_export_task_without_models_is_a_clear_error(tmp_path, toy_task):
    with pytest.raises(ValueError, match="no trained model for task 'toy'"):
        export.export_task("toy", "val_macro_f1", paths=Paths(tmp_path),
                           out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="task must be one of"):
        export.export_task("nope", "val_macro_f1", paths=Paths(tmp_path))


def test_cli_export_usage_error_exit_code(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", "--task", "wbc"]) == cli.EXIT_USAGE
    assert "no trained model for task 'wbc'" in capsys.readouterr().err


def test_the_rule_has_one_place_params_export_yaml(tmp_path, monkeypatch, capsys):
    """No function of the library has a default rule; the stage is given it; `leuko export`
    without --rule uses params/export.yaml's, found from the checkout."""
    study_rule = yaml.safe_load((ROOT / "params/export.yaml").read_text())["export"]["rule"]
    for function in (export.choose_model, export.export_task):
        assert inspect.signature(function).parameters["rule"].default is inspect.Parameter.empty
    assert not hasattr(export, "DEFAULT_RULE")
    with pytest.raises(SystemExit):
        export_stage.main(["--task", "wbc"])
    assert "--rule" in capsys.readouterr().err
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["export"]["do"]["cmd"]
    assert "--rule ${export.rule}" in stage
    asked = {}

    def export_task(task, rule, **kwargs):
        asked["rule"] = rule
        raise ValueError("stop here")

    monkeypatch.setattr(export, "export_task", export_task)
    monkeypatch.chdir(tmp_path)  # from any folder: the checkout's params
    assert cli.main(["export", "--task", "wbc"]) == cli.EXIT_USAGE
    assert asked["rule"] == study_rule == cli.default_rule()
    assert cli.main(["export", "--task", "wbc", "--rule", "val_macro_f1"]) == cli.EXIT_USAGE
    assert asked["rule"] == "val_macro_f1"
