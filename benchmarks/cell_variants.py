"""What ``benchmarks/adabn.py`` and ``benchmarks/cells_choices.py`` share: two variants of the cell
models compared on one test part, written in the columns ``report.cell_variant_markdown``
reads (``accuracy <variant>``, ..., ``accuracy difference``, ``difference low`` / ``high``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def difference_columns(y_true: np.ndarray, predicted_after: np.ndarray,
                       predicted_before: np.ndarray, groups: np.ndarray, seed: int) -> dict:
    """Accuracy of ``after`` minus ``before`` on the same cells, with its 95 % interval from
    the paired bootstrap over source cells (``metrics.paired_bootstrap_difference``)."""
    from leuko.metrics import paired_bootstrap_difference

    result = paired_bootstrap_difference(y_true, predicted_after, predicted_before, groups,
                                         n_boot=2000, seed=seed)
    return {"accuracy difference": result["difference"], "difference low": result["low"],
            "difference high": result["high"]}


def write_table(rows: list[dict], out: Path) -> pd.DataFrame:
    """The rows as ``out`` (CSV), printed as markdown without the machine column."""
    table = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(table.drop(columns=["machine"]).to_markdown(index=False, floatfmt=".3f"))
    return table
