"""Each dvc.yaml stage depends on exactly the lib/leuko modules its code imports
(``leuko.pipeline.stagedeps``), so that ``dvc repro`` reruns what an edit can change and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leuko.pipeline import stagedeps

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = ROOT / "dvc.yaml"
#: Stages that take minutes: an edit of the CLI, the report or the HTML must rerun none.
HEAVY = ("prepare-", "features", "train", "evaluate", "export", "detect", "augment-")


def test_dvc_yaml_lib_deps_match_the_imports():
    diff = stagedeps.differences(DVC_YAML)
    assert not diff, ("dvc.yaml's lib/leuko deps differ from the imports; run "
                      "`python -m leuko.pipeline.stagedeps --write`:\n" + "\n".join(
                          f"  {name}: missing {d['missing']}, extra {d['extra']}"
                          for name, d in diff.items()))


def test_only_the_stages_that_read_images_first_depend_on_image_folders():
    # every `dvc status` walks a folder dependency once per stage that declares it; after the
    # stage that reads a folder, its manifest (a sha256 per image) stands for the images
    folders = {"${data.wbc.path}", "${leukemia.data_path}", "${cells.pbc_path}", "data/bccd",
               "build/augmented/${leukemia.dataset}"}
    readers = {"prepare-wbc", "prepare-leukemia", "augment-leukemia", "cells", "detect"}
    stages = stagedeps.dvc_stages(Path("dvc.yaml"))
    depending = {name for name, spec in stages.items() if folders & set(spec.get("deps", []))}
    assert depending == readers
    for name in ("train-leukemia", "train-leukemia-repeat"):
        assert "build/augmented/${leukemia.dataset}/manifest.csv" in stages[name]["deps"]


def test_write_deps_restores_a_dropped_dependency(tmp_path):
    for folder in ("lib", "notebooks"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    copy = tmp_path / "dvc.yaml"
    original = DVC_YAML.read_text()
    dropped = original.replace("      - lib/leuko/core/splits.py\n", "", 1)
    assert dropped != original
    copy.write_text(dropped)
    assert stagedeps.differences(copy)
    assert stagedeps.write_deps(copy)
    assert copy.read_text() == original and not stagedeps.differences(copy)


def test_every_stage_runs_some_leuko_code():
    expected = stagedeps.expected_deps(DVC_YAML)
    assert expected and all(expected.values()), [k for k, v in expected.items() if not v]


def test_an_edit_of_the_cli_reruns_no_stage():
    assert stagedeps.reruns(DVC_YAML)["lib/leuko/tool/cli.py"] == []


def test_an_edit_of_the_results_docs_writers_reruns_no_stage():
    # `make results`' README / docs blocks: no stage imports them, not even through report.py
    assert stagedeps.reruns(DVC_YAML)["lib/leuko/reporting/results_docs.py"] == []


@pytest.mark.parametrize("module", ["reporting/report.py", "reporting/render.py"])
def test_an_edit_of_the_report_reruns_nothing_heavy_of_the_wbc_study(module):
    stages = stagedeps.reruns(DVC_YAML)[f"lib/leuko/{module}"]
    heavy = [s for s in stages if s.startswith(HEAVY) and "leukemia" not in s]
    assert heavy == []


def test_an_edit_of_metrics_reruns_evaluation_not_wbc_training():
    stages = set(stagedeps.reruns(DVC_YAML)["lib/leuko/core/metrics.py"])
    assert "evaluate-wbc" in stages
    assert not stages & {"prepare-wbc", "features", "train", "train-pooled"}


def test_an_edit_of_report_reruns_no_leukemia_stage():
    table = stagedeps.reruns(DVC_YAML)
    assert not {"augment-leukemia", "train-leukemia"} & set(table["lib/leuko/reporting/report.py"])


def test_an_edit_of_metrics_reruns_no_leukemia_training():
    table = stagedeps.reruns(DVC_YAML)
    assert "train-leukemia" not in table["lib/leuko/core/metrics.py"]


# --- the parts ---------------------------------------------------------------------------------


@pytest.fixture()
def package(tmp_path) -> Path:
    pkg = tmp_path / "lib" / "leuko"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\n\ndef f():\n    from leuko.b import g\n    return g\n")
    (pkg / "b.py").write_text("from . import c\n\ndef g():\n    return c\n")
    (pkg / "c.py").write_text("import numpy\n")
    (pkg / "d.py").write_text("from leuko import a\n")
    (pkg / "templates").mkdir()
    return tmp_path


def test_imports_inside_functions_and_relative_imports_count(package):
    pkg = package / "lib" / "leuko"
    assert stagedeps.closure(["leuko.a"], pkg) == {"leuko", "leuko.a", "leuko.b", "leuko.c"}
    assert stagedeps.closure(["leuko.d"], pkg) == {"leuko", "leuko.a", "leuko.b", "leuko.c",
                                                   "leuko.d"}
    assert stagedeps.closure(["leuko.c"], pkg) == {"leuko", "leuko.c"}


def test_a_notebook_is_read_from_its_code_cells_magics_dropped(package):
    nb = package / "notebooks" / "x.ipynb"
    nb.parent.mkdir()
    nb.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["from leuko import d\n"]},
        {"cell_type": "code", "source": ["%matplotlib inline\n", "!ls\n", "from leuko import c"]},
    ]}))
    modules = stagedeps.stage_modules("papermill -k leuko notebooks/x.ipynb out.ipynb", package)
    assert modules == {"leuko", "leuko.c"}
    assert stagedeps.module_deps(modules, package) == ["lib/leuko/__init__.py", "lib/leuko/c.py"]


def test_entry_points_of_commands():
    notebooks, modules = stagedeps.entry_points(
        "python -m leuko.pipeline.stagetimes train@x -- papermill -k leuko --no-progress-bar "
        "notebooks/03-train.ipynb reports/notebooks/train-x.ipynb -p a 1")
    assert notebooks == ["notebooks/03-train.ipynb"]
    assert modules == ["leuko.pipeline.stagetimes"]  # "-k leuko" is a kernel, not the console script
    assert stagedeps.entry_points("leuko export --task wbc")[1] == ["leuko.tool.cli"]
    assert stagedeps.entry_points("python -m leuko.reporting.render reports && leuko classify x")[1] == [
        "leuko.reporting.render", "leuko.tool.cli"]


def test_package_data_comes_with_its_module():
    deps = stagedeps.module_deps({"leuko", "leuko.reporting.render"}, ROOT)
    assert "lib/leuko/reporting/templates" in deps and "lib/leuko/reporting/render.py" in deps


def test_check_prints_the_differences_and_fails(tmp_path, capsys):
    text = DVC_YAML.read_text().replace("      - lib/leuko/models/train.py\n", "", 1)
    (tmp_path / "dvc.yaml").write_text(text)
    (tmp_path / "lib").symlink_to(ROOT / "lib")
    (tmp_path / "notebooks").symlink_to(ROOT / "notebooks")
    assert stagedeps.main([str(tmp_path / "dvc.yaml"), "--check"]) == 1
    assert "missing ['lib/leuko/models/train.py']" in capsys.readouterr().out
