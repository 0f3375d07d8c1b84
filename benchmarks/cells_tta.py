"""Test-time augmentation for the cell classifier: does averaging a model's probabilities over
the 8 symmetries of the square (4 quarter turns, each also mirrored) carry it to another lab
better than one look at the cell?

    .venv/bin/python benchmarks/cells_tta.py        # ~5 min on 2 cores: forward passes only

A white cell has no up or left (training already flips and turns it), so each symmetry is
another view of the same cell. For each cell model of the last ``dvc repro``
(``build/models/cells-*.keras``) and each test part of ``multisource.TEST_PARTS``: the model's
probabilities for the cells as prepared, against their mean over the 8 views
(``leuko.cells.mean_over_views``, as the study predicts with ``cells.train.views: 8``), both
temperature-scaled with the model's own temperature and scored as the evaluate-cells stage
scores (``crosssource.score_part``).
Written: ``reports/ablation/cells_tta.csv``; ``make results`` puts it in the README.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

import pandas as pd
from cell_variants import difference_columns, write_table

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=200)
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    from leuko import multisource, study
    from leuko.calibration import temperature_scale
    from leuko.cells import mean_over_views
    from leuko.crosssource import score_part
    from leuko.evaluation import source_cells
    from leuko.machine import machine_line
    from leuko.params import read_block
    from leuko.report import cell_variant

    variant = cell_variant("cells-tta")
    names = {False: variant.baseline, True: variant.alternative}
    cells = read_block("cells", None, Path("params/cells.yaml"))
    seed = int(read_block("data", None, Path("params/data.yaml"))["seed"])
    cache = multisource.load_cell_cache()
    paths = study.Paths()
    rows = []
    for training in cells["trainings"]:
        the_id = multisource.cell_model_id(training)
        summary = study.read_json(paths.train_summary(the_id))
        classes, temperature = list(summary["classes"]), float(summary["temperature"])
        threshold = float(summary["abstain"]["threshold"])
        model = study.load_model(paths.model(the_id))
        for source, split in multisource.TEST_PARTS:
            part, images = cache.part(source, split)
            row = {"trained on": training, "tested on": f"{source}/{split}",
                   "unseen source": source not in summary["sources"],
                   "images": int(part["label"].isin(classes).sum())}  # of classes it knows
            predicted = {}
            for views, name in names.items():
                probs = mean_over_views(partial(study.predict, model), images,
                                        8 if views else 1)
                metrics, frame = score_part(temperature_scale(probs, temperature), part,
                                            classes, threshold, args.n_boot, seed)
                predicted[views] = frame["predicted"].to_numpy()
                row["cells"] = metrics["n_cells"]
                for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro F1")):
                    row[f"{label} {name}"] = metrics["intervals"][key]["value"]
            known = part["label"].isin(classes).to_numpy()
            row.update(difference_columns(
                part["label"].to_numpy()[known], predicted[True], predicted[False],
                source_cells(part[known].reset_index(drop=True)), seed))
            row["machine"] = machine_line()
            rows.append(row)
            print(pd.Series(row).to_string(), flush=True)
    write_table(rows, Path(variant.csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
