"""What the full preset costs, per network: each network of ``params/presets/full/wbc.yaml``
timed on this CPU at its native input size, and the measured times scaled to the full
preset's work (issue 16).

    .venv/bin/python benchmarks/thesis/network_costs.py                 # ~25 min on 2 cores
    .venv/bin/python benchmarks/thesis/network_costs.py --networks vgg16 mobilenet_v2 --steps 2

For each network: the classifier the study builds (``networks.build_classifier``, the full
preset's bottleneck and head; random weights, which cost the same as ImageNet's), fed real
blood-cell-images TRAIN images at the native size in batches of the full preset's batch size.
Timed, each as the median of ``--steps`` calls after one warm-up call (whose time is the
graph's tracing, also written): a forward pass (features, evaluation and validation), a
training step of the whole network (fine-tuning, scratch), and a training step of the head
alone on bottleneck features (the transfer regimes and the fine-tuning warm-up).

The work these are multiplied by (``leuko.thesis.costs``) is the full preset's, on the last
``dvc repro``'s manifests (``build/manifests``): images of each split, epochs per regime (all
of them), the pooled split's regimes and the repeats. Written:
``reports/ablation/network_costs.csv`` (one row per network: the timings, the CPU hours per
regime and for the network's whole share of the full preset, and the expected hours on one
GPU, ``costs.add_gpu_estimate``: calibrated on the thesis's own times, 9 min 59 s for
transfer and 2 h 14 min from scratch per network on average, an order of magnitude, not a
schedule); ``make results`` puts it in docs/experiments/thesis.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OUT = Path("reports/ablation/network_costs.csv")
FULL = Path("params/presets/full")
DATASET = "blood-cell-images"


def timed_calls(call, steps: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds of ``steps`` calls after it)."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def measure(network: str, images: np.ndarray, labels: np.ndarray, bottleneck: str,
            head_config, learning_rate: float, steps: int) -> dict:
    """Per-image seconds of a forward pass, a whole-network training step and a head-only
    training step, and the first (tracing) calls' seconds, for ``network`` at the images' size."""
    import keras

    from leuko.models import networks
    keras.backend.clear_session()
    gc.collect()
    batch = len(images)
    start = time.perf_counter()
    model = networks.build_classifier(network, labels.shape[1], images.shape[1], False,
                                      head=head_config, bottleneck=bottleneck)
    build_s = time.perf_counter() - start
    forward_trace, forward = timed_calls(lambda: model.predict_on_batch(images), steps)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="categorical_crossentropy")
    train_trace, train_step = timed_calls(lambda: model.train_on_batch(images, labels), steps)
    features_dim = int(model.layers[-1].input.shape[-1])
    head = networks.build_head(features_dim, labels.shape[1], head_config)
    head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy")
    # random features of the bottleneck's width: a dense step's time does not depend on values
    features = np.random.default_rng(0).random((batch, features_dim), dtype=np.float32)
    _, head_step = timed_calls(lambda: head.train_on_batch(features, labels), max(steps, 5))
    return {"network": network, "image_size": images.shape[1], "batch": batch,
            "parameters": networks.count_params(model)["total"], "features_dim": features_dim,
            "build_s": round(build_s, 1), "forward_trace_s": round(forward_trace, 1),
            "train_trace_s": round(train_trace, 1),
            "forward_ms_per_image": 1000 * forward / batch,
            "train_ms_per_image": 1000 * train_step / batch,
            "head_ms_per_image": 1000 * head_step / batch}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=None,
                        help="default: the full preset's wbc.networks")
    parser.add_argument("--steps", type=int, default=3, help="timed calls after the warm-up")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    from leuko.core.datasets import WBC_CLASSES
    from leuko.core.inputs import load_resized
    from leuko.core.machine import machine_line
    from leuko.models import networks
    from leuko.thesis import costs, study

    wbc, regimes = costs.preset_work(FULL)
    scratch = regimes["scratch"]
    manifest = study.read_manifest(Path("build/manifests") / f"{DATASET}.csv")
    batch_rows = manifest[manifest["split"] == "train"].head(scratch.batch_size)
    labels = study.one_hot_labels(batch_rows["label"].to_numpy(), list(WBC_CLASSES))
    counts = {name: costs.split_counts(Path("build/manifests") / f"{name}.csv")
              for name in (DATASET, f"{DATASET}-pooled")}
    print(machine_line(), flush=True)
    rows = []
    for network in args.networks or wbc["networks"]:
        entry = networks.get_network(network)
        images = load_resized(list(batch_rows["path"]), entry.native_size, progress=False)
        timing = measure(network, images, labels, wbc["bottleneck"], scratch.head_config(),
                         scratch.learning_rate, args.steps)
        rows.append({**timing, **costs.network_hours(timing, wbc, regimes, counts, DATASET),
                     "thesis": entry.thesis, "machine": machine_line()})
        print(pd.Series(rows[-1]).to_string(), flush=True)
    table = pd.DataFrame(rows)
    if table["thesis"].any():
        table = costs.add_gpu_estimate(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, index=False)
    print(table.drop(columns=["machine"]).to_markdown(index=False, floatfmt=".3g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
