"""leuko.thesis.costs: a preset's work times measured per-image costs, against hand-computed hours."""

from types import SimpleNamespace

import pandas as pd
import pytest

from leuko.thesis import costs

TIMING = {"forward_ms_per_image": 10.0, "train_ms_per_image": 100.0, "head_ms_per_image": 1.0}
COUNTS = {"train": 100, "val": 10, "test": 20, "test_simple": 5}


def regime(epochs: int, warmup: int = 0):
    return SimpleNamespace(epochs=epochs, warmup_epochs=warmup)


def test_run_seconds_per_kind_of_regime():
    # head only: 100 epochs x 110 rows x 1 ms, + evaluation 25 x 10 ms
    assert costs.run_seconds(TIMING, "imagenet", regime(100), COUNTS) == pytest.approx(
        {"head": 11.0 + 0.25, "trained": 0.0})
    # scratch: 100 epochs x (100 training steps x 100 ms) and 10 validation images x 10 ms
    assert costs.run_seconds(TIMING, "scratch", regime(100, warmup=10), COUNTS) == pytest.approx(
        {"head": 100 * 0.1 + 0.25, "trained": 1000.0})
    # fine-tuning: 10 warm-up epochs on features, then 90 end to end
    assert costs.run_seconds(TIMING, "imagenet-finetune", regime(100, warmup=10),
                             COUNTS) == pytest.approx(
        {"head": 10 * 110 * 0.001 + 90 * 0.1 + 0.25, "trained": 900.0})


def test_network_hours_count_repeats_pooled_regimes_and_one_features_pass_per_dataset():
    wbc = {"regimes": ["imagenet", "scratch"], "pooled_regimes": ["imagenet"],
           "repeats": {"regimes": ["scratch"], "seeds": [1, 2]}}
    regimes = {"imagenet": regime(100), "scratch": regime(100)}
    counts = {"d": COUNTS, "d-pooled": COUNTS}
    hours = costs.network_hours(TIMING, wbc, regimes, counts, "d")
    features = 110 * 0.01  # train + val rows, once per dataset
    head = 2 * features + 11.25 + 3 * 10.25 + 11.25  # imagenet, scratch x 3 runs, pooled imagenet
    assert hours["cpu_h head-only part"] == pytest.approx(head / 3600)
    assert hours["cpu_h whole-network part"] == pytest.approx(3 * 1000 / 3600)
    assert hours["cpu_h network in full preset"] == pytest.approx((head + 3000) / 3600)
    assert hours["cpu_h transfer (features + imagenet)"] == pytest.approx(
        (features + 11.25) / 3600)
    assert hours["cpu_h scratch"] == pytest.approx(1010.25 / 3600)


def test_gpu_estimate_is_calibrated_on_the_thesis_networks_mean():
    table = pd.DataFrame({"thesis": [True, True, False],
                          "cpu_h transfer (features + imagenet)": [1.0, 3.0, 8.0],
                          "cpu_h scratch": [100.0, 300.0, 50.0],
                          "cpu_h head-only part": [2.0, 2.0, 2.0],
                          "cpu_h whole-network part": [100.0, 100.0, 100.0]})
    out = costs.add_gpu_estimate(table)
    # thesis mean transfer 2 CPU h == 9:59 on its GPU; mean scratch 200 CPU h == 2:14:00
    assert out["gpu_h transfer (features + imagenet)"].tolist() == pytest.approx(
        [x * costs.THESIS_TRANSFER_S / 3600 / 2.0 for x in (1.0, 3.0, 8.0)])
    assert out["gpu_h scratch"].mean() == pytest.approx((100 + 300 + 50) / 3 / 200 * 134 / 60)
    assert out.loc[0, "gpu_h network in full preset"] == pytest.approx(
        2.0 / out.loc[0, "cpu/gpu ratio transfer"] + 100.0 / out.loc[0, "cpu/gpu ratio scratch"])
    with pytest.raises(ValueError, match="thesis"):
        costs.add_gpu_estimate(table[~table["thesis"]])
