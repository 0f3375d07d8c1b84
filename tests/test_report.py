"""Tests of leuko.report's tables that are not covered by the pipeline test: values against
hand-computed ones."""

from __future__ import annotations

import pandas as pd
import pytest

from leuko import report


def _result(model: str, **accuracies: float) -> dict:
    return {"model": model, "stain_shift": {"split": "test", "n": 400, "kinds": {
        kind: {"accuracy": acc, "macro_f1": acc - 0.1} for kind, acc in accuracies.items()}}}


def test_stain_robustness_table_and_summary():
    results = [_result("a", none=0.8, faded=0.6, dark=0.7),
               _result("b", none=0.9, faded=0.85, dark=0.5),
               {"model": "no-robustness-run"}]
    table = report.stain_robustness_table(results)
    assert list(table.index) == ["a", "b"]
    assert list(table.columns) == ["none", "faded", "dark"]
    assert table.loc["b", "faded"] == 0.85
    assert report.stain_robustness_table(results, "macro_f1").loc["a", "none"] == \
        pytest.approx(0.7)
    summary = report.stain_robustness_summary(table)
    assert summary.loc["a", "as imaged"] == 0.8
    assert summary.loc["a", "mean under shift"] == pytest.approx(0.65)
    assert summary.loc["b", "worst under shift"] == 0.5
    assert list(summary["worst shift"]) == ["faded", "dark"]
    assert isinstance(summary, pd.DataFrame)
