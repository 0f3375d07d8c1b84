"""Two choices of the study's fine-tuning, each compared over training seeds on the
``imagenet-finetune`` regime of the default study: every run identical but for one setting
of ``params/regimes/imagenet-finetune.yaml``.

- ``bn``: the pretrained base's BatchNorm in inference mode while it is fine-tuned
  (``bn_inference: true``, the Keras transfer-learning guide's advice) against BatchNorm
  that adapts to the batches (``false``, the baseline and the study's default).
- ``warmup``: the head's warm-up rate on the cached features before the base is unfrozen
  (``warmup_learning_rate``): the baseline 1e-3 (Adam's default, as the Keras guide trains a
  new head) against 1e-4, the fine-tuning rate itself (no separate warm-up rate), which
  this comparison made the study's default.

    .venv/bin/python benchmarks/thesis/finetune_choices.py bn         # seeds 0 1 2: ~33 min on 2 cores
    .venv/bin/python benchmarks/thesis/finetune_choices.py warmup --seeds 0 1  # fewer runs

Each run is ``study.train_wbc`` on the default preset's data (``build/manifests``,
``build/features`` of the last ``dvc repro``) with only the choice's setting and the
training seed changed, scored by ``evaluation.evaluate_model`` on every TEST and TEST_SIMPLE
image, in a scratch folder (the study's models are not touched). Written:
``reports/ablation/finetune_<choice>.csv`` (one row per setting, seed and split: accuracy,
macro F1, the saved weights' validation accuracy, training seconds, machine; the setting's
column is named by its key) and ``reports/ablation/finetune_<choice>_paired.csv``
(alternative - baseline, the paired bootstrap over source cells and seeds,
``metrics.paired_bootstrap_difference_seeds``); ``make results`` puts both in
docs/experiments/thesis.md.
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

from leuko.reporting.results_docs import FINETUNE_CHOICES

ROOT = Path(__file__).resolve().parents[2]
DATASET, NETWORK, REGIME = "blood-cell-images", "mobilenet_v2", "imagenet-finetune"
SPLITS = ("test", "test_simple")


#: the choices and their two values: leuko.reporting.results_docs.FINETUNE_CHOICES, which also labels them
CHOICES = {choice.name: choice for choice in FINETUNE_CHOICES}


def scratch_paths(folder: Path):
    """``study.Paths`` under ``folder`` that read the last run's manifests and features."""
    from leuko.thesis import study
    for part in ("manifests", "features"):
        (folder / "build").mkdir(parents=True, exist_ok=True)
        (folder / "build" / part).symlink_to(ROOT / "build" / part)
    return study.Paths(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("choice", choices=sorted(CHOICES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the regime's end-to-end epochs (a quick check only)")
    args = parser.parse_args(argv)
    choice = CHOICES[args.choice]

    os.chdir(ROOT)
    from leuko.core.machine import machine_line
    from leuko.core.metrics import paired_bootstrap_difference_seeds
    from leuko.thesis import evaluation, study

    base_run = study.WbcRun.from_params(DATASET, NETWORK, REGIME)
    if args.epochs is not None:
        base_run = replace(base_run, training=replace(base_run.training, epochs=args.epochs))
    rows, predictions = [], {}
    work = Path(tempfile.mkdtemp(prefix=f"finetune-{args.choice}-"))
    try:
        for value in (choice.baseline, choice.alternative):
            paths = scratch_paths(work / f"{choice.key}-{value}")
            for seed in args.seeds:
                run = replace(base_run, repeat_seed=seed,
                              training=replace(base_run.training, **{choice.key: value}))
                trained = study.train_wbc(run, paths=paths).summary()
                result = evaluation.evaluate_model(
                    DATASET, NETWORK, REGIME, run.settings.image_size, n_boot=200,
                    seed=run.settings.seed, robustness_split=None, repeat_seed=seed,
                    paths=paths)
                frame = pd.read_csv(paths.predictions(run.model_id), keep_default_na=False)
                for split in SPLITS:
                    metrics = result["splits"][split]
                    rows.append({choice.key: value, "seed": seed, "split": split,
                                 "accuracy": metrics["accuracy"],
                                 "macro_f1": metrics["macro_f1"],
                                 "saved_val_accuracy": trained["saved_val_accuracy"],
                                 "train_seconds": trained["train_seconds"],
                                 "epochs": run.training.epochs, "machine": machine_line()})
                    predictions[(value, seed, split)] = (
                        frame[frame["split"] == split].set_index("path"))
                print(pd.DataFrame(rows).tail(len(SPLITS)).to_string(index=False), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = pd.DataFrame(rows)
    manifest = study.read_manifest(Path("build/manifests") / f"{DATASET}.csv")
    group_of = pd.Series(evaluation.source_cells(manifest), index=manifest["path"])
    paired = []
    for split in SPLITS:
        first = predictions[(choice.baseline, args.seeds[0], split)]

        def predicted(value: object, split: str = split, index=first.index) -> list:
            return [predictions[(value, s, split)].loc[index, "predicted"].to_numpy()
                    for s in args.seeds]

        result = paired_bootstrap_difference_seeds(
            first["actual"].to_numpy(), predicted(choice.alternative), predicted(choice.baseline),
            group_of.reindex(first.index).to_numpy(), n_boot=2000, seed=0)
        paired.append({"split": split, "runs": len(args.seeds), "cells": result["n_groups"],
                       "images": result["n"], "accuracy_alternative": result["accuracy_a"],
                       "accuracy_baseline": result["accuracy_b"],
                       "difference": result["difference"], "low": result["low"],
                       "high": result["high"],
                       "share_alternative_better": result["share_a_better"]})
    choice.runs_csv().parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(choice.runs_csv(), index=False)
    pd.DataFrame(paired).to_csv(choice.paired_csv(), index=False)
    print(table.to_markdown(index=False))
    print(pd.DataFrame(paired).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
