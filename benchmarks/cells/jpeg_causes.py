"""Why do cells of the unseen lab change class when their image is saved again as JPEG? Each
change traced to the framing or to the model's doubt.

    .venv/bin/python benchmarks/cells/jpeg_causes.py      # ~3 min on 2 cores

For every image of the unseen lab (``cells.unseen_path``) and each quality of
``cells.adaptation.jpeg_qualities``, re-encoded as the stage adapt-cells re-encodes it
(``leuko.tool.adaptation.reencode_jpeg``), the exported model (``build/export/wbc.keras``, as
``leuko classify`` runs it) before and after, and for each cell that changes class:

- **framed elsewhere**: the crop (``cell_box`` of the nucleus found) moved by more than 5 % of
  its side. Where the first nucleus found fills close to ``cells.preprocess.min_fill`` of its
  box, the finder's choice between it (the nucleus with what touches it) and the nucleus alone
  at a raised threshold is tipped by the re-encoding;
- **unsure**: the calibrated confidence below the model's abstention threshold in either
  version (the cell is then reported ``uncertain``).

The same with one variant of the preparation, ``finder background``: the Reinhard statistics
taken outside the nucleus as the finder found it (``CellBox.threshold``, raised where red cells
passed) instead of outside Otsu's threshold on the 64 px square, which on this lab's bluish red
cells swings between two regimes: does the normalisation carry the re-encoding further?

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


def crop_of(rgb: np.ndarray, config) -> tuple[int, int, int, int] | None:
    from leuko.cells.preprocess import cell_box, fill_dark_margin, find_cell

    found = find_cell(fill_dark_margin(rgb) if config.fill_dark_margin else rgb, config)
    return None if found is None else cell_box(found.nucleus_box, config.scale)


def moved(before, after) -> bool:
    if before is None or after is None:
        return before is not after
    side = before[2] - before[0]
    return max(abs(a - b) for a, b in zip(before, after, strict=True)) > MOVED * side


def prepare_finder_background(rgb: np.ndarray, size: int, config) -> np.ndarray:
    """``prepare_cell`` with the Reinhard background outside the finder's nucleus threshold."""
    from scipy import ndimage as ndi

    from leuko.cells.detect import disk
    from leuko.cells.preprocess import (
        cell_box,
        crop_square,
        fill_dark_margin,
        find_cell,
        nuclear_map,
        nucleus_threshold,
        reinhard,
        whole_square,
    )
    from leuko.core.images import resize

    rgb = fill_dark_margin(rgb) if config.fill_dark_margin else rgb
    found = find_cell(rgb, config)
    square = (crop_square(rgb, cell_box(found.nucleus_box, config.scale)) if found is not None
              else whole_square(rgb))
    square = resize(np.ascontiguousarray(square), size, size)
    stain = nuclear_map(square)
    nucleus = stain > (found.threshold if found is not None else nucleus_threshold(stain))
    background = ~ndi.binary_dilation(nucleus, disk(max(1, size / 48)))
    return reinhard(square, background if background.sum() >= 16 else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "build" / "export" / "wbc.keras")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "lib"))
    from sklearn.metrics import f1_score

    from leuko.cells.preprocess import CellPreprocess
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
    preparations = {"study": lambda rgb: classifier.prepare_flagged(rgb)[0],
                    "finder background": lambda rgb: prepare_finder_background(rgb, size, config)}

    def predict(images: np.ndarray) -> np.ndarray:
        return np.concatenate([classifier.predict_batch(images[i:i + 64], 64)
                               for i in range(0, len(images), 64)])

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        originals = [load_rgb(p) for p in paths]
        versions = {q: [reencode_jpeg(rgb, q, Path(folder)) for rgb in originals]
                    for q in qualities}
        crops = {None: [crop_of(rgb, config) for rgb in originals],
                 **{q: [crop_of(rgb, config) for rgb in versions[q]] for q in qualities}}
        for name, prepare in preparations.items():
            def probabilities(images, desc, prepare=prepare, name=name):
                return predict(np.stack([prepare(rgb) for rgb in progress_bar(
                    images, total=len(images), desc=f"{name}: {desc}")]))

            before = probabilities(originals, "originals")
            classes = np.array(classifier.classes)[before.argmax(axis=1)]
            shared = sorted(set(labels))
            for quality in qualities:
                after = probabilities(versions[quality], f"q{quality}")
                changed = before.argmax(axis=1) != after.argmax(axis=1)
                elsewhere = np.array([moved(a, b) for a, b in zip(crops[None], crops[quality],
                                                                  strict=True)])
                unsure = ((before.max(axis=1) < classifier.abstain_threshold)
                          | (after.max(axis=1) < classifier.abstain_threshold))
                rows.append({
                    "preparation": name, "tested on": f"{lab.name}/unseen", "quality": quality,
                    "images": len(paths), "accuracy": float(np.mean(classes == labels)),
                    "macro F1": float(f1_score(labels, classes, labels=shared,
                                               average="macro")),
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
