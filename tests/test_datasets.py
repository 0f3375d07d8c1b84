"""Dataset adapters on the real files, and their errors on wrong layouts."""

from __future__ import annotations

import shutil

import pytest

from leuko.core import datasets
from leuko.core.datasets import DatasetError


def test_blood_cell_images_counts_labels_and_groups(wbc_root, in_root):
    frame = datasets.blood_cell_images(wbc_root, progress=False).manifest
    assert list(frame.columns[:7]) == datasets.MANIFEST_COLUMNS
    counts = frame.groupby("split").size().to_dict()
    assert counts == {"train": 9957, "test": 2487, "test_simple": 71}
    simple = frame[frame.split == "test_simple"].groupby("label").size().to_dict()
    assert simple == {"EOSINOPHIL": 13, "LYMPHOCYTE": 6, "MONOCYTE": 4, "NEUTROPHIL": 48}
    # the source cells of TEST are exactly TEST_SIMPLE's 71 cells (copies share a group)
    test_cells = {g.split("/", 1)[1] for g in frame[frame.split == "test"].group}
    simple_cells = {g.split("/", 1)[1] for g in frame[frame.split == "test_simple"].group}
    assert test_cells == simple_cells and len(simple_cells) == 71
    assert frame.sha256.str.len().eq(64).all()
    assert (frame.height == 240).all() and (frame.width == 320).all()
    assert frame.path.str.startswith("data/blood-cell-images/images/").all()


def test_all_idb2_labels_from_file_name(allidb_root, in_root):
    frame = datasets.all_idb2(allidb_root, progress=False).manifest
    assert len(frame) == 260
    assert frame.groupby("label").size().to_dict() == {"ALL": 130, "HEM": 130}
    row = frame[frame.path.str.endswith("Im001_1.tif")].iloc[0]
    assert row.label == "ALL" and row.group == "Im001"
    assert frame[frame.path.str.endswith("Im131_0.tif")].iloc[0].label == "HEM"
    dup = frame[frame.path.str.contains("Im223_0|Im257_0")]
    assert dup.sha256.nunique() == 1  # the known byte-identical pair


def test_bccd_wbc_boxes_and_labels(bccd_root, wbc_root, in_root):
    frame = datasets.bccd(bccd_root, labels_csv=wbc_root / "labels.csv",
                          progress=False).manifest
    assert frame.group.nunique() >= 300  # smears with at least one WBC box
    assert (frame.xmax > frame.xmin).all() and (frame.ymax > frame.ymin).all()
    assert set(frame.split) <= {"train", "val", "test", ""}
    single = frame[frame.n_wbc == 1]
    assert set(single.label) <= {*datasets.WBC_CLASSES, "WBC"}
    assert (single.label != "WBC").mean() > 0.8  # most single-cell smears carry their class
    assert (frame[frame.n_wbc > 1].label == "WBC").all()


def test_missing_dataset_path_is_named(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        datasets.detect_layout(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="images/"):
        datasets.blood_cell_images(tmp_path)


def test_unknown_class_and_empty_class_folder(wbc_root, tmp_path):
    root = tmp_path / "wbc"
    for split in ("TRAIN", "TEST", "TEST_SIMPLE"):
        for label in datasets.WBC_CLASSES:
            folder = root / "images" / split / label
            folder.mkdir(parents=True)
            src = next((wbc_root / "images" / "TEST_SIMPLE" / label).iterdir())
            shutil.copy(src, folder / src.name)
    (root / "images" / "TRAIN" / "BASOPHIL").mkdir()
    with pytest.raises(DatasetError, match="BASOPHIL"):
        datasets.blood_cell_images(root, progress=False)
    (root / "images" / "TRAIN" / "BASOPHIL").rmdir()
    for f in (root / "images" / "TEST" / "MONOCYTE").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="MONOCYTE holds no images"):
        datasets.blood_cell_images(root, progress=False)


def test_allidb_unexpected_name(tmp_path, allidb_root):
    shutil.copy(allidb_root / "Im001_1.tif", tmp_path / "Im001_1.tif")
    shutil.copy(allidb_root / "Im001_1.tif", tmp_path / "cell.tif")
    with pytest.raises(DatasetError, match="cell.tif"):
        datasets.all_idb2(tmp_path, progress=False)
