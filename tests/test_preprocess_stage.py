"""Scan-level splits built on the patient splitter."""
from __future__ import annotations

import pandas as pd

from cfbrain.preprocess.splits import scan_splits


def test_scan_splits_keep_patients_whole_and_follow_labels():
    scans = [f"P{p:010x}_S{s:06x}_E{e:06x}" for p in range(20) for s in range(2) for e in range(1)]
    labels = pd.DataFrame({"patient": [s.split("_")[0] for s in scans], "study": [s.split("_")[1] for s in scans],
                           "lesion": [p % 2 for p in range(20) for _ in range(2)]})
    table = scan_splits(scans, labels, seed=0)
    assert len(table) == len(scans) and table.groupby("patient").split.nunique().max() == 1
    assert table.drop_duplicates("patient").split.value_counts().to_dict() == {"train": 14, "val": 3, "test": 3}
    assert table.equals(scan_splits(list(reversed(scans)), labels, seed=0))
    assert not table.equals(scan_splits(scans, labels, seed=1))
    assert "lesion" not in scan_splits(scans, None, seed=0).columns


def test_montage_of_no_scans_says_so(tmp_path):
    from cfbrain.preprocess.figures import preprocessing_montage
    preprocessing_montage(tmp_path / "m.png", [])
    assert (tmp_path / "m.png").stat().st_size > 0


def test_no_scans_give_an_empty_split_table():
    table = scan_splits([], None, seed=0)
    assert table.empty and {"scan", "patient", "split"} <= set(table.columns)
