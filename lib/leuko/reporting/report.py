"""Study-level tables and text for the compare notebook and the HTML report: everything is
read from the metrics files the pipeline wrote, nothing is typed in by hand. The README's and
docs' blocks (``make results``) are written by ``leuko.reporting.results_docs``, which builds on this
module; no stage imports it, so an edit of it reruns nothing."""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from IPython.display import Image, Markdown, display

from leuko.cells.crosssource import is_unseen_part, part_rank, unseen_lab_views
from leuko.cells.multisource import TRAININGS, CellStudy
from leuko.core.atomic import write_csv_atomic
from leuko.core.datasets import class_counts
from leuko.core.figures import plot_confusion_matrix, plot_training_curves
from leuko.core.machine import machine_line
from leuko.core.metrics import (
    classification_report_frame,
    format_interval,
    paired_bootstrap_difference_seeds,
)
from leuko.core.params import read_block
from leuko.leukemia.recipe import (
    GALLERY_KINDS,
    LeukemiaPaths,
    is_leukemia_result,
    leukemia_model_id,
)
from leuko.models.networks import NETWORKS, short_name
from leuko.reporting.render import stage_html_name
from leuko.thesis.evaluation import source_cells
from leuko.thesis.study import read_manifest, regime_and_size, summary_files, wbc_models
from leuko.tool import adaptation

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
    carry an exact interval (:func:`leuko.core.metrics.add_exact_interval`: every test image its
    own cell), ``accuracy_exact_low`` / ``accuracy_exact_high`` are its Clopper-Pearson bounds
    and ``exact_independent`` is True (NaN / False otherwise). ``n_cells``: the source cells
    of the split (NaN where the file does not say); ``machine`` / ``train_machine``: the
    machines that evaluated and trained the model (``leuko.core.machine.machine_line``; "" where the
    file does not say). ``training_seed``: the run's training seed (:func:`training_seed`); its
    kind is :func:`kind_id` of ``model``."""

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


def _has_exact(row) -> bool:
    """Whether a results row has an exact interval that applies (every image its own cell)."""
    low = getattr(row, "accuracy_exact_low", float("nan"))
    return bool(getattr(row, "exact_independent", False)) and pd.notna(low)


def accuracy_ci(row) -> str:
    """A results row's accuracy with its 95 % interval: exact (Clopper-Pearson, marked
    "exact") where every test image is a distinct cell, else the cluster bootstrap's."""
    if _has_exact(row):
        return format_interval(row.accuracy, row.accuracy_exact_low, row.accuracy_exact_high) + " exact"
    return format_interval(row.accuracy, row.accuracy_low, row.accuracy_high)


def short_dataset(dataset: str) -> str:
    """A short name for figure labels: the thesis's two splits by their kind."""
    return {"blood-cell-images": "official split",
            "blood-cell-images-pooled": "pooled split"}.get(dataset, dataset)


REGIME_SHORT = {"imagenet": "transfer", "imagenet-long": "transfer long",
                "imagenet-finetune": "fine-tune", "imagenet-finetune-stain": "fine-tune stain",
                "scratch": "scratch"}
"""Figure labels of the regimes (``leuko.models.train.REGIMES``), in their order."""


def regime_short(regime: str) -> str:
    """A regime's figure label; one run at an input size of its own (``study.sized_regime``,
    ``imagenet-224px``) says its size (``transfer 224px``)."""

    base, own_size = regime_and_size(regime)
    label = REGIME_SHORT.get(base, base)
    return label if own_size is None else f"{label} {own_size}px"


def kind_label(dataset: str, network: str, regime: str) -> str:
    """A kind of model on one short line for the rows of a figure: network's short name
    (``networks.short_name``), split, regime's short name (``MNv2 · official split ·
    transfer``)."""

    return f"{short_name(network)} · {short_dataset(dataset)} · {regime_short(regime)}"


def regime_column(dataset: str, regime: str) -> str:
    """A model's column in the thesis's small multiples: its regime's short name, marked
    ``· pooled`` on the leaky pooled split."""
    label = regime_short(regime)
    return f"{label} · pooled" if dataset.endswith("-pooled") else label


def _regime_order(regime: str) -> tuple[int, int]:
    """Regimes in ``REGIME_SHORT``'s order, each at the study's size before its own sizes."""

    base, own_size = regime_and_size(regime)
    known = list(REGIME_SHORT)
    return (known.index(base) if base in known else len(known), own_size or 0)


def thesis_grid(table: pd.DataFrame) -> tuple[dict[str, tuple[str, str]], list[str], list[str]]:
    """Where each 4-class model sits in the small multiples: ``{model: (network row, regime
    column)}`` with short network names (``networks.short_name``), and the rows (registry order)
    and columns (regime order, the pooled split's after the official split's)."""

    models = table.drop_duplicates("model")
    cells = {r.model: (short_name(r.network), regime_column(r.dataset, r.regime))
             for r in models.itertuples()}
    order = [short_name(n) for n in NETWORKS]
    rows = sorted({row for row, _ in cells.values()},
                  key=lambda r: order.index(r) if r in order else len(order))
    present = list(dict.fromkeys(models["regime"]))
    regimes = [regime_short(r) for r in sorted(present, key=_regime_order)]
    columns = [c for pooled in (False, True) for c in
               [f"{r} · pooled" if pooled else r for r in regimes]
               if c in {col for _, col in cells.values()}]
    columns += sorted({col for _, col in cells.values()} - set(columns))
    return cells, rows, columns


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


def mean_sd(mean: float, sd: float) -> str:
    return f"{100 * mean:.1f} ± {100 * sd:.1f} %"


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
                             f"{format_interval(row.macro_f1, row.macro_f1_low, row.macro_f1_high)} |")
            else:
                several = True
                lines.append(name + f"{mean_sd(s.accuracy_mean, s.accuracy_sd)} ({s.runs} "
                             f"runs) | {mean_sd(s.macro_f1_mean, s.macro_f1_sd)} |")
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
        "accuracy [95 % CI, bootstrap]": [format_interval(r.accuracy, r.accuracy_low, r.accuracy_high)
                                          for r in table.itertuples()],
        "macro F1 [95 % CI]": [format_interval(r.macro_f1, r.macro_f1_low, r.macro_f1_high)
                               for r in table.itertuples()],
        "training time (s)": table["train_seconds"],
    })
    if "accuracy_exact_low" in table and table["accuracy_exact_low"].notna().any():
        view.insert(4, "accuracy [exact 95 % CI]", [
            format_interval(r.accuracy, r.accuracy_exact_low, r.accuracy_exact_high) if _has_exact(r)
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


SPREAD_NOTE = ("± : the mean ± sample standard deviation (n − 1) over a model's runs, the same "
               "model trained again with other training seeds on the same data and split (how "
               "far one training run's score moves, not the test set's uncertainty). A model "
               "with one run shows its 95 % interval in brackets, the bootstrap over source "
               "cells (or the exact one where marked).")
"""The line under a results table: what ± and the brackets mean."""


def cell_results(results: list[dict], ensembles: bool = True) -> list[dict]:
    """The cell classifier's models (dataset ``cells``) among ``results``; ``ensembles``
    False: its training runs only (``leuko.cells.ensemble``'s averages, with ``members``, left
    out)."""
    return [r for r in results if r["dataset"] == "cells" and (ensembles or "members" not in r)]


def cells_seed_runs(results: list[dict]) -> pd.DataFrame:
    """Every training run of the cell models (no ensemble) on every held-out part, for
    ``figures.plot_seed_spread``: ``label`` (``<training> -> <part>``), ``kind``,
    ``training``, ``split`` (the part), ``model``, ``training_seed``, ``accuracy`` and
    ``macro_f1``; in the cross-source table's order (``multisource.TRAININGS``, then
    ``crosssource.part_rank``: the test parts, then the unseen labs), then by seed."""

    rows = sorted(({"label": f"{r['trained_on']} -> {part}", "kind": kind_id(r["model"]),
                    "training": r["trained_on"], "split": part, "model": r["model"],
                    "training_seed": training_seed(r), "accuracy": m["accuracy"],
                    "macro_f1": m["macro_f1"]}
                   for r in cell_results(results, ensembles=False)
                   for part, m in r["splits"].items()),
                  key=lambda row: (list(TRAININGS).index(row["training"]),
                                   part_rank(row["split"]), row["training_seed"]))
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


def cell_part_predictions(saved: dict, part: str, reference) -> tuple[dict, pd.Index]:
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
    """Each cell ensemble (``leuko.cells.ensemble``: a result with ``members``) against its members
    on every held-out part: one run's accuracy and macro F1 (mean and sd over the members),
    the ensemble's with its interval, and ensemble minus one run from a paired bootstrap over
    source cells and the members' seeds (``metrics.paired_bootstrap_difference_seeds``, on
    the predictions in ``predictions_dir``, source cells from ``manifests_dir/cells.csv``);
    the ensemble's coverage, accuracy kept and ECE."""

    cells = cell_results(results)
    by_id = {r["model"]: r for r in cells}
    ensembles = sorted((r for r in cells if "members" in r),
                       key=lambda r: list(TRAININGS).index(r["trained_on"]))
    if not ensembles:
        return pd.DataFrame()
    groups = cell_groups(manifests_dir, {p for r in ensembles for p in r["splits"]})
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
        for part in sorted(ensemble["splits"], key=part_rank):
            m = ensemble["splits"][part]
            frames, paths = cell_part_predictions(saved, part, ensemble["model"])
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
        "accuracy % ensemble [95 % CI]": format_interval(
            r["accuracy ensemble"], r["accuracy ensemble low"], r["accuracy ensemble high"],
            unit=""),
        "ensemble minus one run, points [95 % CI]": format_interval(
            r["accuracy difference"], r["difference low"], r["difference high"], unit="",
            signed=True),
        "macro F1 % one run → ensemble": (f"{pct(r['macro F1 one run mean'])} ± "
                                          f"{pct(r['macro F1 one run sd'])} → "
                                          f"{pct(r['macro F1 ensemble'])}"),
        "coverage %": pct(r["coverage ensemble"]),
        "accuracy kept %": pct(r["accuracy kept ensemble"]),
        "ECE": f"{r['ECE ensemble']:.3f}"} for _, r in table.iterrows()])


CELLS_ENSEMBLE_NOTE = ("One run: mean ± sample sd (n − 1) over the runs an ensemble averages "
                       "(the training's main run and repeats); the difference, ensemble minus "
                       "one run, resamples source cells and the runs' seeds (the ensemble is "
                       "itself one draw of its runs' seeds: its own spread is not measured).")
"""The line under the ensembles' table."""


def new_lab_section_items(cell_results: dict, adaptation_dir: Path = Path("reports/adaptation")
                          ) -> tuple[list, dict[str, pd.DataFrame]]:
    """The report's section on a lab unlike both sources, in reading order (Markdown, tables,
    figures), and its tables by name (for ``reports/tables``): each cell model on the unseen
    lab (``crosssource.unseen_lab_views``), then, when stage adapt-cells has run, the
    adaptation curves against the issue's targets and the shipped model's JPEG stability
    (``leuko.tool.adaptation``'s tables in ``adaptation_dir``)."""


    items: list = [Markdown(
        "### A lab unlike both sources\n\n"
        "Every model on a third lab's cells that no model is trained on (`data/bionet`): "
        "accuracy and macro F1 over the classes it holds, and each class's recall with its "
        "95 % interval (exact: each field is its own cell).")]
    tables: dict[str, pd.DataFrame] = {}
    lab_table, lab_recall = unseen_lab_views(cell_results)
    if lab_table.empty:
        items.append(Markdown("*Not scored: no cell model was evaluated on an unseen lab "
                              "(`dvc repro evaluate-cells`).*"))
    else:
        tables["unseen_lab"] = lab_table
        items += [lab_table.style.hide(axis="index"), lab_recall]
    saved = adaptation.read_tables(Path(adaptation_dir))
    items.append(Markdown(
        "### Winning a lab back with a few labelled cells\n\n"
        "`leuko adapt`'s last-layer refit with k labelled cells per class, over seeded draws "
        "(stage `adapt-cells`, whose notebook says how cells are drawn): the shipped model "
        "adapted to the third lab and scored on its other cells, and each single-source model "
        "adapted to the other source. Pooled over the draws, 95 % intervals over the scored "
        "cells with every draw's predictions; the crosses are issue 35's targets."))
    if "curves" not in saved:
        items.append(Markdown(f"*Not run: no curves in `{adaptation_dir}` "
                              "(`dvc repro adapt-cells`).*"))
        return items, tables
    curves, targets = saved["curves"], saved.get("targets", pd.DataFrame())
    pairs = (list(targets[["k", "target macro F1"]].drop_duplicates().itertuples(
        index=False, name=None)) if len(targets) else [])
    tables["adaptation_curves"] = curves
    items += [adaptation.plot_adaptation_curves(curves, pairs),
              adaptation.curves_view(curves).style.hide(axis="index")]
    if len(targets):
        tables["adaptation_targets"] = targets
        items.append(targets.style.hide(axis="index").format(precision=3))
    if "jpeg_stability" in saved:
        jpeg = saved["jpeg_stability"]
        tables["jpeg_stability"] = jpeg
        items += [Markdown(
            "**JPEG stability of the shipped model.** The share of cells whose class changes "
            "when the image file is re-encoded as JPEG and classified as `leuko classify` "
            "does: a sample of each source's test part and every cell of the third lab."),
            adaptation.jpeg_view(jpeg).style.hide(axis="index")]
    return items, tables


def stage_links_markdown(notebooks_dir: Path = Path("reports/notebooks")) -> str:
    """Links to the rendered HTML of every executed stage notebook (``reports/html/``)."""

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
    # the thesis's input size for the head-only regime (params/wbc.yaml: wbc.thesis_input)
    Comparison("transfer 224px vs scratch", {"regime": "imagenet-224px"}, {"regime": "scratch"},
               datasets=("blood-cell-images",)),
    Comparison("transfer 224px vs transfer", {"regime": "imagenet-224px"},
               {"regime": "imagenet"}, datasets=("blood-cell-images",)),
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


def manifest_groups(manifests_dir: Path, dataset: str) -> pd.Series:
    path = Path(manifests_dir) / f"{dataset}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest {path}: the source cells (group) of {dataset}'s "
                                f"images come from it (run the prepare stage)")

    manifest = pd.read_csv(path, keep_default_na=False, dtype={"group": str})
    return pd.Series(source_cells(manifest), index=manifest["path"], name="group")


def cell_groups(manifests_dir: Path, parts) -> pd.Series:
    """Source-cell ids (one per path) of the cell models' scored ``parts``: the sources' from
    ``cells.csv`` (:func:`manifest_groups`), then an unseen lab's (``<name>/unseen``) from
    ``<name>.csv``, shifted past the ids before it so that no two manifests share one."""

    groups = manifest_groups(manifests_dir, "cells")
    for name in sorted({p.split("/")[0] for p in parts if is_unseen_part(p)}):
        lab = manifest_groups(manifests_dir, name)
        groups = pd.concat([groups, lab + (int(groups.max()) + 1 if len(groups) else 0)])
    return groups


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
    (seeds), its runs too (:func:`leuko.core.metrics.paired_bootstrap_difference_seeds`).

    One row per comparison, pairing and split, with columns ``comparison``, ``dataset``,
    ``network``, ``split``, ``model_a``, ``model_b`` (their runs, comma-separated),
    ``runs_a``, ``runs_b``, ``images``, ``cells``, ``accuracy_a``, ``accuracy_b``,
    ``difference``, ``low``, ``high``, ``share_a_better``.  A comparison whose models did not
    run leaves no row."""

    rows = []
    groups_of: dict[str, pd.Series] = {}
    for comparison in comparisons:
        for shared, runs_a, runs_b in _runs(table, comparison):
            dataset = shared.get("dataset")
            if dataset not in groups_of:
                groups_of[dataset] = manifest_groups(manifests_dir, dataset)
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
        "A - B (points) [95 % CI]": [format_interval(r.difference, r.low, r.high, unit="", signed=True)
                                     for r in frame.itertuples()],
        "resamples with A ahead": [f"{100 * v:.0f} %" for v in frame["share_a_better"]],
    })


def training_times(results_dir: Path) -> pd.DataFrame:
    """Training time, epochs and parameter count per model (from ``reports/train``, its
    group folders included)."""

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
    other-lab stain or light (columns, ``leuko.core.stain.STAIN_SHIFTS``; ``none`` = as imaged)."""
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

    results = [r for r in results if is_leukemia_result(r)]
    for item in leukemia_section_items(results, paths):
        display(item)
    return len(results)


