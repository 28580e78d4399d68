"""The ingest status table: every series accounted for, review overrides, Table 3.1 counts."""
from __future__ import annotations

import pandas as pd
import pytest

from cfbrain.convert.exclusions import apply_review, exclusion_counts_markdown, ingest_status
from cfbrain.convert.figures import exclusion_bars, exclusions_figure

SERIES = pd.DataFrame({"scan": ["a", "b", "c", "d"], "verdict": ["candidate", "candidate", "candidate", "excluded"],
                       "reason": ["", "", "", "bone_kernel"], "detail": ["", "", "", "ConvolutionKernel H70h"]})
FILES = pd.DataFrame({"file": ["F1", "F2"], "scan": ["", "a"], "status": ["excluded", "used"],
                      "reason": ["truncated", ""], "detail": ["", ""]})
CONVERTED = pd.DataFrame({"scan": ["a", "b", "c"], "stage": "convert", "status": ["kept", "needs_review", "excluded"],
                          "reason": ["", "split_skull_review", "localiser"], "detail": ""})


def test_every_series_has_one_row_and_counts_add_up():
    table = ingest_status(SERIES, FILES, CONVERTED, None)
    series = table[table.unit == "series"]
    assert sorted(series.id) == ["a", "b", "c", "d"]
    assert len(series) == (series.status == "kept").sum() + (series.status != "kept").sum()
    assert table[table.unit == "file"].reason.tolist() == ["truncated"]


def test_missing_conversion_status_is_a_bug_not_a_silent_drop():
    with pytest.raises(ValueError, match="no conversion status"):
        ingest_status(SERIES, FILES, CONVERTED.iloc[:2], None)


def test_review_keeps_or_excludes_pending_series():
    table = ingest_status(SERIES, FILES, CONVERTED, None)
    kept = apply_review(table, pd.DataFrame({"scan": ["b"], "verdict": ["keep"], "note": ["one block"]}))
    row = kept.set_index("id").loc["b"]
    assert (row.status, row.stage) == ("kept", "review") and "one block" in row.detail
    excluded = apply_review(table, pd.DataFrame({"scan": ["b"], "verdict": ["exclude"]}))
    assert excluded.set_index("id").loc["b", "reason"] == "split_skull"
    with pytest.raises(ValueError, match="not awaiting review"):
        apply_review(table, pd.DataFrame({"scan": ["a"], "verdict": ["keep"]}))
    with pytest.raises(ValueError, match="keep or exclude"):
        apply_review(table, pd.DataFrame({"scan": ["b"], "verdict": ["maybe"]}))


def test_markdown_counts_by_thesis_reason():
    text = exclusion_counts_markdown(ingest_status(SERIES, FILES, CONVERTED, None), "demo")
    assert "4 input series; 1 kept, 2 excluded, 1 awaiting review." in text
    assert "| Bone reformats | 1 |" in text and "| Localisers | 1 |" in text
    assert "| **Total** | **3** |" in text and "| truncated | 1 |" in text


def test_later_stages_mark_kept_series_and_refuse_others():
    from cfbrain.convert.exclusions import with_later_stages
    table = ingest_status(SERIES, FILES, CONVERTED, None)
    later = pd.DataFrame({"scan": ["a"], "stage": "registration_qc", "status": "excluded", "reason": "registration",
                          "detail": "cluster 1"})
    updated = with_later_stages(table, [later]).set_index("id")
    assert tuple(updated.loc["a", ["stage", "status", "reason"]]) == ("registration_qc", "excluded", "registration")
    assert len(updated) == len(table)
    with pytest.raises(ValueError, match="did not keep"):
        with_later_stages(table, [later.assign(scan="d")])
    with pytest.raises(ValueError, match="did not keep"):
        with_later_stages(table, [later, later])


def test_exclusion_bars_count_every_series_once_in_pipeline_order(tmp_path):
    table = pd.DataFrame({
        "unit": ["series"] * 7 + ["file"],
        "id": [f"s{i}" for i in range(7)] + ["f0"],
        "stage": ["convert", "registration_qc", "index", "index", "convert", "index", "convert", "index"],
        "status": ["kept", "excluded", "excluded", "excluded", "needs_review", "excluded", "kept", "excluded"],
        "reason": ["", "registration", "localiser", "localiser", "split_skull_review", "bone_kernel", "", "not_dicom"],
        "detail": [""] * 8})
    bars = exclusion_bars(table)
    assert bars.n.sum() == 7  # series only: the stray file is in the table, not in the bars
    assert list(zip(bars.label, bars.n)) == [
        ("kept (all stages passed)", 2), ("convert: Separated skull base/vault (awaiting review)", 1),
        ("index: Localisers", 2), ("index: Bone reformats", 1), ("registration_qc: Poor patient positioning", 1)]
    assert exclusions_figure(table, "toy", tmp_path / "exclusions.png").stat().st_size > 0
