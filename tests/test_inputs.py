"""Tests of leuko.core.inputs' training batches: seeded order and augmentation (flips and turns,
stain jitter), identical on resume, labels never changed."""

from __future__ import annotations

import numpy as np
import pytest

from leuko.core.inputs import make_epochs_dataset, steps_per_epoch

N, SIZE, BATCH, EPOCHS = 10, 16, 4, 3


@pytest.fixture(scope="module")
def cells():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.eye(2, dtype=np.float32)[np.arange(N) % 2]
    return images, labels


def batches(cells, start_epoch=0, **kwargs):
    images, labels = cells
    ds = make_epochs_dataset(images, labels, BATCH, EPOCHS, start_epoch, **kwargs)
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_one_epoch_is_every_image_once(cells):
    out = batches(cells)
    assert len(out) == EPOCHS * steps_per_epoch(N, BATCH)
    first = np.concatenate([x for x, _ in out[: steps_per_epoch(N, BATCH)]])
    as_rows = {row.tobytes() for row in first.astype(np.uint8)}
    assert as_rows == {row.tobytes() for row in cells[0]}


@pytest.mark.parametrize("kwargs", [{"augment": True}, {"stain_jitter": 1.0},
                                    {"augment": True, "stain_jitter": 0.5}])
def test_augmentation_is_seeded_resumable_and_keeps_labels(cells, kwargs):
    plain = batches(cells, seed=3)
    out = batches(cells, seed=3, **kwargs)
    again = batches(cells, seed=3, **kwargs)
    other = batches(cells, seed=4, **kwargs)
    for (x, y), (x2, _), (_, y0) in zip(out, again, plain, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y0)  # same order, same labels: only pixels change
        assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 255
    assert any(not np.array_equal(x, x0) for (x, _), (x0, _) in zip(out, plain, strict=True))
    assert any(not np.array_equal(x, xo) for (x, _), (xo, _) in zip(out, other, strict=True))
    # a run resumed at epoch 1 sees exactly the batches of the uninterrupted run
    resumed = batches(cells, start_epoch=1, seed=3, **kwargs)
    for (x, y), (xr, yr) in zip(out[steps_per_epoch(N, BATCH):], resumed, strict=True):
        np.testing.assert_array_equal(x, xr)
        np.testing.assert_array_equal(y, yr)


def test_stain_jitter_changes_colour_not_just_orientation(cells):
    """Flips and turns permute pixels; the jitter changes their values (mean colour)."""
    flipped = batches(cells, seed=3, augment=True)
    jittered = batches(cells, seed=3, stain_jitter=1.0)
    plain = batches(cells, seed=3)
    for (xf, _), (x0, _) in zip(flipped, plain, strict=True):
        np.testing.assert_allclose(xf.mean(axis=(1, 2)), x0.mean(axis=(1, 2)), atol=1e-3)
    differences = [np.abs(xj.mean(axis=(1, 2)) - x0.mean(axis=(1, 2))).max()
                   for (xj, _), (x0, _) in zip(jittered, plain, strict=True)]
    assert max(differences) > 1.0
