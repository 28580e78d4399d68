"""Train/validation/test splits by patient, stratified, deterministic by seed (thesis 003 section 4.4.1).

Rule. Each patient gets one stratum: the sorted distinct non-missing values of
the ``stratify`` column over that patient's rows, joined by "+" ("left",
"left+none", ...; "missing" when all are missing). Within a stratum of n
patients, split k gets floor(n * f_k) patients plus at most one of the
stratum's leftover patients, so every stratum's split sizes are within 1 of
n * f_k. Leftovers go first to the splits still short of their overall target
(largest-remainder rounding of N * f_k), then to the splits with the largest
fractional part in that stratum. Patients are shuffled within their stratum by
``numpy.random.default_rng(seed)`` after sorting, so the result depends only on
the set of patients, their labels and the seed (not on row order).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


def largest_remainder(n: int, fractions: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``n`` closest to ``n * fractions`` (Hamilton's method), int64 (K,)."""
    exact = n * np.asarray(fractions, dtype=np.float64)
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def _label(value) -> str:
    """A label as text; integral floats (a 0/1 column that picked up a NaN) print as integers."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def patient_strata(table: pd.DataFrame, patient_col: str, stratify: str | None) -> pd.Series:
    """One stratum string per patient (index: patient, sorted)."""
    patients = table[patient_col].astype(str)
    if stratify is None:
        return pd.Series("all", index=pd.Index(sorted(patients.unique()), name=patient_col))
    joined = (pd.DataFrame({patient_col: patients, "value": table[stratify].to_numpy()})
              .groupby(patient_col)["value"]
              .agg(lambda v: "+".join(sorted({_label(x) for x in v.dropna()})) or "missing"))
    return joined.sort_index()


def _stratum_counts(strata_sizes: pd.Series, fractions: np.ndarray) -> dict[str, np.ndarray]:
    """Split counts per stratum: floor share plus leftovers routed to the globally short splits."""
    total = int(strata_sizes.sum())
    need = largest_remainder(total, fractions)
    counts = {}
    for stratum, n in strata_sizes.items():
        exact = n * fractions
        counts[stratum] = np.floor(exact).astype(np.int64)
        need -= counts[stratum]
    for stratum, n in strata_sizes.sort_values(ascending=False, kind="stable").items():
        leftover = int(n - counts[stratum].sum())
        fractional = n * fractions - np.floor(n * fractions)
        priority = np.lexsort((-fractional, -(need > 0).astype(np.int64)))
        chosen = priority[:leftover]
        counts[stratum][chosen] += 1
        need[chosen] -= 1
    return counts


def patient_splits(table: pd.DataFrame, seed: int, fractions=(0.7, 0.15, 0.15), stratify: str | None = None,
                   patient_col: str = "patient", names=SPLIT_NAMES) -> pd.DataFrame:
    """Assign every patient of ``table`` (one or more rows per patient) to exactly one split.

    fractions: one per split name, summing to 1 (thesis: 70/15/15).
    stratify: a column of ``table`` (e.g. "lesion" or "side"), or None.
    Returns DataFrame (patient_col, "split", "stratum"), one row per patient,
    sorted by patient; rule in the module docstring.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if len(fractions) != len(names) or not np.isclose(fractions.sum(), 1.0) or (fractions < 0).any():
        raise ValueError(f"need one non-negative fraction per split {names}, summing to 1; got {fractions}")
    if table[patient_col].isna().any():
        raise ValueError(f"missing values in {patient_col!r}")
    strata = patient_strata(table, patient_col, stratify)
    counts = _stratum_counts(strata.value_counts().sort_index(), fractions)
    rng = np.random.default_rng(seed)
    rows = []
    for stratum in sorted(counts):
        members = strata.index[strata == stratum].to_numpy()
        shuffled = members[rng.permutation(len(members))]
        labels = np.repeat(np.asarray(names, dtype=object), counts[stratum])
        rows.append(pd.DataFrame({patient_col: shuffled, "split": labels, "stratum": stratum}))
    result = pd.concat(rows).sort_values(patient_col, kind="stable").reset_index(drop=True)
    log.info("splits (seed %d): %s", seed, result["split"].value_counts().reindex(names).to_dict())
    return result


def scan_splits(scans: list[str], labels: pd.DataFrame | None, seed: int,
                fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> pd.DataFrame:
    """Train/val/test split of scans ``P…_S…_E…`` by patient, stratified by lesion presence when
    ``labels`` (pseudonymised: patient, study, lesion) has it. Returns scan, patient, study, lesion, split."""
    table = pd.DataFrame({"scan": pd.Series(sorted(scans), dtype=str)})
    table["patient"] = table.scan.str.split("_").str[0]
    table["study"] = table.scan.str.split("_").str[1]
    stratify = None
    if labels is not None and {"study", "lesion"} <= set(labels.columns):
        table = table.merge(labels[["patient", "study", "lesion"]], on=["patient", "study"], how="left")
        stratify = "lesion"
    if table.empty:
        return table.assign(split=pd.Series(dtype=str))
    splits = patient_splits(table, seed, fractions, stratify=stratify)
    return table.merge(splits[["patient", "split"]], on="patient", how="left")
