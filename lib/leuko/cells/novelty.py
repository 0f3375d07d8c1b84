"""How far a cell lies from the cells a model was trained on: the warning that a lab's cells
are unlike the model's training sources (issue 35).

A classifier trained on two labs is sure of itself on a third lab's cells too, and wrong more
often there; its softmax cannot say so. Its penultimate features can: the cells of another
lab's stain, camera and framing land away from where the training cells lie. So:

1. **Features** (:mod:`leuko.cells.outputs`): the model's penultimate features (the input of
   its softmax Dense, :func:`~leuko.cells.outputs.split_head`), averaged over the model's
   ``views`` (the symmetries its probabilities are averaged over), then scaled to unit length (:func:`normalise`: the
   direction, not the size, tells a lab apart; measured: AUROC 0.92 against 0.85 unscaled for
   the shipped model, bionet against the sources' test cells).
2. **Distance** (:meth:`Novelty.distance`): the Mahalanobis distance to the nearest class
   mean, with one covariance shared by the classes (Ledoit-Wolf shrinkage of the within-class
   scatter), fitted on the training cells of the model's sources (the study's cell cache,
   ``build/cells/``, split ``train``, prepared as ``leuko classify`` prepares a cell).
3. **A far cell**: its distance exceeds its nearest class's threshold, the ``quantile`` of
   the distances of the sources' validation cells (cells no fit saw) nearest that class (the
   pooled quantile of all of them for a class with fewer than ``group_min_cells``): about
   ``1 - quantile`` of the sources' own new cells of each class are far. A class the sources
   show in many guises (PBC's erythroblasts) is not flagged for being broad: with one pooled
   threshold, 57 % of PBC's test erythroblasts were far for the shipped model. The distance
   reported is relative to that threshold: far means above 1.
4. **A folder to worry about**: more than ``folder_share`` of its cells are far (the
   ``leuko classify`` run's warning, which suggests ``leuko adapt``).

``quantile``, ``folder_share`` and ``group_min_cells`` live in ``params/export.yaml``
(``export.novelty``) only;
the fit keeps them, so the file beside a model (``<model stem>-novelty.npz``,
:func:`novelty_path`) is all ``leuko classify`` needs. ``leuko adapt`` refits it with the
lab's labelled cells as classes of their own (:meth:`Novelty.with_lab_cells`), so that the
adapted model does not warn about the lab it was adapted to.

Stage ``novelty`` (``python -m leuko.cells.novelty``, :func:`novelty_stage`): the exported model's
file, and for each cell model of ``cells.trainings`` and the exported one, how well the
distance tells an unseen source (the sources a model was not trained on, and the unseen lab
``cells.unseen_path``) from the model's own sources' test cells (AUROC per cell) and which
parts and class folders the rule flags: ``reports/cells-novelty/separation.csv`` and
``metrics.json``. It runs no network: the features are those evaluate-cells saved
(``leuko.cells.outputs``, ``build/cell-outputs/``), checked to be of each model file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from leuko.cells.multisource import DEFAULT_PATHS, CellCache, cell_model_id, load_cell_cache
from leuko.cells.outputs import CACHE_GROUP, load_outputs, outputs_path
from leuko.cells.unseen import load_unseen_cache
from leuko.core.atomic import write_csv_atomic, write_json_atomic
from leuko.core.images import file_sha256
from leuko.core.params import read_block, typed
from leuko.thesis.study import (
    Paths,
    load_features,
    model_paths,
    read_json,
    save_features,
)

#: The file beside a model: ``<model stem>`` + this.
SUFFIX = "-novelty.npz"
#: The test splits of the study's sources (blood-cell-images' TEST and TEST_SIMPLE, PBC's test).
TEST_SPLITS = ("test", "test_simple")


class NoveltyError(ValueError):
    """A novelty file that does not belong to its model, or cells it cannot be fitted on."""


# --------------------------------------------------------------------------------------------
# the distance and the rule
# --------------------------------------------------------------------------------------------
def normalise(feats: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (float64); a row of zeros stays zeros."""
    feats = np.asarray(feats, np.float64)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return np.divide(feats, norms, out=np.zeros_like(feats), where=norms > 0)


@dataclass(frozen=True)
class NoveltySettings:
    """The rule's numbers (``params/export.yaml``: ``export.novelty``): a cell is far beyond
    the ``quantile`` of the distances of the sources' validation cells nearest its class (all
    of them for a class with fewer than ``group_min_cells``); a folder is flagged when more
    than ``folder_share`` of its cells are far."""

    quantile: float
    folder_share: float
    group_min_cells: int

    def __post_init__(self):
        for name in ("quantile", "folder_share"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"export.novelty.{name} must be between 0 and 1, got {value!r}")
        if not (isinstance(self.group_min_cells, int | np.integer) and self.group_min_cells >= 1):
            raise ValueError("export.novelty.group_min_cells must be an integer >= 1, got "
                             f"{self.group_min_cells!r}")

    @classmethod
    def from_params(cls, export: dict | None = None) -> NoveltySettings:
        """From the ``export`` block (None: read ``params/export.yaml``); its ``novelty``
        sub-block's ``target_auroc`` is the stage's report target, not part of the rule."""
        block = read_block("export", export)
        if "novelty" not in block:
            raise ValueError("params/export.yaml: the export block has no 'novelty' sub-block")
        return typed(cls, block["novelty"], "params/export.yaml: export.novelty",
                     ignore=("target_auroc",))


def novelty_path(model_path: str | Path) -> Path:
    """The novelty file that belongs to a model: ``x.keras`` -> ``x-novelty.npz``."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}{SUFFIX}")


@dataclass(frozen=True)
class Novelty:
    """A fitted distance: the groups' means (a class of the sources, or a lab's class) and the
    shared precision matrix in the normalised feature space, each group's far threshold (and
    the pooled one), the rule's settings, the model it belongs to (sha256 of its file), and
    the cells it was fitted on (normalised features with their groups; the sources'
    validation cells), so that ``leuko adapt`` can refit it with a lab's cells. ``info``:
    what it was fitted on, in words and counts."""

    groups: tuple[str, ...]
    means: np.ndarray
    precision: np.ndarray
    thresholds: np.ndarray
    pooled_threshold: float
    settings: NoveltySettings
    model_sha256: str
    fit_features: np.ndarray
    fit_groups: np.ndarray
    val_features: np.ndarray
    info: dict = field(default_factory=dict)

    def distance(self, feats: np.ndarray) -> np.ndarray:
        """Each cell's distance to the nearest group mean, from its view-averaged penultimate
        features ``(N, D)`` (normalised here), relative to that group's threshold."""
        distance, nearest = _nearest(normalise(feats), self.means, self.precision)
        return distance / self.thresholds[nearest]

    def is_far(self, distance: np.ndarray) -> np.ndarray:
        """Whether each (relative) distance is beyond its group's threshold: above 1."""
        return np.asarray(distance) > 1.0

    def flags(self, far: int, cells: int) -> bool:
        """Whether a folder of ``cells`` cells, ``far`` of them far, is unlike the sources."""
        return cells > 0 and far / cells > self.settings.folder_share

    def with_lab_cells(self, feats: np.ndarray, labels, lab: str, model_sha256: str
                       ) -> Novelty:
        """Refitted with a lab's labelled cells (view-averaged features ``(N, D)`` and their
        class names) added as groups of their own (``<lab>/<class>``), for ``model_sha256``
        (the adapted model): the lab's cells lie near their own means, and the shared
        covariance learns some of the lab's spread. The sources' groups keep thresholds from
        their validation cells; a lab's group, which has none, takes the quantile of its own
        cells' leave-one-out distances (each to the mean of the others), at least the pooled
        threshold (a group of one cell: the pooled one), so that the lab's new cells are far
        about as rarely as the sources' own."""
        labels = np.asarray(labels, dtype=str)
        if len(labels) != len(feats):
            raise NoveltyError(f"{len(feats)} lab cells but {len(labels)} labels")
        info = {**self.info, "lab_cells": {**self.info.get("lab_cells", {}),
                                           lab: int(len(labels))}}
        refit = fit(np.concatenate([self.fit_features, normalise(feats)]),
                    np.concatenate([self.fit_groups, np.char.add(f"{lab}/", labels)]),
                    self.val_features, self.settings, model_sha256, info, normalised=True)
        thresholds = refit.thresholds.copy()
        z = refit.fit_features.astype(np.float64)
        for i, group in enumerate(refit.groups):
            cells = z[refit.fit_groups == group]
            if "/" not in group or len(cells) < 2:  # a source's class, or a lone lab cell
                continue
            others = (len(cells) * refit.means[i] - cells) / (len(cells) - 1)
            gap = cells - others
            loo = np.sqrt(np.clip(((gap @ refit.precision) * gap).sum(axis=1), 0, None))
            thresholds[i] = max(refit.pooled_threshold,
                                float(np.quantile(loo, self.settings.quantile)))
        return dataclasses.replace(refit, thresholds=thresholds, info={
            **refit.info, "lab_thresholds": "the quantile of the lab's cells' leave-one-out "
                                            "distances to their group's mean, at least the "
                                            "pooled threshold"})

    def save(self, path: str | Path) -> Path:
        """Write the fit to ``path`` (``.npz``, no pickles), atomically."""
        return save_features(
            Path(path), groups=np.array(self.groups, dtype=str), means=self.means,
            precision=self.precision, thresholds=self.thresholds,
            pooled_threshold=np.float64(self.pooled_threshold),
            quantile=np.float64(self.settings.quantile),
            folder_share=np.float64(self.settings.folder_share),
            group_min_cells=np.int64(self.settings.group_min_cells),
            model_sha256=np.str_(self.model_sha256),
            fit_features=self.fit_features.astype(np.float32),
            fit_groups=np.asarray(self.fit_groups, dtype=str),
            val_features=self.val_features.astype(np.float32),
            info=np.str_(json.dumps(self.info, sort_keys=True)))

    @classmethod
    def load(cls, path: str | Path, model_path: str | Path) -> Novelty:
        """The fit saved at ``path``, checked to belong to the model file ``model_path`` (its
        sha256); NoveltyError naming both files otherwise."""
        path = Path(path)
        arrays = load_features(path)
        missing = sorted({"groups", "means", "precision", "thresholds", "pooled_threshold",
                          "quantile", "folder_share", "group_min_cells", "model_sha256",
                          "fit_features", "fit_groups", "val_features", "info"} - set(arrays))
        if missing:
            raise NoveltyError(f"{path} is not a novelty file (it lacks {missing})")
        sha = str(arrays["model_sha256"])
        actual = file_sha256(model_path)
        if sha != actual:
            raise NoveltyError(
                f"{path} was fitted for another model (sha256 {sha[:12]}...) than "
                f"{model_path} ({actual[:12]}...): refit it (`dvc repro novelty` for the "
                "study's model, `leuko adapt` writes one for an adapted model) or delete it")
        return cls(groups=tuple(str(g) for g in arrays["groups"]), means=arrays["means"],
                   precision=arrays["precision"], thresholds=arrays["thresholds"],
                   pooled_threshold=float(arrays["pooled_threshold"]),
                   settings=NoveltySettings(float(arrays["quantile"]),
                                            float(arrays["folder_share"]),
                                            int(arrays["group_min_cells"])),
                   model_sha256=sha, fit_features=arrays["fit_features"],
                   fit_groups=arrays["fit_groups"], val_features=arrays["val_features"],
                   info=json.loads(str(arrays["info"])))


def _nearest(z: np.ndarray, means: np.ndarray, precision: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """sqrt(min over groups of (z - mean)' P (z - mean)) per row of ``z``, and that group."""
    zp = z @ precision
    squared = ((zp * z).sum(axis=1)[:, None] - 2 * zp @ means.T
               + ((means @ precision) * means).sum(axis=1)[None])
    nearest = squared.argmin(axis=1)
    return np.sqrt(np.clip(squared[np.arange(len(z)), nearest], 0, None)), nearest


def fit(train_features: np.ndarray, train_groups, val_features: np.ndarray,
        settings: NoveltySettings, model_sha256: str, info: dict,
        normalised: bool = False) -> Novelty:
    """The distance fitted on ``train_features`` (view-averaged penultimate features, one row
    per cell; ``normalised``: already scaled to unit length) with each cell's group (its
    class): the groups' means and the Ledoit-Wolf precision of the within-group residuals;
    each group's threshold is ``settings.quantile`` of the distances of the ``val_features``
    nearest it, the pooled quantile of all of them for a group with fewer than
    ``settings.group_min_cells`` (``info`` names those groups)."""
    z = np.asarray(train_features, np.float64) if normalised else normalise(train_features)
    val = np.asarray(val_features, np.float64) if normalised else normalise(val_features)
    groups = np.asarray(train_groups, dtype=str)
    if len(z) != len(groups):
        raise NoveltyError(f"{len(z)} training cells but {len(groups)} groups")
    if len(z) < 2 or len(val) == 0:
        raise NoveltyError(f"cannot fit a distance on {len(z)} training and {len(val)} "
                           "validation cells")
    names = sorted(set(groups.tolist()))
    index = np.searchsorted(names, groups)
    means = np.stack([z[index == i].mean(axis=0) for i in range(len(names))])
    precision = LedoitWolf(assume_centered=True).fit(z - means[index]).precision_
    val_distance, val_nearest = _nearest(val, means, precision)
    pooled = float(np.quantile(val_distance, settings.quantile))
    val_counts = np.bincount(val_nearest, minlength=len(names))
    thresholds = np.array([
        float(np.quantile(val_distance[val_nearest == i], settings.quantile))
        if val_counts[i] >= settings.group_min_cells else pooled for i in range(len(names))])
    counts = pd.Series(groups).value_counts().sort_index()
    return Novelty(groups=tuple(names), means=means, precision=precision,
                   thresholds=thresholds, pooled_threshold=pooled, settings=settings,
                   model_sha256=model_sha256, fit_features=z.astype(np.float32),
                   fit_groups=groups, val_features=val.astype(np.float32),
                   info={**info, "cells_per_group": {k: int(v) for k, v in counts.items()},
                         "val_cells": int(len(val)),
                         "val_cells_nearest": {n: int(c) for n, c in zip(names, val_counts,
                                                                          strict=True)},
                         "pooled_threshold_for": [n for n, c in zip(names, val_counts,
                                                                    strict=True)
                                                  if c < settings.group_min_cells]})


# --------------------------------------------------------------------------------------------
# the stage: the exported model's file and how well the distance separates
# --------------------------------------------------------------------------------------------
@dataclass
class CellModel:
    """A model the stage measures: its name, file, sources and views, and the id of the
    study's model it is (the exported model is a copy of one: its outputs are that one's)."""

    name: str
    path: Path
    sources: list[str]
    views: int
    model_id: str


def _cell_model(name: str, model_id: str, path: Path, summary: dict, where: Path
                ) -> CellModel:
    missing = [k for k in ("sources", "views") if k not in summary]
    if missing:
        raise NoveltyError(f"{where} lacks {missing}: not a cell model's summary")
    return CellModel(name, path, list(summary["sources"]), int(summary["views"]), model_id)


def study_models(trainings, exported: Path, paths: Paths) -> list[CellModel]:
    """The cell models of ``trainings`` (``cells-<training>``, their training summaries) and
    the exported model (its metadata JSON beside it)."""
    models = []
    for training in trainings:
        model_id = cell_model_id(training)
        where = model_paths(model_id, paths)
        summary_file = where.train_summary(model_id)
        if not summary_file.is_file():
            raise FileNotFoundError(f"{summary_file} not found: train {model_id} first "
                                    f"(dvc repro train-cells@{training})")
        models.append(_cell_model(model_id, model_id, where.model(model_id),
                                  read_json(summary_file), summary_file))
    meta = exported.with_suffix(".json")
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found: export the model first (dvc repro export)")
    exported_meta = read_json(meta)
    if "model_id" not in exported_meta:
        raise NoveltyError(f"{meta} lacks model_id: not an exported model's metadata")
    models.append(_cell_model(f"exported ({exported.name})", exported_meta["model_id"],
                              exported, exported_meta, meta))
    return models


def _parts(model: CellModel, cache: CellCache, unseen: CellCache, unseen_name: str
           ) -> list[tuple[str, str, pd.DataFrame, str]]:
    """``(part, kind, rows, cache)`` of what a model is measured on: its sources' test parts
    (``own``) and the test parts of the other sources and the unseen lab (``unseen``)."""
    parts = []
    for source in sorted(set(cache.rows["source"])):
        kind = "own" if source in model.sources else "unseen"
        for split in TEST_SPLITS:
            rows = cache.rows[(cache.rows["source"] == source) & (cache.rows["split"] == split)]
            if len(rows):
                parts.append((f"{source}/{split}", kind, rows, "cells"))
    parts.append((f"{unseen_name}/{unseen.rows['split'].iloc[0]}", "unseen", unseen.rows,
                  "unseen"))
    return parts


def measure_model(model: CellModel, distance: dict[str, np.ndarray], novelty: Novelty,
                  cache: CellCache, unseen: CellCache, unseen_name: str) -> pd.DataFrame:
    """One row per part and per class folder of a part: cells, far cells, their share,
    whether the rule flags it, and for an unseen part the AUROC of the distance against all
    of the model's own test cells (the probability that an unseen cell lies farther than an
    own one)."""
    parts = _parts(model, cache, unseen, unseen_name)
    own = np.concatenate([distance[c][rows["index"].to_numpy(int)]
                          for _, kind, rows, c in parts if kind == "own"])
    out = []
    for name, kind, rows, which in parts:
        d = distance[which][rows["index"].to_numpy(int)]
        auroc = float("nan")
        if kind == "unseen":
            auroc = float(roc_auc_score(np.r_[np.zeros(len(own)), np.ones(len(d))],
                                        np.r_[own, d]))
        labels = rows["label"].to_numpy(str)
        for folder in ["", *sorted(set(labels))]:
            pick = np.ones(len(d), bool) if folder == "" else labels == folder
            far = int(novelty.is_far(d[pick]).sum())
            out.append({"model": model.name, "part": name, "kind": kind,
                        "class": folder or "(all)", "cells": int(pick.sum()), "far": far,
                        "far_share": far / int(pick.sum()),
                        "flagged": novelty.flags(far, int(pick.sum())),
                        "auroc": auroc if folder == "" else float("nan"),
                        "median_distance": float(np.median(d[pick]))})  # relative: far > 1
    return pd.DataFrame(out)


def _summary(table: pd.DataFrame, novelty: Novelty, target_auroc: float) -> dict:
    """A model's figures against the issue's targets: AUROC of each unseen part, the largest
    far share of an own test part and of its class folders, what is flagged."""
    whole = table[table["class"] == "(all)"]
    unseen, own = whole[whole["kind"] == "unseen"], whole[whole["kind"] == "own"]
    own_folders = table[(table["kind"] == "own") & (table["class"] != "(all)")]
    return {"thresholds": dict(zip(novelty.groups, novelty.thresholds.tolist(), strict=True)),
            "pooled_threshold": novelty.pooled_threshold,
            "auroc": dict(zip(unseen["part"], unseen["auroc"], strict=True)),
            "own_test_far_share": dict(zip(own["part"], own["far_share"], strict=True)),
            "own_test_max_far_share": float(own["far_share"].max()),
            "own_class_folder_max_far_share": float(own_folders["far_share"].max()),
            "unseen_far_share": dict(zip(unseen["part"], unseen["far_share"], strict=True)),
            "flagged_parts": sorted(whole[whole["flagged"]]["part"]),
            "flagged_own_class_folders": [f"{p}/{c}" for p, c in zip(
                own_folders[own_folders["flagged"]]["part"],
                own_folders[own_folders["flagged"]]["class"], strict=True)],
            "targets_met": {
                f"auroc >= {target_auroc}": bool((unseen["auroc"] >= target_auroc).all()),
                "no own test part flagged": bool(not own["flagged"].any()),
                "no own test class folder flagged": bool(not own_folders["flagged"].any()),
                "every unseen part flagged": bool(unseen["flagged"].all())}}


def novelty_stage(exported: str | Path, trainings, unseen_path: str | Path,
                  settings: NoveltySettings, target_auroc: float, out_dir: str | Path,
                  paths: Paths = DEFAULT_PATHS) -> dict:
    """Stage ``novelty``: fit each model's distance on its sources' training cells (the cell
    cache; their features as evaluate-cells saved them, ``outputs.load_outputs``), write the
    exported model's file beside it (:func:`novelty_path`), measure every model on its own
    test parts and the unseen ones, and write ``separation.csv`` and ``metrics.json`` to
    ``out_dir``. Returns the metrics."""
    exported = Path(exported)
    cache = load_cell_cache(paths)
    unseen_name = Path(unseen_path).name
    unseen = load_unseen_cache(unseen_name, paths)
    tables, metrics = [], {}
    for model in study_models(trainings, exported, paths):
        outputs = load_outputs(outputs_path(model.model_id, paths), model.path)
        feats = {"cells": outputs.features[CACHE_GROUP].mean(axis=0),
                 "unseen": outputs.features[unseen_name].mean(axis=0)}
        sha = outputs.model_sha256
        rows = cache.rows[cache.rows["source"].isin(model.sources)]
        train, val = rows[rows["split"] == "train"], rows[rows["split"] == "val"]
        novelty = fit(feats["cells"][train["index"].to_numpy(int)], train["label"],
                      feats["cells"][val["index"].to_numpy(int)], settings, sha,
                      {"model": model.name, "sources": model.sources, "views": model.views,
                       "fitted_on": "the sources' training cells of the study's cell cache "
                                    "(split train); thresholds: quantiles of the "
                                    "distances of their validation cells (split val)"})
        if model.path == exported:
            novelty.save(novelty_path(exported))
        distance = {which: novelty.distance(f) for which, f in feats.items()}
        table = measure_model(model, distance, novelty, cache, unseen, unseen_name)
        tables.append(table)
        metrics[model.name] = _summary(table, novelty, target_auroc)
    out_dir = Path(out_dir)
    write_csv_atomic(out_dir / "separation.csv", pd.concat(tables, ignore_index=True))
    result = {"rule": {"quantile": settings.quantile, "folder_share": settings.folder_share,
                       "group_min_cells": settings.group_min_cells,
                       "distance": "Mahalanobis to the nearest class mean, shared Ledoit-Wolf "
                                   "covariance, on unit-length view-averaged penultimate "
                                   "features, relative to that class's threshold (far: > 1)"},
              "target_auroc": target_auroc, "novelty_file": str(novelty_path(exported)),
              "models": metrics}
    write_json_atomic(out_dir / "metrics.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m leuko.cells.novelty --model build/export/wbc.keras --out-dir DIR``: the stage,
    with the rule from ``params/export.yaml`` and the models and unseen lab from
    ``params/cells.yaml``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m leuko.cells.novelty",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the exported model")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    export = read_block("export")
    cells = read_block("cells")
    result = novelty_stage(args.model, cells["trainings"], cells["unseen_path"],
                           NoveltySettings.from_params(export),
                           float(export["novelty"]["target_auroc"]), args.out_dir)
    for name, m in result["models"].items():
        print(f"{name}: AUROC " + ", ".join(f"{p} {a:.3f}" for p, a in m["auroc"].items())
              + f"; own test parts far <= {m['own_test_max_far_share']:.2f}; flagged: "
              + (", ".join(m["flagged_parts"]) or "none"))
    print(f"Wrote {result['novelty_file']} and {args.out_dir}/separation.csv, metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
