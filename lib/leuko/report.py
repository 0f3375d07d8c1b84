"""Study-level tables and text for the compare notebook and the HTML report: everything is
read from the metrics files the pipeline wrote, nothing is typed in by hand."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import yaml

from leuko.atomic import write_csv_atomic

# Published numbers of the two studies this project reproduces (see DESIGN.md).
PUBLISHED = {
    "thesis transfer (mean of 8)": 0.878,
    "thesis scratch (mean of 8)": 0.263,
    "thesis best (DenseNet169/201)": 0.982,
    "report Solution A (custom CNN)": 0.90,
    "report Solution B (EfficientNetB2)": 0.88,
}


def load_results(metrics_dir: Path) -> list[dict]:
    """Every model's metrics file, sorted by model id."""
    files = sorted(Path(metrics_dir).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no metrics files in {metrics_dir}: run the evaluate stages")
    return [json.loads(f.read_text()) for f in files]


def results_table(results: list[dict]) -> pd.DataFrame:
    """One row per model and evaluation split: accuracy and macro F1 with 95 % intervals,
    per-class recall, training time."""
    rows = []
    for result in results:
        for split, m in result["splits"].items():
            ci = m["intervals"]
            row = {"model": result["model"], "dataset": result["dataset"],
                   "network": result["network"], "regime": result["regime"], "split": split,
                   "n": m["n"], "accuracy": m["accuracy"],
                   "accuracy_low": ci["accuracy"]["low"], "accuracy_high": ci["accuracy"]["high"],
                   "macro_f1": m["macro_f1"], "macro_f1_low": ci["macro_f1"]["low"],
                   "macro_f1_high": ci["macro_f1"]["high"]}
            for name, values in m["per_class"].items():
                row[f"recall_{name}"] = values["recall"]
            training = result.get("training", {})
            row["train_seconds"] = training.get("train_seconds")
            row["epochs_run"] = training.get("epochs_run")
            rows.append(row)
    return pd.DataFrame(rows)


def write_tables(tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    """Each table as ``<folder>/<name>.csv`` (for reuse beside the report)."""
    return [write_csv_atomic(Path(folder) / f"{name}.csv", frame)
            for name, frame in tables.items()]


def _ci(value: float, low: float, high: float) -> str:
    return f"{100 * value:.1f} % [{100 * low:.1f}, {100 * high:.1f}]"


def best_rows(table: pd.DataFrame, split: str) -> pd.DataFrame:
    """The best model per dataset on ``split`` (by accuracy)."""
    rows = table[table["split"] == split]
    return rows.loc[rows.groupby("dataset")["accuracy"].idxmax()] if len(rows) else rows


def summary_markdown(table: pd.DataFrame) -> str:
    """The report's opening: best model per study with its test figures and intervals, and
    the published numbers for comparison."""
    lines = ["## Summary", "", "| study | best model | split | accuracy [95 % CI] | "
             "macro F1 [95 % CI] |", "|---|---|---|---|---|"]
    for split in ("test", "test_simple"):
        for _, row in best_rows(table, split).iterrows():
            lines.append(f"| {row['dataset']} | {row['network']} ({row['regime']}) | {split} | "
                         f"{_ci(row['accuracy'], row['accuracy_low'], row['accuracy_high'])} | "
                         f"{_ci(row['macro_f1'], row['macro_f1_low'], row['macro_f1_high'])} |")
    lines += ["", "Published for comparison: " + "; ".join(
        f"{name} {100 * value:.1f} %" for name, value in PUBLISHED.items()) + "."]
    return "\n".join(lines)


def styled_results(table: pd.DataFrame):
    """The results table formatted for reading (percentages with intervals)."""
    view = pd.DataFrame({
        "model": table["model"], "split": table["split"], "n": table["n"],
        "accuracy [95 % CI]": [_ci(r.accuracy, r.accuracy_low, r.accuracy_high)
                               for r in table.itertuples()],
        "macro F1 [95 % CI]": [_ci(r.macro_f1, r.macro_f1_low, r.macro_f1_high)
                               for r in table.itertuples()],
        "training time (s)": table["train_seconds"],
    })
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


def load_histories(live_root: Path, model_ids) -> dict[str, pd.DataFrame]:
    """Histories of the given models (those with a DVCLive folder)."""
    return {m: load_history(Path(live_root) / m) for m in dict.fromkeys(model_ids)
            if (Path(live_root) / m).is_dir()}


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


def readme_table(table: pd.DataFrame) -> str:
    """The README's results table: one row per model, TEST and TEST_SIMPLE side by side."""
    lines = ["| model | TEST accuracy [95 % CI] | TEST macro F1 | TEST_SIMPLE / held-out accuracy "
             "[95 % CI] | training time (s) |", "|---|---|---|---|---|"]
    for model, rows in table.groupby("model", sort=True):
        by_split = {r.split: r for r in rows.itertuples()}
        test = by_split.get("test")
        other = by_split.get("test_simple")
        cells = [f"`{model}`",
                 _ci(test.accuracy, test.accuracy_low, test.accuracy_high) if test else "–",
                 f"{100 * test.macro_f1:.1f} %" if test else "–",
                 _ci(other.accuracy, other.accuracy_low, other.accuracy_high) if other else "–",
                 f"{rows['train_seconds'].iloc[0]:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def update_readme(readme: Path, table: pd.DataFrame) -> bool:
    """Replace the results table between the README's markers; True if the text changed."""
    text = Path(readme).read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} lacks the results markers {README_START!r} / {README_END!r}")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{readme_table(table)}\n{README_END}{tail}"
    if new != text:
        Path(readme).write_text(new)
    return new != text


def main() -> int:
    """``python -m leuko.report``: refresh the README's results table from reports/metrics."""
    table = results_table(load_results(Path("reports/metrics")))
    changed = update_readme(Path("README.md"), table)
    print("README.md results table " + ("updated" if changed else "already current"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


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


def paired_predictions(predictions_dir: Path, models: list[str], split: str
                       ) -> pd.DataFrame:
    """Predictions of several models on the same images of ``split`` (columns = models)."""
    frames = []
    for model in models:
        frame = pd.read_csv(Path(predictions_dir) / f"{model}.csv")
        frame = frame[frame["split"] == split].set_index("path")
        frames.append(frame["predicted"].rename(model))
        actual = frame["actual"]
    joined = pd.concat(frames, axis=1, join="inner")
    joined.insert(0, "actual", actual.reindex(joined.index))
    return joined


def mcnemar_best_two(table: pd.DataFrame, predictions_dir: Path, dataset: str,
                     split: str = "test") -> dict | None:
    """McNemar's test between the two most accurate models of ``dataset`` on ``split``."""
    from leuko.metrics import mcnemar

    rows = table[(table["dataset"] == dataset) & (table["split"] == split)]
    best = rows.sort_values("accuracy", ascending=False)["model"].head(2).tolist()
    if len(best) < 2:
        return None
    paired = paired_predictions(predictions_dir, best, split)
    classes = sorted(set(paired["actual"]) | set(paired[best[0]]) | set(paired[best[1]]))
    code = {c: i for i, c in enumerate(classes)}
    result = mcnemar(paired["actual"].map(code), paired[best[0]].map(code),
                     paired[best[1]].map(code))
    return {"model_a": best[0], "model_b": best[1], "split": split, "n": len(paired),
            **result}


def training_times(results_dir: Path) -> pd.DataFrame:
    """Training time, epochs and parameter count per model (from ``reports/train``)."""
    rows = []
    for path in sorted(Path(results_dir).glob("*.json")):
        summary = json.loads(path.read_text())
        rows.append({"model": summary.get("model", path.stem),
                     "network": summary.get("network"), "regime": summary.get("regime"),
                     "dataset": summary.get("dataset"),
                     "train_seconds": summary.get("train_seconds"),
                     "epochs_run": summary.get("epochs_run"),
                     "parameters": (summary.get("params") or {}).get("total")})
    return pd.DataFrame(rows)


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
