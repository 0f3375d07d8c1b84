"""How many labelled cells win a new lab back, and does JPEG change a cell's class?
(stage adapt-cells, notebook 13)

**Adaptation curves.** A cell model loses accuracy on a lab it was not trained on; ``leuko
adapt`` refits its last layer on a few of that lab's labelled cells. This module measures what
k labelled cells per class buy, k = ``cells.adaptation.ks``, in three cases
(:func:`scenarios`):

* ``bionet``: the shipped two-source model (``cells-both``) adapted to the third lab
  (``data/bionet``, :mod:`leuko.cells.unseen`) with k of its cells per class, scored on the rest;
* ``pbc``: the blood-cell-images model adapted with k of PBC's training cells per class, scored
  on PBC's test part;
* ``blood-cell-images``: the PBC model adapted with k of blood-cell-images' training cells per
  class, scored on TEST_SIMPLE and TEST,

so the last two are the two leave-one-source-out pairs, each with its unseen source. The method
is ``leuko adapt``'s, with its defaults (:mod:`leuko.tool.adapt`; nothing is chosen on the scored
cells): the penultimate features of the model's views of every cell are those evaluate-cells
computed once per model (:mod:`leuko.cells.outputs`), and per draw the last layer is refitted
(:func:`leuko.tool.adapt.fit_head`) on the k cells per class, all their views, mixed with a
class-balanced sample of the model's own training cells (:func:`leuko.tool.adapt.source_sample`,
``source_per_class``), pulled towards the base weights; only the classes drawn change. k = 0
is the base model. Accuracy and argmax do not depend on the temperature, so none is refitted.

*Draws.* Per draw, each class's candidate cells (one image per source cell, never one cut
tight to its cell: as a lab labels them) are put in a seeded random order and the first k are
taken, so a draw's cells at k = 5 are among its cells at k = 10 (one lab labelling more and
more). Too few cells: when the candidates are the scored cells themselves (bionet), a class
gives at most half its cells (floor(n / 2)), so that at least half of it is scored: bionet's
5 monocytes give 2 at every k >= 2 and 3 are scored, its 52 lymphocytes give 26 at k = 50;
when they are another part (a source's training cells), a class with fewer source cells than
k gives all of them (blood-cell-images TRAIN holds 15 monocyte and 24 lymphocyte cells). The
cells used per class are in the output. k = 0 is one draw (the base model on every scored
cell).

*Scores.* Per draw, :func:`leuko.core.score.score_labels` over the scored cells (intervals: the
cluster bootstrap over source cells); per k, pooled over the draws: each draw's predictions
stacked, the bootstrap resampling whole cells with the predictions of every draw that scored
them, so the interval is that of the score one draw of k cells gives, the draws' spread
included (mean, sd, min and max over draws beside it).

**JPEG stability** (:func:`jpeg_stability`): the share of cells whose class the shipped model
(``build/export/wbc.keras``) changes when the image file is decoded, re-encoded as JPEG at
each quality of ``cells.adaptation.jpeg_qualities`` and prepared and classified as ``leuko
classify`` does (:meth:`leuko.tool.classify.Classifier.prepare_flagged`, ``predict_batch``), on a
seeded class-balanced sample of each source's test part and on every cell of the unseen lab.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from leuko.cells.multisource import DEFAULT_PATHS, TEST_PARTS, CellCache, cell_model_id
from leuko.cells.outputs import group_of, load_outputs, outputs_path
from leuko.cells.unseen import UNSEEN_SPLIT
from leuko.core.atomic import write_csv_atomic
from leuko.core.images import load_rgb
from leuko.core.metrics import format_interval, proportion_intervals
from leuko.core.params import read_block, typed
from leuko.core.progress import progress_bar
from leuko.core.score import score_labels
from leuko.core.splits import balanced_subsample
from leuko.thesis.evaluation import source_cells
from leuko.thesis.study import Paths, load_model, read_json
from leuko.tool.adapt import (
    L2_PULL,
    features,
    fit_head,
    softmax_probs,
    source_sample,
    split_head,
    training_set,
)
from leuko.tool.classify import Classifier

#: Where the stage writes its tables.
REPORT_DIR = Path("reports/adaptation")


@dataclass(frozen=True)
class AdaptationSettings:
    """``params/cells.yaml: cells.adaptation`` (each value is explained there)."""

    ks: tuple[int, ...]
    draws: int
    source_per_class: int
    jpeg_qualities: tuple[int, ...]
    jpeg_per_class: int
    target_macro_f1: tuple[tuple[int, float], ...]
    target_jpeg_changed: float

    def __post_init__(self):
        if not self.ks or min(self.ks) < 0 or list(self.ks) != sorted(set(self.ks)):
            raise ValueError(f"cells.adaptation.ks must be increasing counts >= 0, got "
                             f"{list(self.ks)}")
        if self.draws < 1:
            raise ValueError(f"cells.adaptation.draws must be >= 1, got {self.draws}")
        if any(not 1 <= q <= 95 for q in self.jpeg_qualities):
            raise ValueError(f"cells.adaptation.jpeg_qualities must be in 1..95 (PIL), got "
                             f"{list(self.jpeg_qualities)}")

    @classmethod
    def from_params(cls, cells: dict | None = None) -> AdaptationSettings:
        p = dict(read_block("cells", cells)["adaptation"])
        p["ks"] = tuple(int(k) for k in p["ks"])
        p["jpeg_qualities"] = tuple(int(q) for q in p["jpeg_qualities"])
        p["target_macro_f1"] = tuple((int(k), float(v)) for k, v in p["target_macro_f1"])
        return typed(cls, p, "cells.adaptation")


@dataclass(frozen=True)
class Scenario:
    """One model adapted to one lab: ``training`` (its model ``cells-<training>``), the part
    its k cells per class are drawn from (``lab``: source, split) and the parts it is scored
    on (``scored``); a drawn cell is never scored."""

    name: str
    training: str
    lab: tuple[str, str]
    scored: tuple[tuple[str, str], ...]

    @property
    def model_id(self) -> str:
        return cell_model_id(self.training)


def scenarios(unseen_name: str) -> tuple[Scenario, ...]:
    """The three cases of the module doc: the shipped model to the unseen lab, then each
    single-source model to the other source."""
    lab = (unseen_name, UNSEEN_SPLIT)
    return (Scenario(unseen_name, "both", lab, (lab,)),
            Scenario("pbc", "blood-cell-images", ("pbc", "train"), (("pbc", "test"),)),
            Scenario("blood-cell-images", "pbc", ("blood-cell-images", "train"),
                     (("blood-cell-images", "test_simple"), ("blood-cell-images", "test"))))


def part_of(cache: CellCache, unseen: dict[str, CellCache], source: str, split: str
            ) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows and images of a part, from the unseen lab's cache or the sources' one."""
    rows, images = (unseen[source] if source in unseen else cache).part(source, split)
    if rows.empty:
        raise ValueError(f"no cell of {source}/{split} in the caches (stages cells, "
                         "cells-unseen)")
    return rows, images


def candidates(rows: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """The cells a lab could label: rows of ``classes``, not cut tight, one image (the first
    by path) per source cell (column ``cell``), with their position in ``rows`` (``at``)."""
    rows = rows.assign(at=np.arange(len(rows)), cell=source_cells(rows))
    rows = rows[rows["label"].isin(classes) & ~rows["tight"].astype(bool)]
    return rows.sort_values("path", kind="stable").drop_duplicates("cell").reset_index(
        drop=True)


def draw_cells(pool: pd.DataFrame, k: int, draw: int, seed: int, keep_half: bool
               ) -> pd.DataFrame:
    """The ``k`` cells per class of one draw (see the module doc): per class in name order a
    permutation seeded by (seed, draw), its first ``min(k, n)`` cells, or ``min(k, n // 2)``
    with ``keep_half``. The permutation does not depend on k, so draws are nested in k."""
    rng = np.random.default_rng([int(seed), 36, int(draw)])
    taken = []
    for _, group in pool.groupby("label", sort=True):
        order = rng.permutation(len(group))
        n = min(k, len(group) // 2 if keep_half else len(group))
        taken.append(group.iloc[np.sort(order[:n])])
    return pd.concat(taken) if taken else pool.iloc[:0]


def _per_class(labels: pd.Series) -> str:
    return ", ".join(f"{c} {n}" for c, n in labels.value_counts().sort_index().items())


def _interval_columns(prefix: str, interval: dict) -> dict:
    return {prefix: interval["value"], f"{prefix}_low": interval["low"],
            f"{prefix}_high": interval["high"]}


@dataclass
class _Scored:
    """One scored part of a scenario: its rows of the model's classes, their class indices,
    source-cell ids and features ``(views, N, D)``."""

    part: str
    rows: pd.DataFrame
    y: np.ndarray
    cells: np.ndarray
    x: np.ndarray


def adapt_scenario(scenario: Scenario, settings: AdaptationSettings, cache: CellCache,
                   unseen: dict[str, CellCache], n_boot: int, seed: int,
                   paths: Paths = DEFAULT_PATHS, progress: bool = True
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One scenario's curves (a row per scored part and k, pooled over draws) and draws (a
    row per scored part, k and draw); see the module doc."""
    start = time.perf_counter()
    summary = read_json(paths.train_summary(scenario.model_id))
    classes = list(summary["classes"])
    views = int(summary.get("views", 1))
    model_path = paths.model(scenario.model_id)
    model = load_model(model_path)
    head = split_head(model)
    kernel0, bias0 = head.weights
    index = {c: i for i, c in enumerate(classes)}
    outputs = load_outputs(outputs_path(scenario.model_id, paths), model_path)
    if outputs.views != views:
        raise ValueError(f"{outputs_path(scenario.model_id, paths)} holds {outputs.views} "
                         f"views; {scenario.model_id}'s summary records {views}")

    def part_features(source: str, rows: pd.DataFrame) -> np.ndarray:
        """The penultimate features of each view of ``rows``, as evaluate-cells saved them."""
        return outputs.rows(group_of(source, unseen), rows)[0]

    scored = []
    for source, split in scenario.scored:
        rows, _ = part_of(cache, unseen, source, split)
        rows = rows[rows["label"].isin(classes).to_numpy()].reset_index(drop=True)
        scored.append(_Scored(f"{source}/{split}", rows,
                              rows["label"].map(index).to_numpy(dtype=int), source_cells(rows),
                              part_features(source, rows)))
    lab_rows, _ = part_of(cache, unseen, *scenario.lab)
    pool = candidates(lab_rows, classes)
    ks = [k for k in settings.ks if k > 0]
    drawn = {(d, k): draw_cells(pool, k, d, seed, scenario.lab in scenario.scored)
             for d in range(settings.draws) for k in ks}
    pool_x = part_features(scenario.lab[0], lab_rows)
    pool_at = dict(zip(lab_rows["path"], range(len(lab_rows)), strict=True))

    classifier = Classifier(model=model, classes=classes,
                            image_size=tuple(cache.images.shape[1:3]),
                            metadata={"sources": summary["sources"]})
    source = source_sample(classifier, [paths.root], settings.source_per_class, seed)
    source_x = source_y = None
    if source.used:
        source_x = features(head, source.images, 1, progress=progress)[0]
        source_y = source.labels

    rows = []
    runs = [(0, 0, None)] * (0 in settings.ks) + [(k, d, drawn[d, k]) for k in ks
                                                   for d in range(settings.draws)]
    for k, d, cells in progress_bar(runs, enabled=progress, desc=f"adapt {scenario.name}",
                                    unit="fit"):
        kernel, bias, per_class = kernel0, bias0, ""
        if cells is not None and len(cells):
            lab_x = pool_x[:, [pool_at[p] for p in cells["path"]]]
            lab_y = cells["label"].map(index).to_numpy(dtype=int)
            x, y, w = training_set(lab_x, lab_y, source_x, source_y, 1.0)
            kernel, bias = fit_head(x, y, w, kernel0, bias0, np.unique(lab_y), L2_PULL)
            per_class = _per_class(cells["label"])
        taken = set(cells["path"]) if cells is not None else set()
        for part in scored:
            rest = ~part.rows["path"].isin(taken).to_numpy()
            predicted = softmax_probs(part.x[:, rest], kernel, bias).argmax(axis=1)
            rows.append({"scenario": scenario.name, "model": scenario.model_id,
                         "adapted with": "/".join(scenario.lab), "tested on": part.part,
                         "k": k, "draw": d, "cells per class": per_class,
                         "rest": np.flatnonzero(rest), "predicted": predicted})
    draws = []
    for row in rows:
        part = next(s for s in scored if s.part == row["tested on"])
        figures = score_labels(part.y[row["rest"]], row["predicted"], classes,
                               groups=part.cells[row["rest"]], n_boot=n_boot, seed=seed)
        draws.append({**{k: v for k, v in row.items() if k not in ("rest", "predicted")},
                      "images": int(len(row["rest"])), "cells": figures["n_cells"],
                      **_interval_columns("accuracy", figures["intervals"]["accuracy"]),
                      **_interval_columns("macro_f1", figures["intervals"]["macro_f1"])})
    draws = pd.DataFrame(draws)
    curves = []
    for (part_name, k), group in pd.DataFrame(rows).groupby(["tested on", "k"], sort=False):
        part = next(s for s in scored if s.part == part_name)
        rest = np.concatenate(group["rest"].to_list())
        figures = score_labels(part.y[rest], np.concatenate(group["predicted"].to_list()),
                               classes, groups=part.cells[rest], n_boot=n_boot, seed=seed)
        per_draw = draws[(draws["tested on"] == part_name) & (draws["k"] == k)]
        curves.append({
            "scenario": scenario.name, "model": scenario.model_id,
            "adapted with": "/".join(scenario.lab), "tested on": part_name, "k": int(k),
            "draws": len(group), "cells per class": group["cells per class"].iloc[0],
            "images": int(per_draw["images"].mean()), "cells": int(per_draw["cells"].mean()),
            **_interval_columns("accuracy", figures["intervals"]["accuracy"]),
            **_interval_columns("macro_f1", figures["intervals"]["macro_f1"]),
            **{f"{name} {stat}": getattr(per_draw[name], stat)()
               for name in ("accuracy", "macro_f1") for stat in ("mean", "std", "min", "max")},
            **{f"recall {c}": figures["intervals"][f"recall_{c}"]["value"]
               for c in figures["classes_present"]}})
    curves = pd.DataFrame(curves)
    curves["seconds"] = round(time.perf_counter() - start, 1)  # the whole scenario's
    return curves, draws


def adaptation_curves(settings: AdaptationSettings, cache: CellCache,
                      unseen: dict[str, CellCache], n_boot: int, seed: int,
                      paths: Paths = DEFAULT_PATHS, progress: bool = True
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every scenario's curves and draws (:func:`adapt_scenario`), one after the other."""
    if len(unseen) != 1:
        raise ValueError(f"one unseen lab expected, got {sorted(unseen)}")
    results = [adapt_scenario(s, settings, cache, unseen, n_boot, seed, paths, progress)
               for s in scenarios(next(iter(unseen)))]
    return (pd.concat([c for c, _ in results], ignore_index=True),
            pd.concat([d for _, d in results], ignore_index=True))


def targets_table(curves: pd.DataFrame, targets: Sequence[tuple[int, float]]) -> pd.DataFrame:
    """The issue's targets (``cells.adaptation.target_macro_f1``: [k, macro F1]) against the
    curves: per scored part and target k, the pooled macro F1 with its interval and whether
    it reaches the target (a k the curves lack: ``reached`` empty)."""
    rows = []
    for part, group in curves.groupby("tested on", sort=False):
        by_k = group.set_index("k")
        for k, target in targets:
            row = {"scenario": group["scenario"].iloc[0], "model": group["model"].iloc[0],
                   "tested on": part, "k": int(k), "target macro F1": float(target)}
            if k in by_k.index:
                r = by_k.loc[k]
                row |= {"macro F1": r["macro_f1"], "low": r["macro_f1_low"],
                        "high": r["macro_f1_high"], "reached": bool(r["macro_f1"] >= target)}
            rows.append(row)
    return pd.DataFrame(rows)


def jpeg_targets_table(summary: pd.DataFrame, max_changed: float) -> pd.DataFrame:
    """The JPEG target (``cells.adaptation.target_jpeg_changed``) at the lowest quality
    measured: per part, the share of cells that changed class and whether it is at most
    ``max_changed``."""
    if summary.empty:
        return summary
    lowest = summary[summary["quality"] == summary["quality"].min()]
    return pd.DataFrame({"tested on": lowest["tested on"], "JPEG quality": lowest["quality"],
                         "share changed": lowest["share changed"],
                         "target at most": float(max_changed),
                         "reached": lowest["share changed"] <= max_changed}).reset_index(
        drop=True)


def _pct(value, low=None, high=None) -> str:
    return format_interval(value, low, high, unit="")


def curves_view(curves: pd.DataFrame) -> pd.DataFrame:
    """:func:`adaptation_curves`' curves for reading, in %: per model, scored part and k, the
    cells used per class, macro F1 and accuracy pooled over the draws with their 95 %
    intervals, and the draws' mean ± sd of the macro F1."""
    return pd.DataFrame({
        "model": curves["model"], "adapted with": curves["adapted with"],
        "tested on": curves["tested on"], "k": curves["k"],
        "cells per class": curves["cells per class"].replace("", "–").fillna("–"),
        "draws": curves["draws"], "images scored": curves["images"],
        "macro F1 % [95 % CI]": [_pct(*v) for v in zip(
            curves["macro_f1"], curves["macro_f1_low"], curves["macro_f1_high"], strict=True)],
        "accuracy % [95 % CI]": [_pct(*v) for v in zip(
            curves["accuracy"], curves["accuracy_low"], curves["accuracy_high"], strict=True)],
        "macro F1 % of a draw: mean ± sd": [
            f"{100 * m:.1f} ± {100 * sd:.1f}" if n > 1 else f"{100 * m:.1f}"
            for m, sd, n in zip(curves["macro_f1 mean"], curves["macro_f1 std"],
                                curves["draws"], strict=True)]})


def jpeg_view(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`jpeg_stability`'s summary for reading: per part and quality, the cells whose
    class changed, their share in % with its 95 % interval, how many of them were uncertain
    in either version, and the accuracy before and after."""
    return pd.DataFrame({
        "tested on": summary["tested on"], "JPEG quality": summary["quality"],
        "changed / images": [f"{c} / {n}" for c, n in zip(summary["changed"],
                                                          summary["images"], strict=True)],
        "changed % [95 % CI]": [_pct(*v) for v in zip(
            summary["share changed"], summary["low"], summary["high"], strict=True)],
        "of them uncertain": summary["changed, uncertain in either"],
        "accuracy % before → after": [f"{_pct(a)} → {_pct(b)}" for a, b in zip(
            summary["accuracy original"], summary["accuracy re-encoded"], strict=True)]})


def plot_adaptation_curves(curves: pd.DataFrame, targets: Sequence[tuple[int, float]] = (),
                           title: str = ""):
    """One panel per scored part: macro F1 (line, 95 % band) and accuracy (dashed) against
    the labelled cells per class k, pooled over the draws; the targets as crosses."""

    parts = list(dict.fromkeys(curves["tested on"]))
    cols = min(4, len(parts))
    rows = -(-len(parts) // cols)
    fig = Figure(figsize=(3.4 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, part in zip(axes.flat, parts, strict=False):
        c = curves[curves["tested on"] == part].sort_values("k")
        ax.fill_between(c["k"], 100 * c["macro_f1_low"], 100 * c["macro_f1_high"], alpha=0.25)
        ax.plot(c["k"], 100 * c["macro_f1"], marker="o", label="macro F1")
        ax.plot(c["k"], 100 * c["accuracy"], marker=".", ls="--", color="grey",
                label="accuracy")
        for k, target in targets:
            ax.plot([k], [100 * target], marker="x", color="red", ms=8, ls="none",
                    label="target" if k == targets[0][0] else None)
        ax.set_title(f"{c['model'].iloc[0].removeprefix('cells-')} → {part}", fontsize=9)
        ax.set_xlabel("labelled cells per class (k)", fontsize=8)
        ax.set_ylabel("% (pooled over draws)", fontsize=8)
        ax.set_xticks(sorted(c["k"].unique()))
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(parts):]:
        ax.axis("off")
    fig.suptitle(title or "Adapting the last layer to a lab with k labelled cells per class")
    fig.tight_layout()
    return fig


def read_tables(folder: Path = REPORT_DIR) -> dict[str, pd.DataFrame]:
    """The tables the stage wrote (:func:`write_tables`), by name; {} when it has not run."""
    return {p.stem: pd.read_csv(p, keep_default_na=False, na_values=[""])
            for p in sorted(Path(folder).glob("*.csv"))}


# --------------------------------------------------------------------------------------------
# JPEG stability
# --------------------------------------------------------------------------------------------
def reencode_jpeg(rgb: np.ndarray, quality: int, folder: Path) -> np.ndarray:
    """``rgb`` written as a JPEG file of ``quality`` in ``folder`` and read back as ``leuko
    classify`` reads a file (:func:`leuko.core.images.load_rgb`)."""
    path = Path(folder) / f"{threading.get_ident()}-q{int(quality)}.jpg"
    Image.fromarray(rgb).save(path, format="JPEG", quality=int(quality))
    return load_rgb(path)


def jpeg_sample(cache: CellCache, unseen: dict[str, CellCache], per_class: int, seed: int
                ) -> list[tuple[str, pd.DataFrame, np.ndarray]]:
    """``(part, rows, prepared images)`` of the cells re-encoded: a seeded class-balanced
    sample of ``per_class`` per class of each source's test part (round-robin over source
    cells, ``splits.balanced_subsample``; 0 = all) and every cell of each unseen lab."""

    parts = []
    for source, split in TEST_PARTS:
        rows, images = cache.part(source, split)
        rows = rows.assign(at=np.arange(len(rows)))
        rows = balanced_subsample(rows, per_class, seed).sort_values("path", kind="stable")
        parts.append((f"{source}/{split}", rows.reset_index(drop=True),
                      images[rows["at"].to_numpy()]))
    for name, lab in unseen.items():
        parts.append((f"{name}/{UNSEEN_SPLIT}", *lab.part(name, UNSEEN_SPLIT)))
    return parts


def _predict(classifier: Classifier, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([classifier.predict_batch(images[i:i + batch_size], batch_size)
                           for i in range(0, len(images), batch_size)]) if len(images) else \
        np.zeros((0, len(classifier.classes)), np.float32)


def jpeg_stability(classifier: Classifier, parts: list[tuple[str, pd.DataFrame, np.ndarray]],
                   qualities: Sequence[int], preprocess: dict, workers: int = 2,
                   progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per part and quality: how many cells change class when their file is re-encoded as
    JPEG (see the module doc), with the Clopper-Pearson 95 % interval of the share (each image
    a trial: TEST's images are copies of fewer cells) and how many of the changed were called
    uncertain in either version; and one row per image and quality. ``parts``: from
    :func:`jpeg_sample`, whose images, prepared as the caches were (``preprocess``, the
    ``cells.preprocess`` they were built with), are the originals: the classifier must
    prepare cells as they were prepared (ValueError otherwise)."""

    if classifier.cell_preprocess != preprocess:
        raise ValueError(f"{classifier.path} prepares cells otherwise than the caches "
                         "(cell_preprocess differs from cells.preprocess): rerun export")
    size = tuple(parts[0][2].shape[1:3])
    if tuple(classifier.image_size) != size:
        raise ValueError(f"{classifier.path} takes {classifier.image_size} px cells, the "
                         f"caches hold {size}")
    summary, per_image = [], []
    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(workers) as pool:
        for part, rows, images in parts:
            before = _predict(classifier, images)
            for quality in qualities:
                def prepare(path, q=quality):
                    return classifier.prepare_flagged(reencode_jpeg(load_rgb(path), q, folder))[0]

                prepared = list(progress_bar(pool.map(prepare, rows["path"]), total=len(rows),
                                             enabled=progress, desc=f"{part} q{quality}"))
                after = _predict(classifier, np.stack(prepared))
                old, new = before.argmax(axis=1), after.argmax(axis=1)
                changed = old != new
                uncertain = ((before.max(axis=1) < classifier.abstain_threshold)
                             | (after.max(axis=1) < classifier.abstain_threshold))
                share = proportion_intervals(int(changed.sum()), len(changed))
                summary.append({
                    "tested on": part, "quality": int(quality), "images": len(rows),
                    "changed": int(changed.sum()), "share changed": share["value"],
                    "low": share["clopper_pearson"]["low"],
                    "high": share["clopper_pearson"]["high"],
                    "changed, uncertain in either": int((changed & uncertain).sum()),
                    "accuracy original": float(np.mean(
                        np.array(classifier.classes)[old] == rows["label"].to_numpy())),
                    "accuracy re-encoded": float(np.mean(
                        np.array(classifier.classes)[new] == rows["label"].to_numpy()))})
                per_image.append(pd.DataFrame({
                    "path": rows["path"], "tested on": part, "quality": int(quality),
                    "actual": rows["label"], "original": np.array(classifier.classes)[old],
                    "re-encoded": np.array(classifier.classes)[new],
                    "confidence original": before.max(axis=1).round(4),
                    "confidence re-encoded": after.max(axis=1).round(4)}))
    return pd.DataFrame(summary), pd.concat(per_image, ignore_index=True)


def write_tables(tables: dict[str, pd.DataFrame], folder: Path = REPORT_DIR) -> list[Path]:
    """Each table as ``<name>.csv`` in ``folder`` (atomically)."""

    return [write_csv_atomic(Path(folder) / f"{name}.csv", table)
            for name, table in tables.items()]
