"""``python -m leuko.tool.export_stage --task wbc --rule R --out-dir build/export``: the export
stage of ``dvc.yaml``.

The same as ``leuko export`` (``export.export_task``), run without the ``leuko`` CLI so that the
stage depends on ``leuko.tool.export`` and what it imports only (``leuko.pipeline.stagedeps``): an edit of
``cli.py`` or of the classifier's smear code does not re-export the models and rerun what
follows. For other options (``--models``, ``--json``) use ``leuko export``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from leuko.tool import export


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m leuko.tool.export_stage",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(export.TASKS))
    parser.add_argument("--rule", required=True, choices=export.RULES,
                        help="the choice rule: params/export.yaml's export.rule, passed by "
                             "dvc.yaml")
    parser.add_argument("--out-dir", type=Path, default=Path("build/export"))
    args = parser.parse_args(argv)
    metadata = export.export_task(args.task, rule=args.rule, out_dir=args.out_dir)
    choice = metadata["choice"]
    print(f"Exported {metadata['model_id']} as {metadata['model_file']} "
          f"(rule {choice['rule_used']}: {choice['score']:.4f})")
    if choice.get("note"):
        print(f"Note: {choice['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
