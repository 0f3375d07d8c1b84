"""Does fine-tuning the top of the network on a lab's few labelled cells win more back than
``leuko adapt``'s last-layer refit?

    .venv/bin/python benchmarks/cells/adapt_finetune.py        # ~7 min on 2 cores

The stage adapt-cells measures ``leuko adapt``'s method (the last layer refitted on the
penultimate features, ``leuko.tool.adaptation``) in its three scenarios: the two-source model
adapted to the third lab, and each single-source model adapted to the source it has not seen.
Its weakest is the PBC model adapted with blood-cell-images cells: features learnt on
CellaVision's sharp cells do not separate BCCD's soft ones, and no last layer on top of them
can. Here, for the same draws of k cells per class (``adaptation.draw_cells``, the stage's
seed), the model's top ``--blocks`` MobileNetV2 blocks and its head are fine-tuned instead, as
``leuko adapt --finetune`` fine-tunes (``leuko.tool.adapt.finetune_model``), on the k cells per
class mixed with a class-balanced sample of the model's own training cells (the stage's
``source_per_class``), and scored over 8 views as the stage scores. Each
draw's last-layer score is the stage's own (``reports/adaptation/draws.csv``), so the two
methods are compared draw by draw on the same cells.

Written: ``reports/ablation/adapt_finetune.csv`` (a row per scenario, scored part, k and
draw); ``make results`` puts it in docs/experiments/cells.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "reports" / "ablation" / "adapt_finetune.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="10,50", help="cells per class (comma-separated)")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=2, help="top MobileNetV2 blocks trained")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "lib"))
    import os
    os.chdir(ROOT)
    from leuko.cells import multisource, unseen
    from leuko.cells.outputs import view_probabilities
    from leuko.core.machine import machine_line
    from leuko.core.params import read_block
    from leuko.core.progress import progress_bar
    from leuko.core.score import score_labels
    from leuko.thesis.evaluation import source_cells
    from leuko.thesis.study import Paths, load_model, read_json
    from leuko.tool.adapt import FINETUNE_EPOCHS, finetune_model, source_sample
    from leuko.tool.adaptation import AdaptationSettings, candidates, draw_cells, part_of, scenarios
    from leuko.tool.classify import Classifier

    cells = read_block("cells")
    settings = AdaptationSettings.from_params(cells)
    config = multisource.CellStudy.from_params(cells)
    seed = int(read_block("data")["seed"])
    n_boot = int(read_block("evaluate")["n_boot"])
    ks = [int(k) for k in args.ks.split(",")]
    cache = multisource.load_cell_cache()
    labs = unseen.load_unseen_caches(cells)
    head_draws = pd.read_csv(ROOT / "reports" / "adaptation" / "draws.csv")
    paths = Paths()
    rows = []
    for scenario in scenarios(next(iter(labs))):
        summary = read_json(paths.train_summary(scenario.model_id))
        classes = list(summary["classes"])
        index = {c: i for i, c in enumerate(classes)}
        base = load_model(paths.model(scenario.model_id))
        source = source_sample(Classifier(model=base, classes=classes,
                                          image_size=tuple(cache.images.shape[1:3]),
                                          metadata={"sources": summary["sources"]}),
                               [paths.root], settings.source_per_class, seed)
        lab_rows, lab_images = part_of(cache, labs, *scenario.lab)
        pool = candidates(lab_rows, classes)
        scored = []
        for part in scenario.scored:
            part_rows, part_images = part_of(cache, labs, *part)
            keep = part_rows["label"].isin(classes).to_numpy()
            scored.append(("/".join(part), part_rows[keep].reset_index(drop=True),
                           part_images[keep]))
        for k in ks:
            for draw in progress_bar(range(args.draws), desc=f"{scenario.name} k={k}",
                                     unit="fit"):
                start = time.perf_counter()
                taken = draw_cells(pool, k, draw, seed, scenario.lab in scenario.scored)
                model = finetune_model(paths.model(scenario.model_id),
                                       lab_images[taken["at"].to_numpy()],
                                       taken["label"].map(index).to_numpy(dtype=int), source,
                                       args.blocks, seed + draw, progress=False)
                seconds = time.perf_counter() - start
                for part_name, part_rows, part_images in scored:
                    rest = ~part_rows["path"].isin(set(taken["path"])).to_numpy()
                    probs = view_probabilities(model, part_images[rest], config.train.views)
                    figures = score_labels(
                        part_rows["label"].map(index).to_numpy(dtype=int)[rest],
                        probs.argmax(axis=1), classes, groups=source_cells(part_rows)[rest],
                        n_boot=n_boot, seed=seed)
                    head = head_draws[(head_draws["scenario"] == scenario.name)
                                      & (head_draws["tested on"] == part_name)
                                      & (head_draws["k"] == k) & (head_draws["draw"] == draw)]
                    if len(head) != 1 or int(head["images"].iloc[0]) != int(rest.sum()):
                        raise SystemExit(f"reports/adaptation/draws.csv has no draw {draw} at "
                                         f"k={k} for {scenario.name} on {part_name} with these "
                                         "cells: run `dvc repro adapt-cells` first")
                    rows.append({
                        "scenario": scenario.name, "model": scenario.model_id,
                        "tested on": part_name, "k": k, "draw": draw,
                        "images": int(rest.sum()), "lab cells": len(taken),
                        "source cells": len(source.labels) if source.used else 0,
                        "blocks": args.blocks, "epochs": FINETUNE_EPOCHS,
                        "macro F1 last layer": float(head["macro_f1"].iloc[0]),
                        "accuracy last layer": float(head["accuracy"].iloc[0]),
                        "macro F1 fine-tuned": figures["intervals"]["macro_f1"]["value"],
                        "accuracy fine-tuned": figures["intervals"]["accuracy"]["value"],
                        "fine-tune seconds": round(seconds, 1)})
                    print(rows[-1], flush=True)
    table = pd.DataFrame(rows).assign(machine=machine_line())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
