"""What carries a cell classifier to another lab: the cell preprocessing, ablated.

    .venv/bin/python benchmarks/cells/cells_ablation.py             # ~15 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_ablation.py --epochs 2 --per-class 60   # a quick look

Leave one source out, both directions: a model trained on PBC alone is scored on
blood-cell-images' TEST_SIMPLE (71 cells) and TEST, and a model trained on blood-cell-images
alone on PBC's test part (its 4 shared classes), for each variant of ``leuko.cells.preprocess``'
preprocessing:

whole image     no cell search, no stain normalisation: the image squared and resized
cell crop       the cell found and framed at ``scale`` x its size; no stain normalisation
reinhard        cell crop + Reinhard normalisation on the background (the study's default)

Everything else is the study's (``params/cells.yaml``), with fewer epochs and cells per class
(``--epochs``, ``--per-class``), and one seed: read differences of a few points as noise.
Writes ``reports/ablation/cells.csv`` (with the machine) and prints it; ``make results`` puts
it in docs/experiments/cells.md. Uses the PBC split and the blood-cell-images manifest of the last
``dvc repro`` (``build/manifests``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {
    "whole image": {"cell_crop": False, "stain_norm": "none"},
    "cell crop": {"cell_crop": True, "stain_norm": "none"},
    "reinhard": {"cell_crop": True, "stain_norm": "reinhard"},
}
OUT = Path("reports/ablation/cells.csv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=200,
                        help="training cells per class and source (default 200)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)

    import os

    os.chdir(ROOT)
    from leuko.cells import crosssource, multisource
    from leuko.core.machine import machine_line
    from leuko.core.splits import balanced_subsample
    from leuko.thesis.study import Paths, read_manifest

    study = multisource.CellStudy.from_params()
    bci = read_manifest(Path("build/manifests/blood-cell-images.csv"))
    pbc = read_manifest(Path("build/manifests/pbc.csv"))
    data = replace(study.data, bci_train_per_class=args.per_class, bci_val_per_class=50)
    rows = multisource.cell_rows(bci, pbc, data, seed=0)
    keep = rows["split"].isin(["test", "test_simple"]) | (rows["source"] == "blood-cell-images")
    pbc_part = balanced_subsample(rows[(rows["source"] == "pbc") & rows["split"].isin(
        ["train", "val"])], args.per_class, seed=0)
    rows = pd.concat([rows[keep], pbc_part]).reset_index(drop=True)
    train = replace(study.train, epochs=args.epochs)
    print(machine_line(), flush=True)
    table = []
    for name in args.variants.split(","):
        preprocess = replace(study.preprocess, **VARIANTS[name])
        paths = Paths(Path("build/ablation") / name.replace(" ", "-"))
        start = time.perf_counter()
        multisource.build_cell_cache(rows, data, preprocess, paths, progress=False)
        cache = multisource.load_cell_cache(paths)
        for training in ("pbc", "blood-cell-images"):
            multisource.train_cell_model(training, cache, train, study.abstain, preprocess,
                                         seed=0, paths=paths)
        results = crosssource.evaluate_cell_models(["cells-pbc", "cells-blood-cell-images"], cache,
                                                   n_boot=500, seed=0, shift_per_class=20,
                                                   paths=paths)
        frame = crosssource.cross_source_table(results)
        frame = frame[frame["held-out source"]].assign(variant=name,
                                                       seconds=time.perf_counter() - start)
        print(frame[["variant", "trained on", "tested on", "accuracy", "macro F1"]]
              .round(3).to_string(index=False), flush=True)
        table.append(frame)
    out = pd.concat(table, ignore_index=True).assign(
        machine=machine_line(), epochs=args.epochs, per_class=args.per_class)
    from leuko.core.atomic import write_csv_atomic

    write_csv_atomic(OUT, out)
    print(f"written: {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
