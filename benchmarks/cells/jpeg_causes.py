"""Why do cells of the unseen lab change class when their image is saved again as JPEG? Each
change traced to the framing or to the model's doubt.

    .venv/bin/python benchmarks/cells/jpeg_causes.py      # ~3 min on 2 cores

For every image of the unseen lab (``cells.unseen_path``) and each quality of
``cells.adaptation.jpeg_qualities``, re-encoded as the stage adapt-cells re-encodes it
(``leuko.tool.adaptation.reencode_jpeg``), the exported model (``build/export/wbc.keras``, its
cells prepared and predicted as ``leuko classify`` does) before and after, and for each cell
that changes class:

- **framed elsewhere**: the crop (``cell_box`` of the nucleus found) moved by more than 5 % of
  its side. Where the first nucleus found fills close to ``cells.preprocess.min_fill`` of its
  box, the finder's choice between it (the nucleus with what touches it) and the nucleus alone
  at a raised threshold is tipped by the re-encoding; where the stain is weak, a thin strand
  joining the nucleus to a neighbour breaks, and the nucleus' box shrinks;
- **unsure**: the calibrated confidence below the model's abstention threshold in either
  version (the cell is then reported ``uncertain``).

The same with one variant of the preparation, ``finder background``: the Reinhard statistics
taken outside the nucleus as the finder found it (``CellBox.threshold``, raised where red cells
passed) instead of outside Otsu's threshold on the 64 px square, which on this lab's bluish red
cells swings between two regimes: does the normalisation carry the re-encoding further?
And with the study's preparation but the class probabilities averaged over ``NOISE_DRAWS``
fixed fields of Gaussian noise (sd ``NOISE_SIGMA`` levels) added to the prepared cell
(``noise-averaged``, that many times the forward passes): a smoother function of the pixels,
does it keep a doubtful cell's class through the re-encoding's small changes of a cell framed
the same?

Written: ``reports/ablation/jpeg_causes.csv`` (one row per preparation and quality); ``make
results`` puts it in docs/experiments/cells.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "reports" / "ablation" / "jpeg_causes.csv"
MOVED = 0.05  # a crop moved by more than this share of its side: framed elsewhere
# test-time noise: Gaussian fields (sd in levels of 0..255) averaged over, the same for every image
NOISE_SIGMA = 8.0
NOISE_DRAWS = 8


def moved(before, after) -> bool:
    if before is None or after is None:
        return before is not after
    side = before[2] - before[0]
    return max(abs(a - b) for a, b in zip(before, after, strict=True)) > MOVED * side


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "build" / "export" / "wbc.keras")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "lib"))
    from sklearn.metrics import f1_score

    from leuko.cells.preprocess import CellPreprocess, cell_box, frame_cell, normalise_cell
    from leuko.core.atomic import write_csv_atomic
    from leuko.core.images import SUPPORTED_SUFFIXES, load_rgb
    from leuko.core.machine import machine_line
    from leuko.core.progress import progress_bar
    from leuko.tool.adaptation import reencode_jpeg
    from leuko.tool.classify import load_classifier

    cells = yaml.safe_load((ROOT / "params" / "cells.yaml").read_text())["cells"]
    lab = ROOT / cells["unseen_path"]
    qualities = [int(q) for q in cells["adaptation"]["jpeg_qualities"]]
    classifier = load_classifier(args.model, novelty=False)
    config = CellPreprocess.from_dict(classifier.cell_preprocess)
    size = int(classifier.image_size[0])
    paths = sorted(p for p in lab.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES)
    labels = np.array([p.parent.name for p in paths])

    def predict(images: np.ndarray) -> np.ndarray:
        return np.concatenate([classifier.predict_batch(images[i:i + 64], 64)
                               for i in range(0, len(images), 64)])

    def noise_averaged(images: np.ndarray) -> np.ndarray:
        """The mean of :func:`predict` over ``NOISE_DRAWS`` fixed noise fields added to every
        image alike: a deterministic, smoother function of the image."""
        fields = [np.random.default_rng(draw).normal(0.0, NOISE_SIGMA, images.shape[1:])
                  for draw in range(NOISE_DRAWS)]
        return np.mean([predict(np.clip(images + field, 0, 255).astype(np.float32))
                        for field in fields], axis=0)

    with tempfile.TemporaryDirectory() as folder:
        originals = [load_rgb(p) for p in paths]
        versions = {None: originals, **{q: [reencode_jpeg(rgb, q, Path(folder)) for rgb in
                                          originals] for q in qualities}}
    # each version framed once (as ``leuko classify``'s prepare_cell frames it); the study's
    # preparation is that frame normalised as prepare_cell normalises it
    frames = {key: [frame_cell(rgb, size, config) for rgb in progress_bar(
        images, total=len(images), desc="framing " + ("originals" if key is None else f"q{key}"))]
        for key, images in versions.items()}
    crops = {key: [None if found is None else cell_box(found.nucleus_box, config.scale)
                   for _, found in framed] for key, framed in frames.items()}
    study = {key: np.stack([normalise_cell(square, config) for square, _ in framed])
             for key, framed in frames.items()}
    finder_background = {
        key: np.stack([normalise_cell(square, config, None if found is None else found.threshold)
                       for square, found in framed]) for key, framed in frames.items()}
    variants = {"study": (study, predict), "finder background": (finder_background, predict),
                f"study, noise-averaged ({NOISE_DRAWS} x sd {NOISE_SIGMA:g})":
                    (study, noise_averaged)}
    rows = []
    shared = sorted(set(labels))
    for name, (prepared, probabilities) in variants.items():
        before = probabilities(prepared[None])
        classes = np.array(classifier.classes)[before.argmax(axis=1)]
        for quality in qualities:
            after = probabilities(prepared[quality])
            changed = before.argmax(axis=1) != after.argmax(axis=1)
            elsewhere = np.array([moved(a, b) for a, b in zip(crops[None], crops[quality],
                                                              strict=True)])
            unsure = ((before.max(axis=1) < classifier.abstain_threshold)
                      | (after.max(axis=1) < classifier.abstain_threshold))
            rows.append({
                "preparation": name, "tested on": f"{lab.name}/unseen", "quality": quality,
                "images": len(paths), "accuracy": float(np.mean(classes == labels)),
                "macro F1": float(f1_score(labels, classes, labels=shared, average="macro")),
                "framed elsewhere": int(elsewhere.sum()), "changed": int(changed.sum()),
                "changed, framed elsewhere": int((changed & elsewhere).sum()),
                "changed, same frame, unsure": int((changed & ~elsewhere & unsure).sum()),
                "changed, same frame, sure": int((changed & ~elsewhere & ~unsure).sum()),
                "model": str(args.model.relative_to(ROOT)),
                "model sha256": classifier.metadata.get("sha256", "")[:12]})
            print(rows[-1], flush=True)
    write_csv_atomic(args.out, pd.DataFrame(rows).assign(machine=machine_line()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
