"""Issue 35's rule as benchmarks/cells/cells_choices.py applies it to one seed's rows: every
part a model was not trained on above the study's macro-F1 interval, at most 2 points lost on
its own test parts."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "cells"))
from cells_choices import rule_verdict  # noqa: E402


def _rows(unseen_after: list[float], own_after: float) -> pd.DataFrame:
    rows = [{"trained on": "both", "tested on": f"lab{i}/unseen", "unseen source": True,
             "macro F1 before": 0.60, "macro F1 low before": 0.50,
             "macro F1 high before": 0.70, "macro F1 after": after}
            for i, after in enumerate(unseen_after)]
    rows.append({"trained on": "both", "tested on": "pbc/test", "unseen source": False,
                 "macro F1 before": 0.90, "macro F1 low before": 0.88,
                 "macro F1 high before": 0.92, "macro F1 after": own_after})
    return pd.DataFrame(rows)


def test_a_choice_is_adopted_only_above_every_interval_at_a_bounded_cost():
    assert rule_verdict(_rows([0.71, 0.75], 0.885), "before", "after").endswith(
        "ADOPT after over before (one seed)")  # 1.5 points lost: within the bound
    # above the point estimate but inside the interval on one part: not adopted
    assert "do not adopt" in rule_verdict(_rows([0.71, 0.69], 0.90), "before", "after")
    # every unseen part raised, but 3 points lost on the model's own test part
    verdict = rule_verdict(_rows([0.71, 0.75], 0.87), "before", "after")
    assert "+3.0 points" in verdict and "do not adopt" in verdict


def _as_adabn_writes(table: pd.DataFrame) -> pd.DataFrame:
    """The rows with adabn's names for the two sides."""
    return table.rename(columns=lambda c: c.replace("before", "as trained").replace(
        "after", "adapted"))


def test_adabn_applies_the_rule_to_its_own_column_names():
    """benchmarks/cells/adabn.py (cell_variants' columns: ``macro F1 high <name>``, as
    cells_choices writes them) judges by the same rule."""
    from adabn import verdict

    assert verdict(_as_adabn_writes(_rows([0.71, 0.75], 0.885))).endswith(
        "ADOPT adapted over as trained (one seed)")
    assert "do not adopt" in verdict(_as_adabn_writes(_rows([0.71, 0.69], 0.90)))


def test_a_choice_names_the_value_its_block_was_measured_with():
    """A single-seed run writes the CSV of the block cells-<choice>: the constants it would
    run with must be those the block names (the floor moved from 10 to 14 after its block)."""
    from cells_choices import CHOICES, alternative_label, block_of

    from leuko.reporting.results_docs import CELL_VARIANTS, cell_variant

    blocks = {variant.block for variant in CELL_VARIANTS}
    named = [c for c in CHOICES if alternative_label(c) is not None and block_of(c) in blocks]
    assert {"size", "blur", "sharpness", "sharpen", "floor", "randomise", "stain"} <= set(named)
    for choice in named:
        assert alternative_label(choice) == cell_variant(block_of(choice)).alternative
    for choice in ("floor", "stain"):
        assert alternative_label(choice) == cell_variant(block_of(choice, True)).alternative
    assert alternative_label("floor") != cell_variant("cells-floor").alternative  # floor 10
