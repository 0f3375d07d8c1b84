"""Every parameters file builds its typed config, and a bad key fails naming its file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from leuko.cells.detect import DetectConfig
from leuko.cells.multisource import CellStudy
from leuko.cells.novelty import NoveltySettings
from leuko.core import params
from leuko.thesis import study
from leuko.tool import cli, smear

ROOT = Path(__file__).resolve().parents[1]
PRESET_DIRS = [ROOT / "params", *sorted((ROOT / "params" / "presets").iterdir())]


def _block(path: Path, name: str) -> dict:
    return yaml.safe_load(path.read_text())[name]


@pytest.mark.parametrize("folder", PRESET_DIRS, ids=lambda p: p.name)
def test_every_regime_file_of_every_preset_builds_its_settings(folder):
    files = sorted((folder / "regimes").glob("*.yaml"))
    assert files
    for path in files:
        settings = study.RegimeSettings.from_params(path.stem, _block(path, "training"))
        assert settings.epochs >= 1 and isinstance(settings.head_units, tuple)


@pytest.mark.parametrize("folder", PRESET_DIRS, ids=lambda p: p.name)
def test_the_study_blocks_of_every_preset_build(folder):
    data = _block(ROOT / "params" / "data.yaml", "data")
    if (folder / "wbc.yaml").is_file():
        wbc = _block(folder / "wbc.yaml", "wbc")
        settings = study.WbcSettings.from_params(wbc, data)
        assert settings.seed == data["seed"]
        assert set(study.stage_groups(wbc)) == set(wbc["networks"])  # one layout each
    if (folder / "cells.yaml").is_file():
        cells = CellStudy.from_params(_block(folder / "cells.yaml", "cells"))
        assert cells.train.epochs >= 1
    if (folder / "detect.yaml").is_file():
        detection = smear.DetectionStudy.from_params(_block(folder / "detect.yaml", "detect"))
        assert detection.detector.cell_size > 0
    if (folder / "export.yaml").is_file():
        assert 0 < NoveltySettings.from_params(_block(folder / "export.yaml", "export")).quantile


def test_the_commands_run_without_a_parameters_file_read_the_studys(tmp_path, monkeypatch):
    """`leuko export`'s rule and `leuko classify --smear`'s detector are params/'s values,
    read from the checkout leuko is installed from, whatever the current folder."""
    monkeypatch.chdir(tmp_path)
    assert cli.default_rule() == _block(ROOT / "params" / "export.yaml", "export")["rule"]
    assert cli.build_parser().parse_args(["export", "--task", "wbc"]).rule is None
    detector = DetectConfig.from_params(_block(ROOT / "params" / "detect.yaml", "detect"))
    assert cli.detect_config() == detector
    assert cli.detect_config(380.0) == dataclasses.replace(detector, cell_size=380.0)
    assert cli.build_parser().parse_args(["classify", "x", "--smear"]).cell_size is None
    with pytest.raises(FileNotFoundError, match="no such parameters file"):
        cli.study_params("detect", checkout=tmp_path)  # a checkout without params/


def test_a_run_reads_its_files_from_the_project_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    run = study.WbcRun.from_params("blood-cell-images", "mobilenet_v2", "imagenet-finetune")
    expected = _block(ROOT / "params" / "regimes" / "imagenet-finetune.yaml", "training")
    assert run.training.epochs == expected["epochs"]
    assert run.model_id == "blood-cell-images-mobilenet_v2-imagenet-finetune"
    assert "warmup_learning_rate" in run.table().index


def test_a_misspelt_or_missing_key_names_the_file():
    training = _block(ROOT / "params" / "regimes" / "imagenet.yaml", "training")
    with pytest.raises(ValueError, match=r"params/regimes/imagenet\.yaml.*unknown key\(s\) "
                                         r"\['epochz'\]"):
        study.RegimeSettings.from_params("imagenet", {**training, "epochz": 3})
    missing = {k: v for k, v in training.items() if k != "batch_size"}
    with pytest.raises(ValueError, match=r"missing key\(s\) \['batch_size'\]"):
        study.RegimeSettings.from_params("imagenet", missing)
    with pytest.raises(ValueError, match="regime must be one of"):
        study.WbcRun.from_params("blood-cell-images", "mobilenet_v2", "imagenett", {}, {}, {})


def test_a_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such parameters file"):
        params.read_block("wbc", path=tmp_path / "wbc.yaml")
