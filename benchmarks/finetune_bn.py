"""Fine-tuning with the pretrained base's BatchNorm in inference mode (``bn_inference: true``,
the Keras transfer-learning guide's advice) against BatchNorm that adapts to the batches
(``false``, the study's runs so far), on the ``imagenet-finetune`` regime of the default
study, over several training seeds.

    .venv/bin/python benchmarks/finetune_bn.py              # seeds 0 1 2: ~30 min on 2 cores
    .venv/bin/python benchmarks/finetune_bn.py --seeds 0 1  # fewer runs

Each run is ``study.train_wbc`` on the default preset's data (``build/manifests``,
``build/features`` of the last ``dvc repro``) with ``params/regimes/imagenet-finetune.yaml``
and only ``bn_inference`` and the training seed changed, scored by
``evaluation.evaluate_model`` on every TEST and TEST_SIMPLE image, in a scratch folder (the
study's models are not touched). Written: ``reports/ablation/finetune_bn.csv`` (one row per
setting, seed and split: accuracy, macro F1, the saved weights' validation accuracy, training
seconds, machine) and ``reports/ablation/finetune_bn_paired.csv`` (true - false, the paired
bootstrap over source cells and seeds, ``metrics.paired_bootstrap_difference_seeds``);
``make results`` puts both in the README.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("reports/ablation/finetune_bn.csv")
PAIRED = Path("reports/ablation/finetune_bn_paired.csv")
DATASET, NETWORK, REGIME = "blood-cell-images", "mobilenet_v2", "imagenet-finetune"
SPLITS = ("test", "test_simple")


def scratch_paths(folder: Path):
    """``study.Paths`` under ``folder`` that read the last run's manifests and features."""
    from leuko import study

    for part in ("manifests", "features"):
        (folder / "build").mkdir(parents=True, exist_ok=True)
        (folder / "build" / part).symlink_to(ROOT / "build" / part)
    return study.Paths(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the regime's end-to-end epochs (a quick check only)")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    from leuko import evaluation, study
    from leuko.machine import machine_line
    from leuko.metrics import paired_bootstrap_difference_seeds

    base_run = study.WbcRun.from_params(DATASET, NETWORK, REGIME)
    if args.epochs is not None:
        base_run = replace(base_run, training=replace(base_run.training, epochs=args.epochs))
    rows, predictions = [], {}
    work = Path(tempfile.mkdtemp(prefix="finetune-bn-"))
    try:
        for bn_inference in (False, True):
            paths = scratch_paths(work / f"bn-{str(bn_inference).lower()}")
            for seed in args.seeds:
                run = replace(base_run, repeat_seed=seed,
                              training=replace(base_run.training, bn_inference=bn_inference))
                trained = study.train_wbc(run, paths=paths).summary()
                result = evaluation.evaluate_model(
                    DATASET, NETWORK, REGIME, run.settings.image_size, n_boot=200,
                    seed=run.settings.seed, robustness_split=None, repeat_seed=seed,
                    paths=paths)
                frame = pd.read_csv(paths.predictions(run.model_id), keep_default_na=False)
                for split in SPLITS:
                    metrics = result["splits"][split]
                    rows.append({"bn_inference": bn_inference, "seed": seed, "split": split,
                                 "accuracy": metrics["accuracy"],
                                 "macro_f1": metrics["macro_f1"],
                                 "saved_val_accuracy": trained["saved_val_accuracy"],
                                 "train_seconds": trained["train_seconds"],
                                 "epochs": run.training.epochs, "machine": machine_line()})
                    predictions[(bn_inference, seed, split)] = (
                        frame[frame["split"] == split].set_index("path"))
                print(pd.DataFrame(rows).tail(len(SPLITS)).to_string(index=False), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = pd.DataFrame(rows)
    manifest = study.read_manifest(Path("build/manifests") / f"{DATASET}.csv")
    group_of = pd.Series(evaluation.source_cells(manifest), index=manifest["path"])
    paired = []
    for split in SPLITS:
        frames = {(bn, s): predictions[(bn, s, split)] for bn in (False, True)
                  for s in args.seeds}
        first = next(iter(frames.values()))
        result = paired_bootstrap_difference_seeds(
            first["actual"].to_numpy(),
            [frames[(True, s)].loc[first.index, "predicted"].to_numpy() for s in args.seeds],
            [frames[(False, s)].loc[first.index, "predicted"].to_numpy() for s in args.seeds],
            group_of.reindex(first.index).to_numpy(), n_boot=2000, seed=0)
        paired.append({"split": split, "runs": len(args.seeds), "cells": result["n_groups"],
                       "images": result["n"], "accuracy_true": result["accuracy_a"],
                       "accuracy_false": result["accuracy_b"],
                       "difference": result["difference"], "low": result["low"],
                       "high": result["high"], "share_true_better": result["share_a_better"]})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, index=False)
    pd.DataFrame(paired).to_csv(PAIRED, index=False)
    print(table.to_markdown(index=False))
    print(pd.DataFrame(paired).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
