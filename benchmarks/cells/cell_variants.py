"""What ``benchmarks/cells/adabn.py`` and ``benchmarks/cells/cells_choices.py`` share: two variants of the cell
models compared on one test part, written in the columns ``results_docs.cell_variant_markdown``
reads (``accuracy <variant>``, ..., ``accuracy difference``, ``difference low`` / ``high``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def difference_columns(y_true: np.ndarray, predicted_after: np.ndarray,
                       predicted_before: np.ndarray, groups: np.ndarray, seed: int) -> dict:
    """Accuracy of ``after`` minus ``before`` on the same cells, with its 95 % interval from
    the paired bootstrap over source cells (``metrics.paired_bootstrap_difference``)."""
    from leuko.core.metrics import paired_bootstrap_difference

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


def score_study_models(block: str, probabilities, n_boot: int) -> list[dict]:
    """Each cell model of the last ``dvc repro`` (``cells.trainings``) on each test part of
    ``multisource.TEST_PARTS`` and on the lab no model trains on (``cells.unseen_path``, as
    the cells-unseen stage prepared it), two ways: ``probabilities(model_id, images, alternative)``
    gives the model's uncalibrated class probabilities as the study has them
    (``alternative`` False) and as the variant of the docs block ``block`` has them (True);
    both are temperature-scaled with the model's own temperature and scored as the
    evaluate-cells stage scores (``crosssource.score_part``). One row per model and part,
    with the paired accuracy difference; the CSV of ``block`` is written."""
    from leuko.cells import multisource, unseen
    from leuko.cells.crosssource import held_out_parts, score_part
    from leuko.core.calibration import temperature_scale
    from leuko.core.machine import machine_line
    from leuko.core.params import read_block
    from leuko.reporting.results_docs import cell_variant
    from leuko.thesis import study
    from leuko.thesis.evaluation import source_cells

    variant = cell_variant(block)
    names = {False: variant.baseline, True: variant.alternative}
    cells = read_block("cells", None, Path("params/cells.yaml"))
    seed = int(read_block("data", None, Path("params/data.yaml"))["seed"])
    cache = multisource.load_cell_cache()
    labs = unseen.load_unseen_caches(cells)
    paths = study.Paths()
    rows = []
    for training in cells["trainings"]:
        the_id = multisource.cell_model_id(training)
        summary = study.read_json(paths.train_summary(the_id))
        classes, temperature = list(summary["classes"]), float(summary["temperature"])
        threshold = float(summary["abstain"]["threshold"])
        for tested_on, part, images in held_out_parts(cache, labs):
            row = {"trained on": training, "tested on": tested_on,
                   "unseen source": tested_on.split("/")[0] not in summary["sources"],
                   "images": int(part["label"].isin(classes).sum())}  # of classes it knows
            predicted = {}
            for alternative, name in names.items():
                probs = temperature_scale(probabilities(the_id, images, alternative),
                                          temperature)
                metrics, frame = score_part(probs, part, classes, threshold, n_boot, seed)
                predicted[alternative] = frame["predicted"].to_numpy()
                row["cells"] = metrics["n_cells"]
                for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro F1")):
                    interval = metrics["intervals"][key]
                    row[f"{label} {name}"] = interval["value"]
                    row[f"{label} low {name}"] = interval["low"]
                    row[f"{label} high {name}"] = interval["high"]
            known = part["label"].isin(classes).to_numpy()
            row.update(difference_columns(
                part["label"].to_numpy()[known], predicted[True], predicted[False],
                source_cells(part[known].reset_index(drop=True)), seed))
            row["machine"] = machine_line()
            rows.append(row)
            print(pd.Series(row).to_string(), flush=True)
    write_table(rows, Path(variant.csv))
    return rows
