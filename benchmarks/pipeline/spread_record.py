"""Record a run of the ``spread`` preset (every model again with other training seeds, the
ensembles, fine-tuning with stain jitter) in ``docs/spread/``, so the docs keep its spread
over seeds when the default study (one draw of every model) is what ``make study`` reruns.

    make preset-spread && make study                   # then, on the same checkout:
    .venv/bin/python benchmarks/pipeline/spread_record.py       # copies the run's tables + provenance
    .venv/bin/python benchmarks/pipeline/spread_record.py --commit acdb1a5   # the files of a commit
    make preset-default

Written: ``docs/spread/<table>.csv`` (``TABLES``: the seed summaries, the ensembles and the
paired comparisons as the compare stage wrote them) and ``docs/spread/record.json`` (the
commit, the preset, the run's first start and last end, the machines, the stages timed);
``make results`` renders ``docs/spread.md`` from them. ``--commit``: read the files from a
commit of this repository (``git show``) instead of the working tree: a run that is already
committed.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "spread"
#: The compare stage's tables that only a run with repeats fills.
TABLES = ("seed_summary", "cells_seed_summary", "cells_ensembles", "paired_comparisons")


def read_text(path: str, commit: str | None) -> str:
    """A file of the checkout, or of ``commit`` (``git show``)."""
    if commit is None:
        return (ROOT / path).read_text()
    return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


def listed(folder: str, commit: str | None) -> list[str]:
    """The files of ``folder`` in the checkout or in ``commit``."""
    if commit is None:
        return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / folder).glob("*.json"))
    out = subprocess.run(["git", "ls-tree", "--name-only", commit, f"{folder}/"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    return sorted(line for line in out.split() if line.endswith(".json"))


def provenance(commit: str | None) -> dict:
    """The run's commit, span and machines, from its stage times (``leuko.pipeline.stagetimes``)."""
    times = [json.loads(read_text(p, commit)) for p in listed("reports/times", commit)]
    if not times:
        raise SystemExit("no reports/times/*.json: run the spread preset first")
    machines = sorted({f"{t['machine']['cpu']}; {t['machine']['cores']} cores; "
                       f"{t['machine']['vector']}; TensorFlow {t['machine']['tensorflow']}"
                       for t in times})
    head = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                    check=True, capture_output=True, text=True).stdout.strip()
    repeats = sorted(t["stage"] for t in times if "-seed" in t["stage"])
    if not repeats:
        raise SystemExit("the run has no repeat stages (-seed<n>): it is not a spread run")
    return {"preset": "spread", "commit": head,
            "first_start": min(t["started"] for t in times),
            "last_end": max(t["ended"] for t in times),
            "stages": len(times), "repeat_stages": len(repeats),
            "stage_minutes": round(sum(t["seconds"] for t in times) / 60, 1),
            "machines": machines}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", help="read a committed run's files (default: the checkout)")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        frame = pd.read_csv(io.StringIO(read_text(f"reports/tables/{table}.csv", args.commit)))
        frame.to_csv(OUT / f"{table}.csv", index=False)
    record = provenance(args.commit)
    (OUT / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"recorded the spread run of {record['commit']} ({record['first_start']} to "
          f"{record['last_end']}, {record['machines']}) in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
