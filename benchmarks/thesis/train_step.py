"""Can the study's compute itself go faster on this CPU? MobileNetV2 at the default's 96 px,
trained end to end from random weights (the work of the fine-tuning and scratch regimes), in
images per second: batches of 16 (the study's), 32 and 64, and batch 16 compiled by XLA
(``jit_compile=True``) against TensorFlow's default graph.

    .venv/bin/python benchmarks/thesis/train_step.py             # ~3 min on 2 cores

One process; each variant gets a fresh model, one untimed step (its graph traced or
compiled, timed apart: Keras 3's own first step, which the study's ``train.fit`` shortens with
``train.build_training_state``), then about ``--images`` images of timed steps on one
in-memory batch (the input
pipeline is not what is measured: ``make bench``'s pipeline section does that). The time of
a step does not depend on the pixels. Written: ``reports/ablation/train_step.csv``;
``make results`` puts it in docs/experiments/thesis.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "reports" / "ablation" / "train_step.csv"
NETWORK, SIZE, CLASSES = "mobilenet_v2", 96, 4
VARIANTS = ((16, False), (32, False), (64, False), (16, True))  # (batch, XLA)


def measure(batch: int, xla: bool, images: int) -> dict:
    """Images per second of ``train_on_batch`` over about ``images`` images."""
    import keras

    from leuko.models import networks
    keras.utils.set_random_seed(0)
    model = networks.build_classifier(NETWORK, CLASSES, SIZE, pretrained=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=xla)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, SIZE, SIZE, 3)).astype("float32")
    y = np.eye(CLASSES, dtype="float32")[np.arange(batch) % CLASSES]
    begin = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - begin
    steps = max(2, images // batch)
    begin = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    seconds = time.perf_counter() - begin
    keras.backend.clear_session()
    return {"network": NETWORK, "image_size": SIZE, "batch": batch,
            "compiler": "XLA" if xla else "TensorFlow graph", "steps": steps,
            "images_per_s": round(steps * batch / seconds, 1), "first_step_s": round(first, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="images timed per variant")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    from leuko.core.machine import machine_line

    rows = []
    for batch, xla in VARIANTS:
        row = measure(batch, xla, args.images)
        row["machine"] = machine_line()
        rows.append(row)
        print(pd.Series(row).to_string(), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(OUT, index=False)
    print(f"written: {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
