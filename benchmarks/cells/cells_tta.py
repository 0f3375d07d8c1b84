"""Test-time augmentation for the cell classifier: does averaging a model's probabilities over
the 8 symmetries of the square (4 quarter turns, each also mirrored) carry it to another lab
better than one look at the cell?

    .venv/bin/python benchmarks/cells/cells_tta.py        # ~5 min on 2 cores: forward passes only

A white cell has no up or left (training already flips and turns it), so each symmetry is
another view of the same cell. For each cell model of the last ``dvc repro``
(``build/models/cells-*.keras``) and each test part of ``multisource.TEST_PARTS`` (and, since
issue 35, the lab no model trains on, ``cells.unseen_path``): the model's
probabilities for the cells as prepared, against their mean over the 8 views
(``leuko.cells.preprocess.mean_over_views``, as the study predicts with ``cells.train.views: 8``), both
temperature-scaled with the model's own temperature and scored as the evaluate-cells stage
scores (``crosssource.score_part``).
Written: ``reports/ablation/cells_tta.csv``; ``make results`` puts it in docs/experiments/cells.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

from cell_variants import score_study_models

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=200)
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    from leuko.cells.preprocess import mean_over_views
    from leuko.thesis import study

    models = {}

    def probabilities(model_id: str, images, eight_views: bool):
        if model_id not in models:
            models[model_id] = study.load_model(study.Paths().model(model_id))
        return mean_over_views(partial(study.predict, models[model_id]), images,
                               8 if eight_views else 1)

    score_study_models("cells-tta", probabilities, args.n_boot)
    return 0

if __name__ == "__main__":
    sys.exit(main())
