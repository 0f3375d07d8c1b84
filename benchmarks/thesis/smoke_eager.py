"""What graph tracing costs a smoke-sized training run, and what eager execution would save:
one network of the full preset at its minimum input size with random weights (the smoke
preset's model: ``networks.build_classifier``, the flattened bottleneck) trained end to end
for one epoch of 8 images in batches of 4, then asked for predictions on 8 images, once in
graph mode (Keras' default: the first ``fit`` and ``predict`` trace their functions) and once
with ``run_eagerly=True`` (nothing traced, every op dispatched from Python).

    .venv/bin/python benchmarks/thesis/smoke_eager.py                       # ~4 min on 2 cores
    .venv/bin/python benchmarks/thesis/smoke_eager.py --networks vgg16 densenet201

A smoke training stage is mostly these seconds plus the ~20 s a stage process costs before
its first epoch (``benchmarks/pipeline/smoke_run.py``). The inputs are random pixels: the time of a
step does not depend on them. Eager runs first for each network, so the graph run cannot
gain from kernels the eager one set up. Written: ``reports/ablation/smoke_eager.csv``.
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
OUT = ROOT / "reports" / "ablation" / "smoke_eager.csv"
IMAGES, BATCH, CLASSES = 8, 4, 4


def timed_run(network: str, run_eagerly: bool) -> dict:
    """Build the smoke model, fit one epoch and predict; seconds of each part."""
    import keras

    from leuko.models import networks
    from leuko.thesis import study
    keras.utils.set_random_seed(0)
    size = study.resolve_image_size(network, "minimum")
    begin = time.perf_counter()
    model = networks.build_classifier(network, CLASSES, size, pretrained=False,
                                      bottleneck="flatten")
    built = time.perf_counter()
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy",
                  metrics=["accuracy"], run_eagerly=run_eagerly)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (IMAGES, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, CLASSES, IMAGES), CLASSES)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    fitted = time.perf_counter()
    model.predict(x, batch_size=BATCH, verbose=0)
    predicted = time.perf_counter()
    keras.backend.clear_session()
    return {"network": network, "image_size": size,
            "mode": "eager" if run_eagerly else "graph",
            "build_s": round(built - begin, 2), "fit_s": round(fitted - built, 2),
            "predict_s": round(predicted - fitted, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+",
                        default=["vgg16", "inception_v3", "densenet121", "resnet50"])
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    from leuko.core.machine import machine_line

    rows = []
    for network in args.networks:
        for run_eagerly in (True, False):
            rows.append({**timed_run(network, run_eagerly), "machine": machine_line()})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, index=False)
    print(table.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
