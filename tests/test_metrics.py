"""Tests of leuko.core.metrics against values worked out by hand on small examples."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from leuko.core.metrics import (
    ConfusionMetric,
    accuracy_metric,
    add_exact_interval,
    bootstrap_ci,
    class_recall_metric,
    classification_metrics,
    classification_report_frame,
    kfold_summary,
    macro_f1_metric,
    metric_intervals,
    paired_bootstrap_difference,
    paired_bootstrap_difference_seeds,
    proportion_intervals,
)

NAMES3 = ["A", "B", "C"]
# the hand example of the brief
Y_TRUE = [0, 0, 1, 1, 2]
Y_PRED = [0, 1, 1, 1, 0]


def _acc(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(t == p))


def _labels(n: int, accuracy: float, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """n items, the first round(accuracy * n) predicted right, the rest off by one class."""
    t = np.arange(n) % n_classes
    p = t.copy()
    wrong = np.arange(n) >= round(accuracy * n)
    p[wrong] = (t[wrong] + 1) % n_classes
    return t, p


# --------------------------------------------------------------------------------------------
# classification_metrics
# --------------------------------------------------------------------------------------------
def test_classification_metrics_hand_example():
    m = classification_metrics(Y_TRUE, Y_PRED, NAMES3)
    # confusion matrix, rows = true, cols = predicted:
    #   true 0: predicted 0 once (item 0), 1 once (item 1)      -> [1, 1, 0]
    #   true 1: predicted 1 twice (items 2, 3)                  -> [0, 2, 0]
    #   true 2: predicted 0 once (item 4)                       -> [1, 0, 0]
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["n"] == 5
    # correct: items 0, 2, 3 -> 3 / 5
    assert m["accuracy"] == pytest.approx(3 / 5)

    a, b, c = (m["per_class"][k] for k in NAMES3)
    # class A: TP = 1, predicted A twice (items 0, 4), 2 true A
    assert a["precision"] == pytest.approx(1 / 2)
    assert a["recall"] == pytest.approx(1 / 2)
    assert a["f1"] == pytest.approx(2 * (1 / 2) * (1 / 2) / (1 / 2 + 1 / 2))  # = 0.5
    assert a["support"] == 2
    # class B: TP = 2, predicted B 3 times (items 1, 2, 3), 2 true B
    assert b["precision"] == pytest.approx(2 / 3)
    assert b["recall"] == pytest.approx(2 / 2)
    assert b["f1"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))  # = (4/3) / (5/3) = 4/5
    assert b["f1"] == pytest.approx(0.8)
    assert b["support"] == 2
    # class C: never predicted -> precision 0 by convention (zero_division=0); recall 0 / 1
    assert c == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}

    # macro = plain mean over the 3 classes
    assert m["macro_avg"]["precision"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)  # 7/18
    assert m["macro_avg"]["recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)  # 1/2
    assert m["macro_avg"]["f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)  # 13/30
    assert m["macro_f1"] == pytest.approx(13 / 30)
    # weighted by support 2, 2, 1 (of 5)
    assert m["weighted_avg"]["precision"] == pytest.approx(
        (2 * 1 / 2 + 2 * 2 / 3 + 1 * 0) / 5
    )  # 7/15
    assert m["weighted_avg"]["recall"] == pytest.approx((2 * 1 / 2 + 2 * 1 + 1 * 0) / 5)  # 3/5
    assert m["weighted_avg"]["f1"] == pytest.approx((2 * 0.5 + 2 * 0.8 + 1 * 0) / 5)  # 13/25
    assert m["weighted_f1"] == pytest.approx(13 / 25)


def test_confusion_matrix_orientation():
    # three true A all predicted B: the counts sit in row A (true), column B (predicted)
    m = classification_metrics([0, 0, 0], [1, 1, 1], ["A", "B"])
    assert m["confusion_matrix"] == [[0, 3], [0, 0]]
    assert m["per_class"]["A"]["recall"] == 0.0
    assert m["per_class"]["B"]["precision"] == 0.0  # 0 of 3 B predictions right


def test_class_absent_from_data_and_predictions_keeps_full_matrix():
    # 4 classes, only 0 and 1 occur: the matrix is still 4 x 4, class D has support 0
    m = classification_metrics([0, 1, 1], [0, 1, 0], ["A", "B", "C", "D"])
    assert m["confusion_matrix"] == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert m["per_class"]["D"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # F1: A: P = 1/2, R = 1 -> 2/3; B: P = 1, R = 1/2 -> 2/3; C, D: 0; macro over all 4
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 0) / 4)
    # weighted by support (1, 2, 0, 0) of 3
    assert m["weighted_f1"] == pytest.approx((1 * 2 / 3 + 2 * 2 / 3) / 3)


def test_classification_metrics_agree_with_sklearn():
    # scikit-learn is the reference implementation (it is not used at run time)
    rng = np.random.default_rng(11)
    t = rng.integers(0, 4, 400)  # class 4 ("E") never occurs
    p = np.where(rng.random(400) < 0.7, t, rng.integers(0, 3, 400))  # class 3 rarely predicted
    p[:3] = 4  # a few predictions of the absent class
    names = list("ABCDE")
    m = classification_metrics(t, p, names)
    labels = list(range(5))
    prec, rec, f1, support = precision_recall_fscore_support(
        t, p, labels=labels, average=None, zero_division=0
    )
    for i, name in enumerate(names):
        got = m["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx(
            (prec[i], rec[i], f1[i])
        )
        assert got["support"] == support[i]
    assert m["confusion_matrix"] == confusion_matrix(t, p, labels=labels).tolist()
    for avg in ("macro", "weighted"):
        ref = precision_recall_fscore_support(t, p, labels=labels, average=avg, zero_division=0)[:3]
        got = m[f"{avg}_avg"]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx(ref)
    assert m["accuracy"] == pytest.approx(np.mean(t == p))


def test_classification_metrics_is_json_ready():
    m = classification_metrics(np.array(Y_TRUE), np.array(Y_PRED), NAMES3)
    text = json.dumps(m, allow_nan=False)
    assert json.loads(text) == m
    assert type(m["n"]) is int and type(m["accuracy"]) is float
    assert type(m["per_class"]["A"]["support"]) is int


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([0, 1], [0], "differ in length"),
        ([], [], "empty"),
        ([0, 3], [0, 1], "outside"),
        ([0, 1], [0, -1], "outside"),
        ([0.5, 1], [0, 1], "integer"),
    ],
)
def test_classification_metrics_rejects_bad_input(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, y_pred, NAMES3)


def test_duplicate_class_names_rejected():
    with pytest.raises(ValueError, match="unique"):
        classification_metrics([0], [0], ["A", "A"])


# --------------------------------------------------------------------------------------------
# confusion-matrix metrics
# --------------------------------------------------------------------------------------------
def test_confusion_metrics_match_hand_example_and_sklearn():
    assert accuracy_metric()(Y_TRUE, Y_PRED) == pytest.approx(3 / 5)
    assert macro_f1_metric(3)(Y_TRUE, Y_PRED) == pytest.approx(13 / 30)
    assert class_recall_metric(1, 3)(Y_TRUE, Y_PRED) == pytest.approx(1.0)
    assert class_recall_metric(0, 3)(Y_TRUE, Y_PRED) == pytest.approx(0.5)
    # recall of a class with no true sample is undefined
    assert math.isnan(class_recall_metric(2, 3)([0, 1], [0, 1]))

    rng = np.random.default_rng(3)
    t = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.6, t, rng.integers(0, 3, 300))  # class 3 rarely predicted
    expected = f1_score(t, p, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    assert macro_f1_metric(4)(t, p) == pytest.approx(expected)
    assert classification_metrics(t, p, list("ABCD"))["macro_f1"] == pytest.approx(expected)


# --------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------
def test_bootstrap_contains_point_estimate_and_matches_normal_width():
    t, p = _labels(2000, 0.8)
    point, low, high = bootstrap_ci(t, p, accuracy_metric(), n_boot=2000, seed=0)
    assert point == pytest.approx(0.8)
    assert low < point < high
    # normal approximation: SE = sqrt(0.8 * 0.2 / 2000) = 0.008944; 95 % width = 2 * 1.96 * SE
    expected_width = 2 * 1.959964 * math.sqrt(0.8 * 0.2 / 2000)  # = 0.03506
    assert high - low == pytest.approx(expected_width, rel=0.15)


def test_bootstrap_narrows_with_more_data():
    widths = []
    for n in (50, 500, 5000):
        t, p = _labels(n, 0.8)
        point, low, high = bootstrap_ci(t, p, accuracy_metric(), n_boot=1000, seed=1)
        assert low <= point <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    # width scales like 1/sqrt(n): 10 x the data -> about 1/sqrt(10) = 0.32 of the width
    assert widths[2] / widths[1] == pytest.approx(1 / math.sqrt(10), rel=0.25)


def test_bootstrap_is_deterministic_for_a_seed():
    t, p = _labels(300, 0.7, n_classes=3)
    first = bootstrap_ci(t, p, macro_f1_metric(3), n_boot=500, seed=42)
    again = bootstrap_ci(t, p, macro_f1_metric(3), n_boot=500, seed=42)
    other = bootstrap_ci(t, p, macro_f1_metric(3), n_boot=500, seed=43)
    assert first == again
    assert first[0] == other[0] and first[1:] != other[1:]


def test_bootstrap_all_correct_is_degenerate():
    assert bootstrap_ci([1, 0, 1], [1, 0, 1], accuracy_metric(), n_boot=100) == (1.0, 1.0, 1.0)


def test_plain_callable_gives_same_interval_as_confusion_metric():
    # the generic (looping) path uses the same draws as the vectorised one
    t, p = _labels(200, 0.75)
    groups = np.arange(200) // 4
    for g in (None, groups):
        fast = bootstrap_ci(t, p, accuracy_metric(), n_boot=300, seed=5, groups=g)
        slow = bootstrap_ci(t, p, _acc, n_boot=300, seed=5, groups=g)
        assert fast == pytest.approx(slow)


def test_singleton_groups_equal_item_bootstrap():
    t, p = _labels(100, 0.6)
    items = bootstrap_ci(t, p, accuracy_metric(), n_boot=400, seed=2)
    singletons = bootstrap_ci(t, p, accuracy_metric(), n_boot=400, seed=2, groups=np.arange(100))
    assert items == singletons


def test_group_bootstrap_wider_when_copies_are_perfectly_correlated():
    # 40 source cells x 10 augmented copies; a cell's copies are all right (cells 0-29) or all
    # wrong (cells 30-39), accuracy 30/40 = 0.75.  The item bootstrap sees n = 400, the cluster
    # bootstrap n = 40 independent cells: its interval is about sqrt(10) = 3.2 times wider.
    cells = np.repeat(np.arange(40), 10)
    t = np.zeros(400, dtype=int)
    p = np.where(cells < 30, 0, 1)
    point_i, low_i, high_i = bootstrap_ci(t, p, accuracy_metric(), n_boot=2000, seed=0)
    point_g, low_g, high_g = bootstrap_ci(
        t, p, accuracy_metric(), n_boot=2000, seed=0, groups=[f"cell{c}" for c in cells]
    )
    assert point_i == point_g == pytest.approx(0.75)
    assert low_g <= point_g <= high_g
    ratio = (high_g - low_g) / (high_i - low_i)
    assert ratio > 2.0
    assert ratio == pytest.approx(math.sqrt(10), rel=0.3)
    # normal approximation with 40 cells: 2 * 1.96 * sqrt(0.75 * 0.25 / 40) = 0.268
    assert high_g - low_g == pytest.approx(2 * 1.959964 * math.sqrt(0.75 * 0.25 / 40), rel=0.2)


def test_bootstrap_runs_on_a_test_sized_split():
    # TEST's size (2500 images, 500 cells) with the study's 2000 resamples, through every path
    # (vectorised confusion metrics and a plain callable).  Speed is the benchmark's business.
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 2500)
    p = np.where(rng.random(2500) < 0.85, t, rng.integers(0, 4, 2500))
    for metric in (accuracy_metric(), macro_f1_metric(4), _acc):
        point, low, high = bootstrap_ci(t, p, metric, n_boot=2000)
        assert low <= point <= high, metric
    out = metric_intervals(t, p, list("ABCD"), n_boot=2000, groups=np.arange(2500) // 5)
    assert out["accuracy"]["low"] <= out["accuracy"]["value"] <= out["accuracy"]["high"]


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([0], [0], accuracy_metric(), n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([0], [0], accuracy_metric(), alpha=1.5)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci([0, 1], [0, 1], accuracy_metric(), groups=[1])


def test_metric_intervals_keys_values_and_consistency():
    t, p = _labels(240, 0.8, n_classes=4)
    names = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
    groups = np.arange(240) // 3
    out = metric_intervals(t, p, names, n_boot=500, seed=7, groups=groups)
    assert list(out) == ["accuracy", "macro_f1"] + [f"recall_{n}" for n in names]
    m = classification_metrics(t, p, names)
    assert out["accuracy"]["value"] == pytest.approx(m["accuracy"])
    assert out["macro_f1"]["value"] == pytest.approx(m["macro_f1"])
    for i, name in enumerate(names):
        assert out[f"recall_{name}"]["value"] == pytest.approx(m["per_class"][name]["recall"])
        same = bootstrap_ci(t, p, class_recall_metric(i, 4), n_boot=500, seed=7, groups=groups)
        assert tuple(out[f"recall_{name}"].values()) == pytest.approx(same)
    for key, interval in out.items():
        assert set(interval) == {"value", "low", "high"}
        assert interval["low"] <= interval["value"] <= interval["high"], key
    assert tuple(out["accuracy"].values()) == pytest.approx(
        bootstrap_ci(t, p, accuracy_metric(), n_boot=500, seed=7, groups=groups)
    )
    json.dumps(out, allow_nan=False)


def test_confusion_metric_is_a_plain_callable():
    m = ConfusionMetric(
        "errors", lambda cm: cm.sum(axis=(-2, -1)) - np.trace(cm, axis1=-2, axis2=-1)
    )
    assert m([0, 1, 1], [0, 0, 1]) == 1.0


# --------------------------------------------------------------------------------------------
# exact intervals of a proportion
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "n", "low", "high", "tol"),
    [
        # ALL-IDB2's 26 test cells.  26/26: low = 0.025 ** (1 / 26) = 0.8677 (the closed form at
        # k = n), high = 1; 25/26: the published exact interval [0.804, 0.999].
        (26, 26, 0.868, 1.0, 5e-4),
        (25, 26, 0.804, 0.999, 5e-4),
        # Newcombe RG (1998), Two-sided confidence intervals for the single proportion:
        # comparison of seven methods, Statistics in Medicine 17:857-872, Table II, method 5
        # ("exact", Clopper-Pearson).
        (81, 263, 0.2527, 0.3676, 5e-5),
        (15, 148, 0.0578, 0.1617, 5e-5),
        (0, 20, 0.0, 0.1684, 5e-5),
        (1, 29, 0.0009, 0.1776, 5e-5),
    ],
)
def test_clopper_pearson_published_values(k, n, low, high, tol):
    r = proportion_intervals(k, n)
    assert r["clopper_pearson"]["low"] == pytest.approx(low, abs=tol)
    assert r["clopper_pearson"]["high"] == pytest.approx(high, abs=tol)
    assert (r["k"], r["n"], r["value"]) == (k, n, k / n)


def test_clopper_pearson_closed_forms():
    # at k = n the lower bound is (alpha/2) ** (1/n); at k = 0 the upper is 1 - (alpha/2) ** (1/n)
    assert proportion_intervals(26, 26)["clopper_pearson"]["low"] == pytest.approx(0.025 ** (1 / 26))
    assert proportion_intervals(0, 71)["clopper_pearson"] == pytest.approx(
        {"low": 0.0, "high": 1 - 0.025 ** (1 / 71)}
    )
    # 90 % interval: alpha/2 = 0.05
    assert proportion_intervals(10, 10, alpha=0.1)["clopper_pearson"]["low"] == pytest.approx(
        0.05 ** 0.1
    )


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Newcombe (1998), Table II, method 3 (Wilson score interval without continuity
        # correction): the textbook examples 81/263, 15/148, 0/20 and 1/29.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_published_values(k, n, low, high):
    r = proportion_intervals(k, n)
    assert r["wilson"]["low"] == pytest.approx(low, abs=5e-5)
    assert r["wilson"]["high"] == pytest.approx(high, abs=5e-5)


def test_wilson_hand_formula_and_symmetry():
    # 25/26, z = 1.959964: centre (25 + z^2/2) / (26 + z^2), half z sqrt(25/26 + z^2/4) / (26 + z^2)
    z = 1.959964
    centre = (25 + z * z / 2) / (26 + z * z)
    half = z * math.sqrt(25 * 1 / 26 + z * z / 4) / (26 + z * z)
    r = proportion_intervals(25, 26)
    assert r["wilson"]["low"] == pytest.approx(centre - half, abs=1e-6)
    assert r["wilson"]["high"] == pytest.approx(centre + half, abs=1e-6)
    # k and n - k mirror each other
    a, b = proportion_intervals(7, 30), proportion_intervals(23, 30)
    for method in ("clopper_pearson", "wilson"):
        assert a[method]["low"] == pytest.approx(1 - b[method]["high"])
        assert a[method]["high"] == pytest.approx(1 - b[method]["low"])
    json.dumps(r, allow_nan=False)


def test_proportion_intervals_rejects_bad_counts():
    for k, n in ((3, 2), (-1, 5), (0, 0), (1.5, 3)):
        with pytest.raises(ValueError):
            proportion_intervals(k, n)
    with pytest.raises(ValueError, match="alpha"):
        proportion_intervals(1, 2, alpha=0)


def test_add_exact_interval_to_classification_metrics():
    t = np.r_[np.zeros(13, dtype=int), np.ones(13, dtype=int)]
    p = t.copy()
    p[0] = 1  # 25 of 26 right
    m = classification_metrics(t, p, ["ALL", "HEM"])
    out = add_exact_interval(m)
    assert "exact_interval" not in m  # a copy, the input is left alone
    e = out["exact_interval"]
    assert (e["k"], e["n"], e["method"], e["independent"]) == (25, 26, "clopper-pearson", True)
    assert e["value"] == pytest.approx(m["accuracy"])
    assert (e["low"], e["high"]) == pytest.approx((0.804, 0.999), abs=5e-4)
    assert e["wilson"] == proportion_intervals(25, 26)["wilson"]
    assert out["n_cells"] == 26
    # copies of fewer cells (13 cells, 2 images each; or ALL-IDB2's 26 images of 25 cells):
    # no exact interval, the cell count says why
    copies = add_exact_interval(m, groups=np.arange(26) // 2)
    assert "exact_interval" not in copies and copies["n_cells"] == 13
    one_pair = add_exact_interval(m, groups=[min(i, 24) for i in range(26)])
    assert "exact_interval" not in one_pair and one_pair["n_cells"] == 25
    distinct = add_exact_interval(m, groups=[f"c{i}" for i in range(26)])
    assert distinct["exact_interval"] == e and distinct["n_cells"] == 26
    with pytest.raises(ValueError, match="groups"):
        add_exact_interval(m, groups=[1, 2])
    json.dumps(out, allow_nan=False)


# --------------------------------------------------------------------------------------------
# paired bootstrap of the accuracy difference
# --------------------------------------------------------------------------------------------
def test_paired_bootstrap_identical_predictions_give_zero():
    t, p = _labels(300, 0.7, n_classes=4)
    groups = np.arange(300) // 10
    r = paired_bootstrap_difference(t, p, p.copy(), groups, n_boot=500, seed=1)
    assert (r["difference"], r["low"], r["high"]) == (0.0, 0.0, 0.0)
    assert r["share_a_better"] == 0.0 and r["share_b_better"] == 0.0
    assert r["accuracy_a"] == r["accuracy_b"] == pytest.approx(0.7)
    assert (r["n"], r["n_groups"], r["seeds_a"], r["seeds_b"], r["n_boot"]) == (300, 30, 1, 1, 500)
    json.dumps(r, allow_nan=False)


def _three_cells_a_better(copies: int = 20):
    """5 source cells x ``copies``: A is right on every copy of cells 0-2 and B wrong; both are
    right on every copy of cells 3-4."""
    cells = np.repeat(np.arange(5), copies)
    t = np.array(["MONOCYTE"] * cells.size)
    a = t.copy()
    b = np.where(cells < 3, "LYMPHOCYTE", t)
    return t, a, b, cells


def test_paired_bootstrap_three_cells_hand_computed():
    # accuracy A = 1, B = 2/5: difference 3/5.  Cells are equal in size, so a resample's
    # difference is X / 5 with X ~ Binomial(5, 3/5) the draws of cells 0-2:
    #   P(X = 0) = 0.4^5 = 0.01024, P(X <= 1) = 0.01024 + 5 * 0.6 * 0.4^4 = 0.08704,
    #   P(X <= 4) = 1 - 0.6^5 = 0.92224
    # so the 2.5 % quantile is X = 1 (0.2), the 97.5 % quantile X = 5 (1.0), and A > B in
    # 1 - P(X = 0) = 0.98976 of the resamples.
    t, a, b, cells = _three_cells_a_better()
    r = paired_bootstrap_difference(t, a, b, cells, n_boot=20000, seed=0)
    assert r["difference"] == pytest.approx(0.6)
    assert (r["accuracy_a"], r["accuracy_b"]) == pytest.approx((1.0, 0.4))
    assert (r["low"], r["high"]) == pytest.approx((0.2, 1.0))
    assert r["share_a_better"] == pytest.approx(0.98976, abs=0.003)
    assert r["share_b_better"] == 0.0
    # swapping the models mirrors everything
    s = paired_bootstrap_difference(t, b, a, cells, n_boot=20000, seed=0)
    assert (s["difference"], s["low"], s["high"]) == pytest.approx((-0.6, -1.0, -0.2))
    assert s["share_b_better"] == pytest.approx(r["share_a_better"])
    # deterministic for a seed
    assert paired_bootstrap_difference(t, a, b, cells, n_boot=20000, seed=0) == r


def test_paired_bootstrap_resamples_whole_cells_not_copies():
    # cell 0: A right, B wrong; cell 1: both right.  With 2 cells the resampled difference is
    # X / 2, X ~ Binomial(2, 1/2): 0, 0.5, 1 with 1/4, 1/2, 1/4, so the interval is [0, 1].
    # 100 copies of each cell must give the same interval: the copies add no information.
    t2 = np.array([0, 0])
    a2, b2 = np.array([0, 0]), np.array([1, 0])
    two = paired_bootstrap_difference(t2, a2, b2, [0, 1], n_boot=4000, seed=3)
    assert (two["difference"], two["low"], two["high"]) == pytest.approx((0.5, 0.0, 1.0))
    assert two["share_a_better"] == pytest.approx(0.75, abs=0.03)
    cells = np.repeat([0, 1], 100)
    t, a, b = t2[cells], a2[cells], b2[cells]
    copies = paired_bootstrap_difference(t, a, b, [f"cell{c}" for c in cells], n_boot=4000, seed=3)
    assert (copies["difference"], copies["low"], copies["high"]) == pytest.approx(
        (two["difference"], two["low"], two["high"])
    )
    assert copies["n_groups"] == 2 and copies["n"] == 200
    # treating the 200 copies as independent images gives 0.5 +- about 2 * sqrt(0.25 / 200),
    # an interval about 7 times too narrow
    items = paired_bootstrap_difference(t, a, b, None, n_boot=4000, seed=3)
    assert items["high"] - items["low"] == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 200), rel=0.2)
    assert items["high"] - items["low"] < (copies["high"] - copies["low"]) / 5


def test_paired_bootstrap_seeds_hand_computed():
    # 4 independent cells (no copies); A's two seeds get 4/4 and 2/4 right, B's two seeds 1/4 and
    # 1/4: difference = mean(1, 0.5) - mean(0.25, 0.25) = 0.5
    t = np.zeros(4, dtype=int)
    a = [np.array([0, 0, 0, 0]), np.array([0, 0, 1, 1])]
    b = [np.array([0, 1, 1, 1]), np.array([1, 0, 1, 1])]
    r = paired_bootstrap_difference_seeds(t, a, b, np.arange(4), n_boot=4000, seed=0)
    assert r["difference"] == pytest.approx(0.5)
    assert (r["accuracy_a"], r["accuracy_b"]) == pytest.approx((0.75, 0.25))
    assert (r["seeds_a"], r["seeds_b"], r["n_groups"]) == (2, 2, 4)
    assert r["low"] <= r["difference"] <= r["high"]
    # one seed per model: the same numbers as the single-run function (same cell draws)
    single = paired_bootstrap_difference(t, a[0], b[0], np.arange(4), n_boot=4000, seed=0)
    assert paired_bootstrap_difference_seeds(t, a[:1], b[:1], np.arange(4), 4000, 0) == single
    # seeds are resampled too: a model whose seeds disagree widens the interval over the same
    # cells compared with a model repeated with identical seeds
    steady = paired_bootstrap_difference_seeds(t, [a[0], a[0]], b, np.arange(4), 4000, 0)
    spread = paired_bootstrap_difference_seeds(t, [a[0], np.array([1, 1, 1, 1])], b,
                                               np.arange(4), 4000, 0)
    assert spread["high"] - spread["low"] > steady["high"] - steady["low"]


def test_paired_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap_difference([0, 1], [0, 1], [0], None)
    with pytest.raises(ValueError, match="groups"):
        paired_bootstrap_difference([0, 1], [0, 1], [0, 1], [0])
    with pytest.raises(ValueError, match="no predictions"):
        paired_bootstrap_difference_seeds([0, 1], [], [[0, 1]], None)
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap_difference([0], [0], [0], None, n_boot=0)


# --------------------------------------------------------------------------------------------
# report frame and k-fold summary
# --------------------------------------------------------------------------------------------
def test_classification_report_frame_layout():
    frame = classification_report_frame(classification_metrics(Y_TRUE, Y_PRED, NAMES3))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == ["A", "B", "C", "accuracy", "macro avg", "weighted avg"]
    assert list(frame.columns) == ["precision", "recall", "f1-score", "support"]
    assert frame["support"].dtype == np.int64
    assert frame.loc["B"].tolist() == pytest.approx([2 / 3, 1.0, 0.8, 2])
    assert frame.loc["C"].tolist() == [0.0, 0.0, 0.0, 1]
    # accuracy row as in sklearn's text report: only f1-score (= accuracy) and the total support
    assert np.isnan(frame.loc["accuracy", "precision"])
    assert np.isnan(frame.loc["accuracy", "recall"])
    assert frame.loc["accuracy", "f1-score"] == pytest.approx(3 / 5)
    assert frame.loc["accuracy", "support"] == 5
    assert frame.loc["macro avg"].tolist() == pytest.approx([7 / 18, 1 / 2, 13 / 30, 5])
    assert frame.loc["weighted avg"].tolist() == pytest.approx([7 / 15, 3 / 5, 13 / 25, 5])


def test_kfold_summary_hand_example():
    folds = [
        {"accuracy": 0.8, "macro_f1": 0.70, "per_class": {"ALL": {"recall": 0.9}}},
        {"accuracy": 0.9, "macro_f1": 0.75, "per_class": {"ALL": {"recall": 0.8}}},
        {"accuracy": 1.0, "macro_f1": 0.80, "per_class": {"ALL": {"recall": 0.7}}},
    ]
    s = kfold_summary(folds)
    assert list(s) == ["accuracy", "macro_f1"]
    # mean 0.9; deviations -0.1, 0, 0.1 -> sd = sqrt((0.01 + 0 + 0.01) / (3 - 1)) = 0.1
    assert s["accuracy"]["mean"] == pytest.approx(0.9)
    assert s["accuracy"]["sd"] == pytest.approx(0.1)
    assert s["accuracy"]["per_fold"] == [0.8, 0.9, 1.0]
    # mean 0.75; sd = sqrt((0.0025 + 0 + 0.0025) / 2) = 0.05
    assert s["macro_f1"]["mean"] == pytest.approx(0.75)
    assert s["macro_f1"]["sd"] == pytest.approx(0.05)
    nested = kfold_summary(folds, keys=["per_class.ALL.recall"])
    assert nested["per_class.ALL.recall"]["mean"] == pytest.approx(0.8)
    # interval dicts (from metric_intervals) contribute their "value"
    ivals = kfold_summary(
        [{"accuracy": {"value": 0.5, "low": 0.4, "high": 0.6}}] * 2, keys=["accuracy"]
    )
    assert ivals["accuracy"] == {"mean": 0.5, "sd": 0.0, "per_fold": [0.5, 0.5]}


def test_kfold_summary_single_fold_and_errors():
    s = kfold_summary([{"accuracy": 0.9, "macro_f1": 0.8}])
    assert s["accuracy"]["mean"] == 0.9 and math.isnan(s["accuracy"]["sd"])
    with pytest.raises(ValueError):
        kfold_summary([])
    with pytest.raises(KeyError, match="nope"):
        kfold_summary([{"accuracy": 1.0}], keys=["nope"])


def test_format_interval_writes_every_table_and_command_the_same_way():
    from leuko.core.metrics import format_interval

    assert format_interval(0.6094, 0.5061, 0.685) == "60.9 % [50.6, 68.5]"
    assert format_interval(0.6094, 0.5061, 0.685, unit="") == "60.9 [50.6, 68.5]"
    assert format_interval(0.012, -0.003, 0.026, unit="", signed=True) == "+1.2 [-0.3, +2.6]"
    assert format_interval(0.05, 0.01, 0.1, width=5) == "  5.0 % [1.0, 10.0]"
    assert format_interval(0.5, 0.4, 0.6, label="95 % CI ") == "50.0 % [95 % CI 40.0, 60.0]"
    assert format_interval(0.6094, unit="") == "60.9"
    assert format_interval(float("nan")) == format_interval(None) == "–"
