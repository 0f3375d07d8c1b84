"""Leave one source out, and the lab unlike both: the parts every cell model is scored on, one
scoring shared with `leuko score`, per-class recall with intervals, and the unseen lab in
evaluate_cell_models' output on real cells."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import built, tiny_model
from leuko.cells import crosssource, multisource, unseen
from leuko.cells.multisource import CellCache
from leuko.core import score
from leuko.thesis.study import Paths, save_model

ROOT = Path(__file__).resolve().parents[1]


def _cache(rows: list[tuple[str, str, str, str]]) -> CellCache:
    """A cache of 2x2 images from ``(path, source, split, label)`` rows."""
    frame = pd.DataFrame(rows, columns=["path", "source", "split", "label"])
    frame = frame.assign(group=frame["path"], index=np.arange(len(frame)), cell_found=True,
                         tight=False)
    return CellCache(frame, np.arange(len(frame) * 12, dtype=np.uint8).reshape(-1, 2, 2, 3))


def test_every_model_meets_the_test_parts_then_the_unseen_labs():
    sources = _cache([(f"{s}-{p}.jpg", s, p, "NEUTROPHIL") for s, p in multisource.TEST_PARTS]
                     + [("pbc-train.jpg", "pbc", "train", "NEUTROPHIL")])
    lab = _cache([("lab/b.jpg", "lab", "unseen", "EOSINOPHIL"),
                  ("lab/a.jpg", "lab", "unseen", "MONOCYTE")])
    parts = crosssource.held_out_parts(sources, {"lab": lab})
    names = [part for part, _, _ in parts]
    assert names == [f"{s}/{p}" for s, p in multisource.TEST_PARTS] + ["lab/unseen"]
    rows, images = parts[-1][1:]
    assert rows["path"].tolist() == ["lab/a.jpg", "lab/b.jpg"]  # sorted, as cache.part sorts
    assert np.array_equal(images, lab.images[[1, 0]])
    assert [p for p, _, _ in crosssource.held_out_parts(sources)] == names[:-1]
    assert sorted(["lab/unseen", "pbc/test", "blood-cell-images/test", "another/unseen"],
                  key=crosssource.part_rank) == ["pbc/test", "blood-cell-images/test",
                                                 "another/unseen", "lab/unseen"]
    assert crosssource.is_unseen_part("lab/unseen") and not crosssource.is_unseen_part(
        "pbc/test")
    with pytest.raises(ValueError, match="cells-unseen"):
        crosssource.held_out_parts(sources, {"other": lab})


def test_a_held_out_part_is_scored_as_leuko_score_scores_a_lab():
    """score_part and `leuko score` share one scoring: with every image its own cell, the same
    predictions give the same figures."""
    classes = ["EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL"]
    rng = np.random.default_rng(0)
    labels = rng.choice(classes[:2] + ["NEUTROPHIL"], 40)
    rows = pd.DataFrame({"path": [f"lab/{c}/{i}.jpg" for i, c in enumerate(labels)],
                         "source": "lab", "split": "unseen", "label": labels,
                         "group": [f"g{i}" for i in range(40)]})
    probs = rng.dirichlet([1, 1, 1], 40)
    metrics, frame = crosssource.score_part(probs, rows, classes, threshold=0.5, n_boot=300,
                                            seed=1)
    predictions = frame.rename(columns={"actual": "label"})[["path", "predicted",
                                                             "uncertain"]]
    scored = score.score(predictions, classes, frame["actual"], classes, n_boot=300, seed=1)
    assert scored.intervals == {k: metrics["intervals"][k] for k in ("accuracy", "macro_f1")}
    assert {k: v for k, v in metrics["abstain"].items() if k != "threshold"} == scored.abstain
    assert metrics["abstain"]["threshold"] == 0.5
    assert metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == [
        classes.index(c) for c in labels]))
    recalls = {k for k in metrics["intervals"] if k.startswith("recall_")}
    assert recalls == {f"recall_{c}" for c in set(labels)}


def _result(parts: dict[str, dict[str, tuple[int, float]]]) -> dict:
    """A metrics result whose parts hold ``{class: (support, recall)}``; the bionet part's
    images are each their own cell (an exact interval per class)."""
    splits = {}
    for part, classes in parts.items():
        splits[part] = {
            "per_class": {c: {"support": n, "recall": r} for c, (n, r) in classes.items()},
            "intervals": {f"recall_{c}": {"value": r, "low": r / 2, "high": 1.0}
                          for c, (n, r) in classes.items() if n}}
        if part == "bionet/unseen":
            for v in splits[part]["per_class"].values():
                v["recall_exact"] = {"low": 0.1, "high": 0.9}
    return {"m": {"splits": splits}}


def test_recall_with_intervals_one_row_per_class_a_part_holds():
    result = _result({"pbc/test": {"EOSINOPHIL": (10, 0.8), "BASOPHIL": (0, 0.0)},
                      "bionet/unseen": {"MONOCYTE": (5, 0.4), "EOSINOPHIL": (3, 1.0)}})
    table = crosssource.recall_table(result)
    columns = ["tested on", "class", "images", "recall", "recall low", "exact low"]
    assert table[columns].fillna(-1).values.tolist() == [
        ["pbc/test", "EOSINOPHIL", 10, 0.8, 0.4, -1],
        ["bionet/unseen", "MONOCYTE", 5, 0.4, 0.2, 0.1],
        ["bionet/unseen", "EOSINOPHIL", 3, 1.0, 0.5, 0.1]]
    view = crosssource.recall_view(table)
    assert view.index.tolist() == [("m", "pbc/test"), ("m", "bionet/unseen")]
    assert view.loc[("m", "bionet/unseen"), "MONOCYTE"] == "40 [10, 90] (5)"  # exact
    assert view.loc[("m", "pbc/test"), "EOSINOPHIL"] == "80 [40, 100] (10)"  # bootstrap
    assert view.loc[("m", "pbc/test"), "MONOCYTE"] == "–"


@pytest.fixture(scope="module")
def scored_on_real_cells(tmp_path_factory):
    """A tiny 8-class model (mean colour -> softmax) at the caches' size, evaluated as the
    study's models are on the real caches: every source's test part and bionet."""
    paths = Paths(ROOT)
    built(multisource.cache_path(paths))
    built(unseen.cache_path("bionet", paths))
    cache = multisource.load_cell_cache(paths)
    labs = unseen.load_unseen_caches(paths=paths)
    work = Paths(tmp_path_factory.mktemp("evaluate"))
    size = int(cache.images.shape[1])
    rng = np.random.default_rng(0)
    classes = list(multisource.CLASS_ORDER)
    save_model(tiny_model(len(classes), size, rng.normal(size=(3, len(classes)))),
               work.model("cells-tiny"))
    summary = {"classes": classes, "sources": ["blood-cell-images", "pbc"], "views": 8,
               "temperature": 1.0, "abstain": {"threshold": 0.2, "val_coverage": 0.95},
               "network": "tiny", "regime": "test", "training": "both", "seed": 0,
               "train_seconds": 0.0, "epochs_run": 0, "saved_val_accuracy": 0.0,
               "val_ece": {}, "n_train": {}}
    work.train_summary("cells-tiny").parent.mkdir(parents=True, exist_ok=True)
    work.train_summary("cells-tiny").write_text(json.dumps(summary))
    results = crosssource.evaluate_cell_models(["cells-tiny"], cache, n_boot=100, seed=0,
                                               shift_per_class=2, paths=work, unseen=labs)
    return results["cells-tiny"], labs["bionet"], work


def test_the_unseen_lab_is_scored_with_every_source_part(scored_on_real_cells):
    result, lab, work = scored_on_real_cells
    parts = list(result["splits"])
    assert parts == [f"{s}/{p}" for s, p in multisource.TEST_PARTS] + ["bionet/unseen"]
    m = result["splits"]["bionet/unseen"]
    counts = Counter(lab.rows["label"])  # 116 eosinophils, 52 lymphocytes, 5 monocytes, ...
    assert m["n"] == m["n_cells"] == len(lab.rows) == sum(counts.values())
    assert {c: v["support"] for c, v in m["per_class"].items() if v["support"]} == counts
    assert m["per_class"]["BASOPHIL"]["support"] == 0 and m["n_unknown_class"] == 0
    assert m["held_out_source"] is True  # no model trains on it
    assert m["classes_present"] == sorted(counts, key=result["classes"].index)
    assert set(m["intervals"]) == {"accuracy", "macro_f1", *(f"recall_{c}" for c in counts)}
    assert np.asarray(m["confusion_matrix"]).sum(axis=1).tolist() == [
        counts.get(c, 0) for c in result["classes"]]
    assert m["cells_not_found"] == int((~lab.rows["cell_found"]).sum())
    predictions = pd.read_csv(work.predictions("cells-tiny"))
    bionet = predictions[predictions["source"] == "bionet"]
    assert len(bionet) == len(lab.rows) and set(bionet["split"]) == {"unseen"}
    assert m["accuracy"] == pytest.approx((bionet["actual"] == bionet["predicted"]).mean())
    saved = crosssource.load_probabilities(work.probabilities("cells-tiny"))
    assert saved["bionet/unseen"].shape == (len(lab.rows), len(result["classes"]))
    assert list(saved["paths/bionet/unseen"]) == lab.part("bionet", "unseen")[0][
        "path"].tolist()


def test_the_unseen_lab_in_the_tables(scored_on_real_cells):
    result, lab, _ = scored_on_real_cells
    results = {"cells-tiny": result}
    table = crosssource.cross_source_table(results)
    row = table[table["tested on"] == "bionet/unseen"].iloc[0]
    assert (row["images"], row["held-out source"]) == (len(lab.rows), True)
    recall = crosssource.recall_table(results)
    on_lab = recall[recall["tested on"] == "bionet/unseen"].set_index("class")
    assert on_lab["images"].to_dict() == dict(Counter(lab.rows["label"]))
    assert (on_lab["recall low"] <= on_lab["recall"]).all()
    assert (on_lab["recall"] <= on_lab["recall high"]).all()
    # every bionet field its own cell: exact intervals, wide for its few monocytes
    assert (on_lab["exact low"] <= on_lab["recall"]).all()
    assert (on_lab["recall"] <= on_lab["exact high"]).all()
    widths = on_lab["exact high"] - on_lab["exact low"]
    assert widths.idxmax() == on_lab["images"].idxmin()
    summary, per_class = crosssource.unseen_lab_views(results)
    assert summary["tested on"].tolist() == ["bionet/unseen"]
    assert per_class.index.tolist() == [("cells-tiny", "bionet/unseen")]
