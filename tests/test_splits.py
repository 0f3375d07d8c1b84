"""Splits never share a source cell, patient or byte-identical image; they are seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leuko.core import images, splits
from leuko.thesis import study


@pytest.fixture(scope="module")
def allidb_manifest(allidb_root):
    import os

    cwd = os.getcwd()
    os.chdir(Path(__file__).resolve().parents[1])
    try:
        manifests, _ = study.prepare("all-idb2", allidb_root, seed=0, progress=False, folds=5)
    finally:
        os.chdir(cwd)
    return manifests["all-idb2"]


def test_allidb_631_split_is_stratified_and_leak_free(allidb_manifest):
    frame = allidb_manifest
    sizes = frame.split.value_counts().to_dict()
    assert sizes == {"train": 156, "val": 78, "test": 26}
    for side in ("train", "val", "test"):
        labels = frame[frame.split == side].label.value_counts()
        assert labels["ALL"] == labels["HEM"]
    assert splits.shared_between(frame, "sha256") == set()
    assert splits.shared_between(frame, "group") == set()
    pair = frame[frame.path.str.contains("Im223_0|Im257_0")]
    assert pair.split.nunique() == 1


def test_kfold_keeps_duplicates_together(allidb_manifest):
    frame = allidb_manifest
    assert sorted(frame.fold.unique()) == [0, 1, 2, 3, 4]
    assert frame[frame.path.str.contains("Im223_0|Im257_0")].fold.nunique() == 1
    assert splits.shared_between(frame, "sha256", split="fold") == set()


def test_split_is_seeded(allidb_root, in_root):
    a, _ = study.prepare("all-idb2", allidb_root, seed=1, progress=False)
    b, _ = study.prepare("all-idb2", allidb_root, seed=1, progress=False)
    c, _ = study.prepare("all-idb2", allidb_root, seed=2, progress=False)
    assert a["all-idb2"].split.tolist() == b["all-idb2"].split.tolist()
    assert a["all-idb2"].split.tolist() != c["all-idb2"].split.tolist()


def test_leak_groups_join_shared_group_or_hash():
    frame = pd.DataFrame({"group": ["a", "a", "b", "c", "d"],
                          "sha256": ["1", "2", "2", "3", "4"]})
    ids = splits.leak_groups(frame)
    assert ids[0] == ids[1] == ids[2]  # a~a by group, a~b by hash
    assert len({ids[0], ids[3], ids[4]}) == 3


def test_wbc_official_split_has_no_shared_cells_and_pooled_does(wbc_root, in_root):
    manifests, bad = study.prepare("blood-cell-images", wbc_root, seed=0, progress=False)
    official = manifests["blood-cell-images"]
    pooled = manifests["blood-cell-images-pooled"]
    assert bad.empty
    assert splits.shared_between(official, "group") == set()
    assert (official.split == "test").sum() == 2487
    assert (official.split == "test_simple").sum() == 71
    # groups carry the split's name, so the group check above cannot see TRAIN/TEST sharing:
    # the content hash can
    seen = official[official.split.isin(["train", "val"])].sha256
    held_out = official[official.split.isin(["test", "test_simple"])].sha256
    assert not set(seen) & set(held_out), "a training image is byte-identical to a test image"
    val_cells = set(official[official.split == "val"].group)
    assert 0 < len(val_cells) and not val_cells & set(official[official.split == "train"].group)
    # the leaky variant puts copies of one cell on both sides of train/test
    assert len(splits.shared_between(pooled[pooled.split.isin(["train", "test"])], "group")) > 50


def test_balanced_subsample_covers_every_group_first():
    frame = pd.DataFrame({"label": ["x"] * 30 + ["y"] * 30,
                          "group": [f"g{i % 10}" for i in range(30)] + [f"h{i % 3}"
                                                                      for i in range(30)]})
    sample = splits.balanced_subsample(frame, 12, seed=0)
    x = sample[sample.label == "x"]
    assert len(x) == 12 and x.group.nunique() == 10
    y = sample[sample.label == "y"]
    assert np.bincount(y.group.str[1].astype(int)).tolist() == [4, 4, 4]


def test_bad_ratios_are_named():
    frame = pd.DataFrame({"label": ["a", "b"] * 10, "group": range(20), "sha256": range(20)})
    with pytest.raises(ValueError, match="summing to 1"):
        splits.split_train_val_test(frame, (0.5, 0.3, 0.1))
    with pytest.raises(ValueError, match=r"multiples of 0\.1.*got 0\.65"):
        splits.split_train_val_test(frame, (0.65, 0.25, 0.1))


# --- near duplicates: copies a content hash cannot see -------------------------------------------


def test_near_duplicates_find_a_flipped_reencoded_copy_across_sides():
    rng = np.random.default_rng(0)
    smooth = [np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((12, 12, 1))).astype(np.uint8)
              for _ in range(12)]
    copy = np.clip(smooth[0][:, ::-1].astype(int) + rng.normal(0, 4, smooth[0].shape), 0, 255)
    pictures = [*smooth, np.rot90(copy.astype(np.uint8))]  # row 12: row 0 mirrored and turned
    frame = pd.DataFrame({"split": ["train"] * 6 + ["test"] * 6 + ["test"]})
    hashes = np.stack([images.dihedral_dhashes(p) for p in pictures])
    found = splits.near_duplicates(frame, hashes)
    assert found[["a", "b"]].values.tolist() == [[0, 12]]
    assert found["distance"].iloc[0] < splits.NEAR_DUPLICATE_DISTANCE
    # same side: not a leak; only the image's own fingerprint (no variants): not found
    assert splits.near_duplicates(frame.assign(split="train"), hashes).empty
    assert splits.near_duplicates(frame, hashes[:, :1]).empty
    assert splits.near_duplicates(frame, hashes, between=["train"]).empty
    groups = splits.near_duplicate_groups(hashes)
    assert groups[0] == groups[12] and len(set(groups)) == 12
    with pytest.raises(ValueError, match="one row per frame row"):
        splits.near_duplicates(frame, hashes[:3])


@pytest.fixture(scope="module")
def allidb_hashes(allidb_manifest) -> np.ndarray:
    root = Path(__file__).resolve().parents[1]
    return np.stack([images.dihedral_dhashes(images.load_rgb(root / p))
                     for p in allidb_manifest.path])


def test_prepared_split_has_no_near_duplicates_across_sides(allidb_manifest, allidb_hashes):
    assert splits.near_duplicates(allidb_manifest, allidb_hashes).empty


def test_near_duplicate_groups_keep_copies_on_one_side(allidb_manifest, allidb_hashes):
    """What prepare does: near duplicates join the leak groups before the split."""
    frame = allidb_manifest.assign(near=splits.near_duplicate_groups(allidb_hashes))
    assert frame.near.nunique() < len(frame)  # ALL-IDB2 has shifted copies
    side = splits.split_train_val_test(frame, seed=0, keys=("group", "sha256", "near"))
    assert splits.near_duplicates(frame.assign(split=side), allidb_hashes).empty
