"""`leuko adapt`: the last layer retrained on a lab's labelled cells (real PBC cells)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import DATA, WBC_CLASSES, built, require
from leuko.cells import novelty, outputs
from leuko.core.images import file_sha256
from leuko.core.params import read_block
from leuko.thesis.study import load_model
from leuko.tool import adapt, classify, cli

ROOT = Path(__file__).resolve().parents[1]

SIZE = 32


def _pbc_cells(folder: Path, per_class: int, skip: int = 0, classes=WBC_CLASSES,
               names=None) -> list[Path]:
    """``per_class`` PBC cells of each class (after the first ``skip``) copied into
    ``folder/<name>/`` (``names``: the folder name of each class; default lower case)."""
    pbc = require(DATA / "pbc")
    copied = []
    for c in classes:
        target = folder / (names or {}).get(c, c.lower())
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted((pbc / c.lower()).iterdir())[skip:skip + per_class]:
            shutil.copyfile(f, target / f.name)
            copied.append(target / f.name)
    return copied


def _nested_model(folder: Path, name: str = "base", dropout: float = 0.0) -> Path:
    """A tiny classifier built as the study's are (Input -> Preprocess -> base model -> head
    model ending in a softmax Dense, ``dropout`` before it), on cells prepared as the study
    prepares them, with 8 views; its last layer deliberately wrong (every cell called a
    neutrophil)."""
    import keras

    from leuko.cells.preprocess import CellPreprocess
    from leuko.models.networks import Preprocess
    from leuko.thesis.study import save_model

    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(image)
    pooled = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(conv),
                                         keras.layers.GlobalAveragePooling2D()(image),
                                         keras.layers.GlobalMaxPooling2D()(conv)])
    base = keras.Model(image, pooled, name="base")
    features = keras.Input((35,))
    dense = keras.layers.Dense(4, activation="softmax", name="head_softmax")
    dropped = keras.layers.Dropout(dropout)(features) if dropout else features
    head = keras.Model(features, dense(dropped), name="head")
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    model = keras.Model(inputs, head(base(Preprocess("unit", name="preprocess")(inputs))))
    kernel, _ = dense.get_weights()
    dense.set_weights([0.1 * kernel, np.array([0, 0, 0, 3.0], np.float32)])
    path = save_model(model, folder / f"{name}.keras")
    classify.metadata_path(path).write_text(json.dumps({
        "model_id": "tiny-nested", "classes": WBC_CLASSES, "input_size": [SIZE, SIZE],
        "views": 8, "cell_preprocess": CellPreprocess().to_dict(), "temperature": 1.0,
        "abstain": {"val_coverage": 0.9, "threshold": 0.0}, "test": {"accuracy": 0.5}}))
    return path


def _accuracy(model: Path, cells: Path, out: Path) -> tuple[float, pd.DataFrame]:
    classify.run([cells], model, out, progress=False)
    table = pd.read_csv(out)
    truth = table["path"].map(lambda p: Path(p).parent.name.upper())
    return float((table["predicted"] == truth).mean()), table


# --- labels -----------------------------------------------------------------------------------


def test_labels_from_folders_aliases_and_a_csv(tmp_path):
    for folder, n in (("Neutrophils", 2), ("LY", 1), ("segmented_neutrophil", 1)):
        (tmp_path / "lab" / folder).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "lab" / folder / f"{folder}{i}.jpg").write_bytes(b"x")
    (tmp_path / "lab" / "notes.txt").write_text("not an image")
    cells = adapt.lab_cells([tmp_path / "lab"], WBC_CLASSES)
    assert sorted(cells.labels) == ["LYMPHOCYTE", "NEUTROPHIL", "NEUTROPHIL", "NEUTROPHIL"]
    assert cells.ignored_files == 1 and not cells.unlabelled

    labels = tmp_path / "labels.csv"
    pd.DataFrame({"path": ["LY0.jpg", str(tmp_path / "lab" / "Neutrophils" / "Neutrophils0.jpg")],
                  "label": ["eos", "monocytes"]}).to_csv(labels, index=False)
    cells = adapt.lab_cells([tmp_path / "lab"], WBC_CLASSES, labels)
    assert dict(zip(map(lambda p: Path(p).name, cells.paths), cells.labels, strict=True)) == {
        "LY0.jpg": "EOSINOPHIL", "Neutrophils0.jpg": "MONOCYTE"}
    assert len(cells.unlabelled) == 2  # counted, not silently dropped


def test_a_label_of_no_class_is_named(tmp_path):
    for folder in ("neutrophil", "smudge"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.png").write_bytes(b"x")
    with pytest.raises(adapt.AdaptError, match=r"'smudge' \(1 cells\)"):
        adapt.lab_cells([tmp_path], WBC_CLASSES)
    assert cli.main(["adapt", str(tmp_path), "-o", str(tmp_path / "x.keras"), "--model",
                     str(tmp_path / "missing.keras")]) == cli.EXIT_USAGE


def test_lab_set_hash_follows_contents_and_labels(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    h = adapt.lab_set_hash([a, b], ["NEUTROPHIL", "MONOCYTE"])
    assert h == adapt.lab_set_hash([b, a], ["MONOCYTE", "NEUTROPHIL"])
    assert h != adapt.lab_set_hash([a, b], ["MONOCYTE", "NEUTROPHIL"])


# --- the fit ----------------------------------------------------------------------------------


def test_fit_head_learns_and_keeps_the_classes_it_is_not_given():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 5)) * 3
    y = np.repeat(np.arange(3), 20)  # classes 0..2 only
    x = centres[y] + rng.normal(size=(60, 5))
    kernel0, bias0 = rng.normal(size=(5, 4)), np.array([0, 0, 0, 5.0])
    kernel, bias = adapt.fit_head(x, y, np.full(60, 1 / 60), kernel0, bias0, [0, 1, 2],
                                  l2=1e-4, keep_absent=0.0)
    assert np.array_equal(kernel[:, 3], kernel0[:, 3]) and bias[3] == bias0[3]
    before = adapt.softmax_probs(x, kernel0, bias0)
    after = adapt.softmax_probs(x, kernel, bias)
    assert (after.argmax(axis=1) == y).mean() > 0.9 > (before.argmax(axis=1) == y).mean()
    # by default each cell's probability of the class left out stays near the base's
    kept = adapt.softmax_probs(x, *adapt.fit_head(x, y, np.full(60, 1 / 60), kernel0, bias0,
                                                  [0, 1, 2], l2=1e-4))
    assert np.abs(kept[:, 3] - before[:, 3]).mean() < 0.1 < np.abs(after[:, 3]
                                                                   - before[:, 3]).mean()
    assert (kept[:, :3].argmax(axis=1) == y).mean() > 0.9  # the others still learnt
    assert adapt.n_folds([0] * 7 + [1] * 3) == 3 and adapt.n_folds([0, 1, 1]) == 2


def test_source_cells_from_the_study_cache_class_balanced(tmp_path):
    from leuko.thesis.study import Paths, save_features, write_manifest

    classifier = classify.Classifier(model=None, classes=WBC_CLASSES, image_size=(8, 8),
                                     metadata={"sources": ["pbc"]})
    missing = adapt.source_sample(classifier, [tmp_path], 5, seed=0)
    assert not missing.used and "cell cache is missing" in missing.note
    rows = pd.DataFrame({"path": [f"c{i:03d}.jpg" for i in range(60)],
                         "label": ["NEUTROPHIL"] * 30 + ["EOSINOPHIL"] * 20 + ["PLATELET"] * 10,
                         "split": ["train", "val"] * 30,
                         "source": ["pbc"] * 50 + ["blood-cell-images"] * 10,
                         "cell_found": True, "tight": False, "index": np.arange(60)})
    write_manifest(rows, Paths(root=tmp_path).manifest("cells"))
    images = np.arange(60, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8)
    save_features(tmp_path / "build" / "cells" / "cells.npz", images=images,
                  found=np.ones(60, bool), paths=rows["path"].to_numpy(dtype=str))
    sample = adapt.source_sample(classifier, [tmp_path], 5, seed=0)
    assert sample.used and sample.per_class == {"EOSINOPHIL": 5, "NEUTROPHIL": 5}
    picked = sample.images[:, 0, 0, 0]
    assert all(rows["split"][picked] == "train")  # image i is row i here
    assert list(sample.labels) == [0] * 5 + [3] * 5
    small = classify.Classifier(model=None, classes=WBC_CLASSES, image_size=(16, 16))
    assert "not used" in adapt.source_sample(small, [tmp_path], 5, seed=0).note


# --- the whole run, on real cells -----------------------------------------------------------


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A wrong tiny model adapted (through the CLI) to 10 PBC cells of each class but
    monocytes (its base first adapted to 20 cells of each class), plus a file that is no image; and held-out PBC cells of every class."""
    root = tmp_path_factory.mktemp("adapt")
    lab = root / "lab"
    _pbc_cells(lab, 10, classes=["EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL"],
               names={"LYMPHOCYTE": "ly"})  # an alias as a folder name
    (lab / "neutrophil" / "broken.jpg").write_bytes(b"not a jpeg")
    # a good base for monocytes: first adapt on all four classes, then break the others
    _pbc_cells(root / "all", 20, skip=40)
    base = _nested_model(root)
    assert cli.main(["adapt", str(root / "all"), "-o", str(root / "good.keras"), "--model",
                     str(base), "--no-progress", "--n-boot", "200", "--json"]) == 0
    good = json.loads((root / "good.json").read_text())
    held_out = root / "held-out"
    _pbc_cells(held_out, 10, skip=20)
    return {"root": root, "lab": lab, "base": base, "good": good, "held_out": held_out,
            "code": cli.main(["adapt", str(lab), "-o", str(root / "lab.keras"), "--model",
                              str(root / "good.keras"), "--no-progress", "--n-boot", "200",
                              "--seed", "3"])}


def test_adaptation_raises_the_cross_validated_score(adapted):
    scores = adapted["good"]["scores"]
    for metric in ("accuracy", "macro_f1"):
        before, after = scores["before"][metric], scores["after"][metric]
        assert after["value"] > before["value"] + 0.15
        assert after["low"] <= after["value"] <= after["high"]
    assert scores["before"]["accuracy"]["value"] == pytest.approx(0.25)  # all "neutrophil"
    assert scores["cross_validation"]["folds"] == 5


def test_the_metadata_records_base_lab_cells_and_calibration(adapted):
    root = adapted["root"]
    meta = json.loads((root / "lab.json").read_text())
    good = adapted["good"]
    assert meta["adapted_from"]["model"] == str(root / "good.keras")
    assert meta["adapted_from"]["model_id"] == good["model_id"] == "tiny-nested-adapted"
    assert meta["cells_per_class"] == {"EOSINOPHIL": 10, "LYMPHOCYTE": 10, "MONOCYTE": 0,
                                       "NEUTROPHIL": 10}
    cells = adapt.lab_cells([adapted["lab"]], WBC_CLASSES)
    readable = [(p, c) for p, c in zip(cells.paths, cells.labels, strict=True)
                if not p.endswith("broken.jpg")]
    assert meta["lab_set"]["sha256"] == adapt.lab_set_hash(*zip(*readable, strict=True))
    assert meta["lab_set"]["cells"] == 30
    assert set(meta["scores"]) == {"before", "after", "cross_validation"}
    assert meta["scores"]["cross_validation"]["folds"] == 5
    # recalibrated on the lab's (out-of-fold) cells: the base had T = 1, threshold 0
    assert good["temperature"] != 1.0 and good["abstain"]["threshold"] > 0
    assert good["abstain"]["val_coverage"] == 0.9
    assert meta["temperature"] == pytest.approx(
        classify.load_classifier(root / "lab.keras").temperature)
    assert meta["adaptation"]["source_cells"] is False  # no cell cache of 32 px cells
    assert meta["adaptation"]["classes_kept_from_base"] == ["MONOCYTE"]
    assert meta["classes"] == WBC_CLASSES and meta["views"] == 8
    assert "test" not in meta and good["adapted_from"]["test"] == {"accuracy": 0.5}
    # the base had no novelty file: neither has the adapted model, and its record says so
    assert meta["novelty"]["file"] is None and "good-novelty.npz" in meta["novelty"]["note"]
    assert not novelty.novelty_path(root / "lab.keras").exists()


def test_an_unreadable_file_is_reported_as_classify_reports_it(adapted):
    assert adapted["code"] == cli.EXIT_SOME_FAILED
    meta = json.loads((adapted["root"] / "lab.json").read_text())
    assert [Path(f["path"]).name for f in meta["failed"]] == ["broken.jpg"]
    failed = pd.read_csv(adapted["root"] / "lab-failed.csv")
    assert list(failed["path"].map(lambda p: Path(p).name)) == ["broken.jpg"]


def test_classify_reads_the_adapted_model_and_it_does_better_on_held_out_cells(adapted):
    root = adapted["root"]
    before, _ = _accuracy(adapted["base"], adapted["held_out"], root / "before.csv")
    after, table = _accuracy(root / "lab.keras", adapted["held_out"], root / "after.csv")
    assert after > before + 0.15
    assert cli.main(["classify", str(adapted["held_out"]), "--model", str(root / "lab.keras"),
                     "-o", str(root / "cli.csv"), "--no-progress"]) == 0
    # monocytes had no lab cells: still predicted, about as probable as the base made them
    _, base = _accuracy(root / "good.keras", adapted["held_out"], root / "good.csv")
    monocyte = table["path"].str.contains("/monocyte/")
    assert (table.loc[monocyte, "predicted"] == "MONOCYTE").sum() >= 1
    assert (table.loc[monocyte, "p_MONOCYTE"].mean()
            > 0.5 * base.loc[monocyte, "p_MONOCYTE"].mean())


def test_a_class_without_lab_cells_keeps_its_weights(adapted):
    from leuko.thesis.study import load_model

    root = adapted["root"]
    good = adapt.split_head(load_model(root / "good.keras")).weights
    lab = adapt.split_head(load_model(root / "lab.keras")).weights
    m = WBC_CLASSES.index("MONOCYTE")
    assert np.array_equal(good[0][:, m], lab[0][:, m]) and good[1][m] == lab[1][m]
    assert not np.array_equal(good[0], lab[0])


def test_an_averaged_ensemble_is_refused():
    import keras

    inputs = keras.Input((4,))
    a = keras.layers.Dense(2, activation="softmax")(inputs)
    b = keras.layers.Dense(2, activation="softmax")(inputs)
    model = keras.Model(inputs, keras.layers.Average(name="mean")([a, b]))
    with pytest.raises(outputs.HeadError, match="ensemble"):
        adapt.split_head(model)


def test_the_novelty_file_is_refitted_with_the_lab_cells(adapted, tmp_path):
    """With a novelty file beside the base model, `leuko adapt` writes one for the adapted
    model: the base's fit with the lab's cells as classes of their own, so the lab's cells lie
    nearer than the base's fit puts them."""
    root = adapted["root"]
    base = root / "good.keras"
    classifier = classify.load_classifier(base)
    settings = novelty.NoveltySettings.from_params(read_block("export",
                                                              path=ROOT / "params/export.yaml"))
    sources = _pbc_cells(tmp_path / "sources", 12, skip=100)
    images, _, _ = adapt.prepare_lab([str(p) for p in sources], classifier, progress=False)
    head = outputs.split_head(load_model(base))
    feats = outputs.mean_features(head, images, classifier.views, progress=False)
    labels = [p.parent.name.upper() for p in sources]
    novelty.fit(feats[::2], labels[::2], feats[1::2], settings, file_sha256(base),
                {"sources": ["pbc"]}).save(novelty.novelty_path(base))
    try:
        out = tmp_path / "mine.keras"
        assert cli.main(["adapt", str(adapted["lab"]), "-o", str(out), "--model", str(base),
                         "--no-progress", "--n-boot", "50"]) == cli.EXIT_SOME_FAILED
    finally:
        novelty.novelty_path(base).unlink()
    refit = novelty.Novelty.load(novelty.novelty_path(out), out)  # belongs to the new model
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["novelty"]["file"] == str(novelty.novelty_path(out))
    lab = f"lab {meta['lab_set']['sha256'][:12]}"
    assert {g for g in refit.groups if g.startswith(lab)} == {
        f"{lab}/{c}" for c in ("EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL")}
    assert refit.info["lab_cells"] == {lab: 30} and refit.settings == settings
    lab_images, _, _ = adapt.prepare_lab(adapt.lab_cells([adapted["lab"]], WBC_CLASSES).paths,
                                         classifier, progress=False)
    lab_feats = outputs.mean_features(head, lab_images, classifier.views, progress=False)
    base_fit = novelty.fit(feats[::2], labels[::2], feats[1::2], settings, "", {})
    assert np.median(refit.distance(lab_feats)) < np.median(base_fit.distance(lab_feats))


@pytest.mark.slow
def test_the_shipped_model_adapted_to_a_lab_no_longer_warns_on_its_cells(tmp_path, capsys):
    """The exported model warns on bionet's cells; adapted to a few labelled cells per class
    of bionet (every other of each class's first 16), it no longer warns on its other cells."""
    model = ROOT / "build/export/wbc.keras"
    if not novelty.novelty_path(model).is_file():
        pytest.skip(f"{novelty.novelty_path(model)} missing: run `dvc repro novelty`")
    bionet = require(DATA / "bionet")
    lab, held_out = tmp_path / "lab", tmp_path / "held-out"
    for folder in sorted(p for p in bionet.iterdir() if p.is_dir()):
        for i, f in enumerate(sorted(folder.iterdir())):
            target = (lab if i < 16 and i % 2 == 0 else held_out) / folder.name
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target / f.name)
    assert cli.main(["classify", str(held_out), "--model", str(model), "-o",
                     str(tmp_path / "before.csv"), "--no-progress"]) == 0
    assert "leuko adapt" in capsys.readouterr().out
    assert cli.main(["adapt", str(lab), "-o", str(tmp_path / "mine.keras"), "--model",
                     str(model), "--no-progress", "--n-boot", "50"]) == 0
    capsys.readouterr()
    assert cli.main(["classify", str(held_out), "--model", str(tmp_path / "mine.keras"), "-o",
                     str(tmp_path / "after.csv"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Warning:" not in printed and "not available" not in printed



# --- fine-tuning the top blocks instead (--finetune) ----------------------------------------


def _cell_cache(root: Path, per_class: int = 6) -> None:
    """A study cell cache (build/cells/) of real PBC training cells prepared at SIZE px."""
    from leuko.cells.preprocess import CellPreprocess, prepare_cell
    from leuko.core.images import load_rgb
    from leuko.thesis.study import Paths, save_features, write_manifest

    files = _pbc_cells(root / "source", per_class, skip=60)
    images = np.stack([prepare_cell(load_rgb(f), SIZE, CellPreprocess())[0] for f in files])
    rows = pd.DataFrame({"path": [str(f) for f in files],
                         "label": [f.parent.name.upper() for f in files], "split": "train",
                         "source": "pbc", "cell_found": True, "tight": False,
                         "index": np.arange(len(files))})
    write_manifest(rows, Paths(root=root).manifest("cells"))
    save_features(root / "build" / "cells" / "cells.npz", images=images,
                  found=np.ones(len(files), bool), paths=rows["path"].to_numpy(dtype=str))


def test_finetune_gives_the_same_model_whatever_ran_before_it(tmp_path):
    """The seed fixes the fine-tuned model, also when the process's random state differs
    before the call (a dropout layer draws its seed as the model is loaded)."""
    import keras

    base = _nested_model(tmp_path, dropout=0.5)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.arange(12) % 4
    none = adapt.SourceCells(None, None, False, "none")
    weights = []
    for before in (1, 2):
        keras.utils.set_random_seed(before)  # whatever ran before
        model = adapt.finetune_model(base, images, labels, none, 10, seed=0, progress=False)
        weights.append(model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))


def test_finetune_needs_the_study_cells_and_records_what_it_did(tmp_path):
    lab = tmp_path / "lab"
    _pbc_cells(lab, 4, classes=["EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL"])
    base = _nested_model(tmp_path)
    with pytest.raises(adapt.AdaptError, match="cell cache is missing"):
        adapt.adapt([lab], base, tmp_path / "x.keras", finetune_blocks=1, n_boot=50,
                    source_roots=[tmp_path], progress=False)
    _cell_cache(tmp_path)
    with pytest.raises(adapt.AdaptError, match="trains no layer of base"):
        adapt.adapt([lab], base, tmp_path / "x.keras", finetune_blocks=1, n_boot=50,
                    source_roots=[tmp_path], progress=False)
    # the tiny network is no MobileNetV2: its layers count in tenths, 10 = all
    result = adapt.adapt([lab], base, tmp_path / "tuned.keras", finetune_blocks=10,
                         n_boot=50, source_roots=[tmp_path], progress=False)
    meta = json.loads((tmp_path / "tuned.json").read_text())
    method = meta["adaptation"]
    assert method["blocks"] == 10 and method["method"].startswith("top 10 network blocks")
    assert method["source_cells"] and method["source_cells_per_class"] == {
        c: 6 for c in WBC_CLASSES}
    assert method["classes_from_source_cells_only"] == ["MONOCYTE"]
    assert method["classes_kept_from_base"] == []
    # the features moved: no distance is written, and the record says why
    assert meta["novelty"]["file"] is None and "--finetune" in meta["novelty"]["note"]
    assert meta["scores"]["cross_validation"]["folds"] == 4
    assert "(learnt from the source cells only): MONOCYTE" in adapt.format_adapted(result)
    # the written model is the fine-tuned one: its network's weights changed, not only the head
    before, after = (adapt.backbone(load_model(p)).get_weights()
                     for p in (base, tmp_path / "tuned.keras"))
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    assert classify.load_classifier(tmp_path / "tuned.keras").classes == WBC_CLASSES


@pytest.mark.slow
def test_finetuning_carries_the_pbc_model_to_blood_cell_images_where_a_last_layer_cannot(
        tmp_path):
    """The PBC model (exported to a scratch folder as `leuko export` exports) adapted to 10
    blood-cell-images training cells per class: fine-tuning its top two blocks
    (--finetune 2) scores blood-cell-images' TEST cells better than refitting its last layer,
    as benchmarks/cells/adapt_finetune.py measured over draws."""
    from leuko.tool.export import export_model

    built(ROOT / "build/models/cells-pbc.keras", "train-cells")
    built(ROOT / "build/cells/cells.npz", "cells")
    images = require(DATA / "blood-cell-images" / "images")
    model = tmp_path / "wbc.keras"
    export_model("wbc", {"model_id": "cells-pbc"}, out_dir=tmp_path)
    lab, held_out = tmp_path / "lab", tmp_path / "held-out"
    for c in WBC_CLASSES:
        for folder, files in ((lab, sorted((images / "TRAIN" / c).iterdir())[::200][:10]),
                              (held_out, sorted((images / "TEST" / c).iterdir())[::8])):
            (folder / c).mkdir(parents=True)
            for f in files:
                shutil.copyfile(f, folder / c / f.name)
    accuracy = {}
    for name, extra in (("last layer", []), ("fine-tuned", ["--finetune", "2"])):
        assert cli.main(["adapt", str(lab), "-o", str(tmp_path / f"{name}.keras"), "--model",
                         str(model), "--no-progress", "--n-boot", "50", *extra]) == 0
        accuracy[name], _ = _accuracy(tmp_path / f"{name}.keras", held_out,
                                      tmp_path / f"{name}.csv")
    assert accuracy["fine-tuned"] > accuracy["last layer"] + 0.05
