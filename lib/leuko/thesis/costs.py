"""What a preset of the 4-class study costs, from measured per-image times
(``benchmarks/thesis/network_costs.py`` measures them; issue 16).

A network's timing is a dict of seconds per image, in milliseconds: ``forward_ms_per_image``
(a forward pass: features, validation, evaluation), ``train_ms_per_image`` (a training step of
the whole network: fine-tuning, scratch) and ``head_ms_per_image`` (a training step of the
head alone on bottleneck features: the transfer regimes and the fine-tuning warm-up). The
work they are multiplied by is the preset's: images of each split, epochs per regime (all of
them: early stopping would end some sooner), validation once per epoch, evaluation on TEST and
TEST_SIMPLE, the pooled split's regimes and the repeats.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from leuko.models.train import FROZEN_REGIMES
from leuko.thesis import study

THESIS_TRANSFER_S = 9 * 60 + 59
"""The thesis's transfer regime (features + 100 head epochs), per network on average, on its GPU."""
THESIS_SCRATCH_S = 2 * 3600 + 14 * 60
"""The thesis's training from scratch (100 epochs), per network on average, on its GPU."""


def split_counts(manifest_csv: Path) -> dict[str, int]:
    """Rows per split of a prepared dataset's manifest."""
    return pd.read_csv(manifest_csv)["split"].value_counts().to_dict()


def preset_work(preset_dir: Path) -> tuple[dict, dict]:
    """A preset's ``wbc`` block and its regimes' ``study.RegimeSettings`` by name, read from
    ``<preset_dir>/wbc.yaml`` and ``<preset_dir>/regimes/``."""
    wbc = yaml.safe_load((Path(preset_dir) / "wbc.yaml").read_text())["wbc"]
    regimes = {}
    for name in sorted(set(wbc["regimes"]) | set(wbc["pooled_regimes"])):
        path = Path(preset_dir) / "regimes" / f"{name}.yaml"
        regimes[name] = study.RegimeSettings.from_params(
            name, yaml.safe_load(path.read_text())["training"])
    return wbc, regimes


def run_seconds(timing: dict, regime: str, training, counts: dict[str, int]
                ) -> dict[str, float]:
    """Seconds of one run of ``regime`` (its ``study.RegimeSettings``) on a dataset with
    ``counts`` images per split, evaluation included, as {"head": head-only and forward-pass
    work, "trained": whole-network training steps}. The features pass is not in it (one per
    dataset, shared by the runs)."""

    forward = timing["forward_ms_per_image"] / 1000
    step = timing["train_ms_per_image"] / 1000
    head = timing["head_ms_per_image"] / 1000
    fit, val = counts["train"], counts["val"]
    evaluate = (counts["test"] + counts["test_simple"]) * forward
    if regime in FROZEN_REGIMES:
        return {"head": training.epochs * (fit + val) * head + evaluate, "trained": 0.0}
    warmup = training.warmup_epochs if regime != "scratch" else 0
    end_to_end = training.epochs - warmup
    return {"head": warmup * (fit + val) * head + end_to_end * val * forward + evaluate,
            "trained": end_to_end * fit * step}


def network_hours(timing: dict, wbc: dict, regimes: dict, counts: dict[str, dict[str, int]],
                  dataset: str) -> dict[str, float]:
    """Hours of one network in a preset: per regime (one run on ``dataset``), the thesis's
    transfer regime (features + ``imagenet``), and the network's whole share (the features
    pass over each dataset's train and val rows, every regime's runs with the repeats, the
    pooled split's regimes on ``<dataset>-pooled``), the last split into head-only and
    forward work and whole-network training. ``counts``: split counts by dataset name."""
    forward = timing["forward_ms_per_image"] / 1000
    features = {name: (c["train"] + c["val"]) * forward for name, c in counts.items()}
    official = {name: run_seconds(timing, name, regimes[name], counts[dataset])
                for name in wbc["regimes"]}
    pooled = [run_seconds(timing, name, regimes[name], counts[f"{dataset}-pooled"])
              for name in wbc["pooled_regimes"]]
    runs = 1 + len(wbc["repeats"]["seeds"])
    repeated = set(wbc["repeats"]["regimes"])
    share = {"head": sum(features.values()), "trained": 0.0}
    for name, work in official.items():
        for kind in share:
            share[kind] += (runs if name in repeated else 1) * work[kind]
    for work in pooled:
        for kind in share:
            share[kind] += work[kind]
    hours = {f"cpu_h {name}": sum(work.values()) / 3600 for name, work in official.items()}
    hours["cpu_h transfer (features + imagenet)"] = (
        features[dataset] + sum(official["imagenet"].values())) / 3600
    hours["cpu_h network in full preset"] = sum(share.values()) / 3600
    hours["cpu_h head-only part"] = share["head"] / 3600
    hours["cpu_h whole-network part"] = share["trained"] / 3600
    return hours


def add_gpu_estimate(table: pd.DataFrame) -> pd.DataFrame:
    """Expected hours on one GPU like the thesis's: the CPU hours divided by one CPU/GPU ratio
    per kind of work, each calibrated so that the mean over the thesis's networks (the rows
    with ``thesis`` true) equals the thesis's average time per network. This assumes the
    networks' relative costs carry from the CPU to a GPU: an order of magnitude, not a
    schedule."""
    thesis = table[table["thesis"]]
    if thesis.empty:
        raise ValueError("the GPU estimate is calibrated on the thesis's networks; none measured")
    transfer = 3600 * thesis["cpu_h transfer (features + imagenet)"].mean() / THESIS_TRANSFER_S
    scratch = 3600 * thesis["cpu_h scratch"].mean() / THESIS_SCRATCH_S
    return table.assign(**{
        "thesis gpu_h transfer": THESIS_TRANSFER_S / 3600,
        "thesis gpu_h scratch": THESIS_SCRATCH_S / 3600,
        "cpu/gpu ratio transfer": transfer, "cpu/gpu ratio scratch": scratch,
        "gpu_h transfer (features + imagenet)":
            table["cpu_h transfer (features + imagenet)"] / transfer,
        "gpu_h scratch": table["cpu_h scratch"] / scratch,
        "gpu_h network in full preset": (table["cpu_h head-only part"] / transfer
                                         + table["cpu_h whole-network part"] / scratch)})
