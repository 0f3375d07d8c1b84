"""What a cheaper default study would cost: the 4-class study's slow regimes retrained with
one value cut, and scored on TEST / TEST_SIMPLE as the study scores them.

    .venv/bin/python benchmarks/thesis/study_cuts.py --tag size64 --image-size 64
    .venv/bin/python benchmarks/thesis/study_cuts.py --tag per-class-200 --train-per-class 200

Each call trains ``--regimes`` (default: imagenet-finetune and scratch, the study's slowest)
with the study's parameters (``params/``) except the value cut, in ``build/cuts/<tag>/``, from
the blood-cell-images manifest of the last ``dvc repro``, and appends one row per regime to
``reports/ablation/study_cuts.csv`` (accuracy on both test splits, training seconds, the
machine and its load: seconds measured on a busy machine are not the cut's saving).
``make results`` puts the table, beside the default run's own figures, in
docs/experiments/thesis.md.
One seed: a difference of a few points is within what another seed or CPU moves.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OUT = Path("reports/ablation/study_cuts.csv")
DATASET, NETWORK = "blood-cell-images", "mobilenet_v2"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tag", required=True, help="the cut's name in the table")
    parser.add_argument("--image-size", type=int, help="instead of wbc.image_size")
    parser.add_argument("--train-per-class", type=int, help="instead of wbc.train_per_class")
    parser.add_argument("--epochs", type=int, help="instead of each regime's epochs")
    parser.add_argument("--regimes", default="imagenet-finetune,scratch")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    from leuko.core.machine import describe, machine_line
    from leuko.thesis import evaluation, study

    settings = study.WbcSettings.from_params()
    settings = replace(settings, image_size=args.image_size or settings.image_size,
                       train_per_class=args.train_per_class or settings.train_per_class)
    paths = study.Paths(Path("build/cuts") / args.tag)
    paths.manifest(DATASET).parent.mkdir(parents=True, exist_ok=True)
    paths.manifest(DATASET).write_bytes(study.Paths().manifest(DATASET).read_bytes())
    study.compute_bottleneck_features(DATASET, NETWORK, settings, paths)
    for regime in args.regimes.split(","):
        run = study.WbcRun.from_params(DATASET, NETWORK, regime)
        training = replace(run.training, epochs=args.epochs or run.training.epochs)
        run = replace(run, settings=settings, training=training)
        start = time.perf_counter()
        study.train_wbc(run, paths)
        seconds = time.perf_counter() - start
        scored = evaluation.evaluate_model(DATASET, NETWORK, regime, settings.image_size,
                                           n_boot=200, robustness_split=None, paths=paths)
        machine = describe()
        row = {"cut": args.tag, "regime": regime, "image_size": settings.image_size,
               "train_per_class": settings.train_per_class, "epochs": training.epochs,
               **{f"{split} accuracy": round(m["accuracy"], 4)
                  for split, m in scored["splits"].items()},
               "train seconds": round(seconds), "machine": machine_line(machine),
               "load_1min": machine.get("load_1min")}
        table = pd.concat([pd.read_csv(OUT), pd.DataFrame([row])]) if OUT.is_file() else \
            pd.DataFrame([row])
        OUT.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(OUT, index=False)
        print(pd.DataFrame([row]).to_string(index=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
