"""Does the cell finder find the cell? Fields framed whole, per source, with and without raising
a threshold that lets red cells through (``cells.preprocess.max_area`` / ``min_fill``), and what
that does to the exported model on the third lab.

    .venv/bin/python benchmarks/cells/finder.py        # ~3 min on 2 cores

1. For every source's images (PBC and blood-cell-images' TEST thinned to every 4th image,
   TEST_SIMPLE, BCCD's fields with one annotated white cell, every ``data/bionet`` field):
   ``find_cell`` with the study's ``cells.preprocess`` and with the two options off (the
   finder before them). Counted: nucleus boxes spanning more than a quarter of the image (a
   single white cell's nucleus never does in these sources: the finder took red cells with
   it), images with no nucleus found, boxes that differ between the two; on BCCD, boxes whose
   centre lies in the annotated white cell's box (the ground truth there is).
2. The exported model (``build/export/wbc.keras``) classifies ``data/bionet`` as ``leuko
   classify`` does, framed by each finder (only these two options differ), scored as ``leuko
   score`` scores: accuracy and macro F1 with 95 % bootstrap intervals.

Written: ``reports/ablation/finder.csv``; ``make results`` puts it in docs/experiments/cells.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "reports" / "ablation" / "finder.csv"
OFF = {"max_area": 1.0, "min_fill": 0.0}


def bccd_fields(root: Path) -> list[tuple[Path, tuple[int, int, int, int]]]:
    """BCCD's fields with exactly one annotated white cell, and its box."""
    fields = []
    for xml in sorted((root / "Annotations").glob("*.xml")):
        white = [o for o in ET.parse(xml).getroot().iter("object")
                 if o.findtext("name") == "WBC"]
        if len(white) == 1:
            box = white[0].find("bndbox")
            fields.append((root / "JPEGImages" / f"{xml.stem}.jpg",
                           tuple(int(float(box.findtext(k)))
                                 for k in ("xmin", "ymin", "xmax", "ymax"))))
    return fields


def image_sets(data: Path) -> dict[str, list[Path]]:
    wbc = data / "blood-cell-images" / "images"
    return {"pbc (every 4th)": sorted((data / "pbc").rglob("*.jpg"))[::4],
            "blood-cell-images/test (every 4th)": sorted(wbc.glob("TEST/*/*.jpeg"))[::4],
            "blood-cell-images/test_simple": sorted(wbc.glob("TEST_SIMPLE/*/*.jpeg")),
            "bionet": sorted((data / "bionet").glob("*/*.jpg"))}


def boxes(paths: list[Path], config) -> list[tuple[int, int, int, int] | None]:
    from leuko.cells.preprocess import fill_dark_margin, find_cell
    from leuko.core.images import load_rgb

    found = []
    for path in paths:
        rgb = load_rgb(path)
        cell = find_cell(fill_dark_margin(rgb) if config.fill_dark_margin else rgb, config)
        found.append(None if cell is None else (*cell.nucleus_box, rgb.shape[1], rgb.shape[0]))
    return found


def field_wide(box) -> bool:
    x0, y0, x1, y1, width, height = box
    return (x1 - x0) * (y1 - y0) > 0.25 * width * height


def finder_rows(data: Path, study, before) -> list[dict]:
    rows = []
    sets = {name: (paths, None) for name, paths in image_sets(data).items()}
    bccd = bccd_fields(data / "bccd")
    sets["bccd (one annotated white cell)"] = ([p for p, _ in bccd], [b for _, b in bccd])
    for name, (paths, truth) in sets.items():
        found_before = boxes(paths, before)
        for finder, found in (("before", found_before), ("study", boxes(paths, study))):
            row = {"part": f"finder:{name}", "finder": finder, "images": len(paths),
                   "field-wide": sum(b is not None and field_wide(b) for b in found),
                   "not found": sum(b is None for b in found)}
            if finder == "study":
                row["changed"] = sum(a != b for a, b in zip(found, found_before, strict=True))
            if truth is not None:
                row["centre in the white cell"] = sum(
                    b is not None and t[0] <= (b[0] + b[2]) / 2 <= t[2]
                    and t[1] <= (b[1] + b[3]) / 2 <= t[3] for b, t in zip(found, truth,
                                                                           strict=True))
            rows.append(row)
            print(row, flush=True)
    return rows


def model_rows(data: Path, model: Path, study, before) -> list[dict]:
    from leuko.core import score
    from leuko.tool.classify import load_classifier, run

    rows = []
    classifier = load_classifier(model)
    trained_with = dict(classifier.cell_preprocess)
    for finder, config in (("before", before), ("study", study)):
        classifier.cell_preprocess = {**trained_with, **{k: getattr(config, k) for k in OFF}}
        with tempfile.TemporaryDirectory() as folder:
            csv = Path(folder) / "cells.csv"
            run([data / "bionet"], model, csv, classifier=classifier, progress=False)
            predictions, classes = score.read_predictions(csv)
            result = score.score(predictions, classes, score.labels_for(predictions, None),
                                 classifier.metadata.get("differential_classes", classes))
        rows.append({"part": "model:bionet", "finder": finder, "images": result.scored,
                     "model": str(model.relative_to(ROOT)),
                     "model sha256": classifier.metadata.get("sha256", "")[:12],
                     "trained with": ", ".join(f"{k} {trained_with.get(k, OFF[k])}"
                                               for k in OFF),
                     **{f"{metric} {part}": result.intervals[metric][part]
                        for metric in ("accuracy", "macro_f1")
                        for part in ("value", "low", "high")},
                     "not found": int((~predictions["cell_found"].astype(bool)).sum()),
                     "far from the sources": int(predictions["far"].astype(bool).sum())})
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "build" / "export" / "wbc.keras")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "lib"))
    from leuko.cells.preprocess import CellPreprocess
    from leuko.core.atomic import write_csv_atomic
    from leuko.core.machine import machine_line

    params = yaml.safe_load((ROOT / "params" / "cells.yaml").read_text())["cells"]
    study = CellPreprocess.from_dict(params["preprocess"])
    before = dataclasses.replace(study, **OFF)
    data = ROOT / "data"
    rows = finder_rows(data, study, before) + model_rows(data, args.model, study, before)
    table = pd.DataFrame(rows).assign(machine=machine_line())
    write_csv_atomic(args.out, table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
