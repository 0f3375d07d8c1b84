"""The cell classifier fine-tuned with its BatchNorm layers in inference mode (ImageNet
statistics kept, ``cells.train.bn_inference: true``) against the study's models, whose
BatchNorm adapted to the training cells (``false``): which carries better to another lab?

    .venv/bin/python benchmarks/cells_bn.py        # ~10 min on 2 cores

The three cell models (``cells.trainings``) are trained again exactly as the train-cells
stage trains them (``multisource.train_cell_model``: the study's cache ``build/cells``, its
seed and settings) with only ``bn_inference`` set to true, in a scratch folder, and scored as
evaluate-cells scores them (``crosssource.evaluate_cell_models``). Each is compared with the
study's own model of the last ``dvc repro`` on every test part: accuracy and macro F1 of both,
and the paired bootstrap of the accuracy difference over source cells. One training seed.
Written: ``reports/ablation/cells_bn.csv``; ``make results`` puts it in the README.
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
from cell_variants import difference_columns, write_table

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("reports/ablation/cells_bn.csv")
NAMES = {False: "adapting", True: "inference mode"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=200)
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    from leuko import crosssource, multisource, study
    from leuko.evaluation import source_cells
    from leuko.machine import machine_line
    from leuko.params import read_block

    config = multisource.CellStudy.from_params()
    seed = int(read_block("data")["seed"])
    cache = multisource.load_cell_cache()
    work = Path(tempfile.mkdtemp(prefix="cells-bn-"))
    rows = []
    try:
        paths = study.Paths(work)
        frozen = replace(config.train, bn_inference=True)
        for training in config.trainings:
            multisource.train_cell_model(training, cache, frozen, config.abstain,
                                         config.preprocess, seed, paths=paths)
        crosssource.evaluate_cell_models(config.trainings, cache, args.n_boot, seed,
                                         config.shift_per_class, paths=paths)
        for training in config.trainings:
            the_id = multisource.cell_model_id(training)
            runs = {False: study.Paths(), True: paths}  # the study's model, the variant
            metrics = {bn: study.read_json(p.metrics(the_id)) for bn, p in runs.items()}
            summaries = {bn: study.read_json(p.train_summary(the_id)) for bn, p in runs.items()}
            predictions = {bn: pd.read_csv(p.predictions(the_id), keep_default_na=False)
                           for bn, p in runs.items()}
            for source, split in multisource.TEST_PARTS:
                part = f"{source}/{split}"
                row = {"trained on": training, "tested on": part,
                       "unseen source": source not in summaries[True]["sources"]}
                for bn, name in NAMES.items():
                    scores = metrics[bn]["splits"][part]
                    row["cells"], row["images"] = scores["n_cells"], scores["n"]
                    for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro F1")):
                        row[f"{label} {name}"] = scores["intervals"][key]["value"]
                    row[f"validation accuracy {name}"] = summaries[bn]["saved_val_accuracy"]
                    row[f"train seconds {name}"] = summaries[bn]["train_seconds"]
                frames = {bn: p[(p["source"] == source) & (p["split"] == split)]
                          .set_index("path") for bn, p in predictions.items()}
                cells, _ = cache.part(source, split)
                groups = pd.Series(source_cells(cells), index=cells["path"])
                index = frames[False].index
                row.update(difference_columns(
                    frames[False]["actual"].to_numpy(),
                    frames[True].loc[index, "predicted"].to_numpy(),
                    frames[False]["predicted"].to_numpy(), groups.loc[index].to_numpy(), seed))
                row["machine"] = machine_line()
                rows.append(row)
                print(pd.Series(row).to_string(), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_table(rows, OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
