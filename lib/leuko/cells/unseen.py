"""The lab unlike both sources: ``data/bionet`` (a third lab's microscope, camera and stain),
prepared once as the study prepares its sources' cells, so that the cell models can be
judged on it (stage ``evaluate-cells``) and adapted to it (``leuko.tool.adaptation``).

It is never trained on: no function here writes to the sources' cell cache, and its rows
carry the split ``unseen``, which no training reads (``multisource`` trains on ``train``).

Stage ``cells-unseen`` (``python -m leuko.cells.unseen``): ``build/manifests/<name>.csv`` (path,
source, label, split, group = the file's content hash, sha256, cell_found, tight, index) and
``build/cells/<name>.npz`` (the prepared cells, as ``build/cells/cells.npz``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from leuko.cells.multisource import DEFAULT_PATHS, CellCache, CellStudy, prepare_images
from leuko.core.datasets import DIFFERENTIAL_CLASSES
from leuko.core.images import SUPPORTED_SUFFIXES, file_sha256
from leuko.core.params import read_block
from leuko.thesis.study import Paths, load_features, read_manifest, save_features, write_manifest

UNSEEN_SPLIT = "unseen"


def unseen_rows(data_path: str | Path, classes: list[str]) -> pd.DataFrame:
    """One row per image of ``data_path/<CLASS>/``: the folder names the class. A folder that
    names no class of ``classes`` stops with the folder named (a typo would otherwise drop a
    class from the evaluation without a word)."""
    root = Path(data_path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found: run `make data` (dvc pull)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [f.name for f in folders if f.name not in classes]
    if unknown:
        raise ValueError(f"{root}: folder(s) {unknown} name no class of {classes}")
    rows = [{"path": str(path), "source": root.name, "label": folder.name,
             "split": UNSEEN_SPLIT}
            for folder in folders for path in sorted(folder.iterdir())
            if path.suffix.lower() in SUPPORTED_SUFFIXES and not path.name.startswith(".")]
    if not rows:
        raise ValueError(f"{root} holds no image in a class folder")
    frame = pd.DataFrame(rows)
    frame["sha256"] = [file_sha256(p) for p in frame["path"]]
    frame["group"] = frame["sha256"]  # every field its own cell (the data README)
    return frame


def cache_path(name: str, paths: Paths = DEFAULT_PATHS) -> Path:
    return paths.root / "build" / "cells" / f"{name}.npz"


def build_unseen_cache(data_path: str | Path, study: CellStudy, classes: list[str],
                       paths: Paths = DEFAULT_PATHS, workers: int = 2,
                       progress: bool = True) -> Path:
    """Prepare every cell of ``data_path`` as the sources' cells are prepared (the same
    ``cells.data.image_size`` and ``cells.preprocess``, never cut tight) and write the
    cache and its manifest."""
    rows = unseen_rows(data_path, classes)
    images, found = prepare_images(list(rows["path"]), study.data.image_size, study.preprocess,
                                   workers, progress)
    name = Path(data_path).name
    rows = rows.assign(cell_found=found, tight=False, index=np.arange(len(rows)))
    write_manifest(rows, paths.manifest(name))
    return save_features(cache_path(name, paths), images=images, found=found,
                         paths=rows["path"].to_numpy(dtype=str))


def load_unseen_cache(name: str, paths: Paths = DEFAULT_PATHS) -> CellCache:
    """The cache :func:`build_unseen_cache` wrote for the folder ``name`` (checked: rows and
    images agree)."""
    rows = read_manifest(paths.manifest(name))
    images = load_features(cache_path(name, paths))["images"]
    if len(images) != len(rows):
        raise ValueError(f"{cache_path(name, paths)} holds {len(images)} images but "
                         f"{paths.manifest(name)} {len(rows)} rows: rerun stage cells-unseen")
    for flag in ("cell_found", "tight"):
        rows[flag] = rows[flag].astype(str).str.lower() == "true"
    return CellCache(rows, images)


def unseen_name(cells: dict | None = None) -> str:
    """The name of the lab of ``cells.unseen_path`` (its folder's name, ``bionet``): its
    manifest, its cache and its part ``<name>/unseen`` are named after it."""
    return Path(read_block("cells", cells)["unseen_path"]).name


def load_unseen_caches(cells: dict | None = None, paths: Paths = DEFAULT_PATHS
                       ) -> dict[str, CellCache]:
    """{name: cache} of the lab of ``cells.unseen_path`` (the ``cells`` block, or
    params/cells.yaml), as ``crosssource.evaluate_cell_models`` takes them."""
    name = unseen_name(cells)
    return {name: load_unseen_cache(name, paths)}


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(description="Stage cells-unseen: prepare a lab's cells "
                                                 "that no model trains on.")
    parser.add_argument("--path", default=None,
                        help="the lab's folder of class folders (default: params/cells.yaml "
                             "cells.unseen_path)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    path = args.path or read_block("cells")["unseen_path"]
    written = build_unseen_cache(path, CellStudy.from_params(), list(DIFFERENTIAL_CLASSES),
                                 workers=args.workers)
    rows = load_unseen_cache(Path(path).name).rows
    print(f"{written}: {len(rows)} cells, nucleus found in {int(rows['cell_found'].sum())}; "
          + ", ".join(f"{k} {v}" for k, v in rows["label"].value_counts().sort_index().items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
