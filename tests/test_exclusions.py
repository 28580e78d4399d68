"""The ingest status table: every series accounted for, review overrides, Table 3.1 counts."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import cfbrain
from cfbrain.convert.exclusions import (REASON_LABELS, apply_review, exclusion_counts_markdown, ingest_status,
                                        with_later_stages)
from cfbrain.convert.figures import exclusion_bars, exclusions_figure
from cfbrain.register.qc import QCCriteria
from cfbrain.register.result import FAILURE_REASONS
from cfbrain.register.stage import register_scan, registration_exclusions, registration_quality
from cfbrain.register.templates import write_template
from conftest import write_series

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
    assert "| **Total** | **3** |" in text and "| Truncated pixel data | 1 |" in text


def test_later_stages_mark_kept_series_and_refuse_others():
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


SRC = Path(cfbrain.__file__).parent
CT_CHAIN_MODULES = [p for family in ("dicom", "convert", "register", "preprocess") for p in (SRC / family).glob("*.py")
                    if p.name != "mri.py"]  # the MRI track's codes never reach tables/exclusions.md
REASON_RAISERS = {"UnusableFile", "UnusableScan", "RegistrationFailed"}
STATUSES = {"excluded", "needs_review"}


def _strings(node: ast.AST) -> set[str]:
    """The snake_case string constants under ``node`` (not the text of f-strings)."""
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and re.fullmatch(r"[a-z][a-z0-9_]*", n.value)}


def _after_status(nodes: list[ast.AST]) -> set[str]:
    values = [getattr(n, "value", None) for n in nodes]
    return {after for before, after in zip(values, values[1:]) if before in STATUSES and isinstance(after, str)}


def _produced_reasons(tree: ast.AST) -> set[str]:
    """Reason codes a module writes: the code of a raised UnusableFile/UnusableScan/RegistrationFailed,
    ``reason=`` arguments and ``"reason":`` entries, the string after a status in a tuple, list or call
    (``("excluded", "localiser", ...)``) and the first element a ``-> tuple[str, str]`` verdict returns."""
    codes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name in REASON_RAISERS and node.args and isinstance(node.args[0], ast.Constant):
                codes.add(node.args[0].value)
            codes |= {c for k in node.keywords if k.arg == "reason" for c in _strings(k.value)}
            codes |= _after_status(node.args)
        elif isinstance(node, ast.Dict):
            codes |= {c for k, v in zip(node.keys, node.values)
                      if isinstance(k, ast.Constant) and k.value == "reason" for c in _strings(v)}
        elif isinstance(node, (ast.Tuple, ast.List)):
            codes |= _after_status(node.elts)
        elif isinstance(node, ast.FunctionDef) and ast.unparse(node.returns or ast.Constant(None)) == "tuple[str, str]":
            codes |= {r.value.elts[0].value for r in ast.walk(node) if isinstance(r, ast.Return)
                      and isinstance(r.value, ast.Tuple) and isinstance(r.value.elts[0], ast.Constant)}
    return codes - {""}


def test_every_reason_code_produced_in_the_ct_chain_has_a_label():
    produced = set().union(*(_produced_reasons(ast.parse(p.read_text())) for p in CT_CHAIN_MODULES))
    assert {"no_intracranial_region", "no_pixel_data", "bone_kernel", "bone_noise", "localiser", "split_skull",
            "duplicate_instance", "registration", "conversion_failed", "no_head_found"} <= produced  # the scan works
    assert sorted(produced - set(REASON_LABELS)) == []
    assert sorted(set(FAILURE_REASONS) - set(REASON_LABELS)) == []


def test_no_two_causes_share_a_label():
    labels = pd.Series(REASON_LABELS)
    assert labels[labels.duplicated(keep=False)].to_dict() == {}


def test_a_phantom_without_intracranial_volume_is_labelled_as_such(tmp_path):
    """A brain-equivalent cylinder with no skull, through register_scan, the registration QC and the exclusions table."""
    shell = np.hypot(*np.mgrid[-40:40, -40:40]) < 30
    phantom = np.where(shell[:, :, None], 30.0, -1000.0) * np.ones((1, 1, 30))
    nib.save(nib.Nifti1Image(phantom.astype(np.float32), np.diag([2.0, 2.0, 5.0, 1.0])), tmp_path / "ct.nii.gz")
    template = write_template("nilearn:mni152_2mm", tmp_path / "template.nii.gz")
    write_series(tmp_path / "dicom", 1)
    row = register_scan("a", tmp_path / "ct.nii.gz", tmp_path / "dicom", [{"path": str(template)}], tmp_path / "reg",
                        tmp_path / "register.tsv", backend="simpleitk", threads=1)
    assert (row["status"], row["reason"]) == ("excluded", "no_intracranial_region")
    qc = registration_quality([], [], [], [tmp_path / "register.tsv"], None, QCCriteria(), max_clusters=2, seed=0,
                              table_tsv=tmp_path / "qc.tsv", clusters_tsv=tmp_path / "clusters.tsv",
                              scatter_png=tmp_path / "qc.png", montage_dir=tmp_path / "montages")
    qc.to_csv(tmp_path / "qc.tsv", sep="\t", index=False)
    later = registration_exclusions(pd.read_csv(tmp_path / "qc.tsv", sep="\t", keep_default_na=False))
    table = with_later_stages(ingest_status(SERIES, FILES, CONVERTED, None), [later])
    assert table.set_index("id").loc["a", "stage"] == "register"
    text = exclusion_counts_markdown(table, "phantoms")
    assert "| No intracranial region (the skull encloses almost no volume: phantom?) | 1 |" in text
    assert "converge" not in text
