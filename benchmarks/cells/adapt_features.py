"""Which features should `leuko adapt` fit a lab's head on? A probe on the third lab.

    .venv/bin/python benchmarks/cells/adapt_features.py     # ~4 min on 2 cores

`leuko adapt` refits the shipped model's softmax head on its penultimate features (64 px cells,
the model fine-tuned on both sources). With 10 labelled cells per class that reaches a macro F1
near 0.70 on `data/bionet` (docs/results.md, the adaptation curves): is the head or the
features the limit? For the cells of `data/bionet` (the study's one lab in neither source;
never trained on by a shipped model, here only fitted on by each draw's k cells and scored on
the rest), a multinomial logistic regression on k cells per class drawn from it (the cells the
adaptation stage draws: ``adaptation.draw_cells``, its draws and ``data.seed``), scored by macro
F1 over the classes present on the cells not drawn, on three feature sets:

- ``shipped-64``: the exported model's penultimate features (view-averaged, as `leuko adapt`);
- ``imagenet-224``: frozen ImageNet MobileNetV2 (the study's torchvision weights) global-pooled
  features of the same cells prepared at 224 px (8 views averaged);
- ``both``: the two, each scaled to unit length, side by side.

Only the lab's own k cells are fitted on (no source cells), so the three differ only in the
features. Written: ``reports/ablation/adapt_features.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "reports" / "ablation" / "adapt_features.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20, 50])
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sklearn.linear_model import LogisticRegression

    from leuko.cells.multisource import CellStudy, prepare_images
    from leuko.cells.novelty import normalise
    from leuko.cells.outputs import mean_features, split_head
    from leuko.cells.preprocess import dihedral_views
    from leuko.cells.unseen import load_unseen_cache
    from leuko.core.machine import machine_line
    from leuko.core.metrics import macro_f1_metric
    from leuko.core.params import read_block
    from leuko.models import networks, train
    from leuko.thesis.study import load_model, read_json
    from leuko.tool.adaptation import AdaptationSettings, candidates, draw_cells

    unseen = load_unseen_cache("bionet")
    rows = unseen.rows.reset_index(drop=True)
    labels = rows["label"].to_numpy(str)
    meta = read_json(ROOT / "build" / "export" / "wbc.json")
    head = split_head(load_model(ROOT / "build" / "export" / "wbc.keras"))
    features = {"shipped-64": normalise(mean_features(head, unseen.images[rows["index"]],
                                                      int(meta["views"])))}
    study = CellStudy.from_params()
    big, _ = prepare_images(list(rows["path"]), 224, study.preprocess,
                            tight=rows["tight"].to_numpy(bool))
    base = networks.build_base("mobilenet_v2", (224, 224, 3), pretrained=True)
    preprocess = networks.Preprocess(networks.get_network("mobilenet_v2").preprocessing)
    views = dihedral_views(big, 8)
    imagenet = train.compute_features(base, preprocess, np.concatenate(views))
    imagenet = imagenet.reshape(len(views), len(big), -1).mean(axis=0)
    features["imagenet-224"] = normalise(imagenet)
    features["both"] = np.hstack([features["shipped-64"], features["imagenet-224"]])

    classes = sorted(set(labels))
    y = np.array([classes.index(c) for c in labels])
    pool = candidates(rows, classes)  # position in rows: column "at"
    draws = AdaptationSettings.from_params().draws
    seed = int(read_block("data")["seed"])
    out = []
    for k in args.ks:
        for d in range(draws):
            picked = np.sort(draw_cells(pool, k, d, seed, keep_half=True)["at"].to_numpy())
            rest = np.setdiff1d(np.arange(len(y)), picked)
            present = sorted(set(y[rest]))
            for name, x in features.items():
                fit = LogisticRegression(C=10.0, max_iter=2000).fit(x[picked], y[picked])
                pred = fit.predict(x[rest])
                f1 = float(macro_f1_metric(len(classes), over=present)(y[rest], pred))
                out.append({"features": name, "k": k, "draw": d, "fitted": len(picked),
                            "scored": len(rest), "macro_f1": f1,
                            "accuracy": float((pred == y[rest]).mean())})
    table = pd.DataFrame(out).assign(machine=machine_line())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, index=False)
    summary = table.groupby(["k", "features"])[["macro_f1", "accuracy"]].agg(["mean", "std"])
    print(summary.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
