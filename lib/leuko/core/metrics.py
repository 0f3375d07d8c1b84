"""Evaluation metrics of the study: per-class scores, bootstrap intervals, exact intervals of a
proportion, paired bootstrap comparisons of two models, k-fold summaries.

Everything here is plain numpy (scipy for the Clopper-Pearson interval; no TensorFlow, no
scikit-learn at run time -- the tests check the numbers against scikit-learn), so the CLI, the report notebook and
the tests can import it cheaply.  Point estimates and bootstrap resamples go through the same
confusion-matrix code, so they cannot disagree.  Labels are integer class indices ``0 .. k-1`` in the order of
``class_names``; every returned number is a native Python ``int``/``float`` so the dicts can be
written with :func:`json.dump` and shown by ``dvc metrics show``.

Conventions
-----------
* ``zero_division=0``: the precision of a class that is never predicted is reported as 0.0 (not
  NaN and not a warning), likewise the recall of a class absent from ``y_true`` and the F1 of a
  class with neither; macro averages are over *all* classes in ``class_names``, so a class the
  model ignores pulls the macro F1 down instead of silently vanishing from the average.
* Confusion matrices have rows = true class, columns = predicted class, and contain every class
  of ``class_names`` even when it is absent from the data.
* Bootstrap intervals are percentile intervals.  With ``groups`` whole groups are resampled
  (cluster bootstrap); see :func:`bootstrap_ci` for why that matters with augmented copies.
* Exact intervals (:func:`proportion_intervals`: Clopper-Pearson and Wilson) assume independent
  items; they are the right interval for a small test set of distinct cells (TEST_SIMPLE's 71),
  not for TEST's augmented copies of 71 cells nor for ALL-IDB2's 26 test images of 25 cells
  (:func:`add_exact_interval` adds them only where every image is its own cell).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

# scipy.stats is imported inside proportion_intervals(): it takes seconds to import.

__all__ = [
    "ConfusionMetric",
    "accuracy_metric",
    "add_exact_interval",
    "bootstrap_ci",
    "class_recall_metric",
    "classification_metrics",
    "classification_report_frame",
    "kfold_summary",
    "macro_f1_metric",
    "metric_intervals",
    "paired_bootstrap_difference",
    "paired_bootstrap_difference_seeds",
    "proportion_intervals",
]

# Bound on the size (elements) of the per-chunk resampling matrices of the bootstrap (~32 MB).
_CHUNK_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------------------------
# input checking
# --------------------------------------------------------------------------------------------
def _as_labels(y: Sequence[int], name: str) -> np.ndarray:
    """Return ``y`` as a 1-D int64 array, rejecting non-integer values."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == np.bool_:  # binary labels given as booleans
        return arr.astype(np.int64)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"{name} must contain integer class indices")
    return arr.astype(np.int64, copy=False)


def _check_pair(y_true, y_pred, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (y_true, y_pred) pair: same non-zero length, labels within ``0..n_classes-1``."""
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if t.size == 0:
        raise ValueError("no samples: y_true is empty")
    if n_classes is not None:
        for name, arr in (("y_true", t), ("y_pred", p)):
            if arr.min() < 0 or arr.max() >= n_classes:
                raise ValueError(
                    f"{name} has labels outside 0..{n_classes - 1} "
                    f"(min {arr.min()}, max {arr.max()})"
                )
    return t, p


def _check_names(class_names: Sequence[str]) -> list[str]:
    """Return the class names as a list of unique strings."""
    names = [str(c) for c in class_names]
    if not names:
        raise ValueError("class_names is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names are not unique: {names}")
    return names


# --------------------------------------------------------------------------------------------
# per-class metrics
# --------------------------------------------------------------------------------------------
def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]
) -> dict:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion matrix.

    Returns ``{"n", "accuracy", "macro_f1", "weighted_f1", "per_class": {name: {"precision",
    "recall", "f1", "support"}}, "macro_avg": {"precision", "recall", "f1"}, "weighted_avg": {...},
    "confusion_matrix": [[...]]}``.  The confusion matrix has rows = true class and columns =
    predicted class over all ``class_names`` (a class absent from the data gives a zero row and
    column).  A class that is never predicted has precision 0.0 (``zero_division=0``), and the
    averages run over every class of ``class_names``.
    """
    names = _check_names(class_names)
    k = len(names)
    t, p = _check_pair(y_true, y_pred, k)
    cm = _confusion_counts(t, p, k)
    prec, rec, f1 = _per_class(cm)
    support = cm.sum(axis=1)
    n = int(t.size)
    weights = support / n

    def _avg(w: np.ndarray) -> dict:
        return {
            "precision": float(np.dot(w, prec)),
            "recall": float(np.dot(w, rec)),
            "f1": float(np.dot(w, f1)),
        }

    macro = _avg(np.full(k, 1.0 / k))
    weighted = _avg(weights)
    return {
        "n": n,
        "accuracy": float(np.trace(cm) / n),
        "macro_f1": macro["f1"],
        "weighted_f1": weighted["f1"],
        "per_class": {
            name: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "macro_avg": macro,
        "weighted_avg": weighted,
        "confusion_matrix": cm.tolist(),
    }


def classification_report_frame(metrics: dict) -> pd.DataFrame:
    """The report's table: rows = classes, "accuracy", "macro avg", "weighted avg"; sklearn's columns.

    Columns are ``precision``, ``recall``, ``f1-score`` and ``support`` as in the text of
    :func:`sklearn.metrics.classification_report`: the accuracy row carries the accuracy in
    ``f1-score`` (precision and recall are NaN) and the total count in ``support``; both average
    rows have the total count as support.  ``metrics`` is a dict from :func:`classification_metrics`.
    """
    n = int(metrics["n"])
    rows: dict[str, dict[str, float]] = {}
    for name, m in metrics["per_class"].items():
        rows[str(name)] = {
            "precision": m["precision"],
            "recall": m["recall"],
            "f1-score": m["f1"],
            "support": m["support"],
        }
    rows["accuracy"] = {
        "precision": np.nan,
        "recall": np.nan,
        "f1-score": metrics["accuracy"],
        "support": n,
    }
    for label, key in (("macro avg", "macro_avg"), ("weighted avg", "weighted_avg")):
        avg = metrics[key]
        rows[label] = {
            "precision": avg["precision"],
            "recall": avg["recall"],
            "f1-score": avg["f1"],
            "support": n,
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame = frame[["precision", "recall", "f1-score", "support"]]
    frame["support"] = frame["support"].astype(np.int64)
    return frame


# --------------------------------------------------------------------------------------------
# confusion-matrix metrics (vectorised over bootstrap resamples)
# --------------------------------------------------------------------------------------------
def _safe_div(num: np.ndarray, den: np.ndarray, fill: float) -> np.ndarray:
    """``num / den`` with ``fill`` where ``den == 0`` (no warnings)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, fill, dtype=float)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _confusion_counts(t: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """Confusion counts (k, k) of one pair of label arrays; rows = true, columns = predicted."""
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _cm_accuracy(cm: np.ndarray) -> np.ndarray:
    return np.trace(cm, axis1=-2, axis2=-1) / cm.sum(axis=(-2, -1))


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 (shape (..., k)) of confusion counts (..., k, k).

    Same values as scikit-learn's ``precision_recall_fscore_support(..., zero_division=0)`` over
    the full label set: an undefined ratio (class never predicted / absent) is 0, and
    F1 = 2TP / (2TP + FP + FN), which equals the harmonic mean of precision and recall wherever
    that is defined and is 0 otherwise.
    """
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    predicted = cm.sum(axis=-2)
    actual = cm.sum(axis=-1)
    precision = _safe_div(tp, predicted, 0.0)
    recall = _safe_div(tp, actual, 0.0)
    f1 = _safe_div(2 * tp, predicted + actual, 0.0)  # 2TP + FP + FN = predicted + actual
    return precision, recall, f1


def _cm_macro_f1(cm: np.ndarray) -> np.ndarray:
    return _per_class(cm)[2].mean(axis=-1)


@dataclass(frozen=True)
class ConfusionMetric:
    """A metric that is a function of the confusion matrix, so the bootstrap can vectorise it.

    ``fn`` maps confusion counts of shape ``(..., k, k)`` (rows = true) to values of shape
    ``(...)``.  Calling the object on ``(y_true, y_pred)`` gives the ordinary scalar metric, so it
    can be passed anywhere a plain ``metric(y_true, y_pred) -> float`` is expected.
    """

    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    n_classes: int | None = None

    def classes(self, t: np.ndarray, p: np.ndarray) -> int:
        """Number of classes: ``n_classes`` when set, else ``max label + 1`` of the data."""
        if self.n_classes is not None:
            return int(self.n_classes)
        return int(max(t.max(), p.max())) + 1

    def __call__(self, y_true, y_pred) -> float:
        """The metric on one (y_true, y_pred) pair."""
        t, p = _check_pair(y_true, y_pred, self.n_classes)
        return float(self.fn(_confusion_counts(t, p, self.classes(t, p))))


def accuracy_metric() -> ConfusionMetric:
    """Accuracy (fraction of correct predictions) as a vectorisable :class:`ConfusionMetric`."""
    return ConfusionMetric("accuracy", _cm_accuracy)


def macro_f1_metric(n_classes: int, over: Sequence[int] | None = None) -> ConfusionMetric:
    """Macro F1 over all ``n_classes`` classes (zero_division=0), or over the class indices
    ``over`` only (e.g. the classes a test set holds), as a :class:`ConfusionMetric`."""
    if over is None:
        return ConfusionMetric("macro_f1", _cm_macro_f1, int(n_classes))
    chosen = np.asarray(list(over), dtype=int)
    if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= n_classes:
        raise ValueError(f"over must name class indices in 0..{n_classes - 1}, got {list(over)}")
    return ConfusionMetric("macro_f1", lambda cm: _per_class(cm)[2][..., chosen].mean(axis=-1),
                           int(n_classes))


def class_recall_metric(cls: int, n_classes: int) -> ConfusionMetric:
    """Recall (sensitivity) of class ``cls``; NaN where the class has no true sample."""

    def _recall(cm: np.ndarray) -> np.ndarray:
        return _safe_div(cm[..., cls, cls], cm[..., cls, :].sum(axis=-1), np.nan)

    return ConfusionMetric(f"recall_{cls}", _recall, int(n_classes))


# --------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------
def _group_codes(groups, n: int) -> np.ndarray:
    """Integer codes 0..G-1 of the groups of the n items (each item its own group when None)."""
    if groups is None:
        return np.arange(n)
    g = np.asarray(groups)
    if g.ndim != 1 or g.size != n:
        raise ValueError(f"groups must have one entry per item ({n}), got shape {g.shape}")
    _, codes = np.unique(g, return_inverse=True)
    return codes.reshape(-1)


def _draws(rng: np.random.Generator, n_boot: int, n_units: int):
    """Yield chunks of resampling draws: int arrays (rows, n_units) of unit indices."""
    chunk = max(1, _CHUNK_ELEMENTS // max(n_units, 1))
    done = 0
    while done < n_boot:
        rows = min(chunk, n_boot - done)
        yield rng.integers(0, n_units, size=(rows, n_units))
        done += rows


def _bootstrap_confusions(
    t: np.ndarray, p: np.ndarray, k: int, n_boot: int, seed: int, codes: np.ndarray
) -> np.ndarray:
    """Confusion counts (n_boot, k, k) of ``n_boot`` (cluster) bootstrap resamples.

    The confusion matrix of a resample is the sum of the per-group confusion matrices weighted by
    how often each group was drawn, so it is ``W @ M`` with ``W`` (resamples x groups) the draw
    counts and ``M`` (groups x k*k) the per-group counts: no resample is ever materialised.
    """
    n_groups = int(codes.max()) + 1
    per_group = np.zeros((n_groups, k * k))
    np.add.at(per_group, (codes, t * k + p), 1.0)
    rng = np.random.default_rng(seed)
    out = []
    for draws in _draws(rng, n_boot, n_groups):
        rows = draws.shape[0]
        offsets = (np.arange(rows) * n_groups)[:, None]
        weights = np.bincount((draws + offsets).ravel(), minlength=rows * n_groups)
        out.append(weights.reshape(rows, n_groups).astype(float) @ per_group)
    counts = np.rint(np.concatenate(out)).astype(np.int64)
    return counts.reshape(n_boot, k, k)


def _bootstrap_generic(
    t: np.ndarray,
    p: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int,
    seed: int,
    codes: np.ndarray,
) -> np.ndarray:
    """Metric values of ``n_boot`` resamples for an arbitrary callable (a Python loop).

    Uses the same draws as :func:`_bootstrap_confusions` for the same seed, so a plain callable
    and the equivalent :class:`ConfusionMetric` give identical intervals.
    """
    n_groups = int(codes.max()) + 1
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)
    values = []
    for draws in _draws(rng, n_boot, n_groups):
        for row in draws:
            lengths = sizes[row]
            total = int(lengths.sum())
            # positions start[g] .. start[g]+size[g]-1 for every drawn group g, concatenated
            shift = np.repeat(starts[row] - (np.cumsum(lengths) - lengths), lengths)
            idx = order[np.arange(total) + shift]
            values.append(float(metric(t[idx], p[idx])))
    return np.asarray(values, dtype=float)


def format_interval(value, low=None, high=None, *, unit: str = " %", signed: bool = False,
                    width: int = 0, label: str = "") -> str:
    """A share in percent with its 95 % interval, as every table and command of the study writes
    it: ``61.0 % [50.6, 68.5]``. ``unit=""`` leaves out the ``%``; ``signed`` writes a
    difference in points (``+1.2 [-0.3, +2.6]``); ``width`` pads the value; ``label`` comes
    before the bounds (``[95 % CI 50.6, 68.5]``). Without bounds, the value alone; a missing
    value is ``–``."""
    if value is None or pd.isna(value):
        return "–"
    sign = "+" if signed else ""
    text = f"{100 * value:{sign}{width or ''}.1f}{unit}"
    if low is None:
        return text
    return f"{text} [{label}{100 * low:{sign}.1f}, {100 * high:{sign}.1f}]"


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval ``(alpha/2, 1-alpha/2)`` of the finite bootstrap values (NaN if none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _check_boot(n_boot: int, alpha: float) -> None:
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def bootstrap_ci(
    y_true,
    y_pred,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: Sequence | None = None,
) -> tuple[float, float, float]:
    """Percentile bootstrap ``(point estimate, low, high)`` of ``metric(y_true, y_pred)``.

    The point estimate is the metric on the full data; ``low``/``high`` are the ``alpha/2`` and
    ``1 - alpha/2`` quantiles of the metric over ``n_boot`` resamples drawn with replacement
    (deterministic for a given ``seed``).  Resamples where the metric is undefined (NaN, e.g. the
    recall of a class that was not drawn) are left out of the quantiles.

    ``groups`` (one label per item) switches to the *cluster* bootstrap: whole groups are drawn
    with replacement and bring all their items along.  That is required when items are not
    independent -- augmented copies (flips, rotations) of the same source cell, or several crops
    of one smear, tend to be all right or all wrong together.  The item bootstrap then treats
    ``n`` correlated items as ``n`` independent observations and gives an interval that is too
    narrow (by up to ``sqrt(copies per cell)``); resampling whole source cells keeps the
    dependence inside each resample and gives an honest interval.

    Speed: a :class:`ConfusionMetric` (:func:`accuracy_metric`, :func:`macro_f1_metric`,
    :func:`class_recall_metric`) is evaluated for all resamples at once from bootstrap confusion
    matrices (2000 resamples of 2500 items take a few tens of milliseconds).  Any other callable is
    called once per resample on the resampled label arrays.
    """
    _check_boot(n_boot, alpha)
    t, p = _check_pair(y_true, y_pred)
    codes = _group_codes(groups, t.size)
    if isinstance(metric, ConfusionMetric):
        k = metric.classes(t, p)
        _check_pair(t, p, k)
        point = float(metric.fn(_confusion_counts(t, p, k)))
        values = metric.fn(_bootstrap_confusions(t, p, k, int(n_boot), seed, codes))
    else:
        point = float(metric(t, p))
        values = _bootstrap_generic(t, p, metric, int(n_boot), seed, codes)
    low, high = _percentile_interval(values, alpha)
    return point, low, high


def metric_intervals(
    y_true,
    y_pred,
    class_names: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
    groups: Sequence | None = None,
    alpha: float = 0.05,
) -> dict:
    """Bootstrap intervals of accuracy, macro F1 and each class's recall.

    Returns ``{"accuracy": {"value", "low", "high"}, "macro_f1": {...}, "recall_<CLASS>": {...}}``
    (one ``recall_`` key per class name).  All metrics are computed on the same resamples, and each
    interval equals :func:`bootstrap_ci` with the same ``seed``/``groups``.  The recall of a class
    absent from ``y_true`` is NaN.
    """
    _check_boot(n_boot, alpha)
    names = _check_names(class_names)
    k = len(names)
    t, p = _check_pair(y_true, y_pred, k)
    codes = _group_codes(groups, t.size)
    cm = _confusion_counts(t, p, k)
    boot = _bootstrap_confusions(t, p, k, int(n_boot), seed, codes)
    metrics: dict[str, ConfusionMetric] = {
        "accuracy": accuracy_metric(),
        "macro_f1": macro_f1_metric(k),
    }
    for i, name in enumerate(names):
        metrics[f"recall_{name}"] = class_recall_metric(i, k)
    out = {}
    for key, m in metrics.items():
        low, high = _percentile_interval(m.fn(boot), alpha)
        out[key] = {"value": float(m.fn(cm)), "low": low, "high": high}
    return out


# --------------------------------------------------------------------------------------------
# exact intervals of a proportion
# --------------------------------------------------------------------------------------------
def _check_count(k: int, n: int) -> tuple[int, int]:
    if int(n) != n or int(k) != k:
        raise ValueError(f"k and n must be whole numbers, got k={k}, n={n}")
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    return k, n


def proportion_intervals(k: int, n: int, alpha: float = 0.05) -> dict:
    """Clopper-Pearson ("exact") and Wilson score intervals of the proportion ``k / n``.

    Returns ``{"k", "n", "value", "clopper_pearson": {"low", "high"}, "wilson": {"low",
    "high"}}`` at confidence ``1 - alpha``.

    * Clopper-Pearson (1934) inverts two one-sided binomial tests:
      ``low = Beta(alpha/2; k, n - k + 1)``, ``high = Beta(1 - alpha/2; k + 1, n - k)``, with
      ``low = 0`` at ``k = 0`` and ``high = 1`` at ``k = n``.  Its coverage is at least
      ``1 - alpha`` for every true proportion (conservative).  26 of 26 right gives
      [0.868, 1.0]: a perfect score on 26 cells still allows a true accuracy of 87 %.
    * Wilson (1927) inverts the normal score test: centre ``(k + z^2/2) / (n + z^2)``,
      half-width ``z sqrt(k (n - k) / n + z^2 / 4) / (n + z^2)``; shorter, with coverage close
      to ``1 - alpha`` on average (Newcombe 1998's method 3; no continuity correction).

    Both assume ``n`` independent items.  For augmented copies of fewer source cells use the
    cluster bootstrap (:func:`bootstrap_ci` with ``groups``).
    """

    k, n = _check_count(k, n)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    cp_low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    cp_high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    z = float(stats.norm.ppf(1 - alpha / 2))
    centre = (k + z * z / 2) / (n + z * z)
    half = z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return {
        "k": k,
        "n": n,
        "value": k / n,
        "clopper_pearson": {"low": cp_low, "high": cp_high},
        "wilson": {"low": float(max(0.0, centre - half)), "high": float(min(1.0, centre + half))},
    }


def add_exact_interval(metrics: dict, groups: Sequence | None = None, alpha: float = 0.05) -> dict:
    """A copy of a :func:`classification_metrics` result with ``"n_cells"`` (the number of
    source cells, ``groups``) and, where every item is its own source cell, ``"exact_interval"``
    of the accuracy.

    ``exact_interval`` = ``{"value", "low", "high"}`` (Clopper-Pearson, the same keys as the
    bootstrap ``intervals``) plus ``"method": "clopper-pearson"``, ``"k"`` (correct), ``"n"``,
    ``"wilson": {"low", "high"}`` and ``"independent": True``.  It is left out where some
    items are copies of one cell (``groups`` with repeats): TEST's 2,487 images of 71 cells,
    ALL-IDB2's 26 test images of 25 cells in the default split (Im138_0 / Im146_0 are one
    cell, shifted), PBC's 790 test images of 789 cells.  There an interval that counts images as independent trials
    is too narrow, and one on the cells would be of another figure than the image accuracy,
    so the cluster bootstrap over cells (:func:`metric_intervals` with ``groups``) is the
    interval.  ``groups=None``: every item is its own cell.
    """
    n = int(metrics["n"])
    k = int(np.trace(np.asarray(metrics["confusion_matrix"])))
    if groups is not None:
        g = np.asarray(groups)
        if g.ndim != 1 or g.size != n:
            raise ValueError(f"groups must have one entry per item ({n}), got shape {g.shape}")
        n_cells = int(np.unique(g).size)
    else:
        n_cells = n
    out = dict(metrics)
    out["n_cells"] = n_cells
    if n_cells < n:
        return out
    exact = proportion_intervals(k, n, alpha)
    out["exact_interval"] = {
        "value": exact["value"],
        "low": exact["clopper_pearson"]["low"],
        "high": exact["clopper_pearson"]["high"],
        "method": "clopper-pearson",
        "k": k,
        "n": n,
        "wilson": exact["wilson"],
        "independent": True,
    }
    return out


# --------------------------------------------------------------------------------------------
# paired comparison of two models
# --------------------------------------------------------------------------------------------
def _correct(y_true: np.ndarray, preds: Sequence, name: str) -> np.ndarray:
    """(seeds, items) boolean matrix: which items each seed's predictions get right."""
    if len(preds) == 0:
        raise ValueError(f"{name}: no predictions given")
    rows = []
    for i, pred in enumerate(preds):
        pred = np.asarray(pred)
        if pred.shape != y_true.shape:
            raise ValueError(f"{name}[{i}] has shape {pred.shape}, y_true {y_true.shape}")
        rows.append(pred == y_true)
    return np.vstack(rows)


def _seed_weights(rng: np.random.Generator, rows: int, n_seeds: int) -> np.ndarray:
    """(rows, n_seeds) draw counts of seeds resampled with replacement (all ones for 1 seed)."""
    if n_seeds == 1:
        return np.ones((rows, 1))
    draws = rng.integers(0, n_seeds, size=(rows, n_seeds))
    offsets = (np.arange(rows) * n_seeds)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=rows * n_seeds)
    return counts.reshape(rows, n_seeds).astype(float)


def paired_bootstrap_difference_seeds(
    y_true: Sequence,
    preds_a: Sequence[Sequence],
    preds_b: Sequence[Sequence],
    groups: Sequence | None,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Paired bootstrap of ``accuracy(A) - accuracy(B)`` over source cells and training seeds.

    ``preds_a`` / ``preds_b`` are lists of predictions, one per training seed of model A / B,
    all on the same items (rows) as ``y_true``; labels may be integers or strings.  A model's
    accuracy is the mean over its seeds.  Each resample draws whole ``groups`` (source cells)
    with replacement -- the same cells for both models, so the comparison is paired -- and,
    where a model has several seeds, draws its seeds with replacement too (A's and B's seeds
    independently: they are separate trainings).  ``groups=None`` treats every item as its own
    cell (only right when no item is a copy of another).

    Returns ``{"difference", "low", "high", "share_a_better", "share_b_better", "accuracy_a",
    "accuracy_b", "n", "n_groups", "seeds_a", "seeds_b", "n_boot"}``: the observed difference
    (mean over seeds of A minus mean over seeds of B, on all items), the percentile interval of
    the resampled differences at ``1 - alpha``, and the share of resamples in which A is more
    (less) accurate than B.  This replaces McNemar's test, which treats TEST's 2,487 images as
    independent although they are copies of 71 cells: with copies the bootstrap over cells is
    as wide as the number of cells warrants, not as narrow as the number of images suggests.
    """
    _check_boot(n_boot, alpha)
    t = np.asarray(y_true)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {t.shape}")
    ok_a = _correct(t, preds_a, "preds_a")
    ok_b = _correct(t, preds_b, "preds_b")
    codes = _group_codes(groups, t.size)
    n_groups = int(codes.max()) + 1
    size = np.bincount(codes, minlength=n_groups).astype(float)
    # right answers per seed and cell: (seeds, groups)
    per_a = np.stack([np.bincount(codes, weights=row, minlength=n_groups) for row in ok_a])
    per_b = np.stack([np.bincount(codes, weights=row, minlength=n_groups) for row in ok_b])
    acc_a = float(ok_a.mean())
    acc_b = float(ok_b.mean())
    # cells and each model's seeds come from separate streams, so the cell draws of one seed
    # per model equal those of several seeds for the same ``seed``
    rng_cells = np.random.default_rng(seed)
    rng_a = np.random.default_rng([seed, 1])
    rng_b = np.random.default_rng([seed, 2])
    diffs = []
    for draws in _draws(rng_cells, int(n_boot), n_groups):
        rows = draws.shape[0]
        offsets = (np.arange(rows) * n_groups)[:, None]
        weights = np.bincount((draws + offsets).ravel(), minlength=rows * n_groups)
        weights = weights.reshape(rows, n_groups).astype(float)
        total = weights @ size
        seeds_a = _seed_weights(rng_a, rows, per_a.shape[0])
        seeds_b = _seed_weights(rng_b, rows, per_b.shape[0])
        right_a = ((weights @ per_a.T) * seeds_a).sum(axis=1) / seeds_a.sum(axis=1)
        right_b = ((weights @ per_b.T) * seeds_b).sum(axis=1) / seeds_b.sum(axis=1)
        diffs.append((right_a - right_b) / total)
    values = np.concatenate(diffs)
    # exact ties (identical predictions) must stay exactly 0, not +-1e-17
    values = np.where(np.abs(values) < 1e-12, 0.0, values)
    low, high = _percentile_interval(values, alpha)
    return {
        "difference": acc_a - acc_b,
        "low": low,
        "high": high,
        "share_a_better": float(np.mean(values > 0)),
        "share_b_better": float(np.mean(values < 0)),
        "accuracy_a": acc_a,
        "accuracy_b": acc_b,
        "n": int(t.size),
        "n_groups": n_groups,
        "seeds_a": int(ok_a.shape[0]),
        "seeds_b": int(ok_b.shape[0]),
        "n_boot": int(n_boot),
    }


def paired_bootstrap_difference(
    y_true: Sequence,
    pred_a: Sequence,
    pred_b: Sequence,
    groups: Sequence | None,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Paired cluster bootstrap of ``accuracy(A) - accuracy(B)`` for one run of each model.

    The same as :func:`paired_bootstrap_difference_seeds` with one seed per model: resamples
    whole ``groups`` (source cells) with replacement, the same cells for both models.  Returns
    ``{"difference", "low", "high", "share_a_better", "share_b_better", "accuracy_a",
    "accuracy_b", "n", "n_groups", "seeds_a", "seeds_b", "n_boot"}``.
    """
    return paired_bootstrap_difference_seeds(
        y_true, [pred_a], [pred_b], groups, n_boot=n_boot, seed=seed, alpha=alpha
    )


# --------------------------------------------------------------------------------------------
# cross-validation summary
# --------------------------------------------------------------------------------------------
def _lookup(metrics: dict, key: str) -> float:
    """``metrics[key]``; a dotted key ("per_class.MONOCYTE.recall") walks nested dicts.

    A value that is itself an interval dict (``{"value", "low", "high"}``) gives its ``value``.
    """
    if key in metrics:
        value = metrics[key]
    else:
        value = metrics
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise KeyError(f"metric {key!r} not found in fold metrics")
            value = value[part]
    if isinstance(value, dict) and "value" in value:
        value = value["value"]
    return float(value)


def kfold_summary(fold_metrics: list[dict], keys: Sequence[str] = ("accuracy", "macro_f1")) -> dict:
    """Mean, sample SD (ddof=1) and per-fold values of ``keys`` over k folds' metric dicts.

    Returns ``{key: {"mean", "sd", "per_fold": [...]}}``; ``sd`` is NaN with a single fold.
    Dotted keys reach nested values, e.g. ``"per_class.MONOCYTE.recall"``.
    """
    if not fold_metrics:
        raise ValueError("fold_metrics is empty")
    out = {}
    for key in keys:
        values = np.array([_lookup(m, key) for m in fold_metrics], dtype=float)
        sd = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
        out[key] = {"mean": float(values.mean()), "sd": sd, "per_fold": values.tolist()}
    return out
