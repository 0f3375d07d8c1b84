"""A change the study adopted, measured over its training seeds: the cell models of the last
``dvc repro`` against a snapshot of them taken before the change.

    .venv/bin/python benchmarks/cells/cells_study_change.py snapshot margin   # before: copy
    ... change params/cells.yaml or the code, dvc repro ...
    .venv/bin/python benchmarks/cells/cells_study_change.py compare margin    # after: the table

``snapshot NAME`` copies what the comparison reads of every cell model (``cells.trainings``,
their repeats and ensembles: metrics and predictions) and the cells manifest into
``build/choices/before-NAME/``, laid out as the study's own folders
(``study.Paths(root)``), with the commit it was taken at. ``compare NAME`` sets the study's
models now beside them (``results_docs.cells_choice_seeds_table``: one run's mean ± sd of each
side, the paired difference over source cells and seeds, the two ensembles) and writes the
CSV of the block ``cells-NAME`` (``leuko.reporting.results_docs.CELL_VARIANTS``), which
``make results`` copies into docs/experiments/cells.md.

Unlike ``benchmarks/cells/cells_choices.py``, which trains a variant beside the study, this measures
a change by the study's own runs (the whole ``dvc repro`` is the variant): the way to compare a
change to the preprocessing, which prepares every cell again, at all the study's seeds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cell_variants import write_table

ROOT = Path(__file__).resolve().parents[2]


def cell_model_ids() -> list[str]:
    """Every run and ensemble of the study's cell models (``params/cells.yaml``)."""
    from leuko.cells import multisource
    config = multisource.CellStudy.from_params()
    ensembles = [multisource.ensemble_model_id(t) for t in config.ensembles]
    return [m for t in config.trainings for m in config.run_ids(t)] + ensembles


def snapshot(root: Path) -> list[Path]:
    """Copy the study's cell models' metrics and predictions and the cells manifest under
    ``root``; FileNotFoundError names what the study has not produced."""
    from leuko.thesis import study
    here, there = study.Paths(ROOT), study.Paths(root)
    files = [(here.manifest("cells"), there.manifest("cells"))]
    for the_id in cell_model_ids():
        files += [(get(here, the_id), get(there, the_id))
                  for get in (study.Paths.metrics, study.Paths.predictions)]
    missing = [str(src) for src, _ in files if not src.is_file()]
    if missing:
        raise FileNotFoundError(f"run dvc repro first; missing: {', '.join(missing)}")
    for src, dst in files:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True, check=True).stdout.strip()
    (root / "COMMIT").write_text(commit + "\n")
    return [dst for _, dst in files]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("snapshot", "compare"))
    parser.add_argument("name", help="the change: snapshot in build/choices/before-NAME/, "
                                     "block cells-NAME of docs/experiments/cells.md")
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args(argv)

    os.chdir(ROOT)  # the study's params and relative paths
    from leuko.core.machine import machine_line
    from leuko.core.params import read_block
    from leuko.reporting.results_docs import cell_variant, cells_choice_seeds_table
    from leuko.thesis import study

    root = ROOT / "build" / "choices" / f"before-{args.name}"
    if args.action == "snapshot":
        written = snapshot(root)
        print(f"{len(written)} files of the study's cell models copied to {root}")
        return 0
    choice = cell_variant(f"cells-{args.name}")  # fails early on a name with no block
    if not (root / "COMMIT").is_file():
        raise SystemExit(f"no snapshot {root}: take one before the change "
                         f"(cells_study_change.py snapshot {args.name})")
    seed = int(read_block("data")["seed"])
    table = cells_choice_seeds_table(cell_model_ids(), study.Paths(root), study.Paths(ROOT),
                                     n_boot=args.n_boot, seed=seed)
    table["snapshot commit"] = (root / "COMMIT").read_text().strip()
    table["machine"] = machine_line()
    write_table(table.to_dict(orient="records"), ROOT / choice.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
