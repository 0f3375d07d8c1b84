"""Study-level tables and text for the compare notebook and the HTML report: everything is
read from the metrics files the pipeline wrote, nothing is typed in by hand."""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from leuko.atomic import write_csv_atomic
from leuko.leukemia import GALLERY_KINDS, LeukemiaPaths, is_leukemia_result
from leuko.study import Paths

# Published numbers of the two studies this project reproduces (the thesis, the C-NMC report).
PUBLISHED = {
    "thesis transfer (mean of 8)": 0.878,
    "thesis scratch (mean of 8)": 0.263,
    "thesis best (DenseNet169/201)": 0.982,
    "report Solution A (custom CNN)": 0.90,
    "report Solution B (EfficientNetB2)": 0.88,
}


def listed_models(params_dir: str | Path = "params") -> list[str]:
    """The id of every model the study's parameters in ``params_dir`` train: the 4-class models
    (``wbc.yaml``: ``study.wbc_models``), the leukemia solutions and their repeats
    (``leukemia.yaml``), the cell models and their repeats (``cells.yaml``). A preset
    leaves the files of another preset's models in ``reports/metrics``; only these are the
    study's."""
    from leuko.leukemia import leukemia_model_id
    from leuko.multisource import CellStudy
    from leuko.params import read_block
    from leuko.study import wbc_models

    def block(name: str) -> dict:
        return read_block(name, path=Path(params_dir) / f"{name}.yaml")

    leukemia = block("leukemia")
    repeats = leukemia.get("repeats") or {}
    models = [m.model_id for m in wbc_models(block("wbc"))]
    models += [leukemia_model_id(leukemia["dataset"], s["network"])
               for s in leukemia["solutions"].values()]
    models += [leukemia_model_id(leukemia["dataset"], network, int(seed))
               for network in repeats.get("networks") or [] for seed in repeats.get("seeds") or []]
    models += CellStudy.from_params(block("cells")).model_ids()
    return list(dict.fromkeys(models))


def load_results(metrics_dir: Path, models: list[str] | None = None) -> list[dict]:
    """Every model's metrics file, sorted by model id; ``models``: only these
    (``listed_models``), each of which must have its file."""
    files = sorted(Path(metrics_dir).glob("*.json"))
    if models is not None:
        found = {f.stem for f in files}
        missing = [m for m in models if m not in found]
        if missing:
            raise FileNotFoundError(f"{metrics_dir} lacks the metrics of {missing}: run their "
                                    "evaluate stages (dvc repro)")
        files = [f for f in files if f.stem in set(models)]
    if not files:
        raise FileNotFoundError(f"no metrics files in {metrics_dir}: run the evaluate stages")
    return [json.loads(f.read_text()) for f in files]


SEED_SUFFIX = re.compile(r"-seed(\d+)$")
"""A repeat's model id: the main run's id plus ``-seed{n}`` (``n`` its training seed)."""


def kind_id(model: str) -> str:
    """The kind of a run: its model id without a repeat's ``-seed{n}``, i.e. the main run's
    id. Runs of one kind are one model (dataset, network, regime) trained with other training
    seeds, data and split fixed."""
    return SEED_SUFFIX.sub("", model)


def training_seed(result: dict) -> int:
    """A metrics file's training seed: its ``training_seed``; in files written before they
    carried it, the ``-seed{n}`` of a repeat's id, else 0 (the main run's, ``data.seed``)."""
    if "training_seed" in result:
        return int(result["training_seed"])
    match = SEED_SUFFIX.search(result["model"])
    return int(match.group(1)) if match else 0


def results_table(results: list[dict]) -> pd.DataFrame:
    """One row per model and evaluation split: accuracy and macro F1 with 95 % intervals,
    per-class recall, training time.

    ``accuracy_low`` / ``accuracy_high`` are the cluster-bootstrap interval; where the metrics
    carry an exact interval (:func:`leuko.metrics.add_exact_interval`: every test image its
    own cell), ``accuracy_exact_low`` / ``accuracy_exact_high`` are its Clopper-Pearson bounds
    and ``exact_independent`` is True (NaN / False otherwise). ``n_cells``: the source cells
    of the split (NaN where the file does not say); ``machine`` / ``train_machine``: the
    machines that evaluated and trained the model (``leuko.machine.machine_line``; "" where the
    file does not say). ``training_seed``: the run's training seed (:func:`training_seed`); its
    kind is :func:`kind_id` of ``model``."""
    from leuko.machine import machine_line

    rows = []
    for result in results:
        training = result.get("training", {})
        machines = {"machine": machine_line(result["machine"]) if "machine" in result else "",
                    "train_machine": (machine_line(training["machine"])
                                      if "machine" in training else "")}
        for split, m in result["splits"].items():
            ci = m["intervals"]
            row = {"model": result["model"], "training_seed": training_seed(result),
                   "dataset": result["dataset"],
                   "network": result["network"], "regime": result["regime"], "split": split,
                   "n": m["n"], "n_cells": m.get("n_cells", float("nan")),
                   "accuracy": m["accuracy"],
                   "accuracy_low": ci["accuracy"]["low"], "accuracy_high": ci["accuracy"]["high"],
                   "macro_f1": m["macro_f1"], "macro_f1_low": ci["macro_f1"]["low"],
                   "macro_f1_high": ci["macro_f1"]["high"]}
            exact = m.get("exact_interval") or {}
            row["accuracy_exact_low"] = exact.get("low", float("nan"))
            row["accuracy_exact_high"] = exact.get("high", float("nan"))
            row["exact_independent"] = bool(exact.get("independent", False))
            for name, values in m["per_class"].items():
                row[f"recall_{name}"] = values["recall"]
            row["train_seconds"] = training.get("train_seconds")
            row["epochs_run"] = training.get("epochs_run")
            row["saved_epoch"] = training.get("saved_epoch")
            row["saved_val_accuracy"] = training.get("saved_val_accuracy")
            rows.append({**row, **machines})
    return pd.DataFrame(rows)


STUDY_TITLE = "The leukocyte study: results"
PLUMBING_TITLE = "The leukocyte study: plumbing run, not results"


def random_weight_models(results: list[dict]) -> list[str]:
    """The models whose pretrained base started from random weights (``wbc.weights: random``,
    the smoke preset), as their metrics record it."""
    return [r["model"] for r in results if r.get("training", {}).get("weights") == "random"]


def title_markdown(results: list[dict]) -> str:
    """The report's title: a run with ``weights: random`` is named a plumbing run, with the
    models it concerns, so that no figure of it is read as a result."""
    plumbing = random_weight_models(results)
    if not plumbing:
        return f"# {STUDY_TITLE}"
    return (f"# {PLUMBING_TITLE}\n\n**`weights: random`**: the {len(plumbing)} models of the "
            "4-class study started from random weights instead of ImageNet's (the smoke preset, "
            "`make preset-smoke`: every network and regime at the smallest sizes, to check the "
            "pipeline runs). Its accuracies are chance, its times are the plumbing's.")


def write_tables(tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    """Each table as ``<folder>/<name>.csv`` (for reuse beside the report)."""
    return [write_csv_atomic(Path(folder) / f"{name}.csv", frame)
            for name, frame in tables.items()]


def _ci(value: float, low: float, high: float) -> str:
    return f"{100 * value:.1f} % [{100 * low:.1f}, {100 * high:.1f}]"


def _has_exact(row) -> bool:
    """Whether a results row has an exact interval that applies (every image its own cell)."""
    low = getattr(row, "accuracy_exact_low", float("nan"))
    return bool(getattr(row, "exact_independent", False)) and pd.notna(low)


def accuracy_ci(row) -> str:
    """A results row's accuracy with its 95 % interval: exact (Clopper-Pearson, marked
    "exact") where every test image is a distinct cell, else the cluster bootstrap's."""
    if _has_exact(row):
        return _ci(row.accuracy, row.accuracy_exact_low, row.accuracy_exact_high) + " exact"
    return _ci(row.accuracy, row.accuracy_low, row.accuracy_high)


def short_dataset(dataset: str) -> str:
    """A short name for figure labels: the thesis's two splits by their kind."""
    return {"blood-cell-images": "official split",
            "blood-cell-images-pooled": "pooled split"}.get(dataset, dataset)


def model_label(dataset: str, network: str, regime: str) -> str:
    """A model's name on two short lines (network · split, regime) for figure titles and
    axis labels, where the full id ``<dataset>-<network>-<regime>`` overlaps its neighbours."""
    return f"{network} · {short_dataset(dataset)}\n{regime}"


REGIME_SHORT = {"imagenet": "transfer", "imagenet-long": "transfer long",
                "imagenet-finetune": "fine-tune", "imagenet-finetune-stain": "fine-tune stain",
                "scratch": "scratch"}
"""Figure labels of the regimes (``leuko.train.REGIMES``), in their order."""


def kind_label(dataset: str, network: str, regime: str) -> str:
    """A kind of model on one short line for the rows of a figure: network's short name
    (``networks.short_name``), split, regime's short name (``MNv2 · official split ·
    transfer``)."""
    from leuko.networks import short_name

    return f"{short_name(network)} · {short_dataset(dataset)} · {REGIME_SHORT.get(regime, regime)}"


def regime_column(dataset: str, regime: str) -> str:
    """A model's column in the thesis's small multiples: its regime's short name, marked
    ``· pooled`` on the leaky pooled split."""
    label = REGIME_SHORT.get(regime, regime)
    return f"{label} · pooled" if dataset.endswith("-pooled") else label


def thesis_grid(table: pd.DataFrame) -> tuple[dict[str, tuple[str, str]], list[str], list[str]]:
    """Where each 4-class model sits in the small multiples: ``{model: (network row, regime
    column)}`` with short network names (``networks.short_name``), and the rows (registry order)
    and columns (regime order, the pooled split's after the official split's)."""
    from leuko.networks import NETWORKS, short_name

    models = table.drop_duplicates("model")
    cells = {r.model: (short_name(r.network), regime_column(r.dataset, r.regime))
             for r in models.itertuples()}
    order = [short_name(n) for n in NETWORKS]
    rows = sorted({row for row, _ in cells.values()},
                  key=lambda r: order.index(r) if r in order else len(order))
    regimes = list(REGIME_SHORT.values())
    columns = [c for pooled in (False, True) for c in
               [f"{r} · pooled" if pooled else r for r in regimes]
               if c in {col for _, col in cells.values()}]
    columns += sorted({col for _, col in cells.values()} - set(columns))
    return cells, rows, columns


def model_labels(table: pd.DataFrame) -> dict[str, str]:
    """``{model id: model_label(...)}`` for every model of a results table."""
    models = table.drop_duplicates("model")
    labels = {r.model: model_label(r.dataset, r.network, r.regime) for r in models.itertuples()}
    seen: dict[str, int] = {}
    for model, label in labels.items():  # several runs (seeds) of one kind: number them
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1 or list(labels.values()).count(label) > 1:
            labels[model] = f"{label} · run {seen[label]}"
    return labels


def main_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the main run of each kind (the model id without ``-seed{n}``): one run per
    kind, for figures that draw one dot per network and regime."""
    return table[table["model"].map(kind_id) == table["model"]]


SPREAD_METRICS = ("accuracy", "macro_f1")
SPREAD_STATS = ("mean", "sd", "min", "max")


def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The spread over training seeds: one row per kind (:func:`kind_id`) and split of a
    results table, with ``runs`` (their count), ``seeds`` and ``models`` (comma-separated, by
    seed) and, for accuracy and macro F1, ``<metric>_mean``, ``<metric>_sd`` (sample standard
    deviation, n - 1; NaN for one run), ``<metric>_min`` and ``<metric>_max``.

    Raises ValueError where the runs of one kind differ in dataset, network or regime."""
    spread = [f"{m}_{s}" for m in SPREAD_METRICS for s in SPREAD_STATS]
    columns = ["kind", "dataset", "network", "regime", "split", "runs", "seeds", "models",
               *spread]
    if table.empty:
        return pd.DataFrame(columns=columns)
    seeds = (table["training_seed"] if "training_seed" in table
             else table["model"].map(lambda model: training_seed({"model": model})))
    frame = table.assign(kind=table["model"].map(kind_id), training_seed=seeds)
    rows = []
    for (kind, split), runs in frame.groupby(["kind", "split"], sort=True):
        fields = runs[["dataset", "network", "regime"]].drop_duplicates()
        if len(fields) > 1:
            raise ValueError(f"the runs of {kind} differ in dataset, network or regime: "
                             + "; ".join(" ".join(map(str, f)) for f in fields.itertuples(
                                 index=False)))
        runs = runs.sort_values(["training_seed", "model"])
        row = {"kind": kind, **fields.iloc[0].to_dict(), "split": split, "runs": len(runs),
               "seeds": ", ".join(str(int(seed)) for seed in runs["training_seed"]),
               "models": ", ".join(runs["model"])}
        for metric in SPREAD_METRICS:
            values = runs[metric].astype(float)
            row |= {f"{metric}_mean": values.mean(), f"{metric}_sd": values.std(ddof=1),
                    f"{metric}_min": values.min(), f"{metric}_max": values.max()}
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def seed_runs(table: pd.DataFrame, split: str) -> pd.DataFrame:
    """The runs of ``split`` for ``figures.plot_seed_spread``: one row per run with ``kind``
    (:func:`kind_id`), ``label`` (:func:`kind_label`), ``model``, ``training_seed``,
    ``accuracy`` and ``macro_f1``, ordered by kind and seed."""
    rows = table[table["split"] == split]
    seeds = (rows["training_seed"] if "training_seed" in rows
             else rows["model"].map(lambda model: training_seed({"model": model})))
    runs = rows.assign(kind=rows["model"].map(kind_id), training_seed=seeds,
                       label=[kind_label(r.dataset, r.network, r.regime)
                              for r in rows.itertuples()])
    return runs.sort_values(["kind", "training_seed"])[
        ["kind", "label", "model", "training_seed", "accuracy", "macro_f1"]]


def _number(value) -> float | None:
    """A float for JSON: NaN (e.g. the sd of one run) as None (null)."""
    value = float(value)
    return None if math.isnan(value) else value


def seed_summary_metrics(summary: pd.DataFrame) -> dict:
    """:func:`seed_summary` as nested JSON-able metrics for ``dvc metrics show``:
    ``{kind: {split: {"runs": n, "accuracy": {"mean", "sd", "min", "max"},
    "macro_f1": {...}}}}``, the sd of one run as None (JSON null: JSON has no NaN)."""
    out: dict[str, dict] = {}
    for row in summary.to_dict("records"):
        entry: dict = {"runs": int(row["runs"])}
        for metric in SPREAD_METRICS:
            entry[metric] = {stat: _number(row[f"{metric}_{stat}"]) for stat in SPREAD_STATS}
        out.setdefault(row["kind"], {})[row["split"]] = entry
    return out


def seed_summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`seed_summary` for reading: per kind and split, the runs and their seeds, and
    accuracy and macro F1 in percent as mean ± sd with the range of the runs."""

    def spread(row: dict, metric: str) -> str:
        mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
        if row["runs"] == 1:
            return f"{100 * mean:.1f}"
        return (f"{100 * mean:.1f} ± {100 * sd:.1f} [{100 * row[f'{metric}_min']:.1f}, "
                f"{100 * row[f'{metric}_max']:.1f}]")

    rows = summary.to_dict("records")
    return pd.DataFrame({
        "model": summary["kind"], "split": summary["split"], "runs": summary["runs"],
        "training seeds": summary["seeds"],
        "accuracy %: mean ± sd [min, max]": [spread(r, "accuracy") for r in rows],
        "macro F1 %: mean ± sd [min, max]": [spread(r, "macro_f1") for r in rows]})


def _mean_sd(mean: float, sd: float) -> str:
    return f"{100 * mean:.1f} ± {100 * sd:.1f} %"


def best_rows(table: pd.DataFrame, split: str) -> pd.DataFrame:
    """The best model per dataset on ``split`` (by accuracy)."""
    rows = table[table["split"] == split]
    return rows.loc[rows.groupby("dataset")["accuracy"].idxmax()] if len(rows) else rows


def intervals_note(table: pd.DataFrame) -> str:
    """Which interval each test set of ``table`` gets, from its counts: the exact one (marked
    *exact*) where every image is its own cell, else the bootstrap over its source cells."""
    exact, boot = [], []
    for (dataset, split), rows in table.groupby(["dataset", "split"], sort=True):
        row = rows.iloc[0]
        name = f"{dataset} {split.upper()}"
        cells = row.get("n_cells", float("nan"))
        if _has_exact(row):
            exact.append(f"{name} ({row.n} cells)")
        elif pd.notna(cells):
            boot.append(f"{name} ({row.n:,} images of {int(cells)} cells)")
        else:
            boot.append(f"{name} ({row.n:,} images; its file does not record the cells)")
    parts = []
    if exact:
        parts.append("exact Clopper-Pearson intervals (marked *exact*) where every test "
                     "image is its own cell: " + ", ".join(exact))
    if boot:
        parts.append(("elsewhere a" if exact else "a") + " bootstrap that resamples whole "
                     "source cells: " + ", ".join(boot))
    return "Intervals (95 %): " + "; ".join(parts) + "." if parts else ""


def machines_note(table: pd.DataFrame) -> str:
    """On which machine(s) the table's models were trained and evaluated, and across how many
    distinct machines (CPU model, cores, vector flags, TensorFlow version) the numbers have
    been seen, from the files' ``machine`` records."""
    models = table.drop_duplicates("model")
    seen = {m for m in pd.concat([models["train_machine"], models["machine"]]).fillna("") if m}
    if not seen:
        return ("Machines: not recorded in these metrics files (written before they carried "
                "`machine`).")
    lines = []
    for column, verb in (("train_machine", "trained"), ("machine", "evaluated")):
        counts = models[column].fillna("").value_counts(sort=False)
        named = [f"{line} ({n} model{'s' if n != 1 else ''})"
                 for line, n in sorted(counts.items()) if line]
        missing = int(counts.get("", 0))
        text = f"{verb} on " + ("; ".join(named) if named else "no recorded machine")
        if missing and named:
            text += f"; {missing} model{'s' if missing != 1 else ''} without a record"
        lines.append(text)
    return (f"Machines: {lines[0]}; {lines[1]}. These numbers have been seen on "
            f"{len(seen)} machine{'s' if len(seen) != 1 else ''} (distinct CPU model, cores, "
            "vector flags and TensorFlow version in the metrics files).")


def summary_markdown(table: pd.DataFrame) -> str:
    """The report's opening: best kind of model per study (by its mean accuracy over its
    runs, so that no lucky seed is picked) with its test figures: intervals for one run,
    mean ± sd over the runs for several; and the published numbers for comparison."""
    lines = ["## Summary", "", "| study | best model | split | accuracy [95 % CI] or mean ± sd "
             "| macro F1 [95 % CI] or mean ± sd |", "|---|---|---|---|---|"]
    summary = seed_summary(table)
    runs_of = table.assign(kind=table["model"].map(kind_id))
    several = False
    for split in ("test", "test_simple"):
        rows = summary[summary["split"] == split]
        if rows.empty:
            continue
        for s in rows.loc[rows.groupby("dataset")["accuracy_mean"].idxmax()].itertuples():
            name = f"| {s.dataset} | {s.network} ({s.regime}) | {split} | "
            if s.runs == 1:
                row = next(runs_of[(runs_of["kind"] == s.kind)
                                   & (runs_of["split"] == split)].itertuples())
                lines.append(name + f"{accuracy_ci(row)} | "
                             f"{_ci(row.macro_f1, row.macro_f1_low, row.macro_f1_high)} |")
            else:
                several = True
                lines.append(name + f"{_mean_sd(s.accuracy_mean, s.accuracy_sd)} ({s.runs} "
                             f"runs) | {_mean_sd(s.macro_f1_mean, s.macro_f1_sd)} |")
    lines += ["", intervals_note(table)]
    if several:
        lines += ["", SPREAD_NOTE]
    lines += ["", "Published for comparison: " + "; ".join(
        f"{name} {100 * value:.1f} %" for name, value in PUBLISHED.items()) + "."]
    return "\n".join(lines)


def styled_results(table: pd.DataFrame):
    """The results table formatted for reading (percentages with intervals)."""
    view = pd.DataFrame({
        "model": table["model"], "split": table["split"], "n": table["n"],
        "accuracy [95 % CI, bootstrap]": [_ci(r.accuracy, r.accuracy_low, r.accuracy_high)
                                          for r in table.itertuples()],
        "macro F1 [95 % CI]": [_ci(r.macro_f1, r.macro_f1_low, r.macro_f1_high)
                               for r in table.itertuples()],
        "training time (s)": table["train_seconds"],
    })
    if "accuracy_exact_low" in table and table["accuracy_exact_low"].notna().any():
        view.insert(4, "accuracy [exact 95 % CI]", [
            _ci(r.accuracy, r.accuracy_exact_low, r.accuracy_exact_high) if _has_exact(r)
            else f"– ({r.n} images of {int(r.n_cells)} cells)"
            if pd.notna(getattr(r, "n_cells", float("nan"))) else "–"
            for r in table.itertuples()])
    for column in [c for c in table.columns if c.startswith("recall_")]:
        view[column.replace("recall_", "recall ")] = (100 * table[column]).round(1)
    return view.style.hide(axis="index").format(precision=1)


def load_history(live_dir: Path) -> pd.DataFrame:
    """A DVCLive folder's per-epoch metrics as a Keras-History-like frame (``accuracy``,
    ``val_accuracy``, ``loss``, ``val_loss``, ...), indexed by epoch."""
    series = {}
    for tsv in sorted((Path(live_dir) / "plots" / "metrics").rglob("*.tsv")):
        part = tsv.parent.name
        name = tsv.stem if part == "train" else f"val_{tsv.stem}" if part == "eval" else tsv.stem
        frame = pd.read_csv(tsv, sep="\t")
        series[name] = frame.set_index("step")[frame.columns[-1]]
    history = pd.DataFrame(series)
    history.index = history.index + 1
    history.index.name = "epoch"
    return history


def live_folder(live_root: Path, model_id: str) -> Path | None:
    """A model's DVCLive folder: ``<live_root>/<group>/<id>`` where one stage trained several
    models (``study.Paths.group``), else ``<live_root>/<id>``; None where there is none."""
    found = [*sorted(Path(live_root).glob(f"*/{model_id}")), Path(live_root) / model_id]
    return next((folder for folder in found if folder.is_dir()), None)


def load_histories(live_root: Path, model_ids) -> dict[str, pd.DataFrame]:
    """Histories of the given models (those with a DVCLive folder)."""
    folders = {m: live_folder(live_root, m) for m in dict.fromkeys(model_ids)}
    return {m: load_history(folder) for m, folder in folders.items() if folder is not None}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance() -> dict:
    """What produced the results: code commit, data version (``data.dvc``), parameters."""
    data_dvc = Path("data.dvc")
    data_hash = (yaml.safe_load(data_dvc.read_text())["outs"][0]["md5"]
                 if data_dvc.is_file() else "unknown")
    params = {p.as_posix(): yaml.safe_load(p.read_text())
              for p in sorted(Path("params").rglob("*.yaml")) if "presets" not in p.parts}
    dirty = bool(_git("status", "--porcelain", "--", "lib", "notebooks", "params", "dvc.yaml"))
    return {"commit": _git("rev-parse", "--short", "HEAD") + (" (+ uncommitted changes)"
                                                              if dirty else ""),
            "data": data_hash, "params": params}


def provenance_markdown() -> str:
    """Provenance as markdown: commit, data hash and every parameter file."""
    info = provenance()
    lines = [f"- code commit: `{info['commit']}`", f"- data version (`data.dvc` md5): "
             f"`{info['data']}`", "- parameters:", ""]
    for path, values in info["params"].items():
        lines += [f"`{path}`", "", "```yaml", yaml.safe_dump(values, sort_keys=False).strip(),
                  "```", ""]
    return "\n".join(lines)


README_START = "<!-- results:start (written by `make results`; do not edit by hand) -->"
README_END = "<!-- results:end -->"


SPREAD_NOTE = ("± : the mean ± sample standard deviation (n − 1) over a model's runs, the same "
               "model trained again with other training seeds on the same data and split (how "
               "far one training run's score moves, not the test set's uncertainty). A model "
               "with one run shows its 95 % interval in brackets, the bootstrap over source "
               "cells (or the exact one where marked).")
"""The line under a results table: what ± and the brackets mean."""


def readme_table(table: pd.DataFrame) -> str:
    """The README's results table: one row per kind of model (:func:`kind_id`), TEST and
    TEST_SIMPLE side by side. A kind with several runs (training seeds) shows mean ± sd over
    its runs and their number, one with one run its accuracy with the 95 % interval."""
    summary = seed_summary(table).set_index(["kind", "split"])
    lines = ["| model | TEST accuracy [95 % CI] or mean ± sd | TEST macro F1 | TEST_SIMPLE / "
             "held-out accuracy [95 % CI] or mean ± sd | training time (s) |",
             "|---|---|---|---|---|"]

    def accuracy(kind: str, rows: pd.DataFrame, split: str) -> str:
        runs = rows[rows["split"] == split]
        if runs.empty:
            return "–"
        if len(runs) == 1:
            return f"{accuracy_ci(next(runs.itertuples()))} (1 run)"
        s = summary.loc[(kind, split)]
        return f"{_mean_sd(s.accuracy_mean, s.accuracy_sd)} ({len(runs)} runs)"

    def macro_f1(kind: str, rows: pd.DataFrame) -> str:
        runs = rows[rows["split"] == "test"]
        if runs.empty:
            return "–"
        s = summary.loc[(kind, "test")]
        return (f"{100 * s.macro_f1_mean:.1f} %" if len(runs) == 1
                else _mean_sd(s.macro_f1_mean, s.macro_f1_sd))

    for kind, rows in table.groupby(table["model"].map(kind_id), sort=True):
        seconds = rows.drop_duplicates("model")["train_seconds"].astype(float).mean()
        cells = [f"`{kind}`", accuracy(kind, rows, "test"), macro_f1(kind, rows),
                 accuracy(kind, rows, "test_simple"),
                 f"{seconds:.0f}" if pd.notna(seconds) else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", SPREAD_NOTE + " Training time: the mean per run.", "",
                      intervals_note(table), "",
                      machines_note(table)])


def readme_block_markers(name: str) -> tuple[str, str]:
    """The README's markers around the block ``name`` that ``make results`` writes."""
    if name == "results":
        return README_START, README_END
    return (f"<!-- {name}:start (written by `make results`; do not edit by hand) -->",
            f"<!-- {name}:end -->")


def replace_readme_block(text: str, name: str, body: str) -> str:
    """``text`` with the block ``name`` (between its markers) replaced by ``body``."""
    start, end = readme_block_markers(name)
    if start not in text or end not in text:
        raise ValueError(f"README lacks the markers {start!r} / {end!r}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


# The documents whose blocks ``make results`` writes: the README, and the log of the cell
# classifier's measured choices that the README's section on it links to.
RESULT_DOCUMENTS = (Path("README.md"), Path("docs/cell-classifier-choices.md"))


def update_documents(documents: tuple[Path, ...], table: pd.DataFrame,
                     blocks: dict[str, str] | None = None) -> list[Path]:
    """Replace the results table and each of ``blocks`` (name -> markdown) between their
    markers, in whichever of ``documents`` holds them; the documents that changed.

    Raises ValueError for a block whose markers are in none of the documents, or in more
    than one."""
    texts = {Path(d): Path(d).read_text() for d in documents}
    new = dict(texts)
    for name, body in {"results": readme_table(table), **(blocks or {})}.items():
        start, _ = readme_block_markers(name)
        holders = [d for d, text in new.items() if start in text]
        if len(holders) != 1:
            where = ", ".join(map(str, holders)) or "none of " + ", ".join(map(str, texts))
            raise ValueError(f"block {name!r}: its markers must be in one document, found in "
                             f"{where}")
        new[holders[0]] = replace_readme_block(new[holders[0]], name, body)
    changed = [d for d in texts if new[d] != texts[d]]
    for document in changed:
        document.write_text(new[document])
    return changed


def cells_markdown(cross_source_csv: Path) -> str:
    """The leave-one-source-out table of ``reports/cells/cross_source.csv`` as markdown."""
    from leuko.crosssource import cross_source_view

    if not Path(cross_source_csv).is_file():
        return f"*Not run yet: {cross_source_csv} is missing (`dvc repro evaluate-cells`).*"
    view = cross_source_view(pd.read_csv(cross_source_csv))
    return view.to_markdown(index=False)


CELL_SPLITS = ("train", "val", "test", "test_simple")


def cells_data_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per class (rows) and source and split (columns): the images the cell models see and
    the distinct source cells they are copies of (``group``), as "images (source cells)"; a
    class a source or split lacks is blank. From ``build/manifests/cells.csv``."""
    from leuko import multisource

    counts = manifest.groupby(["source", "split", "label"]).agg(
        images=("path", "size"), cells=("group", "nunique"))
    columns = [(source, split) for source in sorted(manifest["source"].unique())
               for split in CELL_SPLITS if (source, split) in counts.index.droplevel("label")]
    labels = [c for c in multisource.CLASS_ORDER if c in set(manifest["label"])]
    view = pd.DataFrame({"class": [label.lower() for label in labels]})
    for source, split in columns:
        view[f"{source} {split}"] = [
            f"{counts.loc[(source, split, label), 'images']} "
            f"({counts.loc[(source, split, label), 'cells']})"
            if (source, split, label) in counts.index else "" for label in labels]
    return view


def cells_data_markdown(manifest_csv: Path) -> str:
    """:func:`cells_data_table` of the study's cell manifest as markdown."""
    if not Path(manifest_csv).is_file():
        return f"*Not run yet: {manifest_csv} is missing (`dvc repro cells`).*"
    table = cells_data_table(pd.read_csv(manifest_csv, keep_default_na=False))
    return (table.to_markdown(index=False, disable_numparse=True)
            + "\n\nImages (distinct source cells): blood-cell-images' images are shifted, rotated "
            "and flipped copies of fewer source cells (its training part round-robin over them); "
            "PBC's are one image per cell, bar its byte-identical pairs.")


def cell_results(results: list[dict], ensembles: bool = True) -> list[dict]:
    """The cell classifier's models (dataset ``cells``) among ``results``; ``ensembles``
    False: its training runs only (``leuko.ensemble``'s averages, with ``members``, left
    out)."""
    return [r for r in results if r["dataset"] == "cells" and (ensembles or "members" not in r)]


def cells_seed_runs(results: list[dict]) -> pd.DataFrame:
    """Every training run of the cell models (no ensemble) on every held-out part, for
    ``figures.plot_seed_spread``: ``label`` (``<training> -> <part>``), ``kind``,
    ``training``, ``split`` (the part), ``model``, ``training_seed``, ``accuracy`` and
    ``macro_f1``; in the cross-source table's order (``multisource.TRAININGS``, then
    ``TEST_PARTS``), then by seed."""
    from leuko.multisource import TEST_PARTS, TRAININGS

    parts = [f"{source}/{split}" for source, split in TEST_PARTS]
    rows = sorted(({"label": f"{r['trained_on']} -> {part}", "kind": kind_id(r["model"]),
                    "training": r["trained_on"], "split": part, "model": r["model"],
                    "training_seed": training_seed(r), "accuracy": m["accuracy"],
                    "macro_f1": m["macro_f1"]}
                   for r in cell_results(results, ensembles=False)
                   for part, m in r["splits"].items()),
                  key=lambda row: (list(TRAININGS).index(row["training"]),
                                   parts.index(row["split"]), row["training_seed"]))
    return pd.DataFrame(rows, columns=["label", "kind", "training", "split", "model",
                                       "training_seed", "accuracy", "macro_f1"])


def cells_seed_view(results: list[dict]) -> pd.DataFrame:
    """The cell models' spread over training seeds (:func:`seed_summary`): per training and
    held-out part, in the cross-source table's order, whether the part's source is unseen,
    the runs with their seeds, and accuracy and macro F1 as mean ± sd [min, max] in %."""
    cells = cell_results(results, ensembles=False)
    if not cells:
        return pd.DataFrame()
    order = cells_seed_runs(cells)[["kind", "split"]].drop_duplicates()
    summary = seed_summary(results_table(cells)).set_index(["kind", "split"]).loc[
        list(order.itertuples(index=False, name=None))].reset_index()
    main = {r["model"]: r for r in cells}  # a kind's id is its main run's
    view = seed_summary_view(summary)
    return pd.DataFrame({
        "trained on": [" + ".join(main[k]["sources"]) for k in summary["kind"]],
        "tested on": summary["split"],
        "unseen source": ["yes" if main[k]["splits"][part]["held_out_source"] else "no"
                          for k, part in zip(summary["kind"], summary["split"], strict=True)],
        **view.drop(columns=["model", "split"]).to_dict(orient="list")})


CELLS_SPREAD_NOTE = ("mean ± sample standard deviation (n − 1) over the runs and [min, max] "
                     "of the runs: the same model trained again with other training seeds on "
                     "the same cells, so how far one training run's score moves, not the test "
                     "part's uncertainty (for that, the intervals of one run).")
"""The line under the cell models' spread table."""


def cells_seeds_markdown(metrics_dir: Path, models: list[str]) -> str:
    """The README's spread of the cell models over training seeds (:func:`cells_seed_view`)
    from the metrics files of ``models`` (the study's cell models and their repeats)."""
    from leuko.machine import machine_line

    try:
        results = load_results(Path(metrics_dir), models)
    except FileNotFoundError as error:
        return f"*Not run yet: {error}.*"
    machines = sorted({machine_line(r["machine"]) for r in results if "machine" in r})
    return (cells_seed_view(results).to_markdown(index=False) + "\n\n" + CELLS_SPREAD_NOTE
            + " Evaluated on: " + "; ".join(machines) + ".")


def times_markdown(times_dir: Path) -> str:
    """The run behind the numbers: per stage wall time, the total and the machine, from
    ``reports/times`` (``leuko.stagetimes``)."""
    from leuko.stagetimes import stage_times_summary, stage_times_table

    table = stage_times_table(times_dir)
    if table.empty:
        return f"*No stage times in {times_dir}.*"
    summary = stage_times_summary(table)
    rows = table.sort_values("started")
    lines = [f"Stages timed: {summary['stages']}, {summary['stage_seconds'] / 60:.1f} min of "
             f"stage time, first start to last end {summary['span_seconds'] / 60:.1f} min "
             f"({rows['started'].iloc[0]} to {rows['ended'].iloc[-1]}). Machine(s): "
             + "; ".join(summary["machines"]) + ".", "",
             "| stage | seconds | started |", "|---|---|---|"]
    lines += [f"| {r.stage} | {r.seconds:.0f} | {r.started} |" for r in rows.itertuples()]
    return "\n".join(lines)


#: The default study's parts, in the order the budget table lists them: (part, test on a stage
#: name). The first part whose test matches a stage takes it.
STUDY_PARTS = (
    ("repeats (other training seeds)", lambda stage: re.search(r"-seed\d+$", stage) is not None),
    ("thesis: fine-tuning with stain jitter", lambda stage: "finetune-stain" in stage),
    ("leukemia study", lambda stage: "leukemia" in stage),
    ("cell classifier for other labs, smear detection",
     lambda stage: stage.split("@")[0] in ("cells", "train-cells", "evaluate-cells", "detect")
     or stage.split("@")[0] == "ensemble-cells" or stage == "export@wbc"),
    ("thesis: the regimes, the pooled split, evaluation", lambda stage: True),
)


def study_part(stage: str) -> str:
    """Which part of the default study a stage belongs to (:data:`STUDY_PARTS`)."""
    return next(part for part, test in STUDY_PARTS if test(stage))


def cell_detail_markdown(cache_paths=None, by: str = "split") -> str:
    """The median fine detail (``cells.detail``) of the prepared cells of the study's cache
    (``build/cells``): how sharp each lab's cells reach the network. ``by="split"``: per source
    and split; ``by="label"``: per class (rows) and source (columns), training cells only."""
    from leuko import multisource
    from leuko.cells import detail

    if by not in ("split", "label"):
        raise ValueError(f"by must be 'split' or 'label', got {by!r}")
    paths = cache_paths or multisource.DEFAULT_PATHS
    if not multisource.cache_path(paths).is_file():
        return f"*No cell cache at {multisource.cache_path(paths)} (`dvc repro cells`).*"
    cache = multisource.load_cell_cache(paths)
    rows = cache.rows.assign(detail=[detail(cache.images[i]) for i in cache.rows["index"]])
    if by == "split":
        table = rows.groupby(["source", "split"], sort=True)["detail"].agg(["count", "median"])
        view = pd.DataFrame({"source": [s for s, _ in table.index],
                             "split": [p for _, p in table.index],
                             "cells": table["count"].to_numpy(),
                             "median detail": table["median"].round(1).to_numpy()})
    else:
        train = rows[rows["split"] == "train"]
        table = train.groupby(["label", "source"])["detail"].median().round(1).unstack("source")
        order = [c for c in multisource.CLASS_ORDER if c in table.index]
        view = table.loc[order].rename_axis(columns=None).reset_index().rename(
            columns={"label": "class"}).astype(object).fillna("")  # a class a source lacks
        view.columns = [view.columns[0]] + [f"median detail, {c}" for c in view.columns[1:]]
    return (view.to_markdown(index=False) + f"\n\nAt {cache.images.shape[1]} px, as the "
            "network sees them (framed and stain-normalised): the standard deviation of a "
            "Laplacian filter of each cell's grey level (`leuko.cells.detail`)"
            + ("." if by == "split" else "; training cells."))


def budget_markdown(times_dir: Path, budget_minutes: float = 30.0) -> str:
    """Where the default study's stage time goes, by part of the study, against the
    ``budget_minutes`` of a fresh clone's ``make study`` (which also installs and pulls)."""
    from leuko.stagetimes import stage_times_summary, stage_times_table

    table = stage_times_table(times_dir)
    if table.empty:
        return f"*No stage times in {times_dir}.*"
    table["part"] = table["stage"].map(study_part)
    parts = table.groupby("part", sort=False)["seconds"].agg(["count", "sum"])
    parts = parts.reindex([p for p, _ in STUDY_PARTS]).dropna()
    total = float(table["seconds"].sum())
    view = pd.DataFrame({"part of the default study": parts.index,
                         "stages": parts["count"].astype(int).to_numpy(),
                         "minutes": (parts["sum"] / 60).round(1).to_numpy(),
                         "share": [f"{100 * v / total:.0f} %" for v in parts["sum"]]})
    kept = total
    steps = []
    for part in [p for p, _ in STUDY_PARTS[:-1] if p in parts.index]:
        kept -= float(parts.loc[part, "sum"])
        steps.append(f"without the {part} as well: {kept / 60:.1f}" if steps
                     else f"without the {part}: {kept / 60:.1f}")
    machines = "; ".join(stage_times_summary(table)["machines"])
    return (view.to_markdown(index=False) + f"\n\nIn all {total / 60:.1f} min of stage time "
            f"against a budget of {budget_minutes:.0f} min for `make study` on a fresh clone "
            f"(install and `dvc pull` included). Minutes of stage time left, dropping one part "
            f"after another: " + "; ".join(steps) + ". Evaluate-wbc, in the last part, scores "
            f"the repeats and the stain-jitter model too. Machine: {machines}.")


def ablation_markdown(ablation_csv: Path) -> str:
    """The cell-preprocessing ablation (``benchmarks/cells_ablation.py``) as markdown: held-out
    source accuracy and macro F1 per variant and direction, with the machine it ran on."""
    if not Path(ablation_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/cells_ablation.py` writes {ablation_csv}.*"
    table = pd.read_csv(ablation_csv)
    view = pd.DataFrame({
        "preprocessing": table["variant"], "trained on": table["trained on"],
        "tested on (unseen source)": table["tested on"],
        "accuracy %": (100 * table["accuracy"]).round(1),
        "macro F1 %": (100 * table["macro F1"]).round(1)})
    first = table.iloc[0]
    return (view.to_markdown(index=False) + f"\n\n{int(first['epochs'])} epochs, "
            f"{int(first['per_class'])} training cells per class and source, seed 0; "
            f"machine: {first['machine']}.")


def training_overhead(train_dir: Path = Path("reports/train"),
                      times_dir: Path = Path("reports/times"),
                      live_dir: Path = Path("reports/live")) -> pd.DataFrame:
    """Per training stage of the last run: its wall seconds, the seconds inside training,
    the rest (starting the kernel, importing TensorFlow, loading data, building and saving
    the model) and how much longer its first epoch took than its median one (tracing)."""
    from leuko.stagetimes import record_path

    rows = []
    for path in sorted(Path(train_dir).glob("*.json")):  # a stage per model (not a group's)
        summary = json.loads(path.read_text())
        model = summary["model"]
        stages = [f"train@{model}", f"train-cells@{model.removeprefix('cells-')}",
                  f"train-leukemia@{summary.get('solution')}"]
        record = next((record_path(s, times_dir) for s in stages
                       if record_path(s, times_dir).is_file()), None)
        epochs = Path(live_dir) / model / "plots" / "metrics" / "train" / "epoch_time_s.tsv"
        if record is None or not epochs.is_file():
            continue
        stage = json.loads(record.read_text())
        times = pd.read_csv(epochs, sep="\t")["epoch_time_s"]
        rows.append({"stage": stage["stage"], "stage s": round(stage["seconds"]),
                     "training s": round(summary["train_seconds"]),
                     "outside training s": round(stage["seconds"] - summary["train_seconds"]),
                     "first epoch minus median epoch s": round(times.iloc[0] - times.median())
                     if len(times) > 1 else None})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class CellVariant:
    """One comparison of the cell models against a variant of them (a ``benchmarks/`` script
    writes ``csv``; its columns end in ``baseline`` / ``alternative``): the results block and
    the script that fills it, and the per-model columns to show beside the scores."""

    block: str
    csv: str
    baseline: str
    alternative: str
    script: str
    extra: tuple[str, ...] = ()
    over_seeds: bool = False  # the CSV of cells_choice_seeds_table (cells_choices.py --over-seeds)


#: Every cell-model comparison (``cells_choices.py`` reads its own by key: ``cells-<key>``).
CELL_VARIANTS = (
    CellVariant("adabn", "reports/ablation/adabn.csv", "as trained", "adapted",
                "benchmarks/adabn.py"),
    CellVariant("cells-bn", "reports/ablation/cells_bn.csv", "adapting", "inference mode",
                "benchmarks/cells_choices.py bn", ("validation accuracy", "train seconds")),
    CellVariant("cells-size", "reports/ablation/cells_size.csv", "64 px", "96 px",
                "benchmarks/cells_choices.py size", ("validation accuracy",)),  # timed under load
    CellVariant("cells-blur", "reports/ablation/cells_blur.csv", "no blur", "blur 1 px",
                "benchmarks/cells_choices.py blur", ("validation accuracy",)),
    CellVariant("cells-sharpness", "reports/ablation/cells_sharpness.csv", "as prepared",
                "detail capped at 12", "benchmarks/cells_choices.py sharpness",
                ("validation accuracy",)),
    CellVariant("cells-jitter", "reports/ablation/cells_jitter.csv", "stain jitter 1",
                "no stain jitter", "benchmarks/cells_choices.py jitter",
                ("validation accuracy",)),
    # cells-floor, cells-floor-seed1: one seed each, before the black-margin fill, the floor
    # at 10 (cells_choices.py now uses 14: a rerun is a new measurement; relabel it)
    CellVariant("cells-floor", "reports/ablation/cells_floor.csv", "no blur",
                "blur 1 px, floor 10", "benchmarks/cells_choices.py floor",
                ("validation accuracy",)),
    CellVariant("cells-floor-seed1", "reports/ablation/cells_floor-seed1.csv", "no blur",
                "blur 1 px, floor 10", "benchmarks/cells_choices.py floor --seed 1",
                ("validation accuracy",)),
    # measured before the black-margin fill (commit ed558ed), with the floor at 10
    CellVariant("cells-floor-seeds-before-fill", "reports/ablation/cells_floor-seeds-before-fill.csv",
                "no blur", "blur 1 px, floor 10",
                "benchmarks/cells_choices.py floor --over-seeds at commit ed558ed",
                over_seeds=True),
    CellVariant("cells-floor-seeds", "reports/ablation/cells_floor-seeds.csv", "no blur",
                "blur 1 px, floor 14", "benchmarks/cells_choices.py floor --over-seeds",
                over_seeds=True),
    CellVariant("cells-randomise", "reports/ablation/cells_randomise.csv", "as prepared",
                "detail drawn from 10..22", "benchmarks/cells_choices.py randomise",
                ("validation accuracy",)),
    CellVariant("cells-sharpen", "reports/ablation/cells_sharpen.csv", "as prepared",
                "sharpened to detail 18", "benchmarks/cells_choices.py sharpen",
                ("validation accuracy",)),
    CellVariant("cells-tta", "reports/ablation/cells_tta.csv", "one view", "8 views",
                "benchmarks/cells_tta.py"),
    CellVariant("cells-contrast-seeds", "reports/ablation/cells_contrast-seeds.csv",
                "no contrast jitter", "contrast x 0.6..1",
                "benchmarks/cells_choices.py contrast --over-seeds", over_seeds=True),
    CellVariant("cells-stain-seeds", "reports/ablation/cells_stain-seeds.csv",
                "stain jitter 1", "stain jitter 2",
                "benchmarks/cells_choices.py stain --over-seeds", over_seeds=True),
    CellVariant("cells-stain-1.5-seeds", "reports/ablation/cells_stain-1.5-seeds.csv",
                "stain jitter 1", "stain jitter 1.5",
                "benchmarks/cells_choices.py stain-1.5 --over-seeds", over_seeds=True),
    CellVariant("cells-margin", "reports/ablation/cells_margin-seeds.csv", "black corners in",
                "corners filled", "benchmarks/cells_study_change.py compare margin",
                over_seeds=True),
)


def cell_variant(block: str) -> CellVariant:
    """The entry of :data:`CELL_VARIANTS` for results block ``block``."""
    for variant in CELL_VARIANTS:
        if variant.block == block:
            return variant
    raise KeyError(f"no cell variant {block!r}; known: {[v.block for v in CELL_VARIANTS]}")


def cell_variant_markdown(variant_csv: Path, before: str, after: str, script: str,
                          extra: tuple[str, ...] = ()) -> str:
    """A variant of the cell models against another (``benchmarks/adabn.py``,
    ``benchmarks/cells_choices.py``): per model and test part, accuracy and macro F1 ``before`` ->
    ``after`` (the CSV's ``accuracy <before>`` ... columns), the paired accuracy difference with
    its interval over source cells, and the ``extra`` per-model columns ``<name> <before>`` /
    ``<name> <after>`` (e.g. ``validation accuracy``)."""
    if not Path(variant_csv).is_file():
        return f"*Not run yet: `.venv/bin/python {script}` writes {variant_csv}.*"
    table = pd.read_csv(variant_csv)

    def pair(row, name: str, scale: float = 100, digits: int = 1) -> str:
        return (f"{scale * row[f'{name} {before}']:.{digits}f} → "
                f"{scale * row[f'{name} {after}']:.{digits}f}")

    rows = []
    for _, r in table.iterrows():
        row = {"trained on": r["trained on"], "tested on": r["tested on"],
               "unseen source": "yes" if r["unseen source"] else "no",
               "cells / images": f"{r['cells']} / {r['images']}",
               f"accuracy % {before} → {after}": pair(r, "accuracy"),
               f"macro F1 % {before} → {after}": pair(r, "macro F1"),
               "accuracy difference, points [95 % CI]": (
                   f"{100 * r['accuracy difference']:+.1f} [{100 * r['difference low']:+.1f}, "
                   f"{100 * r['difference high']:+.1f}]")}
        for name in extra:
            percent = "accuracy" in name
            row[f"{name}{' %' if percent else ''}"] = pair(r, name, 100 if percent else 1,
                                                           1 if percent else 0)
        rows.append(row)
    return (pd.DataFrame(rows).to_markdown(index=False) + f"\n\n{after.capitalize()} minus "
            f"{before}, a paired bootstrap over source cells. Machine: "
            f"{table['machine'].iloc[0]}.")


def _cell_part_predictions(saved: dict, part: str, reference) -> tuple[dict, pd.Index]:
    """Each of ``saved``'s prediction frames (``reports/predictions`` of cell models) on one
    test part ``<source>/<split>``, indexed by path, and the paths of ``reference``'s;
    ValueError unless every frame predicted the same images."""
    source, split = part.split("/")
    frames = {k: f[(f["source"] == source) & (f["split"] == split)].set_index("path")
              for k, f in saved.items()}
    paths = frames[reference].index
    for k, frame in frames.items():
        if len(frame) != len(paths) or not frame.index.isin(paths).all():
            raise ValueError(f"{k} and {reference} predicted different images of {part}")
    return frames, paths


def cells_ensemble_table(results: list[dict], predictions_dir: Path, manifests_dir: Path,
                         n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each cell ensemble (``leuko.ensemble``: a result with ``members``) against its members
    on every held-out part: one run's accuracy and macro F1 (mean and sd over the members),
    the ensemble's with its interval, and ensemble minus one run from a paired bootstrap over
    source cells and the members' seeds (``metrics.paired_bootstrap_difference_seeds``, on
    the predictions in ``predictions_dir``, source cells from ``manifests_dir/cells.csv``);
    the ensemble's coverage, accuracy kept and ECE."""
    from leuko.metrics import paired_bootstrap_difference_seeds
    from leuko.multisource import TEST_PARTS, TRAININGS

    cells = cell_results(results)
    by_id = {r["model"]: r for r in cells}
    ensembles = sorted((r for r in cells if "members" in r),
                       key=lambda r: list(TRAININGS).index(r["trained_on"]))
    parts = [f"{source}/{split}" for source, split in TEST_PARTS]
    if not ensembles:
        return pd.DataFrame()
    groups = _manifest_groups(manifests_dir, "cells")
    rows = []
    for ensemble in ensembles:
        missing = [m for m in ensemble["members"] if m not in by_id]
        if missing:
            raise FileNotFoundError(f"{ensemble['model']} averages {missing}: their metrics "
                                    "are not among the results (dvc repro)")
        members = [by_id[m] for m in ensemble["members"]]
        ids = [ensemble["model"], *ensemble["members"]]
        saved = {m: pd.read_csv(Path(predictions_dir) / f"{m}.csv", keep_default_na=False)
                 for m in ids}
        for part in sorted(ensemble["splits"], key=parts.index):
            m = ensemble["splits"][part]
            frames, paths = _cell_part_predictions(saved, part, ensemble["model"])
            actual = frames[ensemble["model"]]["actual"].to_numpy()
            difference = paired_bootstrap_difference_seeds(
                actual, [frames[ensemble["model"]]["predicted"].to_numpy()],
                [frames[k].loc[paths, "predicted"].to_numpy() for k in ensemble["members"]],
                groups.reindex(paths).to_numpy(), n_boot=n_boot, seed=seed)
            row = {"trained on": " + ".join(ensemble["sources"]), "tested on": part,
                   "unseen source": m["held_out_source"], "cells": m["n_cells"],
                   "images": m["n"], "runs": len(members)}
            for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro F1")):
                values = pd.Series([r["splits"][part][key] for r in members], dtype=float)
                row |= {f"{label} one run mean": values.mean(),
                        f"{label} one run sd": values.std(ddof=1),
                        f"{label} ensemble": m[key],
                        f"{label} ensemble low": m["intervals"][key]["low"],
                        f"{label} ensemble high": m["intervals"][key]["high"]}
            row |= {"accuracy difference": difference["difference"],
                    "difference low": difference["low"], "difference high": difference["high"],
                    "share ensemble better": difference["share_a_better"],
                    "coverage ensemble": m["abstain"]["coverage"],
                    "accuracy kept ensemble": m["abstain"]["accuracy_kept"],
                    "ECE ensemble": m["ece"], "models": ", ".join(ids)}
            rows.append(row)
    return pd.DataFrame(rows)


def cells_ensemble_view(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`cells_ensemble_table` for reading, in %."""

    def pct(value) -> str:
        return f"{100 * value:.1f}"

    return pd.DataFrame([{
        "trained on": r["trained on"], "tested on": r["tested on"],
        "unseen source": "yes" if r["unseen source"] else "no",
        "cells / images": f"{r['cells']} / {r['images']}",
        "accuracy % one run: mean ± sd": (f"{pct(r['accuracy one run mean'])} ± "
                                          f"{pct(r['accuracy one run sd'])}"),
        "accuracy % ensemble [95 % CI]": (f"{pct(r['accuracy ensemble'])} "
                                          f"[{pct(r['accuracy ensemble low'])}, "
                                          f"{pct(r['accuracy ensemble high'])}]"),
        "ensemble minus one run, points [95 % CI]": (
            f"{100 * r['accuracy difference']:+.1f} [{100 * r['difference low']:+.1f}, "
            f"{100 * r['difference high']:+.1f}]"),
        "macro F1 % one run → ensemble": (f"{pct(r['macro F1 one run mean'])} ± "
                                          f"{pct(r['macro F1 one run sd'])} → "
                                          f"{pct(r['macro F1 ensemble'])}"),
        "coverage %": pct(r["coverage ensemble"]),
        "accuracy kept %": pct(r["accuracy kept ensemble"]),
        "ECE": f"{r['ECE ensemble']:.3f}"} for _, r in table.iterrows()])


def cells_choice_seeds_table(model_ids: list[str], baseline: Paths, variant: Paths,
                             n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A choice of the cell models measured over training seeds (``benchmarks/cells_choices.py
    --over-seeds``): the same ``model_ids`` (each ensemble and the runs it averages) trained
    and scored twice, their metrics and predictions under ``baseline`` (the study's) and
    ``variant``; source cells from the baseline's cells manifest. Per training and held-out
    part: one run's accuracy and macro F1, mean and sd over the seeds, of each side; variant
    minus baseline from a paired bootstrap over source cells and seeds; the two ensembles and
    their paired difference. FileNotFoundError names a model a side lacks."""
    from leuko.metrics import paired_bootstrap_difference_seeds
    from leuko.multisource import TEST_PARTS, TRAININGS
    from leuko.study import read_json

    folders = {"baseline": baseline, "variant": variant}
    sides = {side: {m: read_json(paths.metrics(m)) for m in model_ids}
             for side, paths in folders.items()}
    ensembles = sorted((r for r in sides["variant"].values() if "members" in r),
                       key=lambda r: list(TRAININGS).index(r["trained_on"]))
    parts = [f"{source}/{split}" for source, split in TEST_PARTS]
    groups = _manifest_groups(baseline.manifest("cells").parent, "cells")
    rows = []
    for ensemble in ensembles:
        runs = list(ensemble["members"])
        ids = [*runs, ensemble["model"]]
        missing = [m for m in ids if m not in model_ids]
        if missing:
            raise ValueError(f"{ensemble['model']} averages {missing}, not among model_ids")
        saved = {(side, m): pd.read_csv(folders[side].predictions(m), keep_default_na=False)
                 for side in sides for m in ids}
        for part in sorted(ensemble["splits"], key=parts.index):
            frames, paths = _cell_part_predictions(saved, part, ("baseline", ensemble["model"]))
            actual = frames[("baseline", ensemble["model"])]["actual"].to_numpy()
            cells = groups.reindex(paths).to_numpy()
            predicted = {k: frame.loc[paths, "predicted"].to_numpy()
                         for k, frame in frames.items()}
            m = ensemble["splits"][part]
            row = {"trained on": " + ".join(ensemble["sources"]), "tested on": part,
                   "unseen source": m["held_out_source"], "cells": m["n_cells"],
                   "images": m["n"], "runs": len(runs),
                   "seeds": " ".join(str(training_seed(sides["variant"][r])) for r in runs)}
            for side, models in sides.items():
                for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro F1")):
                    values = pd.Series([models[r]["splits"][part][key] for r in runs],
                                       dtype=float)
                    row |= {f"{label} {side} mean": values.mean(),
                            f"{label} {side} sd": values.std(ddof=1),
                            f"{label} {side} ensemble": models[ensemble["model"]]["splits"][
                                part][key]}
                row[f"validation accuracy {side} mean"] = pd.Series(
                    [models[r]["training"]["saved_val_accuracy"] for r in runs]).mean()
            for kind, models in (("", runs), ("ensemble ", [ensemble["model"]])):
                difference = paired_bootstrap_difference_seeds(
                    actual, [predicted[("variant", m)] for m in models],
                    [predicted[("baseline", m)] for m in models], cells, n_boot=n_boot,
                    seed=seed)
                row |= {f"{kind}accuracy difference": difference["difference"],
                        f"{kind}difference low": difference["low"],
                        f"{kind}difference high": difference["high"]}
            rows.append(row)
    return pd.DataFrame(rows)


def cell_variant_seeds_markdown(variant_csv: Path, before: str, after: str,
                                script: str) -> str:
    """:func:`cells_choice_seeds_table` (its CSV, written by ``script``) for the README:
    ``before`` names the baseline, ``after`` the variant."""
    if not Path(variant_csv).is_file():
        return f"*Not run yet: `.venv/bin/python {script}` writes {variant_csv}.*"
    table = pd.read_csv(variant_csv, dtype={"seeds": str})

    def pct(value) -> str:
        return f"{100 * value:.1f}"

    def spread(r, label: str, side: str) -> str:
        return f"{pct(r[f'{label} {side} mean'])} ± {pct(r[f'{label} {side} sd'])}"

    def difference(r, kind: str = "") -> str:
        return (f"{100 * r[f'{kind}accuracy difference']:+.1f} "
                f"[{100 * r[f'{kind}difference low']:+.1f}, "
                f"{100 * r[f'{kind}difference high']:+.1f}]")

    view = pd.DataFrame([{
        "trained on": r["trained on"], "tested on": r["tested on"],
        "unseen source": "yes" if r["unseen source"] else "no",
        f"accuracy % one run: {before} → {after}": (f"{spread(r, 'accuracy', 'baseline')} → "
                                                    f"{spread(r, 'accuracy', 'variant')}"),
        "difference, points [95 % CI]": difference(r),
        f"macro F1 % one run: {before} → {after}": (f"{spread(r, 'macro F1', 'baseline')} → "
                                                    f"{spread(r, 'macro F1', 'variant')}"),
        f"ensemble accuracy % {before} → {after}": (f"{pct(r['accuracy baseline ensemble'])} → "
                                                    f"{pct(r['accuracy variant ensemble'])}"),
        "ensemble difference, points [95 % CI]": difference(r, "ensemble "),
        f"ensemble macro F1 % {before} → {after}": (f"{pct(r['macro F1 baseline ensemble'])} → "
                                                    f"{pct(r['macro F1 variant ensemble'])}"),
    } for _, r in table.iterrows()])
    first = table.iloc[0]
    baseline = (f" ({before}: the study at commit {first['snapshot commit']}, before the change)"
                if "snapshot commit" in table else "")
    return (view.to_markdown(index=False, disable_numparse=True)
            + f"\n\nOne run: mean ± sample sd (n − 1) over {first['runs']} runs (training seeds "
            f"{first['seeds']}), each side trained at the same seeds on the same cells{baseline}; "
            f"{after} minus {before}, a paired bootstrap over source cells and seeds (the "
            f"same cells for both sides, each side's seeds drawn on their own: two sides with "
            f"the same runs still get an interval as wide as their seeds' spread). Ensemble: "
            f"the runs' probabilities averaged (`leuko.ensemble`). Machine: {first['machine']}.")


CELLS_ENSEMBLE_NOTE = ("One run: mean ± sample sd (n − 1) over the runs an ensemble averages "
                       "(the training's main run and repeats); the difference, ensemble minus "
                       "one run, resamples source cells and the runs' seeds (the ensemble is "
                       "itself one draw of its runs' seeds: its own spread is not measured).")
"""The line under the ensembles' table."""


def cells_ensemble_markdown(metrics_dir: Path, predictions_dir: Path, manifests_dir: Path,
                            models: list[str]) -> str:
    """The README's ensembles against one run (:func:`cells_ensemble_table`) from the study's
    files, for ``models`` (the study's cell models, ``listed_models``)."""
    from leuko.machine import machine_line

    try:
        results = load_results(Path(metrics_dir), models)
        table = cells_ensemble_table(results, predictions_dir, manifests_dir)
    except FileNotFoundError as error:
        return f"*Not run yet: {error}.*"
    if table.empty:
        return "*No ensemble in this preset (`cells.ensembles`).*"
    machines = sorted({machine_line(r["machine"]) for r in cell_results(results)
                       if "machine" in r})
    return (cells_ensemble_view(table).to_markdown(index=False, disable_numparse=True)
            + "\n\n" + CELLS_ENSEMBLE_NOTE + " Evaluated on: " + "; ".join(machines) + ".")


def export_choice_markdown(export_json: Path) -> str:
    """Which model the study exported for a task (``build/export/<task>.json``): the rule and
    every candidate's validation score, best first."""
    if not Path(export_json).is_file():
        return f"*Not run yet: {export_json} is missing (`dvc repro export@wbc`).*"
    meta = json.loads(Path(export_json).read_text())
    choice = meta["choice"]
    scores = sorted(choice["scores"].items(), key=lambda item: -item[1])
    return (f"The study's export chose **{meta['model_id']}** by `{choice['rule_used']}`: "
            + ", ".join(f"{model} {100 * score:.1f} %" for model, score in scores)
            + f" (validation scores of every candidate; data version {meta['data_version']['md5'][:8]}).")


def overhead_markdown(**dirs) -> str:
    """:func:`training_overhead` as markdown, with its sums."""
    table = training_overhead(**dirs)
    if table.empty:
        return "*No training stage timed yet.*"
    return (table.to_markdown(index=False) + f"\n\nIn all: {table['outside training s'].sum()} s "
            f"outside training and {table['first epoch minus median epoch s'].sum():.0f} s of "
            f"first-epoch extra over {len(table)} training stages.")


def head_input_markdown(head_input_csv: Path) -> str:
    """The head's input, ``avg`` against ``flatten`` (``benchmarks/head_input.py``)."""
    if not Path(head_input_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/head_input.py` writes {head_input_csv}.*"
    table = pd.read_csv(head_input_csv)
    first = table.iloc[0]
    view = table.drop(columns=["image_size", "epochs", "seed", "machine"])
    return (view.to_markdown(index=False) + f"\n\nMobileNetV2 at {first['image_size']} px, "
            f"{first['epochs']} epochs, seed {first['seed']}; machine: {first['machine']}.")


@dataclass(frozen=True)
class FinetuneChoice:
    """One choice of ``benchmarks/finetune_choices.py``: the regime key it varies, its two
    values (the baseline, the study's value when the comparison was first run, runs first),
    what the README calls each, and the table's first column."""
    name: str  # the script's argument: reports/ablation/finetune_<name>.csv
    key: str  # a field of study.RegimeTraining
    baseline: object
    alternative: object
    baseline_label: str
    alternative_label: str
    heading: str

    def runs_csv(self, folder: Path = Path("reports/ablation")) -> Path:
        return Path(folder) / f"finetune_{self.name}.csv"

    def paired_csv(self, folder: Path = Path("reports/ablation")) -> Path:
        return Path(folder) / f"finetune_{self.name}_paired.csv"


FINETUNE_CHOICES = (
    FinetuneChoice("bn", "bn_inference", False, True, "adapting (`false`, the default)",
                   "inference mode (`bn_inference: true`)", "BatchNorm while fine-tuning"),
    FinetuneChoice("warmup", "warmup_learning_rate", 0.001, 0.0001,
                   "1e-3 (`warmup_learning_rate: 0.001`)",
                   "1e-4 (`0.0001`, the fine-tuning rate; the default)", "head warm-up rate"))


def finetune_choice_markdown(choice: FinetuneChoice, folder: Path = Path("reports/ablation")
                             ) -> str:
    """One fine-tuning choice compared over training seeds (``benchmarks/finetune_choices.py``):
    per setting and split, mean ± sd over the seeds, and the paired difference (alternative -
    baseline) with its 95 % interval over source cells and seeds."""
    runs_csv, paired_csv = choice.runs_csv(folder), choice.paired_csv(folder)
    if not (runs_csv.is_file() and paired_csv.is_file()):
        return (f"*Not run yet: `.venv/bin/python benchmarks/finetune_choices.py {choice.name}` "
                f"writes {runs_csv} and {paired_csv}.*")
    runs, paired = pd.read_csv(runs_csv), pd.read_csv(paired_csv)
    lines = [f"| {choice.heading} | runs | TEST accuracy % | TEST_SIMPLE accuracy % "
             "| validation accuracy % (saved weights) | training s per run |",
             "|---|---|---|---|---|---|"]

    def spread(values: pd.Series) -> str:
        return (f"{100 * values.mean():.1f} ± {100 * values.std(ddof=1):.1f}" if len(values) > 1
                else f"{100 * values.mean():.1f}")

    baseline = runs[choice.key].iloc[0]  # the script runs the baseline first
    for is_baseline in (True, False):
        rows = runs[(runs[choice.key] == baseline) == is_baseline]
        by_split = {split: r for split, r in rows.groupby("split")}
        name = choice.baseline_label if is_baseline else choice.alternative_label
        lines.append(f"| {name} | {rows['seed'].nunique()} | {spread(by_split['test']['accuracy'])} "
                     f"| {spread(by_split['test_simple']['accuracy'])} | "
                     f"{spread(by_split['test']['saved_val_accuracy'])} | "
                     f"{by_split['test']['train_seconds'].mean():.0f} |")
    diffs = "; ".join(
        f"{r.split.upper()} {100 * r.difference:+.1f} points [{100 * r.low:+.1f}, "
        f"{100 * r.high:+.1f}] ({r.cells} cells)" for r in paired.itertuples())
    first = runs.iloc[0]
    return ("\n".join(lines) + f"\n\n{choice.alternative_label.split(' (')[0].capitalize()} "
            f"minus {choice.baseline_label.split(' (')[0]}, paired over source cells "
            f"and seeds (95 %): {diffs}. Seeds {', '.join(map(str, sorted(runs['seed'].unique())))}"
            f"; {first['epochs']} end-to-end epochs; machine: {first['machine']}.")


def network_costs_markdown(costs_csv: Path) -> str:
    """What the full preset costs per network (``benchmarks/network_costs.py``): the
    measured per-image times at the native size, the CPU hours they add up to, and the
    expected hours on one GPU, calibrated on the thesis's own times."""
    if not Path(costs_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/network_costs.py` writes {costs_csv}.*"
    table = pd.read_csv(costs_csv)
    view = pd.DataFrame({
        "network": table["network"], "px": table["image_size"],
        "forward ms/img": table["forward_ms_per_image"].round(0).astype(int),
        "train step ms/img": table["train_ms_per_image"].round(0).astype(int),
        "head step ms/img": table["head_ms_per_image"].round(1),
        "first step s (tracing)": table["train_trace_s"].round(0).astype(int),
        "CPU h transfer": table["cpu_h transfer (features + imagenet)"].round(1),
        "CPU h scratch": table["cpu_h scratch"].round(0).astype(int),
        "CPU h in full preset": table["cpu_h network in full preset"].round(0).astype(int)})
    gpu = "gpu_h network in full preset" in table
    if gpu:
        view["GPU h transfer / scratch (expected)"] = [
            f"{t:.2f} / {s:.1f}" for t, s in zip(table["gpu_h transfer (features + imagenet)"],
                                                  table["gpu_h scratch"], strict=True)]
        view["GPU h in full preset (expected)"] = table["gpu_h network in full preset"].round(0)
    total = table["cpu_h network in full preset"].sum()
    totals = (f"\n\nThe full preset's networks together: {total:,.0f} CPU hours on this "
              f"machine, {100 * table['cpu_h head-only part'].sum() / total:.0f} % of it "
              f"head-only work (features, and heads trained on them: the transfer regimes and "
              f"the fine-tuning warm-ups)")
    if gpu:
        first = table.iloc[0]
        totals += (
            f", about {table['gpu_h network in full preset'].sum():,.0f} hours on one GPU. "
            f"The GPU columns divide the CPU hours by one CPU/GPU ratio per kind of work, "
            f"calibrated so that the thesis networks' mean matches the thesis's own time per "
            f"network (transfer {_duration(first['thesis gpu_h transfer'])}, scratch "
            f"{_duration(first['thesis gpu_h scratch'])} on its GPU): "
            f"{first['cpu/gpu ratio transfer']:.0f}x for head-only and forward work, "
            f"{first['cpu/gpu ratio scratch']:.0f}x for training the whole network")
    return (view.to_markdown(index=False) + totals + f". Machine: {table['machine'].iloc[0]}; "
            f"batch {table['batch'].iloc[0]}, random weights (the same cost as ImageNet's).")


def smoke_run_markdown(stages_csv: Path, summary_json: Path,
                       smoke_wbc: Path = Path("params/presets/smoke/wbc.yaml")) -> str:
    """The smoke preset run through DVC on a fresh clone (``benchmarks/smoke_run.py``): how
    far it got and in what time, and where the time went by kind of stage and by network."""
    if not (Path(stages_csv).is_file() and Path(summary_json).is_file()):
        return (f"*Not run yet: `.venv/bin/python benchmarks/smoke_run.py` writes {stages_csv} "
                f"and {summary_json}.*")
    summary = json.loads(Path(summary_json).read_text())
    stages = pd.read_csv(stages_csv)
    targets = ", ".join(
        f"`make {t['target']}` {t['seconds'] / 60:.1f} min"
        + (" (stopped at the time limit)" if t["timed_out"]
           else "" if t["exit_code"] == 0 else f" (failed, exit {t['exit_code']})")
        for t in summary["targets"])
    outcome = "finished" if summary["finished"] else "did not finish"
    timed, planned = summary["stages_timed"], summary["stages_planned"]
    ran = (f"all {planned} stages ran ({timed} timed: compare and report are not)"
           if summary["finished"] else f"{timed} of {planned} stages finished")
    lines = [f"`make preset-smoke && make study` on a fresh clone of {summary['commit']} "
             f"{outcome} in {summary['wall_seconds'] / 60:.1f} min ({targets}); {ran}"
             + ("; the report was written and titled as a plumbing run"
                if summary["report_says_plumbing"] else "; no plumbing-run report") + ". "
             f"Machine: {summary['machine']}.", ""]
    if stages.empty:
        return "\n".join(lines)
    study = next((t for t in summary["targets"] if t["target"] == "study"), None)
    if study is not None and summary["finished"]:
        lines[0] += (f" The timed stages' own seconds add up to {stages['seconds'].sum() / 60:.1f}"
                     f" of `make study`'s {study['seconds'] / 60:.1f} min; the rest is DVC "
                     "between stages, compare and report.")
    stages["kind"] = stages["stage"].str.split("@").str[0]
    by_kind = stages.groupby("kind")["seconds"].agg(["count", "sum", "median", "max"])
    lines += ["| kind of stage | stages | minutes | median s | slowest s |", "|---|---|---|---|---|"]
    lines += [f"| {kind} | {int(r['count'])} | {r['sum'] / 60:.1f} | {r['median']:.0f} | "
              f"{r['max']:.0f} |" for kind, r in by_kind.sort_values("sum", ascending=False)
              .iterrows()]
    networks = yaml.safe_load(Path(smoke_wbc).read_text())["wbc"]["networks"]
    lines += ["", "| network | stages | minutes | fastest stage s | slowest stage s |",
              "|---|---|---|---|---|"]
    for network in networks:
        mine = stages[stages["stage"].str.contains(f"[-@]{network}(?:-|$)", regex=True)]
        if len(mine):
            lines.append(f"| {network} | {len(mine)} | {mine['seconds'].sum() / 60:.1f} | "
                         f"{mine['seconds'].min():.0f} | {mine['seconds'].max():.0f} |")
    return "\n".join(lines)


def smoke_eager_markdown(eager_csv: Path) -> str:
    """Graph tracing against eager execution on a smoke-sized training run
    (``benchmarks/smoke_eager.py``): per network, the seconds to build, fit one epoch and
    predict in each mode."""
    if not Path(eager_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/smoke_eager.py` writes {eager_csv}.*"
    table = pd.read_csv(eager_csv)
    table["total_s"] = table["build_s"] + table["fit_s"] + table["predict_s"]
    wide = table.pivot(index="network", columns="mode", values=["fit_s", "predict_s", "total_s"])
    view = pd.DataFrame({
        "network": wide.index,
        "px": table.groupby("network")["image_size"].first().reindex(wide.index).to_numpy(),
        "fit s graph / eager": [f"{g:.1f} / {e:.1f}" for g, e in
                                zip(wide["fit_s"]["graph"], wide["fit_s"]["eager"], strict=True)],
        "predict s graph / eager": [f"{g:.1f} / {e:.1f}" for g, e in zip(
            wide["predict_s"]["graph"], wide["predict_s"]["eager"], strict=True)],
        "build + fit + predict, graph / eager": [
            f"{g / e:.1f}x" for g, e in zip(wide["total_s"]["graph"], wide["total_s"]["eager"],
                                            strict=True)]})
    order = list(dict.fromkeys(table["network"]))
    view = view.set_index("network").loc[order].reset_index()
    return (view.to_markdown(index=False) + "\n\nOne epoch of 8 images in batches of 4, then "
            "predictions on the same 8; random weights, the flattened bottleneck; machine: "
            f"{table['machine'].iloc[0]}.")


def train_step_markdown(step_csv: Path) -> str:
    """Training throughput by batch size and compiler (``benchmarks/train_step.py``)."""
    if not Path(step_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/train_step.py` writes {step_csv}.*"
    table = pd.read_csv(step_csv)
    base = table[(table["batch"] == 16) & (table["compiler"] == "TensorFlow graph")]
    reference = float(base["images_per_s"].iloc[0])
    view = pd.DataFrame({
        "batch": table["batch"], "compiler": table["compiler"],
        "images/s": table["images_per_s"],
        "vs batch 16, graph": [f"{v / reference:.2f}x" for v in table["images_per_s"]]})
    first = table.iloc[0]
    return (view.to_markdown(index=False) + f"\n\n{first['network']} at {first['image_size']} "
            f"px, random weights, trained end to end on one in-memory batch; machine: "
            f"{first['machine']}.")


def _duration(hours: float) -> str:
    """``"2 h 14 min"`` or ``"9 min 59 s"``."""
    seconds = round(hours * 3600)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s"


def cuts_markdown(cuts_csv: Path, metrics_dir: Path) -> str:
    """What cheaper settings of the 4-class study cost (``benchmarks/study_cuts.py``): each
    cut's TEST / TEST_SIMPLE accuracy beside the default run's own model (its metrics file)."""
    if not Path(cuts_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/study_cuts.py` writes {cuts_csv}.*"
    table = pd.read_csv(cuts_csv)
    rows = []
    for cut in table.to_dict("records"):
        model = f"blood-cell-images-mobilenet_v2-{cut['regime']}"
        default = Path(metrics_dir) / f"{model}.json"
        splits = json.loads(default.read_text())["splits"] if default.is_file() else {}
        rows.append({
            "cut": cut["cut"], "regime": cut["regime"],
            "size px / per class / epochs": f"{cut['image_size']} / {cut['train_per_class']} / "
                                            f"{cut['epochs']}",
            "TEST % (default run)": _pct_pair(cut["test accuracy"], splits.get("test")),
            "TEST_SIMPLE % (default run)": _pct_pair(cut["test_simple accuracy"],
                                                     splits.get("test_simple"))})
    return (pd.DataFrame(rows).to_markdown(index=False)
            + f"\n\nOne seed each; machine: {'; '.join(sorted(set(table['machine'])))}.")


def _pct_pair(value: float, default: dict | None) -> str:
    """``"cut (default)"`` in percent; the default as ``?`` when its metrics are missing."""
    base = f"{100 * default['accuracy']:.1f}" if default else "?"
    return f"{100 * value:.1f} ({base})"


def readme_results_table(metrics_dir: Path, models: list[str] | None = None) -> pd.DataFrame:
    """The thesis and leukemia models' results (the cell classifier has its own block);
    ``models``: as ``load_results``."""
    return results_table([r for r in load_results(Path(metrics_dir), models)
                          if not r["model"].startswith("cells-")])


def main() -> int:
    """``python -m leuko.report``: refresh the README's results table, the cell classifier's
    leave-one-source-out table, the stage times and every other block of
    :data:`RESULT_DOCUMENTS` from the run's files."""
    models = listed_models()
    cell_models = [m for m in models if m.startswith("cells-")]
    changed = update_documents(RESULT_DOCUMENTS, readme_results_table(Path("reports/metrics"),
                                                                      models), {
        "cells": cells_markdown(Path("reports/cells/cross_source.csv")),
        "cells-data": cells_data_markdown(Path("build/manifests/cells.csv")),
        "cells-ensemble": cells_ensemble_markdown(
            Path("reports/metrics"), Path("reports/predictions"), Path("build/manifests"),
            cell_models),
        "export-wbc": export_choice_markdown(Path("build/export/wbc.json")),
        "cells-seeds": cells_seeds_markdown(Path("reports/metrics"), cell_models),
        "times": times_markdown(Path("reports/times")),
        "budget": budget_markdown(Path("reports/times")),
        "cell-detail": cell_detail_markdown(),
        "cell-detail-classes": cell_detail_markdown(by="label"),
        "train-step": train_step_markdown(Path("reports/ablation/train_step.csv")),
        "ablation": ablation_markdown(Path("reports/ablation/cells.csv")),
        "overhead": overhead_markdown(),
        "head-input": head_input_markdown(Path("reports/ablation/head_input.csv")),
        **{f"finetune-{choice.name}": finetune_choice_markdown(choice)
           for choice in FINETUNE_CHOICES},
        "cuts": cuts_markdown(Path("reports/ablation/study_cuts.csv"), Path("reports/metrics")),
        "network-costs": network_costs_markdown(Path("reports/ablation/network_costs.csv")),
        "smoke-run": smoke_run_markdown(Path("reports/ablation/smoke_run.csv"),
                                        Path("reports/ablation/smoke_run.json")),
        "smoke-eager": smoke_eager_markdown(Path("reports/ablation/smoke_eager.csv")),
        **{v.block: cell_variant_seeds_markdown(Path(v.csv), v.baseline, v.alternative,
                                                v.script) if v.over_seeds else
           cell_variant_markdown(Path(v.csv), v.baseline, v.alternative, v.script,
                                 extra=v.extra) for v in CELL_VARIANTS}})
    print(", ".join(map(str, changed)) + " updated" if changed
          else "results already current in " + ", ".join(map(str, RESULT_DOCUMENTS)))
    return 0


def stage_links_markdown(notebooks_dir: Path = Path("reports/notebooks")) -> str:
    """Links to the rendered HTML of every executed stage notebook (``reports/html/``)."""
    from leuko.render import stage_html_name

    names = sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if p.stem != "compare")
    if not names:
        return "No executed stage notebooks found."
    return "\n".join(f"- [{p.stem}](html/{stage_html_name(p)})" for p in names)


def thesis_table(table: pd.DataFrame) -> pd.DataFrame:
    """The 4-class models only (datasets of blood-cell-images)."""
    return table[table["dataset"].str.startswith("blood-cell-images")]


def regime_comparison(table: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Accuracy per network (rows) and regime (columns) on one split: the thesis's
    transfer-against-scratch table."""
    rows = table[table["split"] == split]
    return rows.pivot_table(index=["dataset", "network"], columns="regime", values="accuracy")


def split_inflation(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy on the official split against the leaky pooled split, per network and regime:
    how much a split that puts copies of one cell on both sides inflates the figure."""
    rows = table[(table["split"] == "test")
                 & table["dataset"].isin(["blood-cell-images", "blood-cell-images-pooled"])]
    if rows["dataset"].nunique() < 2:
        return pd.DataFrame()
    wide = rows.pivot_table(index=["network", "regime"], columns="dataset", values="accuracy")
    wide = wide.dropna()
    wide["inflation (points)"] = 100 * (wide["blood-cell-images-pooled"]
                                        - wide["blood-cell-images"])
    return wide


@dataclass(frozen=True)
class Comparison:
    """A comparison of two kinds of model fixed before any test score is seen.

    ``a`` / ``b`` select models by their metrics' fields (``regime``, ``network``, ...);
    models that agree on every field of ``same`` are paired; ``datasets`` (if given) limits
    the comparison to those datasets.  Every run (seed) of a selected kind enters the
    comparison: nothing is picked by its score."""

    name: str
    a: dict
    b: dict
    same: tuple[str, ...] = ("dataset", "network")
    datasets: tuple[str, ...] | None = None


# The study's questions, fixed in advance (issue 15): never chosen by test score.
COMPARISONS: tuple[Comparison, ...] = (
    Comparison("transfer vs scratch", {"regime": "imagenet"}, {"regime": "scratch"},
               datasets=("blood-cell-images",)),
    Comparison("fine-tune vs fine-tune + stain jitter", {"regime": "imagenet-finetune"},
               {"regime": "imagenet-finetune-stain"}, datasets=("blood-cell-images",)),
    Comparison("100 epochs vs long training", {"regime": "imagenet"},
               {"regime": "imagenet-long"}, datasets=("blood-cell-images",)),
    Comparison("Solution A vs Solution B", {"network": "leukemia_cnn", "regime": "scratch"},
               {"network": "efficientnet_b2", "regime": "scratch"}, same=("dataset",)),
)


def _runs(table: pd.DataFrame, comparison: Comparison) -> list[tuple[dict, list[str], list[str]]]:
    """``(shared fields, runs of A, runs of B)`` for every pairing of ``comparison``."""
    models = table.drop_duplicates("model")
    if comparison.datasets is not None:
        models = models[models["dataset"].isin(comparison.datasets)]

    def select(fields: dict) -> pd.DataFrame:
        mask = pd.Series(True, index=models.index)
        for key, value in fields.items():
            mask &= models[key] == value
        return models[mask]

    side_a, side_b = select(comparison.a), select(comparison.b)
    keys = list(comparison.same)
    out = []
    for shared, rows_a in side_a.groupby(keys, sort=True):
        shared = dict(zip(keys, shared if isinstance(shared, tuple) else (shared,), strict=True))
        rows_b = side_b
        for key, value in shared.items():
            rows_b = rows_b[rows_b[key] == value]
        if len(rows_b):
            out.append((shared, sorted(rows_a["model"]), sorted(rows_b["model"])))
    return out


def _predictions(predictions_dir: Path, model: str, split: str) -> pd.DataFrame:
    frame = pd.read_csv(Path(predictions_dir) / f"{model}.csv", keep_default_na=False)
    frame = frame[frame["split"] == split]
    if frame["path"].duplicated().any():
        raise ValueError(f"{model}: duplicated paths in its {split} predictions")
    return frame.set_index("path")[["actual", "predicted"]]


def _manifest_groups(manifests_dir: Path, dataset: str) -> pd.Series:
    path = Path(manifests_dir) / f"{dataset}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest {path}: the source cells (group) of {dataset}'s "
                                f"images come from it (run the prepare stage)")
    from leuko.evaluation import source_cells

    manifest = pd.read_csv(path, keep_default_na=False, dtype={"group": str})
    return pd.Series(source_cells(manifest), index=manifest["path"], name="group")


def paired_frame(predictions_dir: Path, runs_a: list[str], runs_b: list[str], split: str,
                 groups: pd.Series) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Rows of ``split`` predicted by every run of A and of B, with ``actual`` and ``group``.

    Returns the frame (index = path; columns ``actual``, ``group`` and one per run) and the
    run columns of A and B; empty when a run has no prediction on ``split``."""
    frames = {run: _predictions(predictions_dir, run, split) for run in [*runs_a, *runs_b]}
    if any(f.empty for f in frames.values()):
        return pd.DataFrame(), runs_a, runs_b
    paths = None
    for frame in frames.values():
        paths = frame.index if paths is None else paths.intersection(frame.index, sort=False)
    first = frames[runs_a[0]].loc[paths, "actual"]
    for run, frame in frames.items():
        if not frame.loc[paths, "actual"].equals(first):
            raise ValueError(f"{run}: its true labels on {split} differ from {runs_a[0]}'s")
    missing = paths.difference(groups.index)
    if len(missing):
        raise ValueError(f"{len(missing)} predicted images are not in the manifest, e.g. "
                         f"{missing[0]}")
    joined = pd.DataFrame({"actual": first, "group": groups.reindex(paths)}, index=paths)
    for run, frame in frames.items():
        joined[run] = frame.loc[paths, "predicted"]
    return joined, runs_a, runs_b


def paired_comparisons(table: pd.DataFrame, predictions_dir: Path, manifests_dir: Path,
                       comparisons: tuple[Comparison, ...] = COMPARISONS,
                       splits: tuple[str, ...] = ("test", "test_simple"), n_boot: int = 2000,
                       seed: int = 0) -> pd.DataFrame:
    """Accuracy difference A - B of each fixed comparison on each held-out split, with the
    95 % interval of a paired bootstrap that resamples whole source cells (the manifest's
    ``group``: TEST's 2,487 images are copies of 71 cells) and, where a model has several runs
    (seeds), its runs too (:func:`leuko.metrics.paired_bootstrap_difference_seeds`).

    One row per comparison, pairing and split, with columns ``comparison``, ``dataset``,
    ``network``, ``split``, ``model_a``, ``model_b`` (their runs, comma-separated),
    ``runs_a``, ``runs_b``, ``images``, ``cells``, ``accuracy_a``, ``accuracy_b``,
    ``difference``, ``low``, ``high``, ``share_a_better``.  A comparison whose models did not
    run leaves no row."""
    from leuko.metrics import paired_bootstrap_difference_seeds

    rows = []
    groups_of: dict[str, pd.Series] = {}
    for comparison in comparisons:
        for shared, runs_a, runs_b in _runs(table, comparison):
            dataset = shared.get("dataset")
            if dataset not in groups_of:
                groups_of[dataset] = _manifest_groups(manifests_dir, dataset)
            for split in splits:
                joined, _, _ = paired_frame(predictions_dir, runs_a, runs_b, split,
                                            groups_of[dataset])
                if joined.empty:
                    continue
                result = paired_bootstrap_difference_seeds(
                    joined["actual"].to_numpy(), [joined[r].to_numpy() for r in runs_a],
                    [joined[r].to_numpy() for r in runs_b], joined["group"].to_numpy(),
                    n_boot=n_boot, seed=seed)
                network = shared.get("network") or (
                    f"{comparison.a.get('network')} vs {comparison.b.get('network')}")
                rows.append({"comparison": comparison.name, "dataset": dataset,
                             "network": network, "split": split,
                             "model_a": ", ".join(runs_a), "model_b": ", ".join(runs_b),
                             "runs_a": result["seeds_a"], "runs_b": result["seeds_b"],
                             "images": result["n"], "cells": result["n_groups"],
                             "accuracy_a": result["accuracy_a"],
                             "accuracy_b": result["accuracy_b"],
                             "difference": result["difference"], "low": result["low"],
                             "high": result["high"],
                             "share_a_better": result["share_a_better"]})
    return pd.DataFrame(rows, columns=["comparison", "dataset", "network", "split", "model_a",
                                       "model_b", "runs_a", "runs_b", "images", "cells",
                                       "accuracy_a", "accuracy_b", "difference", "low", "high",
                                       "share_a_better"])


def comparisons_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The paired comparisons for reading: accuracies, the difference in points with its 95 %
    interval, and the share of resamples in which A is ahead."""

    def points(value: float, low: float, high: float) -> str:
        return f"{100 * value:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"

    return pd.DataFrame({
        "comparison (A vs B)": frame["comparison"],
        "dataset": frame["dataset"].map(short_dataset),
        "network": frame["network"],
        "split": frame["split"],
        "cells (images)": [f"{c} ({i})" for c, i in zip(frame["cells"], frame["images"],
                                                          strict=True)],
        "runs A / B": [f"{a} / {b}" for a, b in zip(frame["runs_a"], frame["runs_b"],
                                                    strict=True)],
        "accuracy A": [f"{100 * v:.1f} %" for v in frame["accuracy_a"]],
        "accuracy B": [f"{100 * v:.1f} %" for v in frame["accuracy_b"]],
        "A - B (points) [95 % CI]": [points(r.difference, r.low, r.high)
                                     for r in frame.itertuples()],
        "resamples with A ahead": [f"{100 * v:.0f} %" for v in frame["share_a_better"]],
    })


def training_times(results_dir: Path) -> pd.DataFrame:
    """Training time, epochs and parameter count per model (from ``reports/train``, its
    group folders included)."""
    from leuko.study import summary_files

    rows = {}
    for path in summary_files(results_dir):  # an id in a group's folder wins
        summary = json.loads(path.read_text())
        rows[path.stem] = {"model": summary.get("model", path.stem),
                           "network": summary.get("network"), "regime": summary.get("regime"),
                           "dataset": summary.get("dataset"),
                           "train_seconds": summary.get("train_seconds"),
                           "epochs_run": summary.get("epochs_run"),
                           "parameters": (summary.get("params") or {}).get("total")}
    return pd.DataFrame([rows[m] for m in sorted(rows)])


def data_counts(manifests_dir: Path) -> dict[str, pd.DataFrame]:
    """Images per split and class of every manifest the study prepared."""
    from leuko.datasets import class_counts
    from leuko.study import read_manifest

    return {p.stem: class_counts(read_manifest(p)) for p in sorted(Path(manifests_dir)
                                                                    .glob("*.csv"))}


def detection_table(metrics_path: Path) -> pd.DataFrame:
    """Detection precision / recall / F1 at the IoU threshold per BCCD split, from the detect
    stage's metrics (as annotated, and with BCCD's boxes reviewed by eye)."""
    metrics = json.loads(Path(metrics_path).read_text())
    rows = []
    for kind in ("detection", "detection_reviewed"):
        for split, values in metrics.get(kind, {}).items():
            if isinstance(values, dict):
                rows.append({"boxes": "as annotated" if kind == "detection" else "reviewed",
                             "smears": split, **{k: v for k, v in values.items()
                                                 if not isinstance(v, dict | list)}})
    return pd.DataFrame(rows)


def stain_robustness_table(results: list[dict], value: str = "accuracy") -> pd.DataFrame:
    """``value`` (accuracy or macro_f1) of every evaluated model (rows) under each simulated
    other-lab stain or light (columns, ``leuko.stain.STAIN_SHIFTS``; ``none`` = as imaged)."""
    rows = {r["model"]: {kind: scores[value] for kind, scores in r["stain_shift"]["kinds"].items()}
            for r in results if "stain_shift" in r}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name, frame.columns.name = "model", "stain shift"
    return frame


def stain_robustness_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: accuracy as imaged, the mean and the worst over the shifted labs, and the
    worst shift's name."""
    shifted = table.drop(columns="none")
    return pd.DataFrame({"as imaged": table["none"], "mean under shift": shifted.mean(axis=1),
                         "worst under shift": shifted.min(axis=1),
                         "worst shift": shifted.idxmin(axis=1)})


# --- the leukemia study's section ------------------------------------------------------------

LEUKEMIA_PATHS = LeukemiaPaths()

def leukemia_section_items(results: list[dict], paths: LeukemiaPaths = LEUKEMIA_PATHS) -> list:
    """The leukemia section of the report, in reading order: Markdown, tables (DataFrames),
    figures and saved images (``IPython.display.Image``) for every leukemia model."""
    from IPython.display import Image, Markdown

    from leuko.figures import plot_confusion_matrix, plot_training_curves
    from leuko.metrics import classification_report_frame

    items: list = [Markdown(
        "## Leukemia study: ALL blast vs healthy cell\n\n"
        "The C-NMC 2019 report's recipe: centre crop, 6:3:1 split by patient and content hash, "
        "train and validation balanced by augmentation, Solution A (custom CNN) and Solution B "
        "(EfficientNetB2 from scratch). The test images are never augmented.")]
    runs = [r for r in results if is_leukemia_result(r)]
    repeats: dict[str, list[dict]] = {}  # main id -> its repeats (shown as one line)
    for r in runs:
        if kind_id(r["model"]) != r["model"]:
            repeats.setdefault(kind_id(r["model"]), []).append(r)
    leukemia = sorted((r for r in runs if kind_id(r["model"]) == r["model"]),
                      key=lambda r: (r["dataset"], r.get("solution", ""), r["model"]))
    for dataset in dict.fromkeys(r["dataset"] for r in leukemia):
        items.append(Markdown(f"### {dataset}: the augmentation"))
        figure = paths.augment_figure(dataset)
        items.append(Image(filename=str(figure)) if figure.is_file()
                     else Markdown(f"(no augmentation figure at `{figure}`)"))
        for result in (r for r in leukemia if r["dataset"] == dataset):
            the_id = result["model"]
            name = f"Solution {result.get('solution', '?').upper()} ({result['network']})"
            items.append(Markdown(f"### {dataset}, {name}"))
            live = paths.live(the_id)
            if live.is_dir():
                items.append(plot_training_curves(load_history(live), title=the_id))
            for split, metrics in result["splits"].items():
                items.append(Markdown(f"**{split}**: {split_figures_text(metrics)}"))
                items.append(classification_report_frame(metrics).round(3))
                items.append(plot_confusion_matrix(metrics["confusion_matrix"],
                                                   result["classes"], title=f"{the_id}: {split}"))
            others = sorted(repeats.get(the_id, []), key=training_seed)
            if others:
                items.append(Markdown(
                    "**Repeats** (the same solution, other training seeds; the spread section "
                    "draws them): " + "; ".join(
                        f"seed {training_seed(r)}: " + ", ".join(
                            f"{split} {100 * m['accuracy']:.1f} %"
                            for split, m in r["splits"].items()) for r in others)))
            for kind in GALLERY_KINDS:
                gallery = paths.gallery(the_id, kind)
                if gallery.is_file():
                    items.append(Image(filename=str(gallery)))
            if "kfold" in result:
                summary = result["kfold"]["summary"]
                items.append(Markdown(
                    f"**{result['kfold']['folds']}-fold cross-validation**: accuracy "
                    f"{summary['accuracy']['mean']:.3f} ± {summary['accuracy']['sd']:.3f}, "
                    f"macro F1 {summary['macro_f1']['mean']:.3f} ± "
                    f"{summary['macro_f1']['sd']:.3f} (mean ± sd over folds)"))
                figure = paths.kfold_figure(the_id)
                if figure.is_file():
                    items.append(Image(filename=str(figure)))
    return items


def split_figures_text(metrics: dict) -> str:
    """One held-out split's accuracy with its 95 % intervals, in words: the exact
    (Clopper-Pearson) one where every image is its own cell, and the bootstrap over source
    cells, with the counts of images and cells; then the macro F1."""
    n, cells = metrics["n"], metrics.get("n_cells")
    ci = metrics["intervals"]["accuracy"]
    counts = f"{n} images" + (f" of {cells} cells" if cells is not None and cells != n
                              else " (each its own cell)" if cells == n else "")
    text = f"{counts}: accuracy {metrics['accuracy']:.3f}"
    exact = metrics.get("exact_interval")
    if exact:
        text += (f" [95 % CI exact (Clopper-Pearson, {exact['k']}/{exact['n']}) "
                 f"{exact['low']:.3f}, {exact['high']:.3f}]")
    text += f" [95 % CI bootstrap over cells {ci['low']:.3f}, {ci['high']:.3f}]"
    return text + f", macro F1 {metrics['macro_f1']:.3f}"


def display_leukemia_section(results: list[dict],
                             paths: LeukemiaPaths = LEUKEMIA_PATHS) -> int:
    """Display the leukemia section of ``results`` (``load_results``) in a notebook; returns
    the number of leukemia models."""
    from IPython.display import display

    results = [r for r in results if is_leukemia_result(r)]
    for item in leukemia_section_items(results, paths):
        display(item)
    return len(results)


if __name__ == "__main__":
    raise SystemExit(main())
