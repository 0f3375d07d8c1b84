"""Project hygiene that users rely on: stripped notebooks with a parameters cell and the
`leuko` kernel, presets that switch the study, and a docs/results.md whose results match the
metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leuko.pipeline import presets
from leuko.reporting import report, results_docs

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")),
                         ids=lambda p: p.name)
def test_notebooks_are_stripped_and_parameterized(notebook):
    nb = json.loads(notebook.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "leuko"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in code) == 1


def test_every_parameter_a_stage_passes_is_declared_by_its_notebook():
    """papermill passes an undeclared parameter on with only a warning, and a parameters cell
    it cannot parse (e.g. a second ``=`` in a comment) hides the name: each ``-p`` / ``-y``
    of dvc.yaml's papermill commands, and each top-level key of a ``-f`` file, must be a
    parameter papermill finds in the stage's notebook."""
    import re

    import papermill
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    checked = 0
    for name, stage in stages.items():
        cmd = stage.get("do", stage).get("cmd", "")
        notebook = re.search(r"papermill .*?(notebooks/\S+\.ipynb)", cmd)
        if not notebook:
            continue
        declared = set(papermill.inspect_notebook(str(ROOT / notebook.group(1))))
        passed = set(re.findall(r"-p (\w+) ", cmd)) | set(re.findall(r'-y "(\w+):', cmd))
        for file in re.findall(r"-f (params/\S+\.yaml)", cmd):
            if "${" not in file:
                passed |= set(yaml.safe_load((ROOT / file).read_text()))
        assert passed <= declared, f"{name}: {sorted(passed - declared)} not declared by " \
                                   f"{notebook.group(1)}"
        checked += 1
    assert checked >= 15


def _pipeline_copy(tmp_path: Path) -> Path:
    """dvc.yaml and params/ in a DVC repository of their own (a preset switched there leaves
    the checkout's params/ as they are)."""
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    shutil.copytree(ROOT / "params", work / "params")
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=work, check=True)
    return work


def _stage_names(work: Path) -> list[str]:
    """The stages ``dvc.yaml`` expands to with the parameters of ``work/params``."""
    return subprocess.run([DVC, "stage", "list", "--name-only"], cwd=work, check=True,
                          capture_output=True, text=True).stdout.split()


def test_full_preset_lists_all_thesis_trainings_and_default_restores(tmp_path):
    work = _pipeline_copy(tmp_path)

    def train_stages() -> list[str]:
        return [s for s in _stage_names(work) if s.startswith(("train@", "train-pooled@"))]

    default = train_stages()
    presets.apply_preset("full", work / "params", work / "params" / "presets")
    full = train_stages()
    thesis = ["vgg16", "vgg19", "inception_v3", "xception", "densenet121", "densenet169",
              "densenet201", "resnet50"]
    for network in thesis:
        for regime in ("imagenet", "imagenet-finetune", "scratch"):
            assert f"train@blood-cell-images-{network}-{regime}" in full
            assert f"train-pooled@blood-cell-images-pooled-{network}-{regime}" in full
    presets.apply_preset("default", work / "params", work / "params" / "presets")
    assert train_stages() == default
    for relative in presets.preset_files("default", ROOT / "params" / "presets"):
        assert (work / "params" / relative).read_text() == (ROOT / "params" / relative
                                                             ).read_text()


def test_every_preset_sets_the_same_files_so_any_switch_is_complete():
    """A file set by one preset and not another would keep the last preset's values."""
    folder = ROOT / "params" / "presets"
    files = {name: presets.preset_files(name, folder) for name in presets.available(folder)}
    assert {"default", "spread", "full", "smoke"} <= set(files)
    assert len({tuple(f) for f in files.values()}) == 1, files


def test_smoke_preset_has_the_full_structure_and_default_comes_back_byte_identical(tmp_path):
    """The smoke preset runs every network and regime of the full preset on the pooled split
    too, with random weights named, at each network's minimum size; switching back to the
    default restores params/ byte for byte (as committed)."""
    import yaml

    work = tmp_path / "repo"
    committed = subprocess.run(["git", "ls-files", "params"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.split()
    before = {}
    for name in committed:  # params/ as git HEAD has it (the working tree may hold a preset)
        before[Path(name)] = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=ROOT,
                                            check=True, capture_output=True).stdout
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(before[Path(name)])
    presets.apply_preset("smoke", work / "params", work / "params" / "presets")
    smoke = yaml.safe_load((work / "params" / "wbc.yaml").read_text())["wbc"]
    full = yaml.safe_load((ROOT / "params" / "presets" / "full" / "wbc.yaml").read_text())["wbc"]
    assert smoke["networks"] == full["networks"] and smoke["regimes"] == full["regimes"]
    assert smoke["pooled_regimes"] and set(smoke["pooled_regimes"]) <= set(full["regimes"])
    assert (smoke["weights"], smoke["image_size"], smoke["bottleneck"]) == (
        "random", "minimum", full["bottleneck"])
    assert presets.missing_weights(work / "params" / "wbc.yaml") == []
    for regime in smoke["regimes"]:
        values = yaml.safe_load((work / "params" / "regimes" / f"{regime}.yaml").read_text())
        assert 1 <= values["training"]["epochs"] <= 2
    presets.apply_preset("default", work / "params", work / "params" / "presets")
    after = {p.relative_to(work): p.read_bytes() for p in (work / "params").rglob("*")
             if p.is_file()}
    assert after == before


def test_spread_preset_is_the_default_plus_seeds_ensembles_and_stain_jitter(tmp_path):
    """The default study is one draw of every model; ``spread`` adds only stages of its own
    (repeats, ensembles, fine-tuning with stain jitter) and changes no other value, so
    switching to it reruns none of the default's trainings."""
    import yaml

    folder = ROOT / "params" / "presets"
    default = {f: yaml.safe_load((folder / "default" / f).read_text())
               for f in presets.preset_files("default", folder)}
    spread = {f: yaml.safe_load((folder / "spread" / f).read_text())
              for f in presets.preset_files("spread", folder)}
    for name in ("wbc", "cells", "leukemia"):
        assert default[Path(f"{name}.yaml")][name]["repeats"]["seeds"] == []
        assert spread[Path(f"{name}.yaml")][name]["repeats"]["seeds"] == [1, 2]
    assert default[Path("cells.yaml")]["cells"]["ensembles"] == []
    wbc_d, wbc_s = default[Path("wbc.yaml")]["wbc"], spread[Path("wbc.yaml")]["wbc"]
    assert "imagenet-finetune-stain" not in wbc_d["regimes"]
    assert wbc_s["regimes"] == [*wbc_d["regimes"][:3], "imagenet-finetune-stain",
                                *wbc_d["regimes"][3:]]
    spread_keys = {("wbc", "regimes"), ("wbc", "repeats"), ("cells", "repeats"),
                   ("cells", "ensembles"), ("leukemia", "repeats")}
    for relative, values in default.items():
        for block, settings in values.items():
            for key, value in settings.items():
                if (block, key) not in spread_keys:
                    assert spread[relative][block][key] == value, (relative, key)

    work = _pipeline_copy(tmp_path)

    def stages() -> set[str]:
        return set(_stage_names(work))

    presets.apply_preset("default", work / "params", work / "params" / "presets")
    lean = stages()
    presets.apply_preset("spread", work / "params", work / "params" / "presets")
    assert lean < stages()
    own = {s for s in stages() - lean if not any(k in s for k in ("repeat", "ensemble"))}
    assert own == {
        "train@blood-cell-images-mobilenet_v2-imagenet-finetune-stain"}


def test_a_preset_switch_drops_the_stages_it_does_not_have_from_dvc_lock(tmp_path):
    """DVC keeps a removed stage's entry in dvc.lock (treeverse/dvc#5293); the switch drops
    the entries of stages the pipeline no longer has and leaves the others as DVC wrote them."""
    import yaml

    work = _pipeline_copy(tmp_path)
    presets.apply_preset("spread", work / "params", work / "params" / "presets")
    spread = _stage_names(work)
    presets.apply_preset("default", work / "params", work / "params" / "presets")
    default = _stage_names(work)
    extra = sorted(set(spread) - set(default))
    assert extra, "the spread preset adds stages"
    entry = {"cmd": "python -c pass", "deps": [{"path": "params/cells.yaml", "hash": "md5",
                                                "md5": "0" * 32, "size": 1}]}
    lock = {"schema": "2.0", "stages": {name: entry for name in [*default[:3], *extra]}}
    (work / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))

    assert presets.prune_lock(work) == extra
    kept = yaml.safe_load((work / "dvc.lock").read_text())
    assert kept == {"schema": "2.0", "stages": {name: entry for name in default[:3]}}
    assert presets.prune_lock(work) == []


def test_a_stage_dropped_from_dvc_lock_comes_back_from_the_run_cache_unrun(tmp_path):
    """What the README promises of a switch back: a stage whose entry :func:`prune_lock`
    dropped is not run again when its inputs are unchanged (DVC's run-cache restores it)."""
    work = tmp_path / "repo"
    work.mkdir()
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=work, check=True)
    (work / "in.txt").write_text("x\n")
    (work / "dvc.yaml").write_text(
        "stages:\n  make:\n    foreach: ${items}\n    do:\n"
        f"      cmd: {sys.executable} -c \"import time; "
        "open('out-${item}.txt', 'w').write(str(time.time_ns()))\"\n"
        "      deps:\n        - in.txt\n      outs:\n        - out-${item}.txt\n")

    def repro(items: str) -> str:
        (work / "params.yaml").write_text(f"items: [{items}]\n")
        return subprocess.run([DVC, "repro"], cwd=work, check=True, capture_output=True,
                              text=True).stdout

    repro("a, b")
    first = (work / "out-b.txt").read_text()
    repro("a")
    assert presets.prune_lock(work) == ["make@b"]
    (work / "out-b.txt").unlink()
    assert "'make@b' is cached - skipping run" in repro("a, b")
    assert (work / "out-b.txt").read_text() == first


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="preset must be one of"):
        presets.preset_files("gpu", ROOT / "params" / "presets")


def test_documented_results_match_the_metrics_files():
    metrics = ROOT / "reports" / "metrics"
    if not any(metrics.glob("*.json")):
        pytest.skip("no metrics committed yet")
    results = (ROOT / "docs" / "results.md").read_text()
    listed = report.listed_models(ROOT / "params")
    table = results_docs.readme_results_table(metrics, listed)
    assert results_docs.readme_table(table) in results, "run `make results` after `make study`"
    cells = results_docs.cells_markdown(ROOT / "reports" / "cells" / "cross_source.csv")
    assert cells in results, "run `make results` after `make study`"
    assert results_docs.times_markdown(ROOT / "reports" / "times") in results, \
        "run `make results`"


def test_dvc_plots_show_curves_and_a_confusion_matrix_per_evaluated_split():
    metrics = ROOT / "reports" / "metrics"
    if not any(metrics.glob("*.json")):
        pytest.skip("no metrics committed yet")
    shown = json.loads(subprocess.run([DVC, "plots", "show", "--json"], cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout)["data"]
    for path in metrics.glob("*.json"):
        result = json.loads(path.read_text())
        model = result["model"]
        # an ensemble (leuko.cells.ensemble) was not trained itself: its runs' curves are its own
        for trained in result.get("members", [model]):
            for curve in ("train/accuracy", "eval/accuracy", "train/loss", "eval/loss"):
                plot_id = f"reports/live/{trained}/plots/metrics/{curve}.tsv"
                assert plot_id in shown, f"no dvc plot {plot_id}"
        for split in result["splits"]:
            plot_id = f"reports/plots/confusion/{model}/{split.replace('/', '-')}.csv"
            assert plot_id in shown, f"no dvc plot {plot_id}"
            spec = shown[plot_id][0]["content"]["spec"]
            assert spec["encoding"]["x"]["field"] == "predicted"
            assert spec["encoding"]["y"]["field"] == "actual"


def test_full_preset_names_the_weights_to_place_offline(tmp_path, monkeypatch):
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "params", work / "params")
    presets.apply_preset("full", work / "params", work / "params" / "presets")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    missing = dict(presets.missing_weights(work / "params" / "wbc.yaml"))
    assert "mobilenet_v2" not in missing  # its weights come with the data
    assert missing["vgg16"] == tmp_path / "empty-keras-home" / "models" / (
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert len(missing) == 8
