"""Tests of leuko.reporting.report's tables and of leuko.reporting.results_docs's docs/ blocks that are
not covered by the pipeline test: values against hand-computed ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leuko.reporting import report, results_docs


def _result(model: str, **accuracies: float) -> dict:
    return {"model": model, "stain_shift": {"split": "test", "n": 400, "kinds": {
        kind: {"accuracy": acc, "macro_f1": acc - 0.1} for kind, acc in accuracies.items()}}}


def test_stain_robustness_table_and_summary():
    results = [_result("a", none=0.8, faded=0.6, dark=0.7),
               _result("b", none=0.9, faded=0.85, dark=0.5),
               {"model": "no-robustness-run"}]
    table = report.stain_robustness_table(results)
    assert list(table.index) == ["a", "b"]
    assert list(table.columns) == ["none", "faded", "dark"]
    assert table.loc["b", "faded"] == 0.85
    assert report.stain_robustness_table(results, "macro_f1").loc["a", "none"] == \
        pytest.approx(0.7)
    summary = report.stain_robustness_summary(table)
    assert summary.loc["a", "as imaged"] == 0.8
    assert summary.loc["a", "mean under shift"] == pytest.approx(0.65)
    assert summary.loc["b", "worst under shift"] == 0.5
    assert list(summary["worst shift"]) == ["faded", "dark"]
    assert isinstance(summary, pd.DataFrame)


# --------------------------------------------------------------------------------------------
# paired comparisons on synthetic predictions and manifests
# --------------------------------------------------------------------------------------------
WBC = "blood-cell-images"


def _write_run(folder, model: str, rows: list[tuple[str, str, str, str]]) -> None:
    """A predictions CSV as the evaluate stage writes it: (path, split, actual, predicted)."""
    frame = pd.DataFrame(rows, columns=["path", "split", "actual", "predicted"])
    frame["p_A"] = 0.5
    frame.to_csv(folder / f"{model}.csv", index=False)


def _study(tmp_path, copies: int = 4):
    """A tiny study: WBC TEST = ``copies`` copies of 5 cells, TEST_SIMPLE = the 5 cells; every
    model right everywhere except scratch (wrong on cells 0-2) and imagenet-long (wrong on
    cell 4); ALL-IDB2 test = 4 cells, Solution B wrong on cell 0.  Returns (table, dirs)."""
    predictions, manifests = tmp_path / "predictions", tmp_path / "manifests"
    predictions.mkdir()
    manifests.mkdir()
    test = [(f"test/c{c}_{i}.jpg", "test", c) for c in range(5) for i in range(copies)]
    simple = [(f"simple/c{c}.jpg", "test_simple", c) for c in range(5)]
    pd.DataFrame({"path": [p for p, _, _ in test + simple], "label": "MONOCYTE",
                  "split": [s for _, s, _ in test + simple],
                  "group": [f"cell{c}" for _, _, c in test + simple]}).to_csv(
        manifests / f"{WBC}.csv", index=False)
    wrong = {"scratch": {0, 1, 2}, "imagenet-long": {4}}
    rows = []
    for regime in ("imagenet", "scratch", "imagenet-finetune", "imagenet-finetune-stain",
                   "imagenet-long"):
        model = f"{WBC}-mobilenet_v2-{regime}"
        _write_run(predictions, model, [
            (p, s, "MONOCYTE", "LYMPHOCYTE" if c in wrong.get(regime, ()) else "MONOCYTE")
            for p, s, c in test + simple])
        rows.append({"model": model, "dataset": WBC, "network": "mobilenet_v2",
                     "regime": regime})
    cells = [(f"data/all-idb2/Im{c:03d}_1.tif", "test", c) for c in range(4)]
    pd.DataFrame({"path": [p for p, _, _ in cells], "label": "ALL", "split": "test",
                  "group": [str(c) for c in range(4)]}).to_csv(manifests / "all-idb2.csv",
                                                               index=False)
    for network in ("leukemia_cnn", "efficientnet_b2"):
        model = f"all-idb2-{network}-scratch"
        _write_run(predictions, model, [
            (p, s, "ALL", "HEM" if network == "efficientnet_b2" and c == 0 else "ALL")
            for p, s, c in cells])
        rows.append({"model": model, "dataset": "all-idb2", "network": network,
                     "regime": "scratch"})
    return pd.DataFrame(rows), predictions, manifests


def test_paired_comparisons_fixed_pairs_and_hand_values(tmp_path):
    table, predictions, manifests = _study(tmp_path)
    out = report.paired_comparisons(table, predictions, manifests, n_boot=20000)
    assert list(zip(out["comparison"], out["split"], strict=True)) == [
        ("transfer vs scratch", "test"), ("transfer vs scratch", "test_simple"),
        ("fine-tune vs fine-tune + stain jitter", "test"),
        ("fine-tune vs fine-tune + stain jitter", "test_simple"),
        ("100 epochs vs long training", "test"), ("100 epochs vs long training", "test_simple"),
        ("Solution A vs Solution B", "test")]
    by = {(r.comparison, r.split): r for r in out.itertuples()}
    # transfer right on 5 cells, scratch on 2 of 5: difference 3/5; a resample's difference is
    # X / 5, X ~ Binomial(5, 3/5) -> 2.5 % and 97.5 % quantiles X = 1 and X = 5: [0.2, 1.0],
    # the same on TEST (4 copies per cell) as on TEST_SIMPLE (the 5 cells): copies add nothing
    for split, images in (("test", 20), ("test_simple", 5)):
        r = by[("transfer vs scratch", split)]
        assert (r.model_a, r.model_b) == (f"{WBC}-mobilenet_v2-imagenet",
                                          f"{WBC}-mobilenet_v2-scratch")
        assert (r.images, r.cells, r.runs_a, r.runs_b) == (images, 5, 1, 1)
        assert (r.accuracy_a, r.accuracy_b) == pytest.approx((1.0, 0.4))
        assert (r.difference, r.low, r.high) == pytest.approx((0.6, 0.2, 1.0))
        assert r.share_a_better == pytest.approx(1 - 0.4 ** 5, abs=0.003)
    # identical predictions: 0 [0, 0]
    same = by[("fine-tune vs fine-tune + stain jitter", "test")]
    assert (same.difference, same.low, same.high, same.share_a_better) == (0, 0, 0, 0)
    # long training wrong on 1 of 5 cells: +0.2, X ~ Binomial(5, 1/5): quantiles X = 0, X = 3
    # (P(X <= 2) = 0.942, P(X <= 3) = 0.993)
    long = by[("100 epochs vs long training", "test")]
    assert (long.difference, long.low, long.high) == pytest.approx((0.2, 0.0, 0.6))
    leuk = by[("Solution A vs Solution B", "test")]
    assert (leuk.dataset, leuk.network) == ("all-idb2", "leukemia_cnn vs efficientnet_b2")
    assert (leuk.model_a, leuk.model_b) == ("all-idb2-leukemia_cnn-scratch",
                                            "all-idb2-efficientnet_b2-scratch")
    assert (leuk.difference, leuk.cells) == (pytest.approx(0.25), 4)
    view = report.comparisons_view(out)
    assert view.loc[0, "A - B (points) [95 % CI]"] == "+60.0 [+20.0, +100.0]"
    assert view.loc[0, "cells (images)"] == "5 (20)"
    assert view.loc[0, "dataset"] == "official split"


def test_paired_comparisons_order_is_fixed_not_by_score(tmp_path):
    # the comparison is A - B as fixed in advance even where B scores higher, and models that
    # did not run leave no row (no other pair is picked in their place)
    table, predictions, manifests = _study(tmp_path)
    table = table[table["regime"] != "imagenet-finetune-stain"]
    out = report.paired_comparisons(table, predictions, manifests, splits=("test",), n_boot=200)
    assert "fine-tune vs fine-tune + stain jitter" not in set(out["comparison"])
    leuk = out[out["comparison"] == "Solution A vs Solution B"].iloc[0]
    assert leuk["difference"] > 0
    flipped = report.paired_comparisons(
        table, predictions, manifests, n_boot=200, comparisons=(report.Comparison(
            "B vs A", {"network": "efficientnet_b2"}, {"network": "leukemia_cnn"},
            same=("dataset",)),))
    assert flipped["difference"].tolist() == pytest.approx([-0.25])
    empty = report.paired_comparisons(table.iloc[:0], predictions, manifests)
    assert empty.empty and "difference" in empty.columns


def test_paired_comparisons_resample_seeds(tmp_path):
    # a second run (seed) of scratch that is right everywhere: both runs enter, A - B =
    # 1 - mean(0.4, 1.0) = 0.3.  Resampled: B's runs are (first, first) with 1/4, mixed with
    # 1/2, (second, second) with 1/4, and X ~ Binomial(5, 3/5) of cells 0-2 are drawn, so the
    # difference is X/5, X/10 or 0: P(0) = 1/4 + 3/4 * 0.4^5 > 2.5 % -> low 0;
    # P(1.0) = 1/4 * 0.6^5 = 1.9 % < 2.5 % < P(>= 0.8) = 1/4 * (0.6^5 + 5 * 0.6^4 * 0.4) -> high 0.8
    table, predictions, manifests = _study(tmp_path)
    other = f"{WBC}-mobilenet_v2-scratch-seed1"
    frame = pd.read_csv(predictions / f"{WBC}-mobilenet_v2-scratch.csv")
    frame.assign(predicted="MONOCYTE").to_csv(predictions / f"{other}.csv", index=False)
    table = pd.concat([table, pd.DataFrame([{"model": other, "dataset": WBC,
                                             "network": "mobilenet_v2",
                                             "regime": "scratch"}])])
    out = report.paired_comparisons(table, predictions, manifests, splits=("test",),
                                    comparisons=report.COMPARISONS[:1], n_boot=4000)
    r = out.iloc[0]
    assert (r["runs_a"], r["runs_b"]) == (1, 2)
    assert r["model_b"] == f"{WBC}-mobilenet_v2-scratch, {other}"
    assert r["difference"] == pytest.approx(0.3)
    assert (r["low"], r["high"]) == pytest.approx((0.0, 0.8))


def test_paired_comparisons_three_runs_against_one(tmp_path):
    # transfer with its main run and two repeats (seed1 right everywhere, seed2 wrong on cells
    # 0-2 like scratch) against scratch's one run: A's accuracy is the mean of 1, 1 and 0.4,
    # A - B = 0.8 - 0.4 = 0.4.  Resampled: X ~ Binomial(5, 3/5) of cells 0-2 and K ~
    # Binomial(3, 1/3) draws of seed2 among A's 3, difference (3 - K)/3 * X/5:
    # P(0) = 0.4^5 + (1 - 0.4^5) / 27 = 4.7 % > 2.5 % -> low 0; P(1.0) = 8/27 * 0.6^5 = 2.3 %
    # < 2.5 % < P(>= 0.8) = 8/27 * (0.6^5 + 5 * 0.6^4 * 0.4) -> high 0.8
    table, predictions, manifests = _study(tmp_path)
    main = f"{WBC}-mobilenet_v2-imagenet"
    scratch = pd.read_csv(predictions / f"{WBC}-mobilenet_v2-scratch.csv")
    pd.read_csv(predictions / f"{main}.csv").to_csv(predictions / f"{main}-seed1.csv",
                                                    index=False)
    scratch.to_csv(predictions / f"{main}-seed2.csv", index=False)
    repeats = pd.DataFrame([{"model": f"{main}-seed{n}", "dataset": WBC,
                             "network": "mobilenet_v2", "regime": "imagenet"} for n in (2, 1)])
    table = pd.concat([table, repeats])
    out = report.paired_comparisons(table, predictions, manifests,
                                    comparisons=report.COMPARISONS[:1], n_boot=20000)
    assert out["split"].tolist() == ["test", "test_simple"]
    for r in out.itertuples():
        assert (r.runs_a, r.runs_b) == (3, 1)
        assert r.model_a == f"{main}, {main}-seed1, {main}-seed2"
        assert (r.accuracy_a, r.accuracy_b, r.difference) == pytest.approx((0.8, 0.4, 0.4))
        assert (r.low, r.high) == pytest.approx((0.0, 0.8))
        assert r.share_a_better == pytest.approx(1 - 0.4 ** 5 - (1 - 0.4 ** 5) / 27, abs=0.005)
    # the other comparisons keep their one run each: the repeats join only their own kind
    others = report.paired_comparisons(table, predictions, manifests, splits=("test",),
                                       comparisons=tuple(c for c in report.COMPARISONS
                                                   if c.name == "100 epochs vs long training"),
                                       n_boot=50)
    assert (others["runs_a"].tolist(), others["runs_b"].tolist()) == ([3], [1])


def test_paired_comparisons_needs_the_manifest_groups(tmp_path):
    table, predictions, manifests = _study(tmp_path)
    (manifests / "all-idb2.csv").unlink()
    with pytest.raises(FileNotFoundError, match="all-idb2"):
        report.paired_comparisons(table, predictions, manifests, n_boot=10)
    pd.DataFrame({"path": ["elsewhere.tif"], "group": ["0"]}).to_csv(
        manifests / "all-idb2.csv", index=False)
    with pytest.raises(ValueError, match="not in the manifest"):
        report.paired_comparisons(table, predictions, manifests, n_boot=10)


# --------------------------------------------------------------------------------------------
# exact intervals in the results table
# --------------------------------------------------------------------------------------------
def _metrics_file(model: str, dataset: str, correct: int, n: int, groups) -> dict:
    from leuko.core.metrics import add_exact_interval, classification_metrics, metric_intervals

    t = [0] * n
    p = [0] * correct + [1] * (n - correct)
    m = add_exact_interval(classification_metrics(t, p, ["A", "B"]), groups=groups)
    m["intervals"] = metric_intervals(t, p, ["A", "B"], n_boot=200, groups=groups)
    network, regime = model.split("-")[-2:]
    return {"model": model, "dataset": dataset, "network": network, "regime": regime,
            "splits": {"test": m}, "training": {"train_seconds": 10.0}}


def test_results_table_uses_exact_interval_only_for_distinct_cells():
    results = [_metrics_file("all-idb2-cnn-scratch", "all-idb2", 26, 26, list(range(26))),
               _metrics_file("wbc-net-imagenet", "wbc", 40, 40, [i // 4 for i in range(40)])]
    table = report.results_table(results)
    cells, copies = table.iloc[0], table.iloc[1]
    assert cells["exact_independent"] and not copies["exact_independent"]
    assert cells["accuracy_exact_low"] == pytest.approx(0.025 ** (1 / 26))
    # the bootstrap of a perfect score is the degenerate [100, 100]; the exact one is not
    assert report.accuracy_ci(next(table.iloc[:1].itertuples())) == "100.0 % [86.8, 100.0] exact"
    assert report.accuracy_ci(next(table.iloc[1:].itertuples())) == "100.0 % [100.0, 100.0]"
    readme = results_docs.readme_table(table.assign(split="test"))
    assert "| `all-idb2-cnn-scratch` | 100.0 % [86.8, 100.0] exact (1 run) |" in readme
    assert "Clopper-Pearson" in readme
    assert "exact" in report.summary_markdown(table)
    # metrics written before exact intervals existed still load
    old = _metrics_file("x-net-scratch", "x", 3, 4, None)
    del old["splits"]["test"]["exact_interval"]
    row = next(report.results_table([old]).itertuples())
    assert report.accuracy_ci(row).startswith("75.0 % [") and "exact" not in report.accuracy_ci(row)


def _machine(cpu: str) -> dict:
    return {"cpu": cpu, "cores": 2, "usable_cores": 2, "vector": "AVX2",
            "tensorflow": "2.21.0"}


def test_readme_says_which_interval_and_on_which_machines():
    a = _metrics_file("all-idb2-cnn-scratch", "all-idb2", 25, 26, [min(i, 24) for i in range(26)])
    b = _metrics_file("wbc-net-imagenet", "wbc", 71, 71, list(range(71)))
    a["machine"] = a["training"]["machine"] = _machine("AMD EPYC")
    b["machine"], b["training"]["machine"] = _machine("AMD EPYC"), _machine("Intel Xeon")
    table = report.results_table([a, b])
    assert table["n_cells"].tolist() == [25, 71]
    note = report.intervals_note(table)
    assert "all-idb2 TEST (26 images of 25 cells)" in note and "wbc TEST (71 cells)" in note
    machines = results_docs.machines_note(table)
    epyc = "AMD EPYC; 2 logical cores (2 usable); AVX2; TensorFlow 2.21.0"
    assert f"trained on {epyc} (1 model); Intel Xeon" in machines
    assert f"evaluated on {epyc} (2 models)" in machines
    assert "seen on 2 machines" in machines
    exact_column = report.styled_results(table).data["accuracy [exact 95 % CI]"]
    assert exact_column.tolist() == ["– (26 images of 25 cells)", "100.0 % [94.9, 100.0]"]
    readme = results_docs.readme_table(table)
    assert note in readme and machines in readme
    assert "| `all-idb2-cnn-scratch` | 96.2 % [" in readme  # bootstrap: 26 images of 25 cells
    assert "| `wbc-net-imagenet` | 100.0 % [94.9, 100.0] exact (1 run) |" in readme  # 0.025 ** (1/71)
    # files without a machine record say so rather than count as a machine
    c = _metrics_file("x-net-scratch", "x", 3, 4, None)
    assert results_docs.machines_note(report.results_table([c])).startswith(
        "Machines: not recorded")
    b_only = results_docs.machines_note(report.results_table([b, c]))
    assert "evaluated on AMD EPYC" in b_only and "; 1 model without a record" in b_only


def test_split_figures_text_gives_exact_and_bootstrap_intervals():
    m = _metrics_file("all-idb2-cnn-scratch", "all-idb2", 25, 26, list(range(26)))
    text = report.split_figures_text(m["splits"]["test"])
    assert text.startswith("26 images (each its own cell): accuracy 0.962")
    assert "exact (Clopper-Pearson, 25/26) 0.804, 0.999]" in text and "bootstrap" in text
    copies = _metrics_file("x-net-scratch", "x", 3, 4, [0, 0, 1, 1])["splits"]["test"]
    assert report.split_figures_text(copies).startswith("4 images of 2 cells")
    assert "exact" not in report.split_figures_text(copies)


def test_training_overhead_is_stage_time_minus_training_and_the_first_epochs_extra(tmp_path):
    from leuko.reporting.results_docs import training_overhead

    (tmp_path / "train").mkdir()
    (tmp_path / "times").mkdir()
    live = tmp_path / "live" / "cells-pbc" / "plots" / "metrics" / "train"
    live.mkdir(parents=True)
    (tmp_path / "train" / "cells-pbc.json").write_text(
        json.dumps({"model": "cells-pbc", "train_seconds": 100.0}))
    (tmp_path / "times" / "train-cells@pbc.json").write_text(
        json.dumps({"stage": "train-cells@pbc", "seconds": 130.0}))
    (live / "epoch_time_s.tsv").write_text("step\tepoch_time_s\n0\t50\n1\t20\n2\t21\n3\t19\n")
    table = training_overhead(tmp_path / "train", tmp_path / "times", tmp_path / "live")
    assert table.to_dict("records") == [{
        "stage": "train-cells@pbc", "stage s": 130, "training s": 100,
        "outside training s": 30, "first epoch minus median epoch s": 30}]


def test_study_parts_sort_every_kind_of_stage():
    from leuko.reporting.results_docs import study_part

    repeats = "repeats (other training seeds; the spread preset)"
    assert study_part("train@blood-cell-images-mobilenet_v2-imagenet-seed1") == repeats
    assert study_part("evaluate-leukemia@leukemia_cnn-seed2") == repeats
    assert study_part("train@blood-cell-images-mobilenet_v2-imagenet-finetune-stain") == \
        "thesis: fine-tuning with stain jitter (the spread preset)"
    for stage in ("prepare-leukemia", "train-leukemia@a", "export@leukemia"):
        assert study_part(stage) == "leukemia study"
    assert study_part("train-cells@pbc-seed1") == repeats
    for stage in ("ensemble-cells@both", "evaluate-cells@both-ensemble"):
        assert study_part(stage) == "cell ensembles (the spread preset)"
    for stage in ("cells", "train-cells@both", "evaluate-cells", "export@wbc", "detect"):
        assert study_part(stage) == "cell classifier for other labs, smear detection"
    for stage in ("features@blood-cell-images-mobilenet_v2-224px",
                  "train@blood-cell-images-pooled-mobilenet_v2-imagenet-224px"):
        assert study_part(stage) == "thesis: the head-only regimes at the thesis's input size"
    for stage in ("prepare-wbc", "features@blood-cell-images-mobilenet_v2", "evaluate-wbc",
                  "train@blood-cell-images-mobilenet_v2-imagenet-finetune", "compare"):
        assert study_part(stage) == "thesis: the regimes, the pooled split, evaluation, report"


def test_budget_block_sums_each_part_and_shows_the_wall_time_beside_its_target(tmp_path):
    from leuko.reporting.results_docs import budget_markdown

    times = {"prepare-wbc": (600.0, "10:00", "10:10"), "train-leukemia@a": (120.0, "10:10", "10:12"),
             "train-cells@both": (180.0, "10:12", "10:25")}
    for stage, (seconds, start, end) in times.items():
        (tmp_path / f"{stage}.json").write_text(json.dumps({
            "stage": stage, "seconds": seconds, "started": f"2026-11-30T{start}:00+00:00",
            "ended": f"2026-11-30T{end}:00+00:00",
            "machine": {"cpu": "AMD EPYC", "cores": 2, "usable_cores": 2, "avx2": True,
                        "avx512": False, "avx512_bf16": False, "amx": False,
                        "vector": "AVX2", "tensorflow": "2.21.0"}}))
    text = budget_markdown(tmp_path)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]]
            for line in text.splitlines() if line.startswith("| ") and "minutes" not in line}
    assert rows == {"leukemia study": ["1", "2", "13 %"],
                    "cell classifier for other labs, smear detection": ["1", "3", "20 %"],
                    "thesis: the regimes, the pooled split, evaluation, report": ["1", "10",
                                                                                  "67 %"]}
    assert "In all 15.0 min of stage time" in text
    # 10:00 to 10:25, on an AVX2-only machine: its target is 35 minutes
    assert "last stage end: 25.0 min, against a target of 35 min" in text
    assert "AMD EPYC" in text and "epochs" not in text
    trainings = pd.DataFrame({"training s": [90, 150]})
    assert "Of the stage time, 4.0 min is the 2 trainings' own epochs" in budget_markdown(
        tmp_path, trainings)
    assert "No stage times" in budget_markdown(tmp_path / "none")
    # a stage rerun an hour later: two runs, whose span is no run's wall time
    late = json.loads((tmp_path / "train-cells@both.json").read_text())
    late.update(started="2026-11-30T11:30:00+00:00", ended="2026-11-30T11:33:00+00:00")
    (tmp_path / "train-cells@both.json").write_text(json.dumps(late))
    text = budget_markdown(tmp_path)
    assert "last stage end" not in text
    assert "come from 2 separate runs" in text


def test_separate_runs_counts_pauses_between_stages_not_overlaps():
    from leuko.reporting.results_docs import separate_runs

    def at(*spans):
        return pd.DataFrame([{"started": f"2026-11-30T{a}:00+00:00",
                              "ended": f"2026-11-30T{b}:00+00:00"} for a, b in spans])

    assert separate_runs(at(("10:00", "10:10"), ("10:11", "10:20"))) == 1
    assert separate_runs(at(("10:11", "10:20"), ("10:00", "10:10"))) == 1  # any order
    # a long stage spans a later short one: the pause is from the last end so far
    assert separate_runs(at(("10:00", "10:30"), ("10:05", "10:06"), ("10:31", "10:40"))) == 1
    assert separate_runs(at(("10:00", "10:10"), ("10:16", "10:20"), ("12:00", "12:01"))) == 3


# --------------------------------------------------------------------------------------------
# repeats: the spread over training seeds
# --------------------------------------------------------------------------------------------
def test_kind_and_training_seed_of_a_run():
    assert report.kind_id("blood-cell-images-mobilenet_v2-imagenet-seed12") == \
        "blood-cell-images-mobilenet_v2-imagenet"
    assert report.kind_id("all-idb2-leukemia_cnn-scratch") == "all-idb2-leukemia_cnn-scratch"
    assert report.kind_id("x-seedling-net-scratch") == "x-seedling-net-scratch"
    assert report.training_seed({"model": "a-n-r-seed2", "training_seed": 2}) == 2
    assert report.training_seed({"model": "a-n-r"}) == 0  # files written before the key
    assert report.training_seed({"model": "a-n-r-seed3"}) == 3
    assert report.training_seed({"model": "a-n-r", "training_seed": 7}) == 7


def _run(kind: str, seed: int, correct: int, n: int = 10) -> dict:
    """A metrics file of run ``seed`` of ``kind`` (``<dataset>-<network>-<regime>``)."""
    dataset, network, regime = kind.split("-")
    model = kind if seed == 0 else f"{kind}-seed{seed}"
    result = _metrics_file(model, dataset, correct, n, list(range(n)))
    result.update(network=network, regime=regime, training_seed=seed)
    result["training"]["train_seconds"] = 10.0 * (seed + 1)
    return result


def test_results_table_has_the_training_seed():
    results = [_run("wbc-net-imagenet", 0, 5), _run("wbc-net-imagenet", 2, 6)]
    del results[0]["training_seed"]
    table = report.results_table(results)
    assert table[["model", "training_seed"]].values.tolist() == [
        ["wbc-net-imagenet", 0], ["wbc-net-imagenet-seed2", 2]]
    assert report.main_runs(table)["model"].tolist() == ["wbc-net-imagenet"]


def _runs_frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["model", "training_seed", "dataset", "network",
                                       "regime", "split", "accuracy", "macro_f1"])


def test_seed_summary_hand_values():
    table = _runs_frame([
        ("d-n-r-seed2", 2, "d", "n", "r", "test", 0.7, 0.60),
        ("d-n-r", 0, "d", "n", "r", "test", 0.5, 0.40),
        ("d-n-r-seed1", 1, "d", "n", "r", "test", 0.6, 0.45),
        ("d-n-r", 0, "d", "n", "r", "test_simple", 0.8, 0.8),
        ("d-m-r", 0, "d", "m", "r", "test", 0.9, 0.85)])
    summary = report.seed_summary(table)
    assert list(zip(summary["kind"], summary["split"], strict=True)) == [
        ("d-m-r", "test"), ("d-n-r", "test"), ("d-n-r", "test_simple")]
    three = summary.iloc[1]
    assert (three["runs"], three["seeds"]) == (3, "0, 1, 2")
    assert three["models"] == "d-n-r, d-n-r-seed1, d-n-r-seed2"
    assert (three["dataset"], three["network"], three["regime"]) == ("d", "n", "r")
    assert (three["accuracy_mean"], three["accuracy_sd"]) == pytest.approx((0.6, 0.1))
    assert (three["accuracy_min"], three["accuracy_max"]) == (0.5, 0.7)
    # macro F1 0.40, 0.45, 0.60: mean 0.4833, deviations -0.0833, -0.0333, 0.1167,
    # sum of squares 0.02167 / 2 -> sd 0.1041
    assert three["macro_f1_mean"] == pytest.approx(0.48333, abs=1e-5)
    assert three["macro_f1_sd"] == pytest.approx((0.065 / 3 / 2) ** 0.5)
    assert (three["macro_f1_min"], three["macro_f1_max"]) == (0.40, 0.60)
    one = summary.iloc[0]
    assert (one["runs"], one["seeds"], one["accuracy_mean"]) == (1, "0", 0.9)
    assert pd.isna(one["accuracy_sd"]) and pd.isna(one["macro_f1_sd"])
    assert one["accuracy_min"] == one["accuracy_max"] == 0.9
    assert report.seed_summary(table.iloc[:0]).columns.tolist() == summary.columns.tolist()
    # a table without the column: each run's seed from its id
    assert report.seed_summary(table.drop(columns="training_seed"))["seeds"].tolist() == \
        ["0", "0, 1, 2", "0"]
    view = report.seed_summary_view(summary)
    assert view["accuracy %: mean ± sd [min, max]"].tolist() == [
        "90.0", "60.0 ± 10.0 [50.0, 70.0]", "80.0"]


def test_seed_summary_refuses_runs_of_one_id_that_differ():
    table = _runs_frame([("d-n-r", 0, "d", "n", "r", "test", 0.5, 0.5),
                         ("d-n-r-seed1", 1, "d", "n", "other", "test", 0.6, 0.6)])
    with pytest.raises(ValueError, match="d-n-r differ"):
        report.seed_summary(table)


def test_seed_summary_metrics_are_json_with_null_for_one_run():
    table = _runs_frame([("d-n-r", 0, "d", "n", "r", "test", 0.5, 0.4),
                         ("d-n-r-seed1", 1, "d", "n", "r", "test", 0.7, 0.6),
                         ("e-n-r", 0, "e", "n", "r", "test", 0.9, 0.8)])
    metrics = report.seed_summary_metrics(report.seed_summary(table))
    text = json.dumps(metrics, allow_nan=False)  # no NaN: JSON has none
    back = json.loads(text)
    assert set(back) == {"d-n-r", "e-n-r"}
    two = back["d-n-r"]["test"]
    assert two["runs"] == 2
    assert two["accuracy"]["mean"] == pytest.approx(0.6)
    assert two["accuracy"]["sd"] == pytest.approx(0.2 / 2 ** 0.5)  # |0.7 - 0.5| / sqrt(2)
    assert (two["macro_f1"]["min"], two["macro_f1"]["max"]) == (0.4, 0.6)
    assert back["e-n-r"]["test"] == {
        "runs": 1, "accuracy": {"mean": 0.9, "sd": None, "min": 0.9, "max": 0.9},
        "macro_f1": {"mean": 0.8, "sd": None, "min": 0.8, "max": 0.8}}


def test_readme_table_shows_mean_and_sd_per_kind_and_intervals_for_one_run():
    results = [_run("wbc-net-imagenet", seed, correct) for seed, correct in
               ((0, 5), (1, 6), (2, 7))] + [_run("wbc-net-scratch", 0, 9)]
    for result in results:  # a TEST_SIMPLE as well
        result["splits"]["test_simple"] = result["splits"]["test"]
    table = report.results_table(results)
    readme = results_docs.readme_table(table)
    lines = [line for line in readme.splitlines() if line.startswith("| `")]
    assert len(lines) == 2  # one row per kind, not per run
    imagenet, scratch = lines
    # accuracies 0.5, 0.6, 0.7: mean 60.0, sd 10.0; times 10, 20, 30 s: mean 20
    assert imagenet.startswith("| `wbc-net-imagenet` | 60.0 ± 10.0 % (3 runs) | ")
    assert imagenet.endswith(" | 60.0 ± 10.0 % (3 runs) | 20 |")
    assert "-seed" not in readme.split("\n\n")[0]
    assert scratch.startswith("| `wbc-net-scratch` | 90.0 % [")
    assert scratch.count("exact (1 run)") == 2  # every image its own cell
    assert report.SPREAD_NOTE in readme and "sample standard deviation" in readme
    assert report.intervals_note(table) in readme and results_docs.machines_note(table) in readme
    # the summary picks the best kind by its mean, not by its luckiest seed: imagenet's runs
    # 50, 60, 70 % (mean 60) against scratch's one run of 65 %
    summary = report.summary_markdown(report.results_table(
        [_run("wbc-net-imagenet", seed, correct, n=20) for seed, correct in
         ((0, 10), (1, 12), (2, 14))] + [_run("wbc-net-scratch", 0, 13, n=20)]))
    assert "| wbc | net (scratch) | test | 65.0 % [" in summary
    assert "imagenet" not in summary and "70.0" not in summary
    assert report.SPREAD_NOTE not in summary  # no kind with several runs in it
    summary = report.summary_markdown(table)
    assert "| wbc | net (scratch) | test | 90.0 % [" in summary
    assert "| wbc | net (scratch) | test_simple | 90.0 % [" in summary
    summary = report.summary_markdown(report.results_table(results[:3]))
    assert "| wbc | net (imagenet) | test | 60.0 ± 10.0 % (3 runs) |" in summary
    assert report.SPREAD_NOTE in summary


def test_finetune_choice_block_shows_mean_sd_over_seeds_and_the_paired_difference(tmp_path):
    runs = pd.DataFrame({
        "bn_inference": [False] * 4 + [True] * 4, "seed": [0, 0, 1, 1] * 2,
        "split": ["test", "test_simple"] * 4,
        "accuracy": [0.70, 0.80, 0.80, 0.90, 0.75, 0.85, 0.75, 0.95],
        "macro_f1": [0.7] * 8, "saved_val_accuracy": [0.9, 0.9, 0.92, 0.92, 0.93, 0.93, 0.95,
                                                      0.95],
        "train_seconds": [300] * 8, "epochs": [6] * 8, "machine": ["AMD EPYC; AVX2"] * 8})
    paired = pd.DataFrame({"split": ["test", "test_simple"], "runs": [2, 2], "cells": [71, 69],
                           "images": [2487, 71], "accuracy_alternative": [0.75, 0.9],
                           "accuracy_baseline": [0.75, 0.85], "difference": [0.0, 0.05],
                           "low": [-0.02, -0.01], "high": [0.03, 0.12],
                           "share_alternative_better": [0.5, 0.9]})
    runs.to_csv(tmp_path / "finetune_bn.csv", index=False)
    paired.to_csv(tmp_path / "finetune_bn_paired.csv", index=False)
    bn = next(c for c in results_docs.FINETUNE_CHOICES if c.name == "bn")
    text = results_docs.finetune_choice_markdown(bn, tmp_path)
    # adapting: TEST 70 and 80 -> 75.0 ± 7.1; TEST_SIMPLE 80 and 90 -> 85.0 ± 7.1
    assert "| adapting (`false`, the default) | 2 | 75.0 ± 7.1 | 85.0 ± 7.1 | 91.0 ± 1.4 | 300 |" in text
    assert "| inference mode (`bn_inference: true`) | 2 | 75.0 ± 0.0 | 90.0 ± 7.1 |" in text
    assert "Inference mode minus adapting" in text
    assert "TEST_SIMPLE +5.0 points [-1.0, +12.0] (69 cells)" in text
    assert "machine: AMD EPYC; AVX2" in text
    # the setting's column is named by its key; the baseline is the first run's value
    runs.rename(columns={"bn_inference": "warmup_learning_rate"}).replace(
        {"warmup_learning_rate": {False: 0.001, True: 0.0001}}).to_csv(
        tmp_path / "finetune_warmup.csv", index=False)
    paired.to_csv(tmp_path / "finetune_warmup_paired.csv", index=False)
    warmup = next(c for c in results_docs.FINETUNE_CHOICES if c.name == "warmup")
    text = results_docs.finetune_choice_markdown(warmup, tmp_path)
    assert "| 1e-3 (`warmup_learning_rate: 0.001`) | 2 | 75.0 ± 7.1 | 85.0 ± 7.1 |" in text
    assert "| 1e-4 (`0.0001`, the fine-tuning rate; the default) | 2 | 75.0 ± 0.0 | 90.0 ± 7.1 |" in text
    assert "1e-4 minus 1e-3" in text
    assert "Not run yet" in results_docs.finetune_choice_markdown(warmup, tmp_path / "none")


def test_seed_runs_label_each_run_by_its_kind_in_short():
    table = pd.DataFrame({"model": ["blood-cell-images-mobilenet_v2-imagenet-seed1",
                                    "blood-cell-images-mobilenet_v2-imagenet",
                                    "blood-cell-images-mobilenet_v2-imagenet"],
                          "training_seed": [1, 0, 0], "dataset": "blood-cell-images",
                          "network": "mobilenet_v2", "regime": "imagenet",
                          "split": ["test", "test", "test_simple"],
                          "accuracy": [0.8, 0.7, 0.5], "macro_f1": [0.7, 0.6, 0.4]})
    runs = report.seed_runs(table, "test")
    assert runs["training_seed"].tolist() == [0, 1]  # by kind, then seed
    assert set(runs["label"]) == {"MNv2 · official split · transfer"}
    assert set(runs["kind"]) == {"blood-cell-images-mobilenet_v2-imagenet"}
    assert runs["accuracy"].tolist() == [0.7, 0.8]


def test_network_costs_block_shows_measured_times_cpu_and_expected_gpu_hours(tmp_path):
    from leuko.thesis import costs
    table = pd.DataFrame({
        "network": ["vgg16", "mobilenet_v2"], "image_size": [224, 224], "batch": [16, 16],
        "forward_ms_per_image": [300.0, 45.0], "train_ms_per_image": [900.0, 276.0],
        "head_ms_per_image": [20.0, 39.0], "train_trace_s": [30.0, 41.0],
        "cpu_h transfer (features + imagenet)": [4.0, 11.0], "cpu_h scratch": [250.0, 70.0],
        "cpu_h head-only part": [10.0, 20.0], "cpu_h whole-network part": [1000.0, 700.0],
        "cpu_h network in full preset": [1010.0, 720.0], "thesis": [True, False],
        "machine": ["AMD EPYC; AVX2"] * 2})
    costs.add_gpu_estimate(table).to_csv(tmp_path / "costs.csv", index=False)
    text = results_docs.network_costs_markdown(tmp_path / "costs.csv")
    assert "| vgg16        |  224 |              300 |                 900 |" in text
    # vgg16 is the only thesis network: its expected GPU hours are the thesis's own times
    assert "| 0.17 / 2.2 " in text
    assert "1,730 CPU hours on this machine, 2 % of it head-only work" in text
    assert "transfer 9 min 59 s, scratch 2 h 14 min" in text
    assert "Machine: AMD EPYC; AVX2" in text
    assert "Not run yet" in results_docs.network_costs_markdown(tmp_path / "none.csv")


def test_cell_variant_block_shows_both_scores_and_the_paired_difference(tmp_path):
    pd.DataFrame([{
        "trained on": "pbc", "tested on": "blood-cell-images/test", "unseen source": True,
        "images": 2487, "cells": 71, "accuracy as trained": 0.143, "accuracy adapted": 0.524,
        "macro F1 as trained": 0.232, "macro F1 adapted": 0.585, "accuracy difference": 0.381,
        "difference low": 0.25, "difference high": 0.5, "machine": "AMD EPYC; AVX2"}]
    ).to_csv(tmp_path / "adabn.csv", index=False)
    text = results_docs.cell_variant_markdown(tmp_path / "adabn.csv", "as trained", "adapted",
                                              "benchmarks/cells/adabn.py")
    cells = [c.strip() for c in text.splitlines()[2].strip("|").split("|")]
    assert cells == ["pbc", "blood-cell-images/test", "yes", "71 / 2487", "14.3 → 52.4",
                     "23.2 → 58.5", "+38.1 [+25.0, +50.0]"]
    assert "Machine: AMD EPYC; AVX2." in text
    assert "Adapted minus as trained" in text
    assert "Not run yet" in results_docs.cell_variant_markdown(tmp_path / "none.csv", "a", "b",
                                                               "x.py")


def test_cell_variant_block_shows_extra_columns_before_and_after(tmp_path):
    pd.DataFrame([{
        "trained on": "both", "tested on": "pbc/test", "unseen source": False, "images": 790,
        "cells": 789, "accuracy adapting": 0.9, "accuracy inference mode": 0.8,
        "macro F1 adapting": 0.85, "macro F1 inference mode": 0.75,
        "validation accuracy adapting": 0.95, "validation accuracy inference mode": 0.9,
        "train seconds adapting": 328.4, "train seconds inference mode": 170.2,
        "accuracy difference": -0.1, "difference low": -0.15, "difference high": -0.05,
        "machine": "AMD EPYC; AVX2"}]).to_csv(tmp_path / "bn.csv", index=False)
    text = results_docs.cell_variant_markdown(tmp_path / "bn.csv", "adapting", "inference mode",
                                              "benchmarks/cells/cells_choices.py bn",
                                              extra=("validation accuracy", "train seconds"))
    header = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    cells = [c.strip() for c in text.splitlines()[2].strip("|").split("|")]
    assert header[-2:] == ["validation accuracy %", "train seconds"]
    assert cells[-3:] == ["-10.0 [-15.0, -5.0]", "95.0 → 90.0", "328 → 170"]
    assert "Inference mode minus adapting" in text


def test_smoke_run_block_says_how_far_the_run_got_and_where_its_time_went(tmp_path):
    stages = pd.DataFrame({
        "stage": ["features@blood-cell-images-vgg16", "train@blood-cell-images-vgg16-imagenet",
                  "train@blood-cell-images-pooled-vgg16-imagenet",
                  "train@blood-cell-images-densenet121-scratch", "prepare-wbc",
                  "train-network@resnet50"],  # a network's stage of the smoke layout
        "seconds": [30.0, 60.0, 90.0, 120.0, 12.0, 150.0]})
    stages.to_csv(tmp_path / "stages.csv", index=False)
    summary = {"commit": "abc1234", "finished": False, "wall_seconds": 1800.0,
               "targets": [{"target": "preset-smoke", "seconds": 60.0, "exit_code": 0,
                            "timed_out": False},
                           {"target": "study", "seconds": 1740.0, "exit_code": None,
                            "timed_out": True}],
               "stages_planned": 90, "stages_timed": 6, "report_written": False,
               "report_says_plumbing": False, "machine": "AMD EPYC; AVX2"}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "wbc.yaml").write_text(
        "wbc:\n  networks: [vgg16, densenet121, resnet50, mobilenet_v2]\n")
    text = results_docs.smoke_run_markdown(tmp_path / "stages.csv", tmp_path / "summary.json",
                                           tmp_path / "wbc.yaml")
    assert "did not finish in 30.0 min" in text
    assert "`make study` 29.0 min (stopped at the time limit)" in text
    assert "6 of 90 stages finished; no plumbing-run report" in text
    # train: 60 + 90 + 120 s = 4.5 min over 3 stages, median 90, slowest 120
    assert "| train | 3 | 4.5 | 90 | 120 |" in text
    # per network: its features and training stages (vgg16: 30 + 60 + 90 s)
    assert "| vgg16 | 3 | 3.0 | 30 | 90 |" in text
    assert "| densenet121 | 1 | 2.0 | 120 | 120 |" in text
    assert "| resnet50 | 1 | 2.5 | 150 | 150 |" in text
    assert "mobilenet_v2" not in text  # no stage of it ran
    assert "Not run yet" in results_docs.smoke_run_markdown(tmp_path / "no.csv",
                                                            tmp_path / "no.json")
    # a finished run: every stage ran, and the time outside the timed stages is named
    summary.update(finished=True, stages_planned=8, targets=[
        {"target": "study", "seconds": 600.0, "exit_code": 0, "timed_out": False}])
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    text = results_docs.smoke_run_markdown(tmp_path / "stages.csv", tmp_path / "summary.json",
                                           tmp_path / "wbc.yaml")
    assert "all 8 stages ran (6 timed: compare and report are not)" in text
    # 30 + 60 + 90 + 120 + 12 + 150 s = 7.7 min of the study's 10.0
    assert "add up to 7.7 of `make study`'s 10.0 min" in text


def test_smoke_eager_block_compares_graph_and_eager_per_network(tmp_path):
    pd.DataFrame({"network": ["vgg16"] * 2 + ["densenet121"] * 2,
                  "image_size": [32] * 4, "mode": ["eager", "graph"] * 2,
                  "build_s": [1.0, 1.0, 2.0, 2.0], "fit_s": [2.0, 9.0, 3.0, 60.0],
                  "predict_s": [1.0, 2.0, 1.0, 14.0], "machine": ["AMD EPYC; AVX2"] * 4}
                 ).to_csv(tmp_path / "eager.csv", index=False)
    text = results_docs.smoke_eager_markdown(tmp_path / "eager.csv")
    lines = text.splitlines()
    # the order of the run; graph / eager totals: vgg16 12 / 4 = 3.0x, densenet121 76 / 6
    assert lines[2].split("|")[1].strip() == "vgg16"
    assert "| 9.0 / 2.0 " in lines[2] and "| 3.0x " in lines[2]
    assert "| 60.0 / 3.0 " in lines[3] and "| 12.7x " in lines[3]
    assert "machine: AMD EPYC; AVX2" in text
    assert "Not run yet" in results_docs.smoke_eager_markdown(tmp_path / "none.csv")


def test_train_step_block_compares_each_variant_with_the_studys_batch(tmp_path):
    pd.DataFrame({"network": ["mobilenet_v2"] * 3, "image_size": [96] * 3,
                  "batch": [16, 64, 16], "compiler": ["TensorFlow graph"] * 2 + ["XLA"],
                  "steps": [32, 8, 32], "images_per_s": [50.0, 40.0, 10.0],
                  "first_step_s": [5.0, 6.0, 48.0], "machine": ["AMD EPYC; AVX2"] * 3}
                 ).to_csv(tmp_path / "step.csv", index=False)
    text = results_docs.train_step_markdown(tmp_path / "step.csv")
    lines = text.splitlines()
    assert "| 1.00x " in lines[2] and "| 0.80x " in lines[3] and "| 0.20x " in lines[4]
    assert "XLA" in lines[4] and "mobilenet_v2 at 96 px" in text and "AMD EPYC; AVX2" in text
    assert "Not run yet" in results_docs.train_step_markdown(tmp_path / "none.csv")


def test_cell_detail_block_gives_each_source_and_splits_median_detail(tmp_path):
    """The block reads the study's cell cache; a flat cell has no detail, noise a lot."""
    from leuko.cells import multisource
    from leuko.cells.preprocess import detail
    from leuko.thesis.study import Paths, save_features, write_manifest

    paths = Paths(tmp_path)
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    flat = np.full((2, 16, 16, 3), 128, np.uint8)
    images = np.concatenate([flat, noisy])
    # the manifest's rows are not in the images' order: each row names its image ("index")
    rows = pd.DataFrame({"path": [f"p{i}.png" for i in range(4)],
                         "source": ["pbc", "pbc", "blood-cell-images", "blood-cell-images"],
                         "split": "train", "label": "NEUTROPHIL", "group": list("abcd"),
                         "sha256": list("abcd"), "cell_found": True, "tight": False,
                         "index": [2, 3, 0, 1]})
    write_manifest(rows, paths.manifest(multisource.CACHE_NAME))
    save_features(multisource.cache_path(paths), images=images, found=np.ones(4, bool),
                  paths=rows["path"].to_numpy(dtype=str))
    text = results_docs.cell_detail_markdown(paths)
    cells = {tuple(c.strip() for c in line.split("|")[1:3]): [float(c) for c in
                                                             line.split("|")[3:5]]
             for line in text.splitlines()[2:] if line.startswith("| ")}
    expected = round(float(np.median([detail(image) for image in noisy])), 1)
    assert cells == {("blood-cell-images", "train"): [2, 0.0], ("pbc", "train"): [2, expected]}
    assert expected > 100
    assert "At 16 px" in text
    assert results_docs.cell_detail_markdown(Paths(tmp_path / "none")) is None  # kept as is
    by_class = results_docs.cell_detail_markdown(paths, by="label").splitlines()
    assert [c.strip() for c in by_class[0].split("|")[1:4]] == [
        "class", "median detail, blood-cell-images", "median detail, pbc"]
    assert [float(c) for c in by_class[2].split("|")[2:4]] == [0.0, expected]
    with pytest.raises(ValueError, match="by"):
        results_docs.cell_detail_markdown(paths, by="lab")


def test_the_report_lists_only_the_models_its_parameters_train(tmp_path):
    """The smoke preset's parameters list its 63 + 3 + 3 models; the files another preset
    left in reports/metrics (here the default's repeat seed 2) are not the study's, and a
    listed model without its file stops the report, naming it."""
    import shutil
    from pathlib import Path

    smoke = Path(__file__).resolve().parents[1] / "params" / "presets" / "smoke"
    params = tmp_path / "params"
    params.mkdir()
    for name in ("wbc", "leukemia", "cells"):
        shutil.copy(smoke / f"{name}.yaml", params / f"{name}.yaml")
    listed = report.listed_models(params)
    assert len(listed) == 9 * (5 + 1 + 1) + 3 + 3
    assert "blood-cell-images-densenet201-imagenet-seed1" in listed
    assert "blood-cell-images-pooled-vgg16-imagenet" in listed
    assert {"all-idb2-leukemia_cnn-scratch", "all-idb2-efficientnet_b2-scratch",
            "all-idb2-leukemia_cnn-scratch-seed1", "cells-both"} <= set(listed)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    stale = "blood-cell-images-mobilenet_v2-imagenet-seed2"
    for model in [*listed, stale]:
        (metrics / f"{model}.json").write_text(json.dumps({"model": model}))
    assert sorted(r["model"] for r in report.load_results(metrics, listed)) == sorted(listed)
    assert stale in {r["model"] for r in report.load_results(metrics)}
    (metrics / "cells-pbc.json").unlink()
    with pytest.raises(FileNotFoundError, match="cells-pbc"):
        report.load_results(metrics, listed)


def _cell_run(training: str, seed: int, correct: dict[str, int], n: int = 10) -> dict:
    """A metrics file of run ``seed`` of the cell model ``cells-<training>``: ``correct``
    right of ``n`` on each of its parts."""
    from leuko.cells.multisource import TRAININGS

    splits = {}
    for part, right in correct.items():
        result = _metrics_file("c-n-r", "cells", right, n, list(range(n)))["splits"]["test"]
        result["held_out_source"] = part.split("/")[0] not in TRAININGS[training]
        result |= {"abstain": {"coverage": 1.0, "accuracy_kept": right / n}, "ece": 0.1}
        splits[part] = result
    model = f"cells-{training}" if seed == 0 else f"cells-{training}-seed{seed}"
    return {"model": model, "dataset": "cells", "network": "mobilenet_v2",
            "regime": "imagenet-finetune", "trained_on": training,
            "sources": list(TRAININGS[training]), "training_seed": seed, "splits": splits,
            "training": {"train_seconds": 1.0}, "machine": _machine("Test CPU")}


def test_cells_seed_spread_per_training_and_part_in_the_tables_order(tmp_path):
    """Runs in any order -> one row per training and held-out part, in the cross-source
    table's order (trainings, then TEST_PARTS), with mean ± sd [min, max] by hand."""
    results = [_cell_run("pbc", 1, {"pbc/test": 9, "blood-cell-images/test_simple": 2}),
               _cell_run("blood-cell-images", 0, {"pbc/test": 7}),
               _cell_run("pbc", 0, {"pbc/test": 8, "blood-cell-images/test_simple": 4}),
               _cell_run("pbc", 2, {"pbc/test": 7, "blood-cell-images/test_simple": 6})]
    runs = report.cells_seed_runs(results)
    assert runs["model"].tolist() == ["cells-blood-cell-images", "cells-pbc", "cells-pbc-seed1",
                                      "cells-pbc-seed2", "cells-pbc", "cells-pbc-seed1",
                                      "cells-pbc-seed2"]
    assert runs["label"].iloc[-1] == "pbc -> blood-cell-images/test_simple"
    view = report.cells_seed_view(results)
    assert view["tested on"].tolist() == ["pbc/test", "pbc/test",
                                          "blood-cell-images/test_simple"]
    assert view["unseen source"].tolist() == ["yes", "no", "yes"]
    assert view["runs"].tolist() == [1, 3, 3]
    assert view["training seeds"].tolist() == ["0", "0, 1, 2", "0, 1, 2"]
    # 0.4, 0.2, 0.6: mean 0.4, sd 0.2
    assert view["accuracy %: mean ± sd [min, max]"].tolist() == [
        "70.0", "80.0 ± 10.0 [70.0, 90.0]", "40.0 ± 20.0 [20.0, 60.0]"]
    record = _spread_record(tmp_path, {"cells_seed_summary": view})
    text = results_docs.cells_seeds_markdown(record)
    assert "| pbc " in text and "40.0 ± 20.0 [20.0, 60.0]" in text
    assert "commit abc1234" in text and "Test CPU" in text
    assert "Not recorded" in results_docs.cells_seeds_markdown(tmp_path / "nothing")


def _spread_record(folder, tables: dict) -> Path:
    """A spread record (``benchmarks/pipeline/spread_record.py``) holding ``tables`` (name -> frame)."""
    record = folder / "spread"
    record.mkdir()
    for name, table in tables.items():
        table.to_csv(record / f"{name}.csv", index=False)
    (record / "record.json").write_text(json.dumps({
        "preset": "spread", "commit": "abc1234", "first_start": "2026-12-01T07:00:09+00:00",
        "last_end": "2026-12-01T22:51:23+00:00", "stages": 54, "repeat_stages": 24,
        "stage_minutes": 117.5, "machines": ["Test CPU; 2 cores; AVX2; TensorFlow 2.21.0"]}))
    return record


def test_the_report_lists_the_cell_models_repeats_and_ensembles(tmp_path):
    from pathlib import Path

    params = tmp_path / "params"
    params.mkdir()
    presets = Path(__file__).resolve().parents[1] / "params" / "presets"
    for name in ("wbc", "leukemia", "cells"):
        (params / f"{name}.yaml").write_text((presets / "default" / f"{name}.yaml").read_text())
    assert [m for m in report.listed_models(params) if m.startswith("cells-")] == [
        "cells-blood-cell-images", "cells-pbc", "cells-both"]  # the default: one draw each
    for name in ("wbc", "leukemia", "cells"):
        (params / f"{name}.yaml").write_text((presets / "spread" / f"{name}.yaml").read_text())
    cells = [m for m in report.listed_models(params) if m.startswith("cells-")]
    assert cells == ["cells-blood-cell-images", "cells-blood-cell-images-seed1",
                     "cells-blood-cell-images-seed2", "cells-pbc", "cells-pbc-seed1",
                     "cells-pbc-seed2", "cells-both", "cells-both-seed1", "cells-both-seed2",
                     "cells-blood-cell-images-ensemble", "cells-pbc-ensemble",
                     "cells-both-ensemble"]


def test_cells_ensemble_table_against_its_runs_by_hand(tmp_path):
    """An ensemble right on 3 of 4 cells, its runs on 2, 3 and 1: one run 50 ± 25 %, the
    ensemble 75 %, +25 points; the block names the runs, and says when it has not run."""
    runs = [_cell_run("pbc", seed, {"pbc/test": right}, n=4)
            for seed, right in ((0, 2), (1, 3), (2, 1))]
    ensemble = _cell_run("pbc", 0, {"pbc/test": 3}, n=4)
    ensemble |= {"model": "cells-pbc-ensemble", "members": [r["model"] for r in runs]}
    results = [*runs, ensemble]
    paths = [f"data/pbc/x/{i}.jpg" for i in range(4)]
    predictions, manifests, metrics = (tmp_path / n for n in ("predictions", "manifests",
                                                              "metrics"))
    for folder in (predictions, manifests, metrics):
        folder.mkdir()
    for result in results:
        right = round(result["splits"]["pbc/test"]["accuracy"] * 4)
        pd.DataFrame({"path": paths, "source": "pbc", "split": "test", "actual": "A",
                      "predicted": ["A"] * right + ["B"] * (4 - right)}).to_csv(
            predictions / f"{result['model']}.csv", index=False)
        (metrics / f"{result['model']}.json").write_text(json.dumps(result))
    pd.DataFrame({"path": paths, "group": paths}).to_csv(manifests / "cells.csv", index=False)
    table = report.cells_ensemble_table(results, predictions, manifests, n_boot=200)
    row = table.iloc[0]
    assert (row["trained on"], row["tested on"], row["runs"]) == ("pbc", "pbc/test", 3)
    assert (row["accuracy one run mean"], row["accuracy one run sd"]) == pytest.approx(
        (0.5, 0.25))
    assert (row["accuracy ensemble"], row["accuracy difference"]) == pytest.approx((0.75, 0.25))
    assert row["difference low"] <= 0.25 <= row["difference high"]
    view = report.cells_ensemble_view(table)
    assert view.iloc[0]["accuracy % one run: mean ± sd"] == "50.0 ± 25.0"
    assert view.iloc[0]["ensemble minus one run, points [95 % CI]"].startswith("+25.0 [")
    record = _spread_record(tmp_path, {"cells_ensembles": table})
    text = results_docs.cells_ensemble_markdown(record)
    assert "| pbc " in text and "50.0 ± 25.0" in text and "| yes " not in text
    assert "Test CPU" in text and "2026-12-01T07:00" in text


def test_a_choice_over_seeds_against_the_study_by_hand(tmp_path):
    """Baseline runs right on 2, 3, 1 of 4 cells (ensemble 3), the variant's on 4, 3, 2
    (ensemble 4): one run 50 ± 25 % -> 75 ± 25 %, +25 points; ensembles 75 -> 100 %, +25."""
    from leuko.thesis.study import Paths

    right = {"baseline": (2, 3, 1, 3), "variant": (4, 3, 2, 4)}
    paths = [f"data/pbc/x/{i}.jpg" for i in range(4)]
    roots = {side: Paths(tmp_path / side) for side in right}
    manifest = roots["baseline"].manifest("cells")
    manifest.parent.mkdir(parents=True)
    pd.DataFrame({"path": paths, "group": paths}).to_csv(manifest, index=False)
    for side, counts in right.items():
        runs = [_cell_run("pbc", seed, {"pbc/test": n}, n=4) for seed, n in enumerate(counts[:3])]
        ensemble = _cell_run("pbc", 0, {"pbc/test": counts[3]}, n=4)
        ensemble |= {"model": "cells-pbc-ensemble", "members": [r["model"] for r in runs]}
        for result, n in zip([*runs, ensemble], counts, strict=True):
            result["training"]["saved_val_accuracy"] = 0.9
            for path in (roots[side].metrics(result["model"]),
                         roots[side].predictions(result["model"])):
                path.parent.mkdir(parents=True, exist_ok=True)
            roots[side].metrics(result["model"]).write_text(json.dumps(result))
            pd.DataFrame({"path": paths, "source": "pbc", "split": "test", "actual": "A",
                          "predicted": ["A"] * n + ["B"] * (4 - n)}).to_csv(
                roots[side].predictions(result["model"]), index=False)
    ids = ["cells-pbc", "cells-pbc-seed1", "cells-pbc-seed2", "cells-pbc-ensemble"]
    table = results_docs.cells_choice_seeds_table(ids, roots["baseline"], roots["variant"],
                                                  n_boot=200)
    row = table.iloc[0]
    assert (row["trained on"], row["tested on"], row["runs"], row["seeds"]) == (
        "pbc", "pbc/test", 3, "0 1 2")
    assert [row[f"accuracy {side} {stat}"] for side in ("baseline", "variant")
            for stat in ("mean", "sd", "ensemble")] == pytest.approx(
        [0.5, 0.25, 0.75, 0.75, 0.25, 1.0])
    assert (row["accuracy difference"], row["ensemble accuracy difference"]) == pytest.approx(
        (0.25, 0.25))
    assert row["difference low"] <= 0.25 <= row["difference high"]
    csv = tmp_path / "choice.csv"
    table.assign(machine="Test CPU").to_csv(csv, index=False)
    text = results_docs.cell_variant_seeds_markdown(csv, "before", "after", "script.py")
    assert "50.0 ± 25.0 → 75.0 ± 25.0" in text and "75.0 → 100.0" in text
    assert "+25.0 [" in text and "training seeds 0 1 2" in text and "Test CPU" in text
    assert "commit" not in text
    table.assign(machine="Test CPU", **{"snapshot commit": "abc1234"}).to_csv(csv, index=False)
    text = results_docs.cell_variant_seeds_markdown(csv, "before", "after", "script.py")
    assert "before: the study at commit abc1234, before the change" in text
    assert "Not run yet" in results_docs.cell_variant_seeds_markdown(tmp_path / "no.csv", "b", "a",
                                                                     "script.py")
    roots["variant"].metrics("cells-pbc-seed2").unlink()
    with pytest.raises(FileNotFoundError, match="cells-pbc-seed2"):
        results_docs.cells_choice_seeds_table(ids, roots["baseline"], roots["variant"])


def test_export_choice_block_names_the_model_and_every_candidates_score(tmp_path):
    meta = tmp_path / "wbc.json"
    assert results_docs.export_choice_markdown(meta) is None  # a fresh clone: block kept
    meta.write_text(json.dumps({"model_id": "cells-both", "data_version": {"md5": "0123456789"},
                                "choice": {"rule_used": "val_macro_f1_shifted", "scores": {
                                    "cells-both-ensemble": 0.842, "cells-both": 0.848}}}))
    assert results_docs.export_choice_markdown(meta) == (
        "The study's export chose **cells-both** by `val_macro_f1_shifted`: cells-both 84.8 %, "
        "cells-both-ensemble 84.2 % (validation scores of every candidate; data version "
        "01234567).")


def test_cells_data_table_counts_images_and_distinct_source_cells_per_class_and_part():
    rows = [  # source, split, label, group: three copies of one cell, one of another
        ("blood-cell-images", "train", "MONOCYTE", "train/MONOCYTE/1"),
        ("blood-cell-images", "train", "MONOCYTE", "train/MONOCYTE/1"),
        ("blood-cell-images", "train", "MONOCYTE", "train/MONOCYTE/1"),
        ("blood-cell-images", "train", "NEUTROPHIL", "train/NEUTROPHIL/7"),
        ("blood-cell-images", "test_simple", "NEUTROPHIL", "test/NEUTROPHIL/7"),
        ("pbc", "test", "BASOPHIL", "hash-a"),
        ("pbc", "test", "BASOPHIL", "hash-a"),  # a byte-identical pair: one cell
        ("pbc", "test", "PLATELET", "hash-b"),
    ]
    manifest = pd.DataFrame(rows, columns=["source", "split", "label", "group"]).assign(
        path=[f"img{i}.jpg" for i in range(len(rows))])
    table = results_docs.cells_data_table(manifest).set_index("class")
    # the differential's classes first, in the study's order, then the other cell types
    assert list(table.index) == ["basophil", "monocyte", "neutrophil", "platelet"]
    assert list(table.columns) == ["blood-cell-images train", "blood-cell-images test_simple",
                                   "pbc test"]
    assert table.loc["monocyte", "blood-cell-images train"] == "3 (1)"
    assert table.loc["neutrophil", "blood-cell-images train"] == "1 (1)"
    assert table.loc["basophil", "pbc test"] == "2 (1)"
    assert table.loc["monocyte", "pbc test"] == ""  # a class the part lacks is blank


def test_results_blocks_are_written_into_whichever_document_holds_their_markers(tmp_path):
    def block(name, body):
        start, end = results_docs.readme_block_markers(name)
        return f"{start}\n{body}\n{end}"

    readme, log = tmp_path / "README.md", tmp_path / "log.md"
    readme.write_text(f"# README\n{block('results', 'old')}\n{block('cells', 'old')}\nend\n")
    log.write_text(f"# Log\n\n{block('cells-tta', 'old')}\n")
    table = report.results_table([_metrics_file("wbc-net-imagenet", "wbc", 71, 71,
                                                list(range(71)))])
    changed = results_docs.update_documents((readme, log), table, {"cells": "new cells",
                                                                   "cells-tta": "new tta"})
    assert changed == [readme, log]
    assert block("cells", "new cells") in readme.read_text()
    assert readme.read_text().endswith("\nend\n")
    assert results_docs.readme_table(table) in readme.read_text()
    assert log.read_text() == f"# Log\n\n{block('cells-tta', 'new tta')}\n"
    # written again: nothing changes; a block whose source a fresh clone lacks (None) is kept
    assert results_docs.update_documents((readme, log), table, {"cells": "new cells",
                                                                "cells-tta": "new tta"}) == []
    assert results_docs.update_documents((readme, log), table, {"cells": None}) == []
    assert block("cells", "new cells") in readme.read_text()
    with pytest.raises(ValueError, match="block 'cells-size'.*none of"):
        results_docs.update_documents((readme, log), table, {"cells-size": "x"})
    log.write_text(block("cells", "a copy"))
    with pytest.raises(ValueError, match="block 'cells'.*in one document"):
        results_docs.update_documents((readme, log), table, {"cells": "x"})


def test_cell_groups_add_an_unseen_labs_cells_after_the_sources(tmp_path):
    """The sources' source-cell ids as manifest_groups gives them; an unseen lab's from its
    own manifest, shifted past them, so no id is shared between two manifests."""
    pd.DataFrame({"path": ["s/a.jpg", "s/b.jpg", "s/c.jpg"], "group": ["g1", "g1", "g2"],
                  "sha256": ["x", "y", "z"]}).to_csv(tmp_path / "cells.csv", index=False)
    pd.DataFrame({"path": ["lab/1.jpg", "lab/2.jpg"], "group": ["h1", "h2"],
                  "sha256": ["h1", "h2"]}).to_csv(tmp_path / "lab.csv", index=False)
    sources = report.cell_groups(tmp_path, ["pbc/test"])
    assert sources.equals(report.manifest_groups(tmp_path, "cells"))
    groups = report.cell_groups(tmp_path, ["pbc/test", "lab/unseen"])
    assert groups["s/a.jpg"] == groups["s/b.jpg"] != groups["s/c.jpg"]
    assert groups["lab/1.jpg"] != groups["lab/2.jpg"]
    assert not set(groups[["lab/1.jpg", "lab/2.jpg"]]) & set(sources)


def test_the_new_lab_section_says_what_has_not_run(tmp_path):
    items, tables = report.new_lab_section_items({}, tmp_path / "absent")
    text = " ".join(i.data for i in items if hasattr(i, "data"))
    assert "dvc repro evaluate-cells" in text and "dvc repro adapt-cells" in text
    assert tables == {}


def test_adapt_features_block_pairs_each_feature_set_with_the_shipped_one_by_draw(tmp_path):
    from leuko.reporting.results_docs import adapt_features_markdown

    rows = [("shipped-64", 0, 0.70, 0.60), ("shipped-64", 1, 0.74, 0.64),
            ("both", 0, 0.75, 0.61), ("both", 1, 0.76, 0.66)]
    csv = tmp_path / "adapt_features.csv"
    pd.DataFrame([{"features": f, "k": 10, "draw": d, "macro_f1": m, "accuracy": a,
                   "machine": "AMD EPYC"} for f, d, m, a in rows]).to_csv(csv, index=False)
    text = adapt_features_markdown(csv)
    table = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[3:7]]
             for line in text.splitlines() if line.startswith("|") and "10 |" in line}
    # both: mean 75.5, sd 0.7; paired by draw: +5.0 and +2.0 points
    assert table["both"] == ["2", "75.5 ± 0.7", "63.5 ± 3.5", "+3.5 [+2.0, +5.0]"]
    assert table["shipped-64"] == ["2", "72.0 ± 2.8", "62.0 ± 2.8", "–"]
    assert "AMD EPYC" in text
    assert "Not run yet" in adapt_features_markdown(tmp_path / "none.csv")


def test_jpeg_causes_block_splits_the_changed_cells_by_cause(tmp_path):
    from leuko.reporting.results_docs import jpeg_causes_markdown

    csv = tmp_path / "jpeg_causes.csv"
    pd.DataFrame([{"preparation": "study", "tested on": "lab/unseen", "quality": 75,
                   "images": 358, "accuracy": 0.7, "macro F1": 0.7386, "framed elsewhere": 14,
                   "changed": 23, "changed, framed elsewhere": 9,
                   "changed, same frame, unsure": 13, "changed, same frame, sure": 1,
                   "model": "m.keras", "model sha256": "abc", "machine": "AMD EPYC"}]
                 ).to_csv(csv, index=False)
    text = jpeg_causes_markdown(csv)
    row = next(line for line in text.splitlines() if line.startswith("| study"))
    assert [c.strip() for c in row.split("|")[2:9]] == ["75", "73.9", "23 / 358", "9", "13",
                                                        "1", "14"]
    assert "lab/unseen" in text and "AMD EPYC" in text
    assert "Not run yet" in jpeg_causes_markdown(tmp_path / "none.csv")


def test_adapt_finetune_block_pairs_the_two_methods_by_draw(tmp_path):
    from leuko.reporting.results_docs import adapt_finetune_markdown

    csv = tmp_path / "adapt_finetune.csv"
    pd.DataFrame([{"scenario": "s", "model": "cells-pbc", "tested on": "b/test", "k": 10,
                   "draw": d, "images": 100, "lab cells": 40, "source cells": 400, "blocks": 2,
                   "epochs": 5, "macro F1 last layer": last, "accuracy last layer": 0.5,
                   "macro F1 fine-tuned": tuned, "accuracy fine-tuned": 0.7,
                   "fine-tune seconds": sec, "machine": "AMD EPYC"}
                  for d, last, tuned, sec in [(0, 0.60, 0.70, 40.0), (1, 0.62, 0.66, 50.0)]]
                 ).to_csv(csv, index=False)
    text = adapt_finetune_markdown(csv)
    row = next(line for line in text.splitlines() if line.startswith("| cells-pbc"))
    # last layer 61.0 ± 1.4; fine-tuned 68.0 ± 2.8; paired: +10 and +4 points
    assert [c.strip() for c in row.split("|")[3:10]] == [
        "10", "2", "61.0 ± 1.4", "68.0 ± 2.8", "+7.0 [+4.0, +10.0]", "50.0 → 70.0", "45"]
    assert "top 2 MobileNetV2 blocks" in text and "AMD EPYC" in text
    assert "Not run yet" in adapt_finetune_markdown(tmp_path / "none.csv")
