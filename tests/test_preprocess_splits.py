"""Patient-level train/val/test splits."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cfbrain.preprocess.splits import largest_remainder, patient_splits


def scan_table(n_patients=101, seed=0) -> pd.DataFrame:
    """1-3 scans per patient; a patient-level lesion label (about 40 % positive) and a side label."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        lesion = int(rng.random() < 0.4)
        side = rng.choice(["left", "right"]) if lesion else "none"
        for s in range(rng.integers(1, 4)):
            rows.append({"patient": f"P{p:04d}", "scan": f"P{p:04d}-S{s}", "lesion": lesion, "side": side})
    return pd.DataFrame(rows)


def test_every_patient_exactly_once_and_splits_disjoint():
    table = scan_table()
    splits = patient_splits(table, seed=1, stratify="lesion")
    assert list(splits.columns) == ["patient", "split", "stratum"]
    assert splits["patient"].is_unique and set(splits["patient"]) == set(table["patient"])
    scans = table.merge(splits, on="patient")
    assert scans.groupby("patient")["split"].nunique().max() == 1
    assert set(splits["split"]) == {"train", "val", "test"}


def test_stratum_sizes_within_one_of_the_fractions():
    table = scan_table()
    fractions = np.array([0.7, 0.15, 0.15])
    splits = patient_splits(table, seed=3, fractions=fractions, stratify="side")
    for _, group in splits.groupby("stratum"):
        counts = group["split"].value_counts().reindex(["train", "val", "test"], fill_value=0).to_numpy()
        assert np.all(np.abs(counts - len(group) * fractions) < 1)
    totals = splits["split"].value_counts().reindex(["train", "val", "test"]).to_numpy()
    assert np.all(np.abs(totals - len(splits) * fractions) <= 1)


def test_deterministic_by_seed_and_independent_of_row_order():
    table = scan_table()
    first = patient_splits(table, seed=7, stratify="lesion")
    shuffled = table.sample(frac=1.0, random_state=5)
    pd.testing.assert_frame_equal(first, patient_splits(shuffled, seed=7, stratify="lesion"))
    assert not first.equals(patient_splits(table, seed=8, stratify="lesion"))


def test_patients_with_mixed_scan_labels_get_a_combined_stratum():
    table = pd.DataFrame({"patient": ["A", "A", "B", "C"], "lesion": [0, 1, 1, None]})
    strata = patient_splits(table, seed=0, stratify="lesion").set_index("patient")["stratum"]
    assert strata["A"] == "0+1" and strata["B"] == "1" and strata["C"] == "missing"
    unstratified = patient_splits(table, seed=0)
    assert set(unstratified["stratum"]) == {"all"}


def test_invalid_fractions_are_rejected():
    with pytest.raises(ValueError):
        patient_splits(scan_table(10), seed=0, fractions=(0.8, 0.3, 0.1))
    with pytest.raises(ValueError):
        patient_splits(scan_table(10), seed=0, fractions=(0.5, 0.5))


def test_largest_remainder():
    assert largest_remainder(10, [0.7, 0.15, 0.15]).tolist() == [7, 2, 1]
    assert largest_remainder(3, [0.7, 0.15, 0.15]).sum() == 3
