"""Four-class stroke classification metrics (thesis 003, Tables 4.2, 4.3 and 4.6; Tables 5.x over seeds).

Labels are integer arrays in the fixed class order ``FOUR_CLASSES`` (none, left, right, both), or
strings naming those classes. Task 1 is lesion presence (any class but none); Task 2 is the side.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

FOUR_CLASSES = ("none", "left", "right", "both")
NONE = 0
INFARCT_SIZE_STRATA = ("none", "1-2", "3-4")


def class_indices(labels: Iterable) -> np.ndarray:
    """(N,) int64 class indices from class indices or class names (case-insensitive).

    Raises:
        ValueError: on a name or index outside ``FOUR_CLASSES``.
    """
    values = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels)
    if values.dtype.kind in "OUS":
        lookup = {name: i for i, name in enumerate(FOUR_CLASSES)}
        unknown = sorted({str(v) for v in values if str(v).lower() not in lookup})
        if unknown:
            raise ValueError(f"unknown class names {unknown}; expected {FOUR_CLASSES}")
        return np.array([lookup[str(v).lower()] for v in values], dtype=np.int64)
    indices = values.astype(np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= len(FOUR_CLASSES)):
        raise ValueError(f"class indices must be in 0..{len(FOUR_CLASSES) - 1}")
    return indices


def _pair(y_true: Iterable, y_pred: Iterable) -> tuple[np.ndarray, np.ndarray]:
    true, pred = class_indices(y_true), class_indices(y_pred)
    if true.shape != pred.shape:
        raise ValueError(f"y_true {true.shape} and y_pred {pred.shape} differ in shape")
    return true, pred


def confusion_matrix(y_true: Iterable, y_pred: Iterable) -> np.ndarray:
    """(4, 4) int64 counts: rows are true classes, columns predicted, both in ``FOUR_CLASSES`` order."""
    true, pred = _pair(y_true, y_pred)
    n = len(FOUR_CLASSES)
    return np.bincount(true * n + pred, minlength=n * n).reshape(n, n)


def confusion_frame(y_true: Iterable, y_pred: Iterable) -> pd.DataFrame:
    """The confusion matrix as a labelled DataFrame (index: true class, columns: predicted class)."""
    return pd.DataFrame(confusion_matrix(y_true, y_pred),
                        index=pd.Index(FOUR_CLASSES, name="true"),
                        columns=pd.Index(FOUR_CLASSES, name="predicted"))


def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator) / denominator if denominator else float("nan")


def accuracy(y_true: Iterable, y_pred: Iterable) -> float:
    """Four-class accuracy (NaN for no cases)."""
    true, pred = _pair(y_true, y_pred)
    return _ratio(int((true == pred).sum()), true.size)


def presence_metrics(y_true: Iterable, y_pred: Iterable) -> dict[str, float]:
    """Task 1 (lesion present = any class but none): accuracy, sensitivity, specificity."""
    true, pred = _pair(y_true, y_pred)
    true_pos, pred_pos = true != NONE, pred != NONE
    return {
        "accuracy": _ratio(int((true_pos == pred_pos).sum()), true.size),
        "sensitivity": _ratio(int((true_pos & pred_pos).sum()), int(true_pos.sum())),
        "specificity": _ratio(int((~true_pos & ~pred_pos).sum()), int((~true_pos).sum())),
    }


def side_accuracy(y_true: Iterable, y_pred: Iterable) -> float:
    """Task 2: side accuracy over scans that have a lesion and were classified as having one.

    This is the thesis's definition ("for scans classified as positive in Task 1"): Table 4.3 gives
    (149 + 140 + 0) / 317 = 91 %.
    """
    true, pred = _pair(y_true, y_pred)
    both_positive = (true != NONE) & (pred != NONE)
    return _ratio(int((true[both_positive] == pred[both_positive]).sum()), int(both_positive.sum()))


def micro_sensitivity_specificity(y_true: Iterable, y_pred: Iterable) -> dict[str, float]:
    """One-vs-rest sensitivity and specificity over the four classes, from counts summed over classes."""
    matrix = confusion_matrix(y_true, y_pred)
    total = int(matrix.sum())
    true_pos = np.diag(matrix)
    false_neg = matrix.sum(axis=1) - true_pos
    false_pos = matrix.sum(axis=0) - true_pos
    true_neg = total - true_pos - false_neg - false_pos
    return {
        "sensitivity": _ratio(int(true_pos.sum()), int(true_pos.sum() + false_neg.sum())),
        "specificity": _ratio(int(true_neg.sum()), int(true_neg.sum() + false_pos.sum())),
    }


def classification_summary(y_true: Iterable, y_pred: Iterable) -> dict[str, float]:
    """Every scalar metric of one test run, keyed for a per-seed table row."""
    presence = presence_metrics(y_true, y_pred)
    micro = micro_sensitivity_specificity(y_true, y_pred)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "task1_accuracy": presence["accuracy"],
        "task1_sensitivity": presence["sensitivity"],
        "task1_specificity": presence["specificity"],
        "task2_accuracy": side_accuracy(y_true, y_pred),
        "micro_sensitivity": micro["sensitivity"],
        "micro_specificity": micro["specificity"],
    }


def _is_missing(value) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def stratified_accuracy(y_true: Iterable, y_pred: Iterable, groups: Sequence,
                        sep: str | None = None) -> pd.DataFrame:
    """Four-class accuracy within each stratum (Table 4.6).

    Args:
        y_true, y_pred: (N,) class indices or names.
        groups: (N,) stratum of each scan (infarct size, territory, number of lesions, timepoint...).
            Missing values (None, NaN, "") belong to no stratum.
        sep: when given, each group string is split on it and the scan counts in every stratum it
            names (Table 4.6(a): a scan with MCA and ACA lesions counts under both).

    Returns:
        One row per stratum, in order of first appearance: ``stratum``, ``n``, ``correct``, ``accuracy``.
    """
    true, pred = _pair(y_true, y_pred)
    groups = list(groups)
    if len(groups) != true.size:
        raise ValueError(f"{len(groups)} groups for {true.size} scans")
    counts: dict = {}
    for group, hit in zip(groups, true == pred):
        if _is_missing(group):
            continue
        members = [g.strip() for g in str(group).split(sep) if g.strip()] if sep else [group]
        for member in members:
            n, correct = counts.get(member, (0, 0))
            counts[member] = (n + 1, correct + int(hit))
    rows = [{"stratum": key, "n": n, "correct": correct, "accuracy": correct / n}
            for key, (n, correct) in counts.items()]
    return pd.DataFrame(rows, columns=["stratum", "n", "correct", "accuracy"])


def infarct_size_stratum(sizes: Iterable) -> np.ndarray:
    """(N,) object array of Table 4.6(c) strata from IST-3 infarct sizes: 0 or missing -> "none",
    1-2 -> "1-2", 3-4 -> "3-4"."""
    strata = []
    for size in sizes:
        if _is_missing(size) or int(size) == 0:
            strata.append(INFARCT_SIZE_STRATA[0])
        elif int(size) in (1, 2):
            strata.append(INFARCT_SIZE_STRATA[1])
        elif int(size) in (3, 4):
            strata.append(INFARCT_SIZE_STRATA[2])
        else:
            raise ValueError(f"infarct size {size!r} is not in 0..4")
    return np.array(strata, dtype=object)


def mean_standard_error(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample SD / sqrt(n)); the error is NaN for one value."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    error = array.std(ddof=1) / np.sqrt(array.size) if array.size > 1 else float("nan")
    return float(array.mean()), float(error)


def summarise_seeds(per_seed: pd.DataFrame, by: str | list[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and standard error over seeds: one row per ``by`` group with ``n_seeds``, ``{m}_mean``, ``{m}_se``."""
    rows = []
    for key, group in per_seed.groupby(by, sort=False):
        row = dict(zip([by] if isinstance(by, str) else by, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = len(group)
        for metric in metrics:
            row[f"{metric}_mean"], row[f"{metric}_se"] = mean_standard_error(group[metric])
        rows.append(row)
    return pd.DataFrame(rows)


def format_markdown(frame: pd.DataFrame, index: bool = False) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (cells rendered with ``str``)."""
    table = frame.reset_index() if index else frame
    header = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def seeds_markdown_table(per_seed: pd.DataFrame, by: str, metrics: Sequence[str], *,
                         labels: dict[str, str] | None = None, percent: bool = True,
                         decimals: int = 1) -> str:
    """Markdown table of mean ± standard error over seeds, one row per ``by`` group (e.g. method).

    Args:
        per_seed: one row per (group, seed) with a column per metric, metrics as fractions.
        labels: column headers for ``by`` and each metric (default: the column names).
        percent: show fractions as percentages.
    """
    labels = labels or {}
    scale = 100.0 if percent else 1.0
    summary = summarise_seeds(per_seed, by, metrics)

    def cell(mean: float, error: float) -> str:
        text = f"{mean * scale:.{decimals}f}"
        return text if np.isnan(error) else f"{text} ± {error * scale:.{decimals}f}"

    table = pd.DataFrame({labels.get(by, by): summary[by]})
    for metric in metrics:
        table[labels.get(metric, metric)] = [cell(m, e) for m, e in
                                             zip(summary[f"{metric}_mean"], summary[f"{metric}_se"])]
    return format_markdown(table)
