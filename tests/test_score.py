"""`leuko score`: classify's per-cell CSV against a lab's labels, figures by hand."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from leuko.core import score
from leuko.core.datasets import DIFFERENTIAL_CLASSES, PBC_CLASSES
from leuko.tool import cli

CLASSES = list(PBC_CLASSES)


def _predictions(tmp_path, rows: list[tuple[str, str, bool]]):
    """A classify CSV of ``(path, predicted, uncertain)`` rows."""
    frame = pd.DataFrame(rows, columns=["path", "predicted", "uncertain"])
    frame["uncertain"] = frame["uncertain"].map({True: "true", False: "false"})
    frame.insert(2, "confidence", 0.9)
    frame["cell_found"] = "true"
    for c in CLASSES:
        frame[f"p_{c}"] = (frame["predicted"] == c).astype(float)
    csv = tmp_path / "cells.csv"
    frame.to_csv(csv, index=False)
    return csv


ROWS = [("lab/neutrophil/1.jpg", "NEUTROPHIL", False),
        ("lab/neutrophil/2.jpg", "NEUTROPHIL", False),
        ("lab/neutrophil/3.jpg", "EOSINOPHIL", True),
        ("lab/Lymphocytes/4.jpg", "LYMPHOCYTE", False),
        ("lab/Lymphocytes/5.jpg", "NEUTROPHIL", False),
        ("lab/smudge/6.jpg", "LYMPHOCYTE", False)]


def test_labels_name_classes_in_any_case_plural_or_alias():
    assert score.normalise_label("Neutrophils", CLASSES) == "NEUTROPHIL"
    assert score.normalise_label(" segmented_neutrophil ", CLASSES) == "NEUTROPHIL"
    assert score.normalise_label("BNE", CLASSES) == "NEUTROPHIL"
    assert score.normalise_label("ig", CLASSES) == "IG"
    assert score.normalise_label("platelets", CLASSES) == "PLATELET"
    assert score.normalise_label("smudge", CLASSES) is None
    assert score.normalise_label("IG", ["NEUTROPHIL"]) is None  # not a class of this model


def test_score_by_hand_from_folder_labels(tmp_path):
    """5 labelled cells (3 neutrophils, 2 lymphocytes), 3 right; one uncertain; a smudge."""
    predictions, classes = score.read_predictions(_predictions(tmp_path, ROWS))
    assert classes == CLASSES
    labels = score.labels_for(predictions, None)
    with pytest.raises(ValueError, match=r"'smudge' \(1 cells\)"):
        score.score(predictions, classes, labels, list(DIFFERENTIAL_CLASSES), n_boot=100)
    result = score.score(predictions, classes, labels, list(DIFFERENTIAL_CLASSES), n_boot=200,
                         skip_unknown=True)
    assert (result.rows, result.scored, result.unknown_labels) == (6, 5, {"smudge": 1})
    assert result.present == ["LYMPHOCYTE", "NEUTROPHIL"]
    assert result.intervals["accuracy"]["value"] == pytest.approx(3 / 5)
    # neutrophil: precision 2/3, recall 2/3; lymphocyte: precision 1, recall 1/2 -> F1 2/3 each
    assert result.intervals["macro_f1"]["value"] == pytest.approx(2 / 3)
    low, high = result.intervals["accuracy"]["low"], result.intervals["accuracy"]["high"]
    assert 0 <= low <= 0.6 <= high <= 1
    assert result.abstain["coverage"] == pytest.approx(4 / 5)
    assert result.abstain["accuracy_kept"] == pytest.approx(3 / 4)
    differential = result.differential.set_index("class")
    assert differential.loc["NEUTROPHIL", "true %"] == pytest.approx(60)
    assert differential.loc["NEUTROPHIL", "predicted %"] == pytest.approx(75)  # 3 of 4 kept
    assert differential.loc["LYMPHOCYTE", "difference, points"] == pytest.approx(25 - 40)
    text = score.format_score(result)
    assert text.startswith("Scored 5 of 6 cells (1 with a label of no class: smudge)")
    assert "Accuracy  60.0 %" in text and "Uncertain 1 of 5 cells" in text


def test_labels_from_a_csv_by_path_or_unique_file_name(tmp_path):
    predictions, classes = score.read_predictions(_predictions(tmp_path, ROWS[:4]))
    labels_csv = tmp_path / "labels.csv"
    pd.DataFrame({"path": ["lab/neutrophil/1.jpg", "elsewhere/2.jpg", "3.jpg"],
                  "label": ["eosinophil", "neutrophil", "NEUTROPHIL"]}).to_csv(labels_csv,
                                                                                index=False)
    labels = score.labels_for(predictions, labels_csv)
    assert labels.tolist() == ["eosinophil", "neutrophil", "NEUTROPHIL", ""]
    result = score.score(predictions, classes, labels, list(DIFFERENTIAL_CLASSES), n_boot=50)
    assert (result.scored, result.unlabelled) == (3, ["lab/Lymphocytes/4.jpg"])
    assert result.intervals["accuracy"]["value"] == pytest.approx(1 / 3)
    twice = pd.concat([predictions, predictions.assign(path="other/neutrophil/1.jpg")])
    pd.DataFrame({"path": ["x/1.jpg"], "label": ["LYMPHOCYTE"]}).to_csv(labels_csv, index=False)
    assert score.labels_for(twice, labels_csv).tolist()[0] == ""  # 1.jpg: which of the two?
    pd.DataFrame({"path": ["a.jpg", "a.jpg"], "label": ["x", "y"]}).to_csv(labels_csv,
                                                                         index=False)
    with pytest.raises(ValueError, match="more than once: a.jpg"):
        score.labels_for(predictions, labels_csv)
    pd.DataFrame({"file": ["a.jpg"], "class": ["x"]}).to_csv(labels_csv, index=False)
    with pytest.raises(ValueError, match="path and label"):
        score.labels_for(predictions, labels_csv)


def test_a_smear_csv_or_another_file_is_refused_by_name(tmp_path):
    smear = tmp_path / "smears.csv"
    pd.DataFrame({"path": ["s.jpg"], "cell": [1], "predicted": ["IG"], "uncertain": ["false"],
                  "p_IG": [1.0]}).to_csv(smear, index=False)
    with pytest.raises(ValueError, match="--smear"):
        score.read_predictions(smear)
    other = tmp_path / "other.csv"
    pd.DataFrame({"path": ["s.jpg"]}).to_csv(other, index=False)
    with pytest.raises(ValueError, match=r"not a `leuko classify` CSV.*predicted"):
        score.read_predictions(other)


def test_cli_score_prints_json_and_exits_1_with_the_reason(tmp_path, capsys):
    csv = _predictions(tmp_path, ROWS)
    assert cli.main(["score", str(csv)]) == cli.EXIT_USAGE
    assert "smudge" in capsys.readouterr().err
    assert cli.main(["score", str(csv), "--skip-unknown", "--json", "--n-boot", "100"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["scored"], summary["unknown_labels"]) == (5, {"smudge": 1})
    assert summary["accuracy"]["value"] == pytest.approx(0.6)
    assert cli.main(["score", str(csv), "--skip-unknown"]) == 0
    assert "Confusion matrix" in capsys.readouterr().out
    assert cli.main(["score", str(tmp_path / "missing.csv")]) == cli.EXIT_USAGE
    assert "missing.csv" in capsys.readouterr().err


def test_the_predicted_differential_counts_what_classify_counts(tmp_path):
    """An immature granulocyte called a neutrophil is in classify's count (not the true one);
    an uncertain cell is in neither the predicted count nor out of the true one."""
    rows = [("lab/neutrophil/1.jpg", "NEUTROPHIL", False),
            ("lab/lymphocyte/2.jpg", "LYMPHOCYTE", True),
            ("lab/ig/3.jpg", "NEUTROPHIL", False)]
    predictions, classes = score.read_predictions(_predictions(tmp_path, rows))
    result = score.score(predictions, classes, score.labels_for(predictions, None),
                         list(DIFFERENTIAL_CLASSES), n_boot=50)
    differential = result.differential.set_index("class")
    assert differential["true cells"].sum() == 2 and differential["predicted cells"].sum() == 2
    assert differential.loc["NEUTROPHIL", "true %"] == pytest.approx(50)
    assert differential.loc["NEUTROPHIL", "predicted %"] == pytest.approx(100)


def test_score_labels_by_hand_the_one_scoring_of_a_labelled_set():
    """Classes A, B, C; C never true: 5 cells of 4 source cells, 3 right, one uncertain.
    A: precision 1, recall 2/3, F1 0.8; B: precision 1/2, recall 1/2, F1 0.5; C counts only
    as a wrong prediction."""
    y_true, y_pred = [0, 0, 0, 1, 1], [0, 0, 1, 1, 2]
    kept = [True, True, False, True, True]
    result = score.score_labels(y_true, y_pred, ["A", "B", "C"], kept=kept,
                                groups=["g1", "g1", "g2", "g3", "g4"], n_boot=300, seed=0)
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["macro_f1"] == pytest.approx((0.8 + 0.5) / 2)  # over the classes present
    assert result["classes_present"] == ["A", "B"]
    assert set(result["intervals"]) == {"accuracy", "macro_f1", "recall_A", "recall_B"}
    assert result["intervals"]["recall_A"]["value"] == pytest.approx(2 / 3)
    assert result["intervals"]["macro_f1"]["value"] == result["macro_f1"]
    for interval in result["intervals"].values():
        assert 0 <= interval["low"] <= interval["value"] <= interval["high"] <= 1
    assert result["n_cells"] == 4 and "exact_interval" not in result  # g1 holds two images
    # B's images are two cells, 1 of 2 right: Clopper-Pearson; A's share cell g1: none
    assert result["per_class"]["B"]["recall_exact"]["low"] == pytest.approx(0.0126, abs=1e-4)
    assert result["per_class"]["B"]["recall_exact"]["high"] == pytest.approx(0.9874, abs=1e-4)
    assert "recall_exact" not in result["per_class"]["A"]
    # kept: A A B B true, A A B C predicted -> accuracy 3/4; F1 A 1, B 2/3
    assert result["abstain"] == pytest.approx({"coverage": 0.8, "uncertain": 1,
                                               "accuracy_kept": 0.75,
                                               "macro_f1_kept": (1 + 2 / 3) / 2})
    alone = score.score_labels(y_true, y_pred, ["A", "B", "C"], n_boot=300, seed=0)
    assert alone["n_cells"] == 5 and alone["abstain"]["coverage"] == 1.0
    assert (alone["exact_interval"]["k"], alone["exact_interval"]["n"]) == (3, 5)
    nothing_kept = score.score_labels(y_true, y_pred, ["A", "B", "C"], kept=[False] * 5,
                                      n_boot=50)
    assert nothing_kept["abstain"]["accuracy_kept"] is None


def test_leuko_score_figures_are_score_labels_with_each_image_its_own_cell(tmp_path):
    predictions, classes = score.read_predictions(_predictions(tmp_path, ROWS))
    result = score.score(predictions, classes, score.labels_for(predictions, None),
                         list(DIFFERENTIAL_CLASSES), n_boot=200, skip_unknown=True)
    index = {c: i for i, c in enumerate(classes)}
    truth = [index[c] for c in ("NEUTROPHIL",) * 3 + ("LYMPHOCYTE",) * 2]
    shared = score.score_labels(truth, predictions["predicted"][:5].map(index), classes,
                                kept=[True, True, False, True, True], n_boot=200)
    assert result.intervals == {k: shared["intervals"][k] for k in ("accuracy", "macro_f1")}
    assert result.abstain == shared["abstain"]
