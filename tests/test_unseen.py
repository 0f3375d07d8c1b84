"""The lab unlike both sources (data/bionet): its rows, that it is never trained on, and that
none of its files is one of the sources'."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, built, require
from leuko.cells import unseen
from leuko.core.datasets import DIFFERENTIAL_CLASSES
from leuko.core.images import SUPPORTED_SUFFIXES, file_sha256
from leuko.thesis.study import Paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bionet_rows():
    return unseen.unseen_rows(require(DATA / "bionet"), list(DIFFERENTIAL_CLASSES))


def test_bionet_rows_are_its_class_folders_and_never_a_training_split(bionet_rows):
    root = DATA / "bionet"
    on_disk = Counter(folder.name for folder in root.iterdir() if folder.is_dir()
                      for f in folder.iterdir() if f.suffix.lower() in SUPPORTED_SUFFIXES)
    assert len(bionet_rows) == sum(on_disk.values()) == 358
    assert Counter(bionet_rows["label"]) == on_disk
    assert on_disk == {"EOSINOPHIL": 116, "LYMPHOCYTE": 52, "MONOCYTE": 5, "NEUTROPHIL": 185}
    assert set(bionet_rows["split"]) == {unseen.UNSEEN_SPLIT} != {"train"}
    assert set(bionet_rows["source"]) == {"bionet"}
    assert (bionet_rows["group"] == bionet_rows["sha256"]).all()  # every field its own cell
    assert bionet_rows["label"].map(lambda c: c in DIFFERENTIAL_CLASSES).all()
    assert bionet_rows["path"].map(lambda p: Path(p).parent.name).tolist() == \
        bionet_rows["label"].tolist()


def test_no_bionet_file_is_one_of_the_sources_files(bionet_rows):
    """Compared by content (sha256); only files of a bionet file's size need hashing."""
    sizes = {Path(p).stat().st_size for p in bionet_rows["path"]}
    same_size = [p for root in (require(DATA / "pbc"), require(DATA / "blood-cell-images"))
                 for p in root.rglob("*") if p.is_file() and p.stat().st_size in sizes]
    assert not set(bionet_rows["sha256"]) & {file_sha256(p) for p in same_size}
    assert bionet_rows["sha256"].is_unique


def test_a_folder_naming_no_class_stops_with_its_name(tmp_path):
    (tmp_path / "NEUTROPHIL").mkdir()
    (tmp_path / "smudge").mkdir()
    with pytest.raises(ValueError, match=r"\['smudge'\]"):
        unseen.unseen_rows(tmp_path, list(DIFFERENTIAL_CLASSES))
    with pytest.raises(FileNotFoundError, match="make data"):
        unseen.unseen_rows(tmp_path / "absent", list(DIFFERENTIAL_CLASSES))


def test_the_lab_is_named_after_its_folder():
    assert unseen.unseen_name() == "bionet"
    assert unseen.unseen_name({"unseen_path": "elsewhere/other-lab/"}) == "other-lab"


def test_the_built_cache_is_the_labs_rows_and_shares_no_file_with_the_sources_cache(
        bionet_rows):
    paths = Paths(ROOT)
    built(unseen.cache_path("bionet", paths))
    cache = unseen.load_unseen_caches(paths=paths)["bionet"]
    assert [str(ROOT / p) for p in cache.rows["path"]] == bionet_rows["path"].tolist()
    assert cache.rows["sha256"].tolist() == bionet_rows["sha256"].tolist()
    assert len(cache.images) == 358 and cache.images.dtype == np.uint8
    rows, images = cache.part("bionet", unseen.UNSEEN_SPLIT)
    assert len(rows) == 358 and np.array_equal(images, cache.images[rows["index"]])
    from leuko.cells.multisource import CACHE_NAME
    from leuko.thesis.study import read_manifest

    sources = read_manifest(built(paths.manifest(CACHE_NAME)))
    assert not set(cache.rows["sha256"]) & set(sources["sha256"])
    assert "bionet" not in set(sources["source"])
