"""Test-time BatchNorm adaptation (AdaBN, Li et al. 2016) for the cell classifier: does
recomputing the BatchNorm statistics on a lab's own (unlabelled) cells carry a model to that
lab better than the statistics of its training cells?

    .venv/bin/python benchmarks/cells/adabn.py        # ~4 min on 2 cores: forward passes only

For each cell model of the last ``dvc repro`` (``build/models/cells-*.keras``, trained on
blood-cell-images, on PBC, on both), each test part of ``multisource.TEST_PARTS`` and the lab
no model trains on (``cells.unseen_path``, bionet): the model as trained, and the same model
after its BatchNorm layers' moving mean and variance were replaced by the average over the
part's own images (``adapt_batch_norm``: batches of 128 in training mode, a cumulative
average; labels are not used). Both are scored as the
evaluate-cells stage scores (``crosssource.score_part``, the model's own temperature).
Last, issue 35's rule (``cells_choices.rule_verdict``: adopt when the macro F1 on every part
a model was not trained on rises above the interval of the model as trained, at a cost of at
most 2 points on its own test parts). Written: ``reports/ablation/adabn.csv``; ``make
results`` puts it in docs/experiments/cells.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
from cell_variants import score_study_models
from cells_choices import rule_verdict

from leuko.reporting.results_docs import cell_variant

ROOT = Path(__file__).resolve().parents[2]


def batch_norm_layers(model) -> list:
    """Every BatchNormalization layer of ``model``, nested models included."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found += batch_norm_layers(layer)
    return found


def adapt_batch_norm(model, images, batch_size: int = 128) -> int:
    """Replace every BatchNorm layer's moving statistics by their average over ``images``
    (batch ``k`` weighs 1/k into the running mean: a cumulative average), computed layer after
    layer in one pass as training mode normalises each batch by its own statistics. Weights
    are not changed. Returns the number of layers adapted."""
    layers = batch_norm_layers(model)
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    for layer in layers:
        layer.trainable = True  # a non-trainable BatchNorm ignores training=True in Keras 3
    for k, start in enumerate(range(0, len(images), batch_size), start=1):
        for layer in layers:
            layer.momentum = (k - 1) / k
        model(images[start:start + batch_size], training=True)
    for layer, (momentum, trainable) in zip(layers, saved, strict=True):
        layer.momentum, layer.trainable = momentum, trainable
    return len(layers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=200)
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    from leuko.thesis import study
    def probabilities(model_id: str, images, adapted: bool):
        model = study.load_model(study.Paths().model(model_id))  # fresh: adapting changes it
        if adapted:
            adapt_batch_norm(model, images)
        return study.predict(model, images)

    rows = score_study_models("adabn", probabilities, args.n_boot)
    print(verdict(pd.DataFrame(rows)))
    return 0


def verdict(table: pd.DataFrame) -> str:
    """Issue 35's rule on the rows of :func:`score_study_models`, adapted against as trained."""
    variant = cell_variant("adabn")
    return rule_verdict(table, variant.baseline, variant.alternative)


if __name__ == "__main__":
    sys.exit(main())
