"""Classification metrics checked against the thesis's own confusion matrix (Table 4.3) and small cases."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cfbrain.metrics.classification import (FOUR_CLASSES, accuracy, class_indices, classification_summary,
                                            confusion_frame, confusion_matrix, infarct_size_stratum,
                                            mean_standard_error, micro_sensitivity_specificity,
                                            presence_metrics, seeds_markdown_table, side_accuracy,
                                            stratified_accuracy, summarise_seeds)

# Table 4.3 reordered to none, left, right, both (rows true, columns predicted).
TABLE_4_3 = np.array([
    [324, 42, 37, 0],
    [72, 149, 12, 2],
    [62, 11, 140, 0],
    [1, 1, 2, 0],
])


def labels_from(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true, pred = np.nonzero(np.ones_like(matrix))
    counts = matrix.ravel()
    return np.repeat(true, counts), np.repeat(pred, counts)


@pytest.fixture(scope="module")
def thesis():
    return labels_from(TABLE_4_3)


def test_confusion_matrix_round_trip(thesis):
    np.testing.assert_array_equal(confusion_matrix(*thesis), TABLE_4_3)
    frame = confusion_frame(*thesis)
    assert list(frame.index) == list(frame.columns) == list(FOUR_CLASSES)
    assert frame.loc["left", "none"] == 72


def test_thesis_numbers(thesis):
    assert accuracy(*thesis) == pytest.approx(613 / 855)  # 72 %
    presence = presence_metrics(*thesis)
    assert presence["accuracy"] == pytest.approx((317 + 324) / 855)  # 75 %
    assert presence["sensitivity"] == pytest.approx(317 / 452)  # 70 %
    assert presence["specificity"] == pytest.approx(324 / 403)  # 80 %
    assert side_accuracy(*thesis) == pytest.approx(289 / 317)  # 91 %
    micro = micro_sensitivity_specificity(*thesis)
    assert micro["sensitivity"] == pytest.approx(613 / 855)  # 72 %
    assert micro["specificity"] == pytest.approx(2323 / (2323 + 242))  # 91 %
    summary = classification_summary(*thesis)
    assert [round(100 * summary[k]) for k in ("accuracy", "task1_accuracy", "task1_sensitivity",
                                              "task1_specificity", "task2_accuracy", "micro_sensitivity",
                                              "micro_specificity")] == [72, 75, 70, 80, 91, 72, 91]


def test_small_hand_computed_case():
    true = ["none", "left", "right", "both", "left"]
    pred = ["left", "left", "none", "both", "right"]
    np.testing.assert_array_equal(confusion_matrix(true, pred),
                                  [[0, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    assert accuracy(true, pred) == pytest.approx(2 / 5)
    assert presence_metrics(true, pred) == pytest.approx({"accuracy": 3 / 5, "sensitivity": 3 / 4,
                                                          "specificity": 0.0})
    assert side_accuracy(true, pred) == pytest.approx(2 / 3)
    # one-vs-rest: TP 2, FN 3, FP 3, TN 4*5 - 2 - 3 - 3 = 12
    assert micro_sensitivity_specificity(true, pred) == pytest.approx({"sensitivity": 2 / 5,
                                                                       "specificity": 12 / 15})


def test_label_validation_and_empty_cases():
    assert class_indices(["None", "BOTH"]).tolist() == [0, 3]
    with pytest.raises(ValueError, match="unknown"):
        class_indices(["up"])
    with pytest.raises(ValueError, match="0..3"):
        class_indices([4])
    with pytest.raises(ValueError, match="shape"):
        accuracy([0, 1], [0])
    assert np.isnan(side_accuracy([0, 0], [0, 1]))
    assert np.isnan(presence_metrics([0], [0])["sensitivity"])


def test_stratified_accuracy():
    true = [0, 1, 2, 1, 0]
    pred = [0, 2, 2, 1, 1]
    sizes = infarct_size_stratum([0, 1, 3, 4, float("nan")])
    assert sizes.tolist() == ["none", "1-2", "3-4", "3-4", "none"]
    by_size = stratified_accuracy(true, pred, sizes).set_index("stratum")
    assert by_size.loc["none"].tolist() == [2, 1, 0.5] and by_size.loc["3-4"].tolist() == [2, 2, 1.0]
    by_territory = stratified_accuracy(true, pred, ["", "mca", "mca,aca", "aca", None], sep=",")
    assert by_territory.to_dict("records") == [
        {"stratum": "mca", "n": 2, "correct": 1, "accuracy": 0.5},
        {"stratum": "aca", "n": 2, "correct": 2, "accuracy": 1.0}]
    by_count = stratified_accuracy(true, pred, [0, 1, 2, 1, 0]).set_index("stratum")
    assert by_count.loc[1, "n"] == 2 and by_count.loc[1, "accuracy"] == 0.5
    with pytest.raises(ValueError, match="infarct size"):
        infarct_size_stratum([5])
    with pytest.raises(ValueError, match="groups"):
        stratified_accuracy(true, pred, ["a"])


def test_seed_summary_and_markdown():
    assert mean_standard_error([0.70, 0.72, 0.74]) == pytest.approx((0.72, 0.02 / np.sqrt(3)))
    mean, error = mean_standard_error([0.5])
    assert mean == 0.5 and np.isnan(error)
    per_seed = pd.DataFrame({"method": ["ours", "ours", "ours", "resnet18"],
                             "seed": [0, 1, 2, 0],
                             "accuracy": [0.70, 0.72, 0.74, 0.64]})
    summary = summarise_seeds(per_seed, "method", ["accuracy"])
    assert summary.n_seeds.tolist() == [3, 1]
    table = seeds_markdown_table(per_seed, "method", ["accuracy"], labels={"method": "Method",
                                                                           "accuracy": "Accuracy (%)"})
    assert table == ("| Method | Accuracy (%) |\n|---|---|\n"
                     "| ours | 72.0 ± 1.2 |\n| resnet18 | 64.0 |\n")
