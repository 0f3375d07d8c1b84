"""``python -m leuko.reporting.results_docs`` (``make results``): the blocks of ``docs/results.md``, of the
logs of measured choices in ``docs/experiments/`` and of ``docs/spread.md``
(:data:`RESULT_DOCUMENTS`) that are written from the run's files, between their markers: the
results table, the cell classifier's tables, the stage times, and each measured choice's table
(the benchmarks' CSVs, :data:`CELL_VARIANTS`, :data:`FINETUNE_CHOICES`).

No pipeline stage imports this module, so an edit of it reruns nothing; it builds on
``leuko.reporting.report``, which the compare stage uses (and which never imports this module)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from leuko.cells import multisource
from leuko.cells.crosssource import cross_source_view, is_unseen_part, part_rank, recall_view
from leuko.cells.multisource import TRAININGS
from leuko.cells.preprocess import detail
from leuko.core.metrics import format_interval, paired_bootstrap_difference_seeds
from leuko.pipeline.stagetimes import record_path, stage_times_summary, stage_times_table
from leuko.reporting.report import (
    CELLS_ENSEMBLE_NOTE,
    CELLS_SPREAD_NOTE,
    SPREAD_NOTE,
    accuracy_ci,
    cell_groups,
    cell_part_predictions,
    cells_ensemble_view,
    comparisons_view,
    intervals_note,
    kind_id,
    listed_models,
    load_results,
    mean_sd,
    results_table,
    seed_summary,
    seed_summary_view,
    training_seed,
)
from leuko.thesis.study import Paths, read_json
from leuko.tool.adaptation import curves_view, jpeg_view


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


README_START = "<!-- results:start (written by `make results`; do not edit by hand) -->"


README_END = "<!-- results:end -->"


def readme_table(table: pd.DataFrame) -> str:
    """The results table (``docs/results.md``): one row per kind of model (:func:`kind_id`),
    TEST and TEST_SIMPLE side by side. A kind with several runs (training seeds) shows mean ±
    sd over its runs and their number, one with one run its accuracy with the 95 % interval."""
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
        return f"{mean_sd(s.accuracy_mean, s.accuracy_sd)} ({len(runs)} runs)"

    def macro_f1(kind: str, rows: pd.DataFrame) -> str:
        runs = rows[rows["split"] == "test"]
        if runs.empty:
            return "–"
        s = summary.loc[(kind, "test")]
        return (f"{100 * s.macro_f1_mean:.1f} %" if len(runs) == 1
                else mean_sd(s.macro_f1_mean, s.macro_f1_sd))

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
    """The markers around the block ``name`` that ``make results`` writes (in whichever of
    :data:`RESULT_DOCUMENTS` holds it)."""
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


# The documents whose blocks ``make results`` writes: the results (``docs/results.md``), the
# logs of measured choices (``docs/experiments/``, one per study), the spread over seeds, and
# the README (which holds none now: a block's copy left there fails as one in two documents).
RESULT_DOCUMENTS = (Path("README.md"), Path("docs/results.md"),
                    Path("docs/experiments/thesis.md"), Path("docs/experiments/leukemia.md"),
                    Path("docs/experiments/cells.md"), Path("docs/spread.md"))


def update_documents(documents: tuple[Path, ...], table: pd.DataFrame,
                     blocks: dict[str, str] | None = None) -> list[Path]:
    """Replace the results table and each of ``blocks`` (name -> markdown, or None to leave
    the block as it is) between their markers, in whichever of ``documents`` holds them; the
    documents that changed.

    Raises ValueError for a block whose markers are in none of the documents, or in more
    than one."""
    texts = {Path(d): Path(d).read_text() for d in documents}
    new = dict(texts)
    for name, body in {"results": readme_table(table), **(blocks or {})}.items():
        start, _ = readme_block_markers(name)
        if body is None:  # its source is a build output this checkout lacks: left as written
            continue
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
    if not Path(cross_source_csv).is_file():
        return f"*Not run yet: {cross_source_csv} is missing (`dvc repro evaluate-cells`).*"
    view = cross_source_view(pd.read_csv(cross_source_csv))
    return view.to_markdown(index=False)


def unseen_lab_markdown(recall_csv: Path) -> str:
    """Per-class recall of every cell model on the labs unlike both sources (``bionet``),
    with intervals (exact where each image is its own cell), from ``reports/cells/recall.csv``."""

    if not Path(recall_csv).is_file():
        return f"*Not run yet: {recall_csv} is missing (`dvc repro evaluate-cells`).*"
    table = pd.read_csv(recall_csv)
    table = table[table["tested on"].map(is_unseen_part)]
    if table.empty:
        return f"*No lab unlike both sources was scored ({recall_csv}).*"
    return recall_view(table.reset_index(drop=True)).reset_index().to_markdown(index=False)


def novelty_markdown(separation_csv: Path) -> str:
    """How well the distance from the training sources (stage ``novelty``) tells each cell
    model's unseen parts from its own test parts: per part the share of cells beyond their
    class's threshold, whether the part as a folder is flagged, and the per-cell AUROC of the
    distance (unseen cells against the model's own test cells)."""
    if not Path(separation_csv).is_file():
        return f"*Not run yet: {separation_csv} is missing (`dvc repro novelty`).*"
    table = pd.read_csv(separation_csv)
    table = table[table["class"] == "(all)"]
    view = pd.DataFrame({
        "model": table["model"], "tested on": table["part"], "source": table["kind"],
        "cells": table["cells"],
        "far %": [f"{100 * v:.1f}" for v in table["far_share"]],
        "folder flagged": ["yes" if v else "no" for v in table["flagged"]],
        "AUROC vs own test cells": ["–" if pd.isna(v) else f"{v:.3f}"
                                    for v in table["auroc"]]})
    return view.to_markdown(index=False)


def adaptation_markdown(folder: Path) -> str:
    """The adaptation curves (stage ``adapt-cells``): macro F1 and accuracy after the last
    layer is refitted on k cells per class, pooled over the draws, with intervals; then the
    issue's targets against them."""

    curves, targets = Path(folder) / "curves.csv", Path(folder) / "targets.csv"
    if not curves.is_file():
        return f"*Not run yet: {curves} is missing (`dvc repro adapt-cells`).*"
    text = curves_view(pd.read_csv(curves)).to_markdown(index=False)
    if targets.is_file():
        goal = pd.read_csv(targets)
        text += "\n\nTargets: " + "; ".join(
            f"{r['model']} on {r['tested on']}, k = {r['k']}: macro F1 "
            f"{format_interval(r['macro F1'], r['low'], r['high'])} against "
            f"{100 * r['target macro F1']:.0f} % "
            f"({'reached' if r['reached'] else 'not reached'})" for _, r in goal.iterrows()) + "."
    return text


def finder_markdown(finder_csv: Path) -> str:
    """``benchmarks/cells/finder.py``: per source, the nucleus boxes spanning more than a
    quarter of the image, the images with none found and the boxes changed, the finder before
    ``max_area``/``min_fill`` against the study's; then the exported model on the third lab
    framed by each."""
    if not Path(finder_csv).is_file():
        return f"*Not run yet: `benchmarks/cells/finder.py` writes {finder_csv}.*"
    table = pd.read_csv(finder_csv)
    parts = table[table["part"].str.startswith("finder:")]
    rows = []
    for part, group in parts.groupby("part", sort=False):
        before, study = (group[group["finder"] == f].iloc[0] for f in ("before", "study"))
        row = {"images": part.removeprefix("finder:"), "n": int(study["images"]),
               "box over 1/4 of the image: before → study":
                   f"{int(before['field-wide'])} → {int(study['field-wide'])}",
               "none found: before → study":
                   f"{int(before['not found'])} → {int(study['not found'])}",
               "boxes changed": int(study["changed"])}
        if pd.notna(study.get("centre in the white cell")):
            row["centre in the annotated white cell: before → study"] = (
                f"{int(before['centre in the white cell'])} → "
                f"{int(study['centre in the white cell'])}")
        rows.append(row)
    model = table[table["part"] == "model:bionet"]
    first = model.iloc[0]

    def pct(row, metric: str) -> str:
        return (f"{100 * row[f'{metric} value']:.1f} [{100 * row[f'{metric} low']:.1f}, "
                f"{100 * row[f'{metric} high']:.1f}]")

    scored = pd.DataFrame([{"framed by the finder": row["finder"], "cells": int(row["images"]),
                            "accuracy % [95 % CI]": pct(row, "accuracy"),
                            "macro F1 % [95 % CI]": pct(row, "macro_f1"),
                            "far from the sources": int(row["far from the sources"])}
                           for _, row in model.iterrows()])
    return (pd.DataFrame(rows).fillna("–").to_markdown(index=False) + "\n\n"
            + f"The exported model ({first['model']}, sha256 {first['model sha256']}…, trained "
              f"with {first['trained with']}) on `data/bionet`, as `leuko classify` and "
              "`leuko score` run it:\n\n" + scored.to_markdown(index=False)
            + f"\n\nMachine: {first['machine']}.")


def jpeg_causes_markdown(causes_csv: Path) -> str:
    """``benchmarks/cells/jpeg_causes.py``: per preparation and JPEG quality, the unseen lab's
    cells that change class, split into those the finder framed elsewhere and, of the rest,
    those the model was unsure of in either version."""
    if not Path(causes_csv).is_file():
        return f"*Not run yet: `benchmarks/cells/jpeg_causes.py` writes {causes_csv}.*"
    table = pd.read_csv(causes_csv)
    first = table.iloc[0]
    view = pd.DataFrame({
        "preparation": table["preparation"], "JPEG quality": table["quality"],
        "macro F1 % (originals)": (100 * table["macro F1"]).round(1),
        "changed / images": [f"{c} / {n}" for c, n in zip(table["changed"], table["images"],
                                                          strict=True)],
        "of them framed elsewhere": table["changed, framed elsewhere"],
        "same frame, unsure": table["changed, same frame, unsure"],
        "same frame, sure": table["changed, same frame, sure"],
        "images framed elsewhere": table["framed elsewhere"]})
    return (view.to_markdown(index=False)
            + f"\n\n{first['tested on']}; the exported model ({first['model']}, sha256 "
              f"{first['model sha256']}…). Framed elsewhere: the crop moved by more than 5 % of "
              "its side; unsure: the calibrated confidence under the abstention threshold in "
              f"either version. Machine: {first['machine']}.")


def jpeg_markdown(stability_csv: Path) -> str:
    """The share of cells whose class changes when their image is saved again as JPEG
    (stage ``adapt-cells``, the shipped model)."""

    if not Path(stability_csv).is_file():
        return f"*Not run yet: {stability_csv} is missing (`dvc repro adapt-cells`).*"
    return jpeg_view(pd.read_csv(stability_csv)).to_markdown(index=False)


CELL_SPLITS = ("train", "val", "test", "test_simple")


def cells_data_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per class (rows) and source and split (columns): the images the cell models see and
    the distinct source cells they are copies of (``group``), as "images (source cells)"; a
    class a source or split lacks is blank. From ``build/manifests/cells.csv``."""
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


def cells_data_markdown(manifest_csv: Path) -> str | None:
    """:func:`cells_data_table` of the study's cell manifest as markdown."""
    if not Path(manifest_csv).is_file():
        return None  # a build output a fresh clone lacks: the block keeps the last run's
    table = cells_data_table(pd.read_csv(manifest_csv, keep_default_na=False))
    return (table.to_markdown(index=False, disable_numparse=True)
            + "\n\nImages (distinct source cells): blood-cell-images' images are shifted, rotated "
            "and flipped copies of fewer source cells (its training part round-robin over them); "
            "PBC's are one image per cell, bar its byte-identical pairs.")


#: The recorded run of the ``spread`` preset (``benchmarks/pipeline/spread_record.py``): its seed and
#: ensemble tables, rendered into ``docs/spread.md``; the default study has one draw a model.
SPREAD_RECORD = Path("docs/spread")


def spread_run_line(record: Path) -> str:
    """Which run the spread tables come from: ``record.json`` (commit, dates, machines)."""
    meta = json.loads((Path(record) / "record.json").read_text())
    return (f"Run of the `{meta['preset']}` preset at commit {meta['commit']}, "
            f"{meta['first_start'][:16]} to {meta['last_end'][:16]} UTC, {meta['stages']} stages "
            f"({meta['repeat_stages']} of them repeats), {meta['stage_minutes']} min of stage "
            f"time; machine: {'; '.join(meta['machines'])}.")


def _record_table(record: Path, name: str) -> pd.DataFrame | str:
    """A table of the spread record, or the line saying it is missing."""
    path = Path(record) / f"{name}.csv"
    if not path.is_file():
        return (f"*Not recorded: {path} is missing (`make preset-spread && make study`, then "
                "`benchmarks/pipeline/spread_record.py`).*")
    return pd.read_csv(path)


def cells_seeds_markdown(record: Path = SPREAD_RECORD) -> str:
    """The cell models' spread over training seeds (``report.cells_seed_view``, as the spread
    run's compare stage wrote it) with the run it comes from."""
    table = _record_table(record, "cells_seed_summary")
    if isinstance(table, str):
        return table
    return (table.to_markdown(index=False, disable_numparse=True) + "\n\n" + CELLS_SPREAD_NOTE
            + " " + spread_run_line(record))


def seeds_markdown(record: Path = SPREAD_RECORD) -> str:
    """The thesis and leukemia models' spread over training seeds (``report.seed_summary``,
    the kinds with several runs) of the spread run."""
    table = _record_table(record, "seed_summary")
    if isinstance(table, str):
        return table
    view = seed_summary_view(table[table["runs"] > 1])
    return (view.to_markdown(index=False, disable_numparse=True) + "\n\n" + SPREAD_NOTE + " "
            + spread_run_line(record))


def comparisons_markdown(record: Path = SPREAD_RECORD) -> str:
    """The study's paired comparisons (``report.comparisons_view``) over the spread run's
    seeds."""
    table = _record_table(record, "paired_comparisons")
    if isinstance(table, str):
        return table
    return (comparisons_view(table).to_markdown(index=False, disable_numparse=True) + "\n\n"
            + spread_run_line(record))


def times_markdown(times_dir: Path) -> str:
    """The run behind the numbers: per stage wall time, the total and the machine, from
    ``reports/times`` (``leuko.pipeline.stagetimes``)."""
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
    ("repeats (other training seeds; the spread preset)",
     lambda stage: re.search(r"-seed\d+$", stage) is not None),
    ("thesis: fine-tuning with stain jitter (the spread preset)",
     lambda stage: "finetune-stain" in stage),
    ("cell ensembles (the spread preset)", lambda stage: "ensemble" in stage),
    ("thesis: the head-only regimes at the thesis's input size",
     lambda stage: re.search(r"\d+px$", stage) is not None),
    ("leukemia study", lambda stage: "leukemia" in stage),
    ("cell classifier for other labs, smear detection",
     lambda stage: stage.split("@")[0] in ("cells", "train-cells", "evaluate-cells", "detect")
     or stage == "export@wbc"),
    ("cell classifier: the third lab, the distance, adaptation curves",
     lambda stage: stage in ("cells-unseen", "novelty", "adapt-cells")),
    ("thesis: the regimes, the pooled split, evaluation, report", lambda stage: True),
)

#: ``make study``'s wall-time targets on a fresh clone (issue 34), by the machine's vector
#: extensions: minutes on an AVX2-only 2-core machine, and on one with AVX-512.
STUDY_WALL_TARGET_MIN = {"AVX2 only": 35.0, "AVX-512": 20.0}


def study_part(stage: str) -> str:
    """Which part of the default study a stage belongs to (:data:`STUDY_PARTS`)."""
    return next(part for part, test in STUDY_PARTS if test(stage))


def cell_detail_markdown(cache_paths=None, by: str = "split") -> str | None:
    """The median fine detail (``cells.detail``) of the prepared cells of the study's cache
    (``build/cells``): how sharp each lab's cells reach the network. ``by="split"``: per source
    and split; ``by="label"``: per class (rows) and source (columns), training cells only."""
    if by not in ("split", "label"):
        raise ValueError(f"by must be 'split' or 'label', got {by!r}")
    paths = cache_paths or multisource.DEFAULT_PATHS
    if not multisource.cache_path(paths).is_file():
        return None  # a build output a fresh clone lacks: the block keeps the last run's
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
            "Laplacian filter of each cell's grey level (`leuko.cells.preprocess.detail`)"
            + ("." if by == "split" else "; training cells."))


#: A pause longer than this between one stage's end and the next stage's start: the two ran in
#: separate ``dvc repro`` runs (within one, DVC starts the next stage within seconds).
RUN_GAP_S = 300


def separate_runs(table: pd.DataFrame) -> int:
    """How many runs the stage times of ``table`` (``started``, ``ended``) come from: one more
    than the pauses of over :data:`RUN_GAP_S` between every stage that ended so far and the
    next stage's start."""
    spans = table.assign(started=pd.to_datetime(table["started"]),
                         ended=pd.to_datetime(table["ended"])).sort_values("started")
    ended_so_far = spans["ended"].cummax().shift()
    pauses = (spans["started"] - ended_so_far).dt.total_seconds()
    return 1 + int((pauses > RUN_GAP_S).sum())


def budget_markdown(times_dir: Path, training: pd.DataFrame | None = None) -> str:
    """Where the study's stage time goes, by part of the study (:data:`STUDY_PARTS`), and the
    run's wall time, first stage start to last stage end, beside ``make study``'s target for
    its machine (:data:`STUDY_WALL_TARGET_MIN`); with ``training`` (a
    :func:`training_overhead` table), how much of it the trainings' own epochs take."""
    table = stage_times_table(times_dir)
    if table.empty:
        return f"*No stage times in {times_dir}.*"
    table["part"] = table["stage"].map(study_part)
    parts = table.groupby("part", sort=False)["seconds"].agg(["count", "sum"])
    parts = parts.reindex([p for p, _ in STUDY_PARTS]).dropna()
    total = float(table["seconds"].sum())
    view = pd.DataFrame({"part of the study": parts.index,
                         "stages": parts["count"].astype(int).to_numpy(),
                         "minutes": (parts["sum"] / 60).round(1).to_numpy(),
                         "share": [f"{100 * v / total:.0f} %" for v in parts["sum"]]})
    summary = stage_times_summary(table)
    avx512 = bool(table["avx512"].fillna(False).astype(bool).all()) if "avx512" in table else False
    kind = "AVX-512" if avx512 else "AVX2 only"
    runs = separate_runs(table)
    wall = (f"the run's wall time, first stage start to last stage end: "
            f"{summary['span_seconds'] / 60:.1f} min" if runs == 1 else
            f"the stages' times come from {runs} separate runs (a pause of over "
            f"{RUN_GAP_S // 60} min between one stage's end and the next one's start), so they "
            "give no one run's wall time")
    return (view.to_markdown(index=False) + f"\n\nIn all {total / 60:.1f} min of stage time; "
            f"{wall}, against a target of "
            f"{STUDY_WALL_TARGET_MIN[kind]:.0f} min for `make study` on a fresh clone "
            f"(install and `dvc pull` included) on a 2-core machine with {kind} "
            f"({', '.join(f'{v:.0f} min {k}' for k, v in STUDY_WALL_TARGET_MIN.items())}). "
            + ("" if training is None or training.empty else
               f"Of the stage time, {training['training s'].sum() / 60:.1f} min is the "
               f"{len(training)} trainings' own epochs (the stage less its start, data "
               "loading and saving: the `overhead` table of docs/experiments/thesis.md). ")
            + f"Machine: {'; '.join(summary['machines'])}.")


def ablation_markdown(ablation_csv: Path) -> str:
    """The cell-preprocessing ablation (``benchmarks/cells/cells_ablation.py``) as markdown: held-out
    source accuracy and macro F1 per variant and direction, with the machine it ran on."""
    if not Path(ablation_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/cells/cells_ablation.py` writes {ablation_csv}.*"
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


#: Every cell-model comparison (``cells_choices.py`` finds its own by block: ``block_of``).
CELL_VARIANTS = (
    CellVariant("adabn", "reports/ablation/adabn.csv", "as trained", "adapted",
                "benchmarks/cells/adabn.py"),
    CellVariant("cells-bn", "reports/ablation/cells_bn.csv", "adapting", "inference mode",
                "benchmarks/cells/cells_choices.py bn", ("validation accuracy", "train seconds")),
    CellVariant("cells-size", "reports/ablation/cells_size.csv", "64 px", "96 px",
                "benchmarks/cells/cells_choices.py size", ("validation accuracy",)),  # timed under load
    CellVariant("cells-blur", "reports/ablation/cells_blur.csv", "no blur", "blur 1 px",
                "benchmarks/cells/cells_choices.py blur", ("validation accuracy",)),
    CellVariant("cells-sharpness", "reports/ablation/cells_sharpness.csv", "as prepared",
                "detail capped at 12", "benchmarks/cells/cells_choices.py sharpness",
                ("validation accuracy",)),
    CellVariant("cells-jitter", "reports/ablation/cells_jitter.csv", "stain jitter 1",
                "no stain jitter", "benchmarks/cells/cells_choices.py jitter",
                ("validation accuracy",)),
    # cells-floor, cells-floor-seed1 (and cells-randomise): one seed each, before the
    # black-margin fill, the floor at 10 (cells_choices.py now uses 14: cells-floor-14)
    CellVariant("cells-floor", "reports/ablation/cells_floor.csv", "no blur",
                "blur 1 px, floor 10", "benchmarks/cells/cells_choices.py floor",
                ("validation accuracy",)),
    CellVariant("cells-floor-seed1", "reports/ablation/cells_floor-seed1.csv", "no blur",
                "blur 1 px, floor 10", "benchmarks/cells/cells_choices.py floor --seed 1",
                ("validation accuracy",)),
    # measured before the black-margin fill (commit ed558ed), with the floor at 10
    CellVariant("cells-floor-seeds-before-fill", "reports/ablation/cells_floor-seeds-before-fill.csv",
                "no blur", "blur 1 px, floor 10",
                "benchmarks/cells/cells_choices.py floor --over-seeds at commit ed558ed",
                over_seeds=True),
    CellVariant("cells-floor-seeds", "reports/ablation/cells_floor-seeds.csv", "no blur",
                "blur 1 px, floor 14", "benchmarks/cells/cells_choices.py floor --over-seeds",
                over_seeds=True),
    CellVariant("cells-randomise", "reports/ablation/cells_randomise.csv", "as prepared",
                "detail drawn from 10..22", "benchmarks/cells/cells_choices.py randomise",
                ("validation accuracy",)),
    # the floor and the randomisation again, with the floor at 14, judged by the third lab
    CellVariant("cells-floor-14", "reports/ablation/cells_floor-14.csv", "no blur",
                "blur 1 px, floor 14", "benchmarks/cells/cells_choices.py floor",
                ("validation accuracy",)),
    CellVariant("cells-randomise-14", "reports/ablation/cells_randomise-14.csv", "as prepared",
                "detail drawn from 14..22", "benchmarks/cells/cells_choices.py randomise",
                ("validation accuracy",)),
    CellVariant("cells-sharpen", "reports/ablation/cells_sharpen.csv", "as prepared",
                "sharpened to detail 18", "benchmarks/cells/cells_choices.py sharpen",
                ("validation accuracy",)),
    CellVariant("cells-tta", "reports/ablation/cells_tta.csv", "one view", "8 views",
                "benchmarks/cells/cells_tta.py"),
    CellVariant("cells-contrast-seeds", "reports/ablation/cells_contrast-seeds.csv",
                "no contrast jitter", "contrast x 0.6..1",
                "benchmarks/cells/cells_choices.py contrast --over-seeds", over_seeds=True),
    CellVariant("cells-stain", "reports/ablation/cells_stain.csv", "stain jitter 1",
                "stain jitter 2", "benchmarks/cells/cells_choices.py stain",
                ("validation accuracy",)),
    CellVariant("cells-epochs", "reports/ablation/cells_epochs.csv", "5 epochs", "10 epochs",
                "benchmarks/cells/cells_choices.py epochs", ("validation accuracy",)),
    CellVariant("cells-hed", "reports/ablation/cells_hed.csv", "RGB", "stain densities (HED)",
                "benchmarks/cells/cells_choices.py hed", ("validation accuracy",)),
    CellVariant("cells-stain-seeds", "reports/ablation/cells_stain-seeds.csv",
                "stain jitter 1", "stain jitter 2",
                "benchmarks/cells/cells_choices.py stain --over-seeds", over_seeds=True),
    CellVariant("cells-stain-1.5-seeds", "reports/ablation/cells_stain-1.5-seeds.csv",
                "stain jitter 1", "stain jitter 1.5",
                "benchmarks/cells/cells_choices.py stain-1.5 --over-seeds", over_seeds=True),
    CellVariant("cells-margin", "reports/ablation/cells_margin-seeds.csv", "black corners in",
                "corners filled", "benchmarks/cells/cells_study_change.py compare margin",
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
    """A variant of the cell models against another (``benchmarks/cells/adabn.py``,
    ``benchmarks/cells/cells_choices.py``): per model and test part, accuracy and macro F1 ``before`` ->
    ``after`` (the CSV's ``accuracy <before>`` ... columns; the macro F1 ``before`` with its
    interval where the CSV has ``macro F1 low/high <before>``), the paired accuracy difference with
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
               f"macro F1 % {before} → {after}": (
                   pair(r, "macro F1") if f"macro F1 low {before}" not in r else
                   f"{100 * r[f'macro F1 {before}']:.1f} [{100 * r[f'macro F1 low {before}']:.1f}"
                   f", {100 * r[f'macro F1 high {before}']:.1f}] → "
                   f"{100 * r[f'macro F1 {after}']:.1f}"),
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


def cells_choice_seeds_table(model_ids: list[str], baseline: Paths, variant: Paths,
                             n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A choice of the cell models measured over training seeds (``benchmarks/cells/cells_choices.py
    --over-seeds``): the same ``model_ids`` (each ensemble and the runs it averages) trained
    and scored twice, their metrics and predictions under ``baseline`` (the study's) and
    ``variant``; source cells from the baseline's cells manifest. Per training and held-out
    part: one run's accuracy and macro F1, mean and sd over the seeds, of each side; variant
    minus baseline from a paired bootstrap over source cells and seeds; the two ensembles and
    their paired difference. FileNotFoundError names a model a side lacks."""
    folders = {"baseline": baseline, "variant": variant}
    sides = {side: {m: read_json(paths.metrics(m)) for m in model_ids}
             for side, paths in folders.items()}
    ensembles = sorted((r for r in sides["variant"].values() if "members" in r),
                       key=lambda r: list(TRAININGS).index(r["trained_on"]))
    rows = []
    for ensemble in ensembles:
        runs = list(ensemble["members"])
        ids = [*runs, ensemble["model"]]
        missing = [m for m in ids if m not in model_ids]
        if missing:
            raise ValueError(f"{ensemble['model']} averages {missing}, not among model_ids")
        saved = {(side, m): pd.read_csv(folders[side].predictions(m), keep_default_na=False)
                 for side in sides for m in ids}
        groups = cell_groups(baseline.manifest("cells").parent, ensemble["splits"])
        for part in sorted(ensemble["splits"], key=part_rank):
            frames, paths = cell_part_predictions(saved, part, ("baseline", ensemble["model"]))
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
    """:func:`cells_choice_seeds_table` (its CSV, written by ``script``) for its block in
    ``docs/experiments/cells.md``: ``before`` names the baseline, ``after`` the variant."""
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
            f"the runs' probabilities averaged (`leuko.cells.ensemble`). Machine: {first['machine']}.")


def cells_ensemble_markdown(record: Path = SPREAD_RECORD) -> str:
    """The ensembles against one run (``report.cells_ensemble_table``, as the spread run's
    compare stage wrote it) with the run it comes from."""
    table = _record_table(record, "cells_ensembles")
    if isinstance(table, str):
        return table
    table["unseen source"] = table["unseen source"].astype(str).eq("True")
    return (cells_ensemble_view(table).to_markdown(index=False, disable_numparse=True)
            + "\n\n" + CELLS_ENSEMBLE_NOTE + " " + spread_run_line(record))


def export_choice_markdown(export_json: Path) -> str | None:
    """Which model the study exported for a task (``build/export/<task>.json``): the rule and
    every candidate's validation score, best first."""
    if not Path(export_json).is_file():
        return None  # a build output a fresh clone lacks: the block keeps the last run's
    meta = json.loads(Path(export_json).read_text())
    choice = meta["choice"]
    scores = sorted(choice["scores"].items(), key=lambda item: -item[1])
    return (f"The study's export chose **{meta['model_id']}** by `{choice['rule_used']}`: "
            + ", ".join(f"{model} {100 * score:.1f} %" for model, score in scores)
            + f" (validation scores of every candidate; data version {meta['data_version']['md5'][:8]}).")


def adapt_features_markdown(features_csv: Path) -> str:
    """``benchmarks/cells/adapt_features.py``: macro F1 on the third lab's cells not drawn, mean
    ± standard deviation over the draws, per k and feature set, and each set's difference from
    the shipped model's features, paired by draw (mean, [lowest, highest])."""
    if not Path(features_csv).is_file():
        return f"*Not run yet: `benchmarks/cells/adapt_features.py` writes {features_csv}.*"
    table = pd.read_csv(features_csv)
    wide = table.pivot_table(index=["k", "draw"], columns="features", values="macro_f1")
    def mean_sd(values: pd.Series) -> str:
        return f"{100 * values.mean():.1f} ± {100 * values.std():.1f}"

    rows = []
    for (k, features), group in table.groupby(["k", "features"], sort=True):
        diff = 100 * (wide.loc[k, features] - wide.loc[k, "shipped-64"])
        rows.append({"k per class": k, "features": features, "draws": len(group),
                     "macro F1 %": mean_sd(group["macro_f1"]),
                     "accuracy %": mean_sd(group["accuracy"]),
                     "vs shipped-64, points [lowest, highest draw]":
                         "–" if features == "shipped-64" else
                         f"{diff.mean():+.1f} [{diff.min():+.1f}, {diff.max():+.1f}]"})
    return (pd.DataFrame(rows).to_markdown(index=False) + "\n\nMachine: "
            f"{table['machine'].iloc[0]}.")


def adapt_finetune_markdown(finetune_csv: Path) -> str:
    """``benchmarks/cells/adapt_finetune.py``: per scenario, scored part and k, macro F1 of
    the last-layer refit (the stage's) and of fine-tuning the top blocks, mean ± sd over the
    same draws, and their difference paired by draw (mean, [lowest, highest])."""
    if not Path(finetune_csv).is_file():
        return f"*Not run yet: `benchmarks/cells/adapt_finetune.py` writes {finetune_csv}.*"
    table = pd.read_csv(finetune_csv)

    def mean_sd(values: pd.Series) -> str:
        return f"{100 * values.mean():.1f} ± {100 * values.std():.1f}"

    rows = []
    for (model, part, k), group in table.groupby(["model", "tested on", "k"], sort=False):
        diff = 100 * (group["macro F1 fine-tuned"] - group["macro F1 last layer"])
        rows.append({"model": model, "tested on": part, "k per class": int(k),
                     "draws": len(group),
                     "macro F1 %: last layer": mean_sd(group["macro F1 last layer"]),
                     "fine-tuned": mean_sd(group["macro F1 fine-tuned"]),
                     "difference, points [lowest, highest draw]":
                         f"{diff.mean():+.1f} [{diff.min():+.1f}, {diff.max():+.1f}]",
                     "accuracy %: last layer → fine-tuned":
                         f"{100 * group['accuracy last layer'].mean():.1f} → "
                         f"{100 * group['accuracy fine-tuned'].mean():.1f}",
                     "fine-tune s": f"{group['fine-tune seconds'].median():.0f}"})
    first = table.iloc[0]
    return (pd.DataFrame(rows).to_markdown(index=False)
            + f"\n\nFine-tuned: the top {int(first['blocks'])} MobileNetV2 blocks and the head, "
              f"{int(first['epochs'])} epochs, on the k cells per class mixed with the model's "
              "own training cells; fine-tune s: the median seconds of one fit. Machine: "
              f"{first['machine']}.")


def overhead_markdown(**dirs) -> str:
    """:func:`training_overhead` as markdown, with its sums."""
    table = training_overhead(**dirs)
    if table.empty:
        return "*No training stage timed yet.*"
    return (table.to_markdown(index=False) + f"\n\nIn all: {table['outside training s'].sum()} s "
            f"outside training and {table['first epoch minus median epoch s'].sum():.0f} s of "
            f"first-epoch extra over {len(table)} training stages.")


def head_input_markdown(head_input_csv: Path) -> str:
    """The head's input, ``avg`` against ``flatten`` (``benchmarks/thesis/head_input.py``)."""
    if not Path(head_input_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/thesis/head_input.py` writes {head_input_csv}.*"
    table = pd.read_csv(head_input_csv)
    first = table.iloc[0]
    view = table.drop(columns=["image_size", "epochs", "seed", "machine"])
    return (view.to_markdown(index=False) + f"\n\nMobileNetV2 at {first['image_size']} px, "
            f"{first['epochs']} epochs, seed {first['seed']}; machine: {first['machine']}.")


@dataclass(frozen=True)
class FinetuneChoice:
    """One choice of ``benchmarks/thesis/finetune_choices.py``: the regime key it varies, its two
    values (the baseline, the study's value when the comparison was first run, runs first),
    what ``docs/experiments/thesis.md`` calls each, and the table's first column."""
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
    """One fine-tuning choice compared over training seeds (``benchmarks/thesis/finetune_choices.py``):
    per setting and split, mean ± sd over the seeds, and the paired difference (alternative -
    baseline) with its 95 % interval over source cells and seeds."""
    runs_csv, paired_csv = choice.runs_csv(folder), choice.paired_csv(folder)
    if not (runs_csv.is_file() and paired_csv.is_file()):
        return (f"*Not run yet: `.venv/bin/python benchmarks/thesis/finetune_choices.py {choice.name}` "
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
    """What the full preset costs per network (``benchmarks/thesis/network_costs.py``): the
    measured per-image times at the native size, the CPU hours they add up to, and the
    expected hours on one GPU, calibrated on the thesis's own times."""
    if not Path(costs_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/thesis/network_costs.py` writes {costs_csv}.*"
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
    """The smoke preset run through DVC on a fresh clone (``benchmarks/pipeline/smoke_run.py``): how
    far it got and in what time, and where the time went by kind of stage and by network."""
    if not (Path(stages_csv).is_file() and Path(summary_json).is_file()):
        return (f"*Not run yet: `.venv/bin/python benchmarks/pipeline/smoke_run.py` writes {stages_csv} "
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
    (``benchmarks/thesis/smoke_eager.py``): per network, the seconds to build, fit one epoch and
    predict in each mode."""
    if not Path(eager_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/thesis/smoke_eager.py` writes {eager_csv}.*"
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
    """Training throughput by batch size and compiler (``benchmarks/thesis/train_step.py``)."""
    if not Path(step_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/thesis/train_step.py` writes {step_csv}.*"
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


def bench_table(rows: list[dict]) -> str:
    """The benchmark's rows (``what``, ``ours``, ``other``, ``result``, ``target``, ``met``)
    as the fixed-width table ``benchmarks/run.py`` prints."""
    header = ("measurement", "ours", "compared with", "result", "target", "met")
    cells = [header] + [(r["what"], r["ours"], r["other"], r["result"], r["target"],
                         "" if r["met"] is None else ("yes" if r["met"] else "NO"))
                        for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def bench_markdown(record_json: Path) -> str:
    """The benchmark's recorded full run (``make bench`` writes it): its machine, settings and
    table of ratios, as the run printed them, with its commit and date."""
    if not Path(record_json).is_file():
        return f"*Not run yet: `make bench` writes {record_json}.*"
    record = json.loads(Path(record_json).read_text())
    return (f"`make bench` at commit {record['commit']}, {record['date']}, {record['total_s']} s "
            "in all:\n\n```\n" + "\n".join(record["header"]) + "\n\n" + bench_table(record["rows"])
            + "\n```")


def _duration(hours: float) -> str:
    """``"2 h 14 min"`` or ``"9 min 59 s"``."""
    seconds = round(hours * 3600)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s"


def cuts_markdown(cuts_csv: Path, metrics_dir: Path) -> str:
    """What cheaper settings of the 4-class study cost (``benchmarks/thesis/study_cuts.py``): each
    cut's TEST / TEST_SIMPLE accuracy beside the default run's own model (its metrics file)."""
    if not Path(cuts_csv).is_file():
        return f"*Not run yet: `.venv/bin/python benchmarks/thesis/study_cuts.py` writes {cuts_csv}.*"
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
    """``python -m leuko.reporting.results_docs`` (``make results``): refresh the results table of
    ``docs/results.md``, the cell classifier's leave-one-source-out table, the stage times and
    every other block of :data:`RESULT_DOCUMENTS` from the run's files."""
    models = listed_models()
    changed = update_documents(RESULT_DOCUMENTS, readme_results_table(Path("reports/metrics"),
                                                                      models), {
        "cells": cells_markdown(Path("reports/cells/cross_source.csv")),
        "cells-data": cells_data_markdown(Path("build/manifests/cells.csv")),
        "unseen-lab": unseen_lab_markdown(Path("reports/cells/recall.csv")),
        "novelty": novelty_markdown(Path("reports/cells-novelty/separation.csv")),
        "adaptation": adaptation_markdown(Path("reports/adaptation")),
        "jpeg": jpeg_markdown(Path("reports/adaptation/jpeg_stability.csv")),
        "finder": finder_markdown(Path("reports/ablation/finder.csv")),
        "jpeg-causes": jpeg_causes_markdown(Path("reports/ablation/jpeg_causes.csv")),
        "adapt-finetune": adapt_finetune_markdown(Path("reports/ablation/adapt_finetune.csv")),
        "cells-ensemble": cells_ensemble_markdown(),
        "spread-seeds": seeds_markdown(),
        "spread-comparisons": comparisons_markdown(),
        "export-wbc": export_choice_markdown(Path("build/export/wbc.json")),
        "cells-seeds": cells_seeds_markdown(),
        "times": times_markdown(Path("reports/times")),
        "budget": budget_markdown(Path("reports/times"), training_overhead()),
        "cell-detail": cell_detail_markdown(),
        "cell-detail-classes": cell_detail_markdown(by="label"),
        "bench": bench_markdown(Path("reports/ablation/bench.json")),
        "train-step": train_step_markdown(Path("reports/ablation/train_step.csv")),
        "ablation": ablation_markdown(Path("reports/ablation/cells.csv")),
        "overhead": overhead_markdown(),
        "adapt-features": adapt_features_markdown(Path("reports/ablation/adapt_features.csv")),
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


if __name__ == "__main__":
    raise SystemExit(main())
