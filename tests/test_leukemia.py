"""The leukemia study: leak-free splits on real ALL-IDB2 and on a generated C-NMC 2019 tree,
the seeded augmentation stage, and its notebooks end to end (papermill, tiny slice)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leuko.core import datasets, splits
from leuko.leukemia import evaluation as leukemia_evaluation
from leuko.leukemia import recipe as leukemia
from leuko.thesis import study

ROOT = Path(__file__).resolve().parents[1]
CROPS = {"all-idb2": 0.1, "cnmc": 0.2}  # C-NMC: a fraction, the generated images are tiny


# --- real ALL-IDB2 ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idb2_study(allidb_root, tmp_path_factory) -> leukemia.LeukemiaPaths:
    """ALL-IDB2 prepared (6:3:1 and 3 folds) into a scratch project root."""
    paths = leukemia.LeukemiaPaths(tmp_path_factory.mktemp("idb2"))
    manifests, bad = study.prepare("all-idb2", allidb_root, seed=0, folds=3, progress=False)
    study.write_prepared(manifests, bad, paths)
    return paths


def _assert_leak_free(frame: pd.DataFrame) -> None:
    assert splits.shared_between(frame, "group") == set()
    assert splits.shared_between(frame, "sha256") == set()


def test_allidb2_runs_share_no_cell_or_duplicate(idb2_study):
    manifest = study.read_manifest(idb2_study.manifest("all-idb2"))
    runs = leukemia.run_splits(manifest)
    assert list(runs) == ["main", "fold0", "fold1", "fold2"]
    for run, frame in runs.items():
        _assert_leak_free(frame)
        pair = frame[frame["path"].str.contains("Im223_0|Im257_0")]
        assert len(pair) == 2 and pair["split"].nunique() == 1, run
        for side, rows in frame.groupby("split"):  # stratified: as many blasts as healthy
            counts = rows["label"].value_counts()
            assert abs(counts["ALL"] - counts["HEM"]) <= 1, (run, side)
    main = runs["main"]["split"].value_counts(normalize=True)
    assert main.to_dict() == pytest.approx({"train": 0.6, "val": 0.3, "test": 0.1}, abs=0.02)
    # every cell is the test set of exactly one fold
    tests = pd.concat(f[f["split"] == "test"] for r, f in runs.items() if r != "main")
    assert sorted(tests["path"]) == sorted(manifest["path"])


def _augmented(paths, seed, n=3, dataset="all-idb2", data_path=None):
    data_path = data_path or ROOT / "data" / "all-idb2"
    return leukemia.augment_stage(dataset, data_path, n, 2, seed, CROPS, size=32, paths=paths,
                                  progress=False)


def test_augmentation_is_seeded_balanced_and_never_touches_test(idb2_study, tmp_path):
    first = _augmented(idb2_study, seed=0)
    again_paths = leukemia.LeukemiaPaths(tmp_path)
    (tmp_path / "build" / "manifests").mkdir(parents=True)
    study.write_manifest(study.read_manifest(idb2_study.manifest("all-idb2")),
                         again_paths.manifest("all-idb2"))
    again = _augmented(again_paths, seed=0)
    other = _augmented(again_paths, seed=1)
    assert first["sha256"].tolist() == again["sha256"].tolist()
    assert first["sha256"].tolist() != other["sha256"].tolist()
    counts = first.groupby(["run", "split", "label"]).size().reset_index(name="n")
    assert len(counts) == 4 * 2 * 2  # main + 3 folds, train + val, ALL + HEM
    assert set(counts.loc[counts["split"] == "train", "n"]) == {3}
    assert set(counts.loc[counts["split"] == "val", "n"]) == {2}
    manifest = study.read_manifest(idb2_study.manifest("all-idb2"))
    for run, frame in leukemia.run_splits(manifest).items():
        rows = first[first["run"] == run]
        test = set(frame.loc[frame["split"] == "test", "path"])
        assert not test & set(rows["source_path"]), run
        assert set(frame.set_index("path").loc[rows["source_path"], "split"]) <= {"train", "val"}
    assert all(Path(p).is_file() for p in first["path"])
    with Image.open(first["path"].iloc[0]) as image:
        assert image.size == (32, 32)
    info = leukemia.read_augment_info("all-idb2", idb2_study)
    assert info["layout"] == "all-idb2" and info["crop"] == 0.1


# --- a generated C-NMC 2019 tree ----------------------------------------------------------------


def _bmp(path: Path, rng: np.random.Generator, size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture()
def cnmc_tree(tmp_path) -> Path:
    """C-NMC 2019's published layout, tiny random BMPs: 12 ALL and 12 healthy patients over 3
    folds, 3 cells each; one healthy image duplicated byte for byte in another patient; and a
    labelled preliminary test phase of 4 further patients."""
    root = tmp_path / "C-NMC_Leukemia"
    rng = np.random.default_rng(0)
    for i in range(24):
        sub = "all" if i % 2 == 0 else "hem"
        patient = str(i + 1) if sub == "all" else f"H{i + 1}"
        for cell in range(3):
            _bmp(root / "training_data" / f"fold_{i % 3}" / sub /
                 f"UID_{patient}_{cell + 1}_{cell + 1}_{sub}.bmp", rng)
    hem = root / "training_data" / "fold_1" / "hem"
    (hem / "UID_H4_9_9_hem.bmp").write_bytes((hem / "UID_H2_1_1_hem.bmp").read_bytes())
    prelim = root / "validation_data" / "C-NMC_test_prelim_phase_data"
    records = []
    for n, (patient, sub) in enumerate([("71", "all"), ("72", "all"), ("H73", "hem"),
                                        ("H74", "hem")], start=1):
        _bmp(prelim / f"{n}.bmp", rng)
        records.append({"Patient_ID": f"UID_{patient}_1_1_{sub}.bmp", "new_names": f"{n}.bmp",
                        "labels": int(sub == "all")})
    pd.DataFrame(records).to_csv(
        root / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv", index=False)
    return root


def test_cnmc_patients_are_parsed_and_never_split(cnmc_tree):
    assert datasets.detect_layout(cnmc_tree) == "cnmc"
    manifests, _ = study.prepare("cnmc", cnmc_tree, seed=0, progress=False)
    frame = manifests["cnmc"]
    names = frame["path"].map(lambda p: Path(p).name)
    training = ~frame["split"].eq("prelim")
    assert (frame.loc[training, "group"] == names[training].str.split("_").str[1]).all()
    assert set(frame.loc[frame["label"] == "HEM", "group"].str[0]) == {"H"}
    assert not frame.loc[frame["label"] == "ALL", "group"].str.startswith("H").any()
    assert (frame["split"] == "prelim").sum() == 4
    assert set(frame.loc[frame["split"] == "prelim", "group"]) == {"71", "72", "H73", "H74"}
    assert set(frame.loc[training, "split"]) == {"train", "val", "test"}
    _assert_leak_free(frame)
    duplicates = frame[frame["path"].str.contains("UID_H4_9_9|UID_H2_1_1")]
    assert duplicates["sha256"].nunique() == 1 and duplicates["split"].nunique() == 1


def test_cnmc_folds_and_augmentation_follow_patients(cnmc_tree, tmp_path):
    paths = leukemia.LeukemiaPaths(tmp_path / "project")
    manifests, bad = study.prepare("cnmc", cnmc_tree, seed=0, folds=3, progress=False)
    study.write_prepared(manifests, bad, paths)
    manifest = study.read_manifest(paths.manifest("cnmc"))
    runs = leukemia.run_splits(manifest)
    assert list(runs) == ["main", "fold0", "fold1", "fold2"]
    for run, frame in runs.items():
        _assert_leak_free(frame)
        assert ("prelim" in set(frame["split"])) == (run == "main")  # prelim: never in a fold
    augmented = _augmented(paths, seed=0, dataset="cnmc", data_path=cnmc_tree)
    assert leukemia.read_augment_info("cnmc", paths)["crop"] == 0.2
    prelim = set(manifest.loc[manifest["split"] == "prelim", "path"])
    assert not prelim & set(augmented["source_path"])


def test_cnmc_missing_fold_is_named(cnmc_tree):
    import shutil

    shutil.rmtree(cnmc_tree / "training_data" / "fold_2")
    with pytest.raises(datasets.DatasetError, match="fold_2"):
        study.prepare("cnmc", cnmc_tree, seed=0, progress=False)


# --- helpers ------------------------------------------------------------------------------------


def test_resolve_crop_by_layout(cnmc_tree, allidb_root):
    assert leukemia.resolve_crop(allidb_root, {"all-idb2": 0.1, "cnmc": 100}) == ("all-idb2", 0.1)
    assert leukemia.resolve_crop(cnmc_tree, {"all-idb2": 0.1, "cnmc": 100.0}) == ("cnmc", 100)
    with pytest.raises(ValueError, match="no crop given for layout 'cnmc'"):
        leukemia.resolve_crop(cnmc_tree, {"all-idb2": 0.1})


def test_errors_are_the_off_diagonal_cells_most_confident_first():
    predictions = pd.DataFrame({
        "path": ["a", "b", "c", "d", "e"], "actual": ["HEM", "HEM", "ALL", "ALL", "HEM"],
        "predicted": ["ALL", "ALL", "HEM", "ALL", "HEM"],
        "p_ALL": [0.6, 0.9, 0.2, 0.8, 0.1], "p_HEM": [0.4, 0.1, 0.8, 0.2, 0.9]})
    assert leukemia_evaluation.errors(predictions, "false-positives")["path"].tolist() == ["b", "a"]
    assert leukemia_evaluation.errors(predictions, "false-negatives")["path"].tolist() == ["c"]
    with pytest.raises(ValueError, match="kind must be one of"):
        leukemia_evaluation.errors(predictions, "wrong")


def test_kfold_results_pool_the_folds():
    classes = ["ALL", "HEM"]
    predictions = pd.DataFrame({
        "fold": ["fold0"] * 4 + ["fold1"] * 4, "group": list("abcdefgh"),
        "actual": ["ALL", "ALL", "HEM", "HEM"] * 2,
        "predicted": ["ALL", "ALL", "HEM", "HEM", "ALL", "HEM", "HEM", "HEM"]})
    result = leukemia_evaluation.kfold_results(predictions, classes, n_boot=50, seed=0)
    assert result["folds"] == 2
    assert result["summary"]["accuracy"]["per_fold"] == [1.0, 0.75]
    assert result["summary"]["accuracy"]["mean"] == pytest.approx(0.875)
    assert result["pooled"]["confusion_matrix"] == [[3, 1], [0, 4]]
    assert "accuracy" in result["pooled"]["intervals"]


# --- the notebooks, end to end ------------------------------------------------------------------


@pytest.mark.slow
def test_leukemia_notebooks_end_to_end(tmp_path, allidb_root):
    import papermill

    def run(name: str, **params) -> None:
        suffix = f"-seed{params['repeat_seed']}" if "repeat_seed" in params else ""
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"),
                                   str(tmp_path / "executed" / f"{name}{suffix}.ipynb"),
                                   parameters=params, kernel_name="leuko", cwd=str(tmp_path),
                                   progress_bar=False)

    (tmp_path / "executed").mkdir()
    run("01-prepare", dataset="all-idb2", data_path=str(allidb_root), seed=0,
        split_ratios=[0.6, 0.3, 0.1], folds=0)
    run("06-augment", dataset="all-idb2", data_path=str(allidb_root), train_per_class=8,
        val_per_class=4, size=32)
    block = {"solutions": {"a": {
        "network": "leukemia_cnn", "image_size": 32, "epochs": 1, "extra_epochs": 1,
        "batch_size": 16, "learning_rate": 0.0001, "patience": 1, "reduce_lr_patience": 1,
        "head_units": 32, "head_layers": 2, "head_dropout": 0.0, "head_l1": 0.0007,
        "head_l2": 0.0007, "bn_momentum": 0.9, "eager": False}}}
    run("07-train-leukemia", solution="a", leukemia=block)
    run("08-evaluate-leukemia", network="leukemia_cnn", n_boot=50)
    # a repeat names its solution by network and trains with its own seed, the data fixed
    run("07-train-leukemia", network="leukemia_cnn", repeat_seed=1, leukemia=block)
    run("08-evaluate-leukemia", network="leukemia_cnn", repeat_seed=1, n_boot=50)

    paths = leukemia.LeukemiaPaths(tmp_path)
    the_id = "all-idb2-leukemia_cnn-scratch"
    metrics = json.loads(paths.metrics(the_id).read_text())
    assert {"model", "dataset", "network", "regime", "classes", "splits",
            "training"} <= set(metrics)
    assert (metrics["model"], metrics["network"], metrics["regime"]) == (
        the_id, "leukemia_cnn", "scratch")
    assert metrics["classes"] == ["ALL", "HEM"] and list(metrics["splits"]) == ["test"]
    test = metrics["splits"]["test"]
    assert test["n"] == 26 and len(test["confusion_matrix"]) == 2
    assert {"accuracy", "macro_f1", "weighted_f1", "per_class", "macro_avg", "weighted_avg",
            "intervals"} <= set(test)
    assert test["intervals"]["accuracy"]["low"] <= test["accuracy"] \
        <= test["intervals"]["accuracy"]["high"]
    from leuko.thesis.evaluation import TRAINING_KEYS

    assert set(metrics["training"]) == set(TRAINING_KEYS)
    assert metrics["training"]["epochs_run"] == 2  # 1 with early stopping + 1 without
    assert metrics["training"]["epochs_per_phase"] == {"early stopping": 1,
                                                       "no early stopping": 1}
    assert metrics["training"]["saved_epoch"] in (1, 2)
    assert metrics["training"]["saved_by"].startswith("best val_accuracy")
    # the machine that trained and the one that evaluated (here the same)
    assert metrics["machine"]["cpu"] == metrics["training"]["machine"]["cpu"]
    # ALL-IDB2's default test split: 26 images of 25 cells (Im138_0 / Im146_0, one cell
    # shifted), so its interval is the bootstrap over the 25 cells, with no exact interval
    assert test["n_cells"] == 25 and "exact_interval" not in test
    for kind in leukemia.GALLERY_KINDS:
        assert paths.gallery(the_id, kind).is_file()
    assert paths.augment_figure("all-idb2").is_file()
    steps = pd.read_csv(paths.live(the_id) / "plots" / "metrics" / "train" / "accuracy.tsv",
                        sep="\t")["step"].tolist()
    assert steps == [0, 1]  # both phases' curves in one DVCLive folder
    repeat = json.loads(paths.metrics(f"{the_id}-seed1").read_text())
    assert (metrics["training_seed"], repeat["training_seed"]) == (0, 1)
    assert repeat["solution"] == "a" and repeat["splits"]["test"]["n"] == 26
    main_p = pd.read_csv(paths.predictions(the_id))["p_ALL"]
    repeat_p = pd.read_csv(paths.predictions(f"{the_id}-seed1"))["p_ALL"]
    assert not np.allclose(main_p, repeat_p)  # another draw, not a copy
    assert not paths.gallery(f"{the_id}-seed1", "false-positives").exists()
    from leuko.reporting.report import leukemia_section_items, load_results, results_table

    table = results_table(load_results(tmp_path / "reports" / "metrics"))
    assert sorted(table["model"]) == [the_id, f"{the_id}-seed1"]
    items = leukemia_section_items(load_results(tmp_path / "reports" / "metrics"), paths)
    assert sum(isinstance(i, pd.DataFrame) for i in items) == 1  # the repeat: one line
    from IPython.display import Markdown

    assert any(isinstance(i, Markdown) and "**Repeats**" in i.data and "seed 1: test" in i.data
               for i in items)
    executed = (tmp_path / "executed" / "08-evaluate-leukemia.ipynb").read_text()
    assert executed.count('"image/png"') >= 3  # confusion matrix and the two galleries


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "params" / "presets").iterdir()))
def test_every_preset_names_its_solutions_and_repeats_fully(preset):
    import yaml

    block = yaml.safe_load((ROOT / "params" / "presets" / preset / "leukemia.yaml").read_text())[
        "leukemia"]
    configs = {key: leukemia.Solution.from_params(key, block) for key in block["solutions"]}
    for network in block["repeats"]["networks"]:  # each repeat finds its one solution
        assert configs[leukemia.solution_of(network, block)].network == network
    assert all(isinstance(s, int) for s in block["repeats"]["seeds"])


def test_a_misspelt_solution_key_or_an_unknown_network_is_named():
    block = {"solutions": {"a": {"network": "leukemia_cnn", "epoch": 1}}}
    with pytest.raises(ValueError, match="leukemia.solutions.a"):
        leukemia.Solution.from_params("a", block)
    with pytest.raises(ValueError, match="no solution 'c'"):
        leukemia.Solution.from_params("c", block)
    with pytest.raises(ValueError, match="0 solutions train 'resnet50'"):
        leukemia.solution_of("resnet50", block)
