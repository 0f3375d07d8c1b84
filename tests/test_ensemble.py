"""The cell models' ensembles: averaged outputs, their members, a saved model that loads."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from leuko.cells import ensemble, multisource


def _tiny(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x),
                       name="mobilenet_v2_classifier")  # the name every cell model has


def test_average_models_outputs_the_mean_of_its_members_and_saves(tmp_path):
    from leuko.thesis.study import load_model, save_model

    members = [_tiny(0), _tiny(1), _tiny(2)]
    x = np.random.default_rng(0).uniform(0, 1, (5, 4, 4, 3)).astype("float32")
    each = [m.predict(x, verbose=0) for m in members]
    model = ensemble.average_models(members)
    out = model.predict(x, verbose=0)
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out, np.mean(each, axis=0), rtol=1e-6)
    assert not np.allclose(each[0], each[1])  # the members differ, so the mean says something
    again = load_model(save_model(model, tmp_path / "ensemble.keras"))
    np.testing.assert_allclose(again.predict(x, verbose=0), out, rtol=1e-6)


def test_average_models_refuses_one_model_or_different_shapes():
    import keras

    with pytest.raises(ValueError, match="at least two"):
        ensemble.average_models([_tiny(0)])
    other = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="shape"):
        ensemble.average_models([_tiny(0), other])


def test_an_ensemble_averages_the_main_run_and_its_repeats():
    study = multisource.CellStudy.from_params()
    study = replace(study, repeat_seeds=(1, 2))
    assert ensemble.member_ids("both", study) == ["cells-both", "cells-both-seed1",
                                                  "cells-both-seed2"]
    assert multisource.ensemble_model_id("pbc") == "cells-pbc-ensemble"
    with pytest.raises(ValueError, match="repeats"):
        ensemble.member_ids("both", replace(study, repeat_seeds=()))
    with pytest.raises(ValueError, match="training"):
        ensemble.member_ids("everything", study)


def test_the_ensemble_stages_depend_on_every_run_they_average():
    """dvc.yaml cannot turn a parameter list into deps, so the ensemble-cells stage (the runs'
    models) and evaluate-cells-ensemble (the runs' probabilities) name the repeats' seeds
    themselves: every preset with ensembles must repeat with exactly those."""
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    deps = " ".join(stages["ensemble-cells"]["deps"])
    named = sorted(int(n) for n in re.findall(r"-seed(\d+)\.keras", deps))
    scored = " ".join(stages["evaluate-cells-ensemble"]["deps"])
    assert sorted(int(n) for n in re.findall(r"-seed(\d+)\.npz", scored)) == named
    assert "build/probabilities/cells-${item.training}.npz" in scored  # the main run
    files = [root / "params" / "cells.yaml",
             *sorted((root / "params" / "presets").glob("*/cells.yaml"))]
    with_ensembles = 0
    for file in files:
        study = multisource.CellStudy.from_params(yaml.safe_load(file.read_text())["cells"])
        if study.ensembles:
            with_ensembles += 1
            assert sorted(study.repeat_seeds) == named, file
    assert with_ensembles >= 2  # the study's own parameters and the default preset


def test_ensembles_need_repeats_and_their_trainings():
    study = multisource.CellStudy.from_params()
    with pytest.raises(ValueError, match="repeats"):
        replace(study, repeat_seeds=(), ensembles=("both",))
    with pytest.raises(ValueError, match="among"):
        replace(study, repeat_seeds=(1, 2), trainings=("pbc",), ensembles=("both",))
    assert study.model_ids()[-1] == "cells-both"  # the default: one draw, no ensemble
    spread = replace(study, repeat_seeds=(1, 2), ensembles=("both",))
    assert spread.model_ids()[-1] == "cells-both-ensemble"
