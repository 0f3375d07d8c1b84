"""The smoke preset's slice, in one process on the real images: every network of the full
preset built with the smoke preset's own values (``weights: random``, its bottleneck, each
network's minimum input size), its bottleneck features cached, every training regime run at
least once (the frozen transfer regime on every network, the end-to-end regimes on networks of
each family), every model evaluated, and the compare notebook rendering all of them as a
plumbing run. Anything missing fails the test; without the data it skips, as every test does.

The whole smoke study is ``make preset-smoke && make study`` (README, *Presets*).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "presets" / "smoke"
pytestmark = pytest.mark.slow

#: images copied per class and split folder (distinct source cells first)
PER_FOLDER = 6
#: the end-to-end regimes run on a network of each family; every network runs ``imagenet``
END_TO_END = {"vgg16": "imagenet-finetune", "xception": "imagenet-finetune-stain",
              "densenet121": "scratch", "inception_v3": "imagenet-long"}
#: trained as the smoke preset trains every network: one stage for all its models, eagerly
GROUPED = "mobilenet_v2"


def smoke_values(name: str) -> dict:
    """A file of the smoke preset as a dict."""
    return yaml.safe_load((SMOKE / name).read_text())


def tiny_tree(source: Path, target: Path) -> Path:
    """blood-cell-images' layout with the first ``PER_FOLDER`` source cells of each class and
    split folder (real images)."""
    import re

    for split_dir in sorted((source / "images").iterdir()):
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            seen: dict[str, Path] = {}
            for path in sorted(class_dir.iterdir()):
                cell = re.match(r"_?(\d+)", path.name)
                key = cell.group(1) if cell else path.stem
                seen.setdefault(key, path)
                if len(seen) == PER_FOLDER:
                    break
            out = target / "images" / split_dir.name / class_dir.name
            out.mkdir(parents=True)
            for path in seen.values():
                shutil.copy(path, out / path.name)
    return target


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, wbc_root) -> dict:
    """The slice run once: returns the work folder, the models and the smoke values."""
    from leuko.thesis import evaluation, study
    work = tmp_path_factory.mktemp("smoke")
    paths = study.Paths(work)
    tree = tiny_tree(wbc_root, work / "blood-cell-images")
    manifests, bad = study.prepare("blood-cell-images", tree, seed=0, val_fraction=0.34,
                                   pooled_test_fraction=0.3, progress=False)
    study.write_prepared(manifests, bad, paths)
    wbc = smoke_values("wbc.yaml")["wbc"]
    evaluate = smoke_values("evaluate.yaml")["evaluate"]
    data = {"seed": 0}
    trainings = {r: smoke_values(f"regimes/{r}.yaml")["training"] for r in wbc["regimes"]}
    # a stage per model, traced as the study's real runs are: every network in the transfer
    # regime, a network of each family end to end ...
    traced = {**wbc, "strategy": "default", "eager": False,
              "stages": {"per_model": [n for n in wbc["networks"] if n != GROUPED],
                         "per_network": [GROUPED]}}
    settings = study.WbcSettings.from_params(traced, data)
    official = study.WBC_DATASET
    models = [(official, n, r) for n in wbc["networks"] if n != GROUPED
              for r in dict.fromkeys(["imagenet", END_TO_END.get(n, "imagenet")])]
    features = {}
    for dataset, network in dict.fromkeys((d, n) for d, n, _ in models):
        features[(dataset, network)] = study.compute_bottleneck_features(
            dataset, network, settings, paths=paths)
    for dataset, network, regime in models:
        study.train_wbc(study.WbcRun.from_params(dataset, network, regime, data, traced,
                                                 trainings[regime]), paths=paths)
    results = evaluation.evaluate_models(
        models, wbc["image_size"], n_boot=evaluate["n_boot"], seed=0,
        robustness_split=evaluate["robustness_split"],
        robustness_per_class=evaluate["robustness_per_class"],
        eval_per_class=evaluate["eval_per_class"], paths=paths)
    # ... and the smoke preset's own layout for one network: its stage (eager, as the preset
    # runs) trains all its models, every regime, the pooled split and the repeat, and scores
    # each while it is in memory
    grouped, scored = evaluation.train_and_evaluate_network(
        GROUPED, data, {**traced, "eager": wbc["eager"]}, evaluate, trainings, paths)
    keys = [m for m in study.wbc_models(traced) if m.network == GROUPED]
    assert [r.extra["model"] for r in grouped] == [m.model_id for m in keys]
    assert [r["model"] for r in scored] == [m.model_id for m in keys]
    models += keys
    return {"work": work, "paths": paths, "models": models, "wbc": wbc,
            "results": results + scored, "grouped": grouped, "features": features}


def test_every_network_builds_caches_features_and_every_regime_trains(smoke_run):
    from leuko.models import networks, train
    from leuko.thesis import study
    wbc, paths = smoke_run["wbc"], smoke_run["paths"]
    full = yaml.safe_load((SMOKE.parent / "full" / "wbc.yaml").read_text())["wbc"]
    assert wbc["networks"] == full["networks"] and wbc["weights"] == "random"
    trained = {(m[1], m[2]) for m in smoke_run["models"]}
    assert {n for n, _ in trained} == set(full["networks"])
    assert {r for _, r in trained} == set(train.REGIMES)
    for (_, network), arrays in smoke_run["features"].items():
        size = study.resolve_image_size(network, "minimum")
        assert size == networks.get_network(network).min_size
        base = networks.build_base(network, (size, size, 3), False, "avg")
        unpooled = networks.get_network(network).build((size, size, 3), False, pooling=None)
        width = int(np.prod(unpooled.output_shape[1:]))
        expected = width if wbc["bottleneck"] == "flatten" else base.output_shape[-1]
        assert arrays["train_features"].shape == (4 * wbc["train_per_class"], expected)
        assert str(arrays["weights"]) == "random"
    for key in (study.ModelKey(*m) for m in smoke_run["models"]):
        where = study.model_paths(key.model_id, paths)
        assert where.group == key.group == (GROUPED if key.network == GROUPED else "")
        summary = study.read_json(where.train_summary(key.model_id))
        assert (summary["weights"], summary["bottleneck"]) == ("random", wbc["bottleneck"])
        assert summary["eager"] == (key.network == GROUPED)
        assert summary["epochs_run"] >= 1 and summary["n_train_images"] > 0
        assert where.model(key.model_id).is_file()
        assert (where.live(key.model_id) / "plots" / "metrics").is_dir()


def test_the_grouped_network_has_every_model_of_the_preset_in_its_folders(smoke_run):
    """What the smoke preset's stage of one network leaves, and what reads it: every regime,
    the pooled split and the repeat in build/models/<network>/ and reports/train/<network>/,
    found by the export's candidates."""
    from leuko.thesis import study
    from leuko.tool import export
    wbc, paths = smoke_run["wbc"], smoke_run["paths"]
    grouped = {m.model_id for m in (study.ModelKey(*m) for m in smoke_run["models"])
               if m.network == GROUPED}
    expected = ({study.model_id(study.WBC_DATASET, GROUPED, r) for r in wbc["regimes"]}
                | {study.model_id(study.WBC_POOLED_DATASET, GROUPED, r)
                   for r in wbc["pooled_regimes"]}
                | {study.model_id(study.WBC_DATASET, GROUPED, r, s)
                   for r in wbc["repeats"]["regimes"] for s in wbc["repeats"]["seeds"]})
    assert grouped == expected
    folder = paths.root / "build" / "models" / GROUPED
    assert {p.stem for p in folder.glob("*.keras")} == expected
    assert not any((paths.root / "build" / "models").glob(f"*-{GROUPED}-*.keras"))
    official = {m for m in expected if not m.startswith(study.WBC_POOLED_DATASET)}
    assert official <= set(export.candidates("wbc4", paths))  # the pooled split is no task's


def test_the_grouped_frozen_models_sit_on_the_base_their_features_came_from(smoke_run):
    """With ``weights: random`` a base built twice is two bases: the network's stage builds
    one, and its features and every frozen-regime model share it, so the saved classifier's
    base reproduces the cached features its head was trained on."""
    import keras

    from leuko.core.inputs import load_resized
    from leuko.models import train
    from leuko.thesis import study

    paths = smoke_run["paths"]
    cached = study.load_features(paths.features(study.WBC_DATASET, GROUPED))
    frozen = [r for r in smoke_run["grouped"] if r.extra["regime"] in train.FROZEN_REGIMES
              and r.extra["dataset"] == study.WBC_DATASET]
    assert frozen
    for run in frozen:
        the_id = run.extra["model"]
        saved = study.load_model(study.model_paths(the_id, paths).model(the_id))
        _, preprocess, base, _ = saved.layers
        inputs = keras.Input(saved.input_shape[1:])
        features = keras.Model(inputs, base(preprocess(inputs)))
        images = load_resized(list(cached["train_paths"]), run.extra["image_size"],
                              progress=False)
        np.testing.assert_allclose(study.predict(features, images), cached["train_features"],
                                   rtol=1e-4, atol=1e-4)


def test_every_model_is_evaluated_and_named_a_plumbing_run(smoke_run):
    from leuko.reporting import report
    results = {r["model"]: r for r in smoke_run["results"]}
    assert len(results) == len(smoke_run["models"])
    for result in results.values():
        assert set(result["splits"]) == {"test", "test_simple"}
        assert result["training"]["weights"] == "random"
        for metrics in result["splits"].values():
            assert 4 <= metrics["n"] <= 4 * 2  # eval_per_class 2 of each class present
            assert np.asarray(metrics["confusion_matrix"]).sum() == metrics["n"]
    title = report.title_markdown(smoke_run["results"])
    assert report.PLUMBING_TITLE in title and str(len(results)) in title


@pytest.fixture(scope="module")
def smoke_report(smoke_run) -> Path:
    """The compare notebook run on the slice's files and rendered as the study page."""
    import papermill

    from leuko.reporting.render import render_html

    work = smoke_run["work"]
    out = work / "reports" / "notebooks" / "compare.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(ROOT / "notebooks" / "05-compare.ipynb"), str(out),
                               parameters={"comparison_boot": 50, "params_dir": ""},
                               kernel_name="leuko",
                               cwd=str(work), progress_bar=False)
    return render_html(out, work / "reports" / "study.html")


def test_the_smoke_report_shows_every_network_in_its_figures(smoke_run, smoke_report):
    """Titled a plumbing run, every network's short name a row of the figures, every regime
    a column, the figures embedded."""
    from leuko.models import networks
    from leuko.reporting import report
    notebook = (smoke_run["work"] / "reports" / "notebooks" / "compare.ipynb").read_text()
    assert report.PLUMBING_TITLE in notebook
    table = report.results_table(smoke_run["results"])
    _, rows, columns = report.thesis_grid(table)
    assert rows == [networks.short_name(n) for n in smoke_run["wbc"]["networks"]]
    assert set(report.REGIME_SHORT.values()) <= set(columns)
    html = smoke_report.read_text()
    assert report.PLUMBING_TITLE in html
    assert html.count("data:image/png;base64") >= 6  # accuracy, curves x2, time, long, cms


@pytest.mark.browser
def test_the_smoke_report_reads_cleanly_in_a_browser(smoke_run, smoke_report, tmp_path,
                                                      browser):
    from leuko.reporting import report
    seen = browser(smoke_report, tmp_path / "smoke.png")
    assert seen.images >= 6 and seen.broken_images == []
    assert report.PLUMBING_TITLE in seen.text
    for network in smoke_run["wbc"]["networks"]:  # in the tables beside the figures
        assert network in seen.text, network
    assert seen.console_errors == [] and seen.external_requests == []
