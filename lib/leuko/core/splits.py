"""Seeded, stratified splits that never let a patient, a source cell or a duplicate image
straddle two sides.

Rows are first joined into *leak groups*: connected components of rows that share a ``group``
(patient or source cell) or a ``sha256`` (byte-identical file). Whole leak groups are then
assigned to splits with scikit-learn's ``StratifiedGroupKFold``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold


def _components(n: int, links: Iterable[tuple[int, int]]) -> np.ndarray:
    """Component id (0, 1, ...) per item 0..n-1 of the graph with edges ``links``."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in links:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[ra] = rb
    roots = np.array([find(i) for i in range(n)])
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def leak_groups(frame: pd.DataFrame, keys: Sequence[str] = ("group", "sha256")) -> np.ndarray:
    """Component id per row: rows sharing a value in any of ``keys`` get the same id."""
    links = []
    for key in keys:
        if key not in frame.columns:
            continue
        first: dict = {}
        for i, value in enumerate(frame[key].to_numpy()):
            if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
                continue
            if value in first:
                links.append((i, first[value]))
            else:
                first[value] = i
    return _components(len(frame), links)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1 "
                         f"(train, val, test), got {ratios}")
    return ratios


def split_train_val_test(frame: pd.DataFrame, ratios: Sequence[float] = (0.6, 0.3, 0.1),
                         seed: int = 0, label: str = "label",
                         keys: Sequence[str] = ("group", "sha256")) -> pd.Series:
    """Assign 'train' / 'val' / 'test' per row, stratified by ``label``, grouped by ``keys``.

    The data is cut into 10 stratified group folds; each fold goes whole to one side, so every
    ratio must be a multiple of 0.1 (6:3:1 by default); any other ratio is a ValueError naming
    it, never rounded.
    """
    ratios = _check_ratios(ratios)
    tenths = [round(r * 10) for r in ratios]
    off = [r for r, t in zip(ratios, tenths, strict=True) if not np.isclose(r * 10, t)]
    if off:
        raise ValueError(f"split ratios must be multiples of 0.1 (whole tenths of the data go "
                         f"to each side), got {off[0]} in {ratios}")
    groups = leak_groups(frame, keys)
    n_groups = len(np.unique(groups))
    if n_groups < 10:
        raise ValueError(f"need at least 10 independent groups to split, found {n_groups}")
    folds = np.empty(len(frame), dtype=int)
    cv = StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=seed)
    for fold, (_, idx) in enumerate(cv.split(np.zeros(len(frame)), frame[label], groups)):
        folds[idx] = fold
    order = np.random.default_rng(seed).permutation(10)
    side = np.repeat(["train", "val", "test"], tenths)
    fold_side = dict(zip(order, side, strict=True))
    return pd.Series([fold_side[f] for f in folds], index=frame.index, name="split")


def split_off_validation(frame: pd.DataFrame, fraction: float = 0.1, seed: int = 0,
                         label: str = "label", keys: Sequence[str] = ("group", "sha256")
                         ) -> pd.Series:
    """Mark about ``fraction`` of the rows 'val' (whole groups, stratified), the rest 'train'."""
    if not 0 < fraction < 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5), got {fraction}")
    n_splits = max(2, round(1 / fraction))
    groups = leak_groups(frame, keys)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val_idx = next(iter(cv.split(np.zeros(len(frame)), frame[label], groups)))
    result = pd.Series("train", index=frame.index, name="split")
    result.iloc[val_idx] = "val"
    return result


def kfold(frame: pd.DataFrame, k: int, seed: int = 0, label: str = "label",
          keys: Sequence[str] = ("group", "sha256")) -> pd.Series:
    """Fold number 0..k-1 per row, stratified by ``label`` and grouped by ``keys``."""
    if k < 2:
        raise ValueError(f"folds must be >= 2, got {k}")
    groups = leak_groups(frame, keys)
    folds = np.empty(len(frame), dtype=int)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, idx) in enumerate(cv.split(np.zeros(len(frame)), frame[label], groups)):
        folds[idx] = fold
    return pd.Series(folds, index=frame.index, name="fold")


def pooled_split(frame: pd.DataFrame, test_fraction: float, seed: int = 0,
                 label: str = "label") -> pd.Series:
    """The leaky split: pool all rows and split at random, ignoring groups (stratified only).

    Augmented copies of one cell land on both sides; this reproduces how the thesis most likely
    split the data, to measure how much such a split inflates accuracy.
    """
    rng = np.random.default_rng(seed)
    result = pd.Series("train", index=frame.index, name="split")
    for _, rows in frame.groupby(label).groups.items():
        rows = np.array(rows)
        chosen = rng.choice(rows, size=round(len(rows) * test_fraction), replace=False)
        result.loc[chosen] = "test"
    return result


def shared_between(frame: pd.DataFrame, key: str, split: str = "split") -> set:
    """Values of ``key`` that occur in more than one split (empty for a leak-free split)."""
    per_value = frame.groupby(key)[split].nunique()
    return set(per_value[per_value > 1].index)


NEAR_DUPLICATE_DISTANCE = 0.15
"""Default fraction of fingerprint bits (:func:`leuko.core.images.dihedral_dhashes`) within which two
images are near duplicates: ALL-IDB2's shifted copies of one cell (Im222_0 / Im256_0,
Im171_0 / Im211_0, ...) differ in 0.08-0.16 of their bits, unrelated cells in 0.44 (median)."""


def near_duplicates(frame: pd.DataFrame, hashes, max_distance: float = NEAR_DUPLICATE_DISTANCE,
                    split: str = "split", between: Sequence[str] | None = None
                    ) -> pd.DataFrame:
    """Pairs of rows on different sides of a split whose images look alike: a check for leaks
    that hashing the bytes (``sha256``) cannot see (a re-encoded, resized, turned or flipped
    copy of one image).

    ``hashes`` holds per row the fingerprint of its image and, optionally, of its variants:
    uint64 of shape (n,), (n, k) or (n, k, words), variant 0 the image itself
    (:func:`leuko.core.images.dihedral_dhashes` gives k = 8 variants of 4 words). Two rows are near
    duplicates when the image of one differs from the other or from any of its variants in at
    most ``max_distance`` of the fingerprint's bits (a fraction; unrelated images differ in
    about half). ``between`` limits the check to rows of those splits (None: every split).
    Returns one row per pair: ``a``, ``b`` (index labels of ``frame``), ``split_a``,
    ``split_b``, ``distance`` (the fraction of bits); empty when no near duplicate straddles
    two sides.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    h = h.reshape(len(h), *(1,) * (3 - h.ndim), *h.shape[1:]) if 1 <= h.ndim < 3 else h
    if h.ndim != 3 or len(h) != len(frame):
        raise ValueError(f"hashes must have one row per frame row ({len(frame)}), got shape "
                         f"{np.shape(hashes)}")
    bits = 64 * h.shape[2]
    sides = frame[split].astype(str).to_numpy()
    keep = np.ones(len(frame), bool) if between is None else np.isin(sides, list(between))
    rows = np.flatnonzero(keep)
    pairs = []
    for k, i in enumerate(rows[:-1]):
        others = rows[k + 1:]
        others = others[sides[others] != sides[i]]
        if not len(others):
            continue
        # i's image against j's variants, and j's image against i's
        forward = np.bitwise_count(h[others] ^ h[i, 0]).sum(axis=2).min(axis=1)
        backward = np.bitwise_count(h[i][None] ^ h[others, :1]).sum(axis=2).min(axis=1)
        distance = np.minimum(forward, backward) / bits
        for j, d in zip(others[distance <= max_distance], distance[distance <= max_distance],
                        strict=True):
            pairs.append((frame.index[i], frame.index[j], sides[i], sides[j], float(d)))
    return pd.DataFrame(pairs, columns=["a", "b", "split_a", "split_b", "distance"]).sort_values(
        ["distance", "a", "b"], ignore_index=True)


def near_duplicate_groups(hashes, max_distance: float = NEAR_DUPLICATE_DISTANCE) -> np.ndarray:
    """Component id per row: rows whose images are near duplicates (:func:`near_duplicates`,
    any two rows) get one id, e.g. a ``near`` column to add to :func:`leak_groups`' keys so
    that no split can put them on two sides."""
    n = len(hashes)
    pairs = near_duplicates(pd.DataFrame({"split": np.arange(n)}), hashes, max_distance)
    return _components(n, zip(pairs["a"], pairs["b"], strict=True))


def balanced_subsample(frame: pd.DataFrame, n_per_class: int | None, seed: int = 0,
                       label: str = "label", group: str = "group") -> pd.DataFrame:
    """At most ``n_per_class`` rows per class, spread over as many groups as possible.

    Rows are taken round-robin over the class's groups (in seeded order), so a small sample
    still covers every source cell before it takes a second copy of any.
    """
    if n_per_class is None or n_per_class <= 0:
        return frame
    rng = np.random.default_rng(seed)
    picked = []
    for _, rows in frame.groupby(label, sort=True):
        shuffled = rows.iloc[rng.permutation(len(rows))]
        rank = shuffled.groupby(group).cumcount()
        group_order = {g: i for i, g in enumerate(rng.permutation(shuffled[group].unique()))}
        key = rank * len(group_order) + shuffled[group].map(group_order)
        picked.append(shuffled.assign(_key=key.to_numpy()).nsmallest(n_per_class, "_key"))
    return pd.concat(picked).drop(columns="_key").sort_index()
