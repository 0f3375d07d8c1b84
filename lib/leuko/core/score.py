"""``leuko score``: ``leuko classify``'s per-cell CSV against a lab's own labels.

A lab that tries the classifier on cells it has labelled wants the figures the study reports
for its held-out sources: accuracy and macro F1 with 95 % intervals, recall per class, the
confusion matrix, what the abstention rule keeps (coverage and accuracy of the cells not marked
``uncertain``), and the differential count the classifier gives against the true one.

Labels come from a CSV (columns ``path`` and ``label``; a path matches the classify CSV's
``path`` as written, or by its file name when that is unique) or, without one, from each
image's folder name (``neutrophil/0001.jpg``). A label may be a class name in any case or
plural, or a common alias (:data:`LABEL_ALIASES`: PBC's file codes, segmented and band
neutrophils, ...). A label that names no class of the model stops the scoring with the list of
such labels, unless ``skip_unknown``: then those cells are left out and counted, never dropped
silently. Each image counts as its own cell: when the images hold copies of one cell (crops,
rotations), the intervals are too narrow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from leuko.core.metrics import (
    accuracy_metric,
    add_exact_interval,
    bootstrap_ci,
    class_recall_metric,
    classification_metrics,
    format_interval,
    macro_f1_metric,
    proportion_intervals,
)

#: Other names a lab may give a class (upper case, as :func:`normalise_label` compares).
LABEL_ALIASES = {
    "SEGMENTED NEUTROPHIL": "NEUTROPHIL", "BAND NEUTROPHIL": "NEUTROPHIL",
    "BAND": "NEUTROPHIL", "SEG": "NEUTROPHIL", "SNE": "NEUTROPHIL", "BNE": "NEUTROPHIL",
    "NEU": "NEUTROPHIL", "LY": "LYMPHOCYTE", "LYM": "LYMPHOCYTE", "MO": "MONOCYTE",
    "MON": "MONOCYTE", "EO": "EOSINOPHIL", "EOS": "EOSINOPHIL", "BA": "BASOPHIL",
    "BAS": "BASOPHIL", "IMMATURE GRANULOCYTE": "IG", "MY": "IG", "MMY": "IG", "PMY": "IG",
    "METAMYELOCYTE": "IG", "MYELOCYTE": "IG", "PROMYELOCYTE": "IG", "ERB": "ERYTHROBLAST",
    "NRBC": "ERYTHROBLAST", "PLT": "PLATELET", "THROMBOCYTE": "PLATELET",
}


def normalise_label(text: str, classes: list[str]) -> str | None:
    """The class of ``classes`` a label names (case, surrounding space, ``_``/``-`` and a
    plural ``s`` ignored; :data:`LABEL_ALIASES`), or None."""
    key = " ".join(str(text).replace("_", " ").replace("-", " ").upper().split())
    upper = {c.upper(): c for c in classes}
    for candidate in (key, key.removesuffix("S"), LABEL_ALIASES.get(key),
                      LABEL_ALIASES.get(key.removesuffix("S"))):
        if candidate in upper:
            return upper[candidate]
    return None


def read_predictions(csv: Path) -> tuple[pd.DataFrame, list[str]]:
    """A classify CSV of single cells and the model's classes (its ``p_<class>`` columns).
    ValueError for a smear CSV or one that is not classify's."""
    csv = Path(csv)
    if not csv.is_file():
        raise FileNotFoundError(f"no such predictions file: {csv}")
    table = pd.read_csv(csv, keep_default_na=False, dtype={"path": str})
    needed = {"path", "predicted", "uncertain"}
    if not needed <= set(table.columns):
        raise ValueError(f"{csv} is not a `leuko classify` CSV: it lacks "
                         f"{sorted(needed - set(table.columns))}")
    if "cell" in table.columns:
        raise ValueError(f"{csv} holds cells found on smears (`classify --smear`): score "
                         "single-cell images, classified without --smear")
    classes = [c.removeprefix("p_") for c in table.columns if c.startswith("p_")]
    if not classes:
        raise ValueError(f"{csv} has no p_<class> columns")
    table["uncertain"] = table["uncertain"].astype(str).str.lower().map(
        {"true": True, "false": False})
    if table["uncertain"].isna().any():
        raise ValueError(f"{csv}: column uncertain must hold true/false")
    return table, classes


def labels_for(predictions: pd.DataFrame, labels_csv: Path | None) -> pd.Series:
    """Each prediction row's label text ("" where it has none): from ``labels_csv`` (``path``,
    ``label``; a path as classify wrote it, else a file name that is unique among the labels
    and among the predictions) or from the image's folder name."""
    if labels_csv is None:
        return predictions["path"].map(lambda p: Path(p).parent.name)
    labels_csv = Path(labels_csv)
    if not labels_csv.is_file():
        raise FileNotFoundError(f"no such labels file: {labels_csv}")
    labels = pd.read_csv(labels_csv, keep_default_na=False, dtype=str)
    if not {"path", "label"} <= set(labels.columns):
        raise ValueError(f"{labels_csv} needs the columns path and label, has "
                         f"{list(labels.columns)}")
    repeated = labels["path"][labels["path"].duplicated()]
    if len(repeated):
        raise ValueError(f"{labels_csv} labels a path more than once: {repeated.iloc[0]}")
    by_path = labels.set_index("path")["label"]
    names = labels["path"].map(lambda p: Path(p).name)
    by_name = labels.assign(name=names)[~names.duplicated(keep=False)].set_index("name")["label"]
    found = predictions["path"].map(by_path)
    files = predictions["path"].map(lambda p: Path(p).name)
    by_file = files.map(by_name).where(~files.duplicated(keep=False))  # unique on both sides
    return found.fillna(by_file).fillna("")


@dataclass
class Score:
    """What :func:`score` found; :meth:`to_dict` for JSON."""

    rows: int
    scored: int
    unlabelled: list[str]
    unknown_labels: dict[str, int]
    classes: list[str]
    metrics: dict
    intervals: dict
    present: list[str]
    abstain: dict
    differential: pd.DataFrame

    def to_dict(self) -> dict:
        return {"rows": self.rows, "scored": self.scored, "unlabelled": len(self.unlabelled),
                "unknown_labels": self.unknown_labels, "classes": self.classes,
                "classes_present": self.present, "accuracy": self.intervals["accuracy"],
                "macro_f1": self.intervals["macro_f1"],
                "per_class": {c: v for c, v in self.metrics["per_class"].items()
                              if c in self.present},
                "confusion_matrix": self.metrics["confusion_matrix"],
                "abstain": self.abstain,
                "differential": self.differential.to_dict(orient="records")}


def score_labels(y_true, y_pred, classes: list[str], kept=None, groups=None,
                 n_boot: int = 2000, seed: int = 0) -> dict:
    """The figures of one labelled set (class indices of ``classes``), the one scoring that
    ``leuko score`` and the study's held-out parts (``crosssource.score_part``) share:
    :func:`leuko.core.metrics.classification_metrics` with ``n_cells`` and, where every image is
    its own cell, the exact interval of the accuracy (``metrics.add_exact_interval``);
    ``intervals``: 95 % bootstrap intervals of the accuracy, of the macro F1 over the classes
    the labels hold (``macro_f1``, also the point value under that key) and of each such
    class's recall (``recall_<CLASS>``), resampling whole ``groups`` (source cells) or, without
    them, images; where a present class's images are each their own cell, the exact
    (Clopper-Pearson) interval of its recall (``per_class[<CLASS>]["recall_exact"]``: 5 of 5
    right gives [0.48, 1], where the bootstrap gives [1, 1]); ``classes_present``; and
    ``abstain``: coverage, accuracy and macro F1 of the images ``kept`` (not uncertain;
    default all)."""

    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    kept = np.ones(len(y_true), bool) if kept is None else np.asarray(kept, dtype=bool)
    present = sorted(set(y_true.tolist()))
    metrics = add_exact_interval(classification_metrics(y_true, y_pred, classes),
                                 groups=groups)
    chosen = [("accuracy", accuracy_metric()),
              ("macro_f1", macro_f1_metric(len(classes), over=present))]
    chosen += [(f"recall_{classes[i]}", class_recall_metric(i, len(classes))) for i in present]
    intervals = {}
    for name, metric in chosen:
        value, low, high = bootstrap_ci(y_true, y_pred, metric, n_boot=n_boot, seed=seed,
                                        groups=groups)
        intervals[name] = {"value": value, "low": low, "high": high}
    metrics["intervals"] = intervals
    metrics["macro_f1"] = intervals["macro_f1"]["value"]  # over the classes present
    metrics["classes_present"] = [classes[i] for i in present]
    cells = np.arange(len(y_true)) if groups is None else np.asarray(groups)
    for i in present:  # a few cells all right: the bootstrap's [1, 1] says nothing
        rows = y_true == i
        if np.unique(cells[rows]).size == rows.sum():  # each image its own cell
            exact = proportion_intervals(int((y_pred[rows] == i).sum()), int(rows.sum()))
            metrics["per_class"][classes[i]]["recall_exact"] = {
                **exact["clopper_pearson"], "method": "clopper-pearson"}
    correct = y_true == y_pred
    metrics["abstain"] = {
        "coverage": float(kept.mean()), "uncertain": int((~kept).sum()),
        "accuracy_kept": float(correct[kept].mean()) if kept.any() else None,
        "macro_f1_kept": float(macro_f1_metric(len(classes), over=sorted(set(
            y_true[kept].tolist())))(y_true[kept], y_pred[kept])) if kept.any() else None}
    return metrics


def score(predictions: pd.DataFrame, classes: list[str], label_text: pd.Series,
          differential_classes: list[str], n_boot: int = 2000, seed: int = 0,
          skip_unknown: bool = False) -> Score:
    """Score ``predictions`` (:func:`read_predictions`) against ``label_text``
    (:func:`labels_for`) with :func:`score_labels`, each image its own cell: accuracy and
    macro F1 over the classes the labels hold, with 95 % bootstrap intervals; per class; the
    cells the abstention rule kept; and the differential over ``differential_classes``: the
    true one (the labelled white cells) against the one ``leuko classify`` gives (the cells it
    calls white and is sure of, whatever their label)."""
    unlabelled = predictions.loc[label_text == "", "path"].tolist()
    labelled = label_text != ""
    classes_of = label_text[labelled].map(lambda t: normalise_label(t, classes))
    unknown = label_text[labelled][classes_of.isna()].value_counts().to_dict()
    if unknown and not skip_unknown:
        raise ValueError(f"labels that name none of the model's classes {classes}: "
                         + ", ".join(f"{k!r} ({v} cells)" for k, v in unknown.items())
                         + " (rename them, or --skip-unknown to leave those cells out)")
    keep = classes_of.dropna()
    if keep.empty:
        raise ValueError("no prediction row has a label of the model's classes (labels from "
                         "the folder names unless a labels CSV is given)")
    rows = predictions.loc[keep.index]
    index = {c: i for i, c in enumerate(classes)}
    y_true = keep.map(index).to_numpy(dtype=int)
    y_pred = rows["predicted"].map(index)
    if y_pred.isna().any():
        raise ValueError(f"predicted classes not among the CSV's p_ columns: "
                         f"{sorted(set(rows['predicted'][y_pred.isna()]))}")
    y_pred = y_pred.to_numpy(dtype=int)
    kept = ~rows["uncertain"].to_numpy(dtype=bool)
    metrics = score_labels(y_true, y_pred, classes, kept=kept, n_boot=n_boot, seed=seed)
    intervals = {k: metrics["intervals"][k] for k in ("accuracy", "macro_f1")}
    white = np.isin(y_true, [index[c] for c in differential_classes])
    # as `leuko classify` counts: every kept cell it calls a white cell, whatever it truly is
    counted = kept & np.isin(y_pred, [index[c] for c in differential_classes])
    differential = pd.DataFrame({"class": differential_classes})
    differential["true cells"] = [int((y_true[white] == index[c]).sum())
                                  for c in differential_classes]
    differential["true %"] = 100 * differential["true cells"] / max(int(white.sum()), 1)
    differential["predicted cells"] = [int((y_pred[counted] == index[c]).sum())
                                       for c in differential_classes]
    differential["predicted %"] = (100 * differential["predicted cells"]
                                   / max(int(counted.sum()), 1))
    differential["difference, points"] = differential["predicted %"] - differential["true %"]
    return Score(rows=len(predictions), scored=len(keep), unlabelled=unlabelled,
                 unknown_labels={str(k): int(v) for k, v in unknown.items()}, classes=classes,
                 metrics=metrics, intervals=intervals,
                 present=list(metrics["classes_present"]), abstain=metrics["abstain"],
                 differential=differential)


def format_score(result: Score) -> str:
    """The score as text: the headline figures, per class, the differential, the confusion
    matrix (rows: your labels; columns: predicted)."""

    def pct(interval: dict) -> str:
        return format_interval(interval["value"], interval["low"], interval["high"],
                               label="95 % CI ")

    notes = []
    if result.unlabelled:
        notes.append(f"{len(result.unlabelled)} without a label")
    if result.unknown_labels:
        notes.append(f"{sum(result.unknown_labels.values())} with a label of no class: "
                     + ", ".join(result.unknown_labels))
    lines = [f"Scored {result.scored} of {result.rows} cells"
             + (f" ({'; '.join(notes)})" if notes else ""),
             f"Accuracy  {pct(result.intervals['accuracy'])}",
             f"Macro F1  {pct(result.intervals['macro_f1'])} over the "
             f"{len(result.present)} classes your labels hold"]
    a = result.abstain
    if a["uncertain"]:
        kept = ("no cell kept" if a["accuracy_kept"] is None else
                f"accuracy {100 * a['accuracy_kept']:.1f} %, macro F1 "
                f"{100 * a['macro_f1_kept']:.1f} %")
        lines.append(f"Uncertain {a['uncertain']} of {result.scored} cells; on the "
                     f"{100 * a['coverage']:.1f} % kept: {kept}")
    per_class = pd.DataFrame({c: result.metrics["per_class"][c] for c in result.present}).T
    per_class["support"] = per_class["support"].astype(int)
    lines += ["", "Per class (your labels):",
              per_class[["support", "recall", "precision", "f1"]].round(3).to_string()]
    lines += ["", "Differential (white cells; predicted: the cells counted, uncertain left out):",
              result.differential.round(1).to_string(index=False)]
    cm = pd.DataFrame(result.metrics["confusion_matrix"], index=result.classes,
                      columns=result.classes)
    used = [c for c in result.classes if c in result.present or cm[c].sum()]
    lines += ["", "Confusion matrix (rows: your labels, columns: predicted):",
              cm.loc[result.present, used].to_string()]
    if result.unlabelled:
        lines += ["", "Without a label (first 5): " + ", ".join(result.unlabelled[:5])]
    return "\n".join(lines)
