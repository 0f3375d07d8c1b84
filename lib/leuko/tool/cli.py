"""``leuko``: the command line of the study's classifier.

``leuko classify PATH... [--smear] [--model M] [--output CSV] [--batch-size N] [--json]``
    Classify cell images (or, with ``--smear``, whole smears) in files and folders (recursive;
    JPEG, PNG, BMP, TIFF), write one CSV row per cell with the predicted class and the
    probability of every class, and print the differential count (cells and % per class).
    Without ``--model``: ``$LEUKO_MODEL``, else ``build/export/wbc.keras`` under the current
    folder, else under the checkout the package is installed from (so it runs from any folder).
    Each row also carries the cell's distance to the model's training cells and whether it is
    far (``leuko.cells.novelty``, from ``<model stem>-novelty.npz`` beside the model); when more
    than that file's ``folder_share`` of the cells are far, one warning suggests ``leuko
    adapt``; without the file, one line says the distance is not available. A cell whose
    nucleus was not found is uncertain. With ``--smear`` the detector is
    ``params/detect.yaml``'s.
``leuko export --task {wbc,leukemia} [--rule val_macro_f1|val_macro_f1_shifted|saved_val_accuracy]``
    Choose the study's model for a task and export it with its metadata to build/export/
    (without ``--rule``: the study's, ``params/export.yaml``'s ``export.rule``).
``leuko score CSV [--labels LABELS.csv] [--skip-unknown] [--json]``
    Score classify's per-cell CSV against your labels (a CSV of path,label or each image's
    folder name): accuracy and macro F1 with 95 % intervals, per class, the cells kept by the
    abstention rule, the differential against the true one, the confusion matrix.
``leuko adapt PATH... -o OUT.keras [--model M] [--labels LABELS.csv] [--seed N] [--finetune BLOCKS] [--json]``
    Adapt the model to your lab: retrain its last layer on cells you labelled (folder names
    or a CSV of path,label, as ``leuko score`` reads them), mixed with the study's training
    cells when its cell cache is there; recalibrate its temperature and abstention threshold
    (and refit the base model's novelty file with your cells: ``OUT-novelty.npz``);
    print the accuracy and macro F1 to expect before and after (cross-validated over your
    cells) and write OUT.keras with its metadata JSON, for ``leuko classify --model``.

Exit codes (every subcommand):
    0  everything worked;
    1  usage error: bad option, model or metadata missing, nothing to classify;
    2  some input files could not be read: they are listed with their reasons (on stderr, in
       ``<output>-failed.csv`` and under ``"failed"`` with ``--json``); all others were
       classified and written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from leuko.cells.detect import DetectConfig
from leuko.core.params import PARAMS_DIR, read_block
from leuko.tool.locate import package_checkout

# Each command imports the modules it runs when it runs: `leuko --help` and `leuko score`
# load no TensorFlow (importing leuko.tool.classify takes 4.6 s, AMD EPYC).

EXIT_OK, EXIT_USAGE, EXIT_SOME_FAILED = 0, 1, 2
DEFAULT_MODEL = Path("build/export/wbc.keras")
#: An exported model to use when ``--model`` is not given (before the folders below).
MODEL_ENV = "LEUKO_MODEL"


def model_candidates(cwd: Path | None = None, checkout: Path | None = None,
                     environ=None) -> list[tuple[Path, str]]:
    """Where ``leuko classify`` looks for a model when ``--model`` is not given, in order:
    ``$LEUKO_MODEL``, ``build/export/wbc.keras`` under the current folder, and under the
    checkout the package is installed from; each with the reason it is looked at."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    checkout = package_checkout() if checkout is None else checkout
    found: list[tuple[Path, str]] = []
    if environ.get(MODEL_ENV):
        found.append((Path(environ[MODEL_ENV]).expanduser(), f"${MODEL_ENV}"))
    found.append((cwd / DEFAULT_MODEL, "the current folder"))
    if checkout is not None and (checkout / DEFAULT_MODEL).resolve() != (
            cwd / DEFAULT_MODEL).resolve():
        found.append((checkout / DEFAULT_MODEL, "the checkout leuko is installed from"))
    return found


def find_model(cwd: Path | None = None, checkout: Path | None = None,
               environ=None) -> Path:
    """The model ``leuko classify`` uses without ``--model``: the first of
    :func:`model_candidates` that exists, except that a set ``$LEUKO_MODEL`` is used (or
    refused) alone. Raises FileNotFoundError saying every place it looked."""
    candidates = model_candidates(cwd, checkout, environ)
    if candidates[0][1] == f"${MODEL_ENV}":
        path = candidates[0][0]
        if path.is_file():
            return path
        raise FileNotFoundError(f"model not found: {path} (named by ${MODEL_ENV}); set it "
                                "to an exported .keras file, or pass --model PATH")
    for path, _ in candidates:
        if path.is_file():
            return path
    looked = "; ".join(f"{path} ({why})" for path, why in candidates)
    raise FileNotFoundError(
        f"no model given and none found. Looked in: {looked}; ${MODEL_ENV} is not set. Export "
        "the study's model (`make study`, or `leuko export --task wbc` in the checkout), then "
        f"pass --model PATH or set {MODEL_ENV}=PATH.")


def study_params(name: str, checkout: Path | None = None) -> dict:
    """Block ``name`` of ``params/<name>.yaml`` in the study's checkout (default: the one
    leuko is installed from): the one place the study's values live, read by the commands
    that run without a parameters file (``leuko export``'s rule, ``leuko classify
    --smear``'s detector), so they cannot drift from the study's. FileNotFoundError when
    there is no checkout."""
    checkout = package_checkout() if checkout is None else checkout
    if checkout is None:
        raise FileNotFoundError(
            f"{PARAMS_DIR / f'{name}.yaml'} of the study is needed and leuko is not installed "
            "from a checkout of it (no dvc.yaml above lib/leuko): install it from the "
            "checkout (make env)")
    return read_block(name, path=checkout / PARAMS_DIR / f"{name}.yaml")


def default_rule(checkout: Path | None = None) -> str:
    """``leuko export``'s rule without ``--rule``: the study's, ``export.rule``."""
    return str(study_params("export", checkout)["rule"])


def detect_config(cell_size: float | None = None, checkout: Path | None = None
                  ) -> DetectConfig:
    """``leuko classify --smear``'s detector: the study's (``params/detect.yaml``), with
    ``--cell-size`` when given."""
    config = DetectConfig.from_params(study_params("detect", checkout))
    return dataclasses.replace(config, cell_size=cell_size) if cell_size else config


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; here 2 means "some files failed", so use 1."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


#: The exit codes of ``leuko`` and ``leuko classify`` (the module doc gives them in full).
EXIT_CODES = ("Exit codes: 0 all good, 1 usage error, 2 some files could not be read (listed "
              "with reasons; the others were classified).")


def build_parser() -> argparse.ArgumentParser:
    """The ``leuko`` argument parser with its subcommands."""
    parser = _Parser(prog="leuko", description="The command line of the leukocyte study's "
                                               "classifier: classify new images, score them against "
                                               "your labels, export models.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=EXIT_CODES)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("classify", help="classify cell images or whole smears",
                       description="Classify white-blood-cell images (or whole smears with "
                                   "--smear) and print the differential count.",
                       epilog=EXIT_CODES)
    c.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files and/or folders (searched recursively for .jpg .jpeg "
                        ".png .bmp .tif .tiff)")
    c.add_argument("--model", type=Path, default=None,
                   help=f"exported model; its metadata JSON must lie beside it (default: "
                        f"${MODEL_ENV} if set, else {DEFAULT_MODEL} under the current folder, "
                        f"else under the checkout leuko is installed from)")
    c.add_argument("--output", "-o", type=Path, default=Path("leuko-classify.csv"),
                   help="CSV to write, one row per cell (default: leuko-classify.csv); with "
                        "--smear also <stem>-smears.csv and the folder <stem>-annotated/")
    c.add_argument("--batch-size", type=_positive_int, default=64,
                   help="images per model call (default: 64)")
    c.add_argument("--smear", action="store_true",
                   help="inputs are whole smears: find the white cells, classify each, and "
                        "write an annotated PNG per smear")
    c.add_argument("--cell-size", type=_positive_float, default=None,
                   help="with --smear: a white cell's width in pixels in your smears "
                        "(default: params/detect.yaml's cell_size, right for BCCD's 640x480 "
                        "smears)")
    c.add_argument("--json", action="store_true",
                   help="print a JSON summary on stdout instead of the table")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--workers", type=_positive_int, default=2,
                   help="threads decoding images (default: 2)")

    scoring = sub.add_parser(
        "score", help="score classify's CSV against your own labels",
        description="Score `leuko classify`'s per-cell CSV against your labels: accuracy and "
                    "macro F1 with 95 % intervals, per class, the cells the abstention rule "
                    "kept, the differential count against the true one and the confusion "
                    "matrix.")
    scoring.add_argument("predictions", type=Path, metavar="CSV",
                         help="the per-cell CSV of `leuko classify` (single cells, not --smear)")
    scoring.add_argument("--labels", type=Path, default=None,
                         help="CSV with columns path,label (a path as classify wrote it, or a "
                              "unique file name); default: each image's folder name")
    scoring.add_argument("--skip-unknown", action="store_true",
                         help="leave out (and count) cells whose label names none of the "
                              "model's classes, instead of stopping")
    scoring.add_argument("--n-boot", type=_positive_int, default=2000,
                         help="bootstrap resamples of the intervals (default: 2000)")
    scoring.add_argument("--json", action="store_true", help="print the score as JSON")

    a = sub.add_parser(
        "adapt", help="adapt the model to your lab from cells you labelled",
        description="Retrain the model's last layer on cells your lab labelled (any number "
                    "per class; a class without cells keeps the model's behaviour), "
                    "recalibrate its confidence, report the accuracy and macro F1 to expect "
                    "before and after (stratified cross-validation over your cells), and "
                    "write the adapted model for `leuko classify --model`.",
        epilog="Exit codes: 0 all good, 1 usage error (e.g. a label that names no class), "
               "2 some files could not be read (listed with reasons; the others were used).")
    a.add_argument("paths", nargs="+", metavar="PATH",
                   help="labelled cell images: folders named after their class "
                        "(neutrophil/, lymphocytes/, ...), or any files with --labels")
    a.add_argument("--output", "-o", type=Path, required=True,
                   help="the adapted model to write (.keras; its .json beside it)")
    a.add_argument("--model", type=Path, default=None,
                   help="the model to adapt (default: as `leuko classify` finds it)")
    a.add_argument("--labels", type=Path, default=None,
                   help="CSV with columns path,label (default: each image's folder name)")
    a.add_argument("--seed", type=int, default=0,
                   help="seed of the source-cell sample and the cross-validation folds")
    a.add_argument("--source-per-class", type=int, default=50,
                   help="training cells per class mixed in from the study's cell cache "
                        "(default: 50; 0: the lab's cells only)")
    a.add_argument("--n-boot", type=_positive_int, default=2000,
                   help="bootstrap resamples of the intervals (default: 2000)")
    a.add_argument("--finetune", type=_positive_int, default=None, metavar="BLOCKS",
                   help="fine-tune the network's top BLOCKS blocks and its head instead of "
                        "the last layer (slower: one fine-tuning per fold; for a lab whose "
                        "cells the model's features do not separate; needs the study's cell "
                        "cache)")
    a.add_argument("--json", action="store_true", help="print a JSON summary")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.add_argument("--workers", type=_positive_int, default=2,
                   help="threads decoding images (default: 2)")

    e = sub.add_parser("export", help="choose and export the study's model for a task",
                       description="Choose the study's model for a task by a validation "
                                   "figure and copy it with its metadata to build/export/.")
    e.add_argument("--task", required=True,
                   help="wbc (the two-source cell classifier: 5 white cells + 3 other cell "
                        "types), wbc4 (the thesis's 4-class models) or leukemia (ALL vs HEM)")
    e.add_argument("--rule", default=None,
                   help="val_macro_f1_shifted (validation macro F1 averaged over simulated "
                        "other-lab stains), val_macro_f1 (as imaged) or saved_val_accuracy "
                        "(the saved weights' validation accuracy, from the training summary); "
                        "default: the study's, export.rule of params/export.yaml")
    e.add_argument("--models", nargs="*", default=None, metavar="MODEL_ID",
                   help="candidate model ids (default: every trained model of the task)")
    e.add_argument("--out-dir", type=Path, default=Path("build/export"))
    e.add_argument("--json", action="store_true", help="print the metadata as JSON")
    return parser


def _print_failures(failures, failed_output) -> None:
    """The files that could not be read, on stderr, and where they are listed."""
    if not failures:
        return
    print(file=sys.stderr)
    print(f"{len(failures)} file(s) could not be read and were skipped:", file=sys.stderr)
    for failure in failures:
        print(f"  {failure.path}: {failure.reason}", file=sys.stderr)
    print(f"(also listed in {failed_output}; exit code 2)", file=sys.stderr)


def novelty_lines(summary, sources) -> list[str]:
    """What ``leuko classify`` says once about the distance to the training cells: the
    warning when more than the novelty file's ``folder_share`` of the cells are far, or that
    the distance is not available; nothing when the cells are like the training sources."""
    if summary.novelty_file is None:
        return [f"Distance to the training cells: not available ({summary.novelty_note})."]
    if not summary.unlike_sources:
        return []
    return [f"Warning: {summary.far} of {summary.cells} cells "
            f"({100 * summary.far / summary.cells:.0f} %) lie far from the cells the model "
            f"was trained on ({', '.join(sources) or 'its training sources'}); more than "
            f"{100 * summary.folder_share:.0f} % far means these cells are unlike them, and "
            "the classes and confidences above may not hold. Label some of your cells and "
            "adapt the model to them: `leuko adapt` (column far of the CSV names the cells)."]


def cmd_classify(args) -> int:
    """``leuko classify``: run, write the CSVs, print the differential count."""
    from leuko.tool import classify
    if args.cell_size is not None and not args.smear:
        print("leuko classify: error: --cell-size only applies with --smear", file=sys.stderr)
        return EXIT_USAGE
    if not any(True for _ in classify.iter_image_files(args.paths)):
        print("leuko classify: error: no image files found in: " + ", ".join(args.paths),
              file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.model is None:
            args.model = find_model()
        classifier = classify.load_classifier(args.model)
        smear_config = detect_config(args.cell_size) if args.smear else None
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"leuko classify: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    summary = classify.run(args.paths, args.model, args.output, batch_size=args.batch_size,
                           smear=args.smear, detect_config=smear_config,
                           progress=not args.no_progress, workers=args.workers,
                           classifier=classifier)
    said = novelty_lines(summary, classifier.metadata.get("sources") or [])
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        for line in said:
            print(line, file=sys.stderr)
        return summary.exit_code
    unit = "smear" if args.smear else "image"
    rate = ""
    if summary.seconds:
        rate = f" ({summary.cells / summary.seconds:.1f} cells/s)"
        if args.smear:
            rate = f" ({summary.files / summary.seconds:.1f} smears/s,{rate[2:]}"
    print(f"Classified {summary.classified_files} of {summary.files} {unit}(s) with "
          f"{args.model} in {summary.seconds:.1f} s{rate}")
    if args.smear:
        print(f"White cells found: {summary.cells}")
        if summary.smears_without_cells:
            print(f"{len(summary.smears_without_cells)} smear(s) without a white cell found "
                  "(see their annotated images)")
    print()
    counted = sum(r["cells"] for r in summary.differential())
    print(classify.format_differential(summary.differential(),
                                       f"Differential count ({counted} white cells):"))
    others = summary.other_cells()
    if others:
        print("Other cells (not in the differential): "
              + ", ".join(f"{c} {n}" for c, n in others.items()))
    if classifier.abstain_threshold > 0 or summary.uncertain:
        why = [f"calibrated confidence < {classifier.abstain_threshold:.2f}"] * (
            classifier.abstain_threshold > 0) + ["no nucleus found"] * (
            summary.cells_not_found > 0)
        print(f"Uncertain (left out of the count): {summary.uncertain} of {summary.cells} "
              f"cells ({' or '.join(why)})")
    if summary.cells_not_found:
        print(f"No nucleus found in {summary.cells_not_found} image(s): classified on the "
              "whole image and counted as uncertain (column cell_found = false)")
    for line in said:
        print(line)
    print()
    print(f"Per-cell results: {summary.output}")
    if summary.smear_output:
        print(f"Per-smear counts: {summary.smear_output}")
        print(f"Annotated smears: {summary.annotated_dir}{os.sep}")
    if summary.ignored_files:
        print(f"Ignored {summary.ignored_files} file(s) in the folders without an image "
              "suffix.")
    _print_failures(summary.failures, summary.failed_output)
    return summary.exit_code


def cmd_export(args) -> int:
    """``leuko export``: choose the model of a task and export it with metadata."""
    from leuko.tool import export
    try:
        rule = args.rule or default_rule()
        metadata = export.export_task(args.task, rule=rule, model_ids=args.models,
                                      out_dir=args.out_dir)
    except (ValueError, FileNotFoundError) as error:
        where = ""
        checkout = package_checkout()
        if not Path("dvc.yaml").is_file():
            where = (" (leuko export reads the study's files under the current folder, which "
                     "is not a checkout of the study" + (f"; run it in {checkout}" if checkout
                                                        else "") + ")")
        print(f"leuko export: error: {error}{where}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(metadata, indent=2))
    else:
        choice = metadata["choice"]
        print(f"Exported {metadata['model_id']} as {metadata['model_file']} "
              f"(rule {choice['rule_used']}: {choice['score']:.4f})")
        if choice.get("note"):
            print(f"Note: {choice['note']}")
    return EXIT_OK


def cmd_score(args) -> int:
    """``leuko score``: classify's CSV against the user's labels."""
    from leuko.core import score
    from leuko.core.datasets import DIFFERENTIAL_CLASSES

    try:
        predictions, classes = score.read_predictions(args.predictions)
        label_text = score.labels_for(predictions, args.labels)
        result = score.score(predictions, classes, label_text,
                             [c for c in DIFFERENTIAL_CLASSES if c in classes],
                             n_boot=args.n_boot, skip_unknown=args.skip_unknown)
    except (FileNotFoundError, ValueError) as error:
        print(f"leuko score: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(score.format_score(result))
    return EXIT_OK


def cmd_adapt(args) -> int:
    """``leuko adapt``: the model's last layer retrained on the lab's labelled cells."""
    from leuko.tool import adapt
    try:
        if args.model is None:
            args.model = find_model()
        result = adapt.adapt(args.paths, args.model, args.output, labels_csv=args.labels,
                             seed=args.seed, source_per_class=args.source_per_class,
                             n_boot=args.n_boot, workers=args.workers,
                             progress=not args.no_progress, finetune_blocks=args.finetune or 0)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"leuko adapt: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(adapt.format_adapted(result))
        if result.unlabelled:
            print(f"{len(result.unlabelled)} image(s) without a label in {args.labels}: not "
                  "used (first: " + ", ".join(result.unlabelled[:3]) + ")")
        if result.ignored_files:
            print(f"Ignored {result.ignored_files} file(s) in the folders without an image "
                  "suffix.")
    _print_failures(result.failures, result.failed_output)
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``leuko`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    commands = {"classify": cmd_classify, "score": cmd_score, "export": cmd_export,
                "adapt": cmd_adapt}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
