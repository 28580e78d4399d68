"""Post-conversion rules of thesis 003 §3.4.4 step 3 and the per-scan status record."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

STATUS_COLUMNS = ["scan", "stage", "status", "reason", "detail"]


def read_status_tables(paths, columns: list[str] = STATUS_COLUMNS) -> pd.DataFrame:
    """The per-scan status TSVs at ``paths`` as one table; an empty table with ``columns`` when there are none
    (a dataset in which nothing reached the stage still gets its accounting)."""
    tables = [pd.read_csv(p, sep="\t", keep_default_na=False) for p in paths]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)


@dataclass(frozen=True)
class SliceCountRules:
    """Localisers with blank ImageType have < ``localiser_below`` slices after conversion;
    split skull base/vault series have < ``review_below`` and go to manual review (thesis: 3 and 25)."""

    localiser_below: int = 3
    review_below: int = 25


def slice_count_verdict(n_slices: int, image_type: str, rules: SliceCountRules) -> tuple[str, str, str]:
    """(status, reason, detail) of a converted series from its NIfTI slice count.

    ``image_type`` is the backslash-joined ImageType of the index ('' when blank).
    Status is kept, excluded or needs_review.
    """
    if not image_type and n_slices < rules.localiser_below:
        return "excluded", "localiser", f"blank ImageType and {n_slices} slice(s) after conversion"
    if n_slices < rules.review_below:
        return "needs_review", "split_skull_review", f"{n_slices} slices < {rules.review_below}: possible split skull base/vault"
    return "kept", "", f"{n_slices} slices"


EXCLUSION_COLUMNS = ["unit", "id", "stage", "status", "reason", "detail"]
REASON_LABELS = {  # one label per cause; thesis 003 Table 3.1 wording where the thesis has the category
    # series, index stage (headers)
    "wrong_modality": "Not the dataset's modality",
    "missing_geometry": "Missing orientation/position tags",
    "localiser": "Localisers",
    "bone_kernel": "Bone reformats",
    "non_axial": "Non-axial orientations",
    # series, convert and review stages
    "conversion_failed": "dcm2niix conversion failed",
    "bone_noise": "Bone reformats (bone-kernel noise, no bone name)",
    "split_skull_review": "Separated skull base/vault (awaiting review)",
    "split_skull": "Separated skull base/vault",
    # series, register and registration QC stages (cfbrain.register.result.FAILURE_REASONS)
    "invalid_ct": "CT volume unusable for registration",
    "blank_ct": "CT without contrast",
    "no_intracranial_region": "No intracranial region (the skull encloses almost no volume: phantom?)",
    "not_converged": "Registration failed to converge",
    "degenerate_transform": "Registration gave a singular or mirrored transform",
    "backend_error": "Registration tool failed",
    "registration": "Poor patient positioning",
    # series, preprocess stage
    "unreadable": "Converted image unreadable",
    "not_3d": "Converted image not a 3-D volume",
    "no_head_found": "No head in the image",
    "no_brain_found": "No brain tissue found",
    "too_few_slices": "Too few slices to sample",
    # files, index stage
    "empty_file": "Empty file",
    "not_dicom": "Not a DICOM file",
    "dicomdir": "DICOMDIR (a folder index, not an image)",
    "corrupt_header": "Corrupt DICOM header",
    "non_image_object": "Not an image (report, structure set, ...)",
    "missing_identifier": "Missing patient/study/series/instance UID",
    "no_pixel_data": "No pixel data (header-only file)",
    "no_image_size": "No image size (Rows/Columns)",
    "truncated": "Truncated pixel data",
    "duplicate_instance": "Duplicate of another file (same SOPInstanceUID)",
    "non_axial_slice": "Non-axial slice of an axial series (not converted)",
}


def apply_review(status: pd.DataFrame, review: pd.DataFrame | None) -> pd.DataFrame:
    """Apply a reviewer's verdicts (columns scan, verdict in {keep, exclude}, optional note) to
    series awaiting review; a verdict for a scan that is not awaiting review is an error."""
    status = status.copy()
    if review is None or review.empty:
        return status
    bad = set(review.verdict) - {"keep", "exclude"}
    if bad:
        raise ValueError(f"review verdicts must be keep or exclude, got {sorted(bad)}")
    pending = status.set_index("id").status.eq("needs_review")
    unknown = [s for s in review.scan if not pending.get(s, False)]
    if unknown:
        raise ValueError(f"review file names scans that are not awaiting review: {unknown[:5]}")
    for item in review.itertuples():
        note = getattr(item, "note", "") if isinstance(getattr(item, "note", ""), str) else ""
        mask = status.id == item.scan
        if item.verdict == "keep":
            status.loc[mask, ["status", "reason"]] = ["kept", ""]
        else:
            status.loc[mask, ["status", "reason"]] = ["excluded", "split_skull"]
        status.loc[mask, "stage"] = "review"
        status.loc[mask, "detail"] = f"reviewed: {item.verdict}" + (f" ({note})" if note else "")
    return status


def ingest_status(series: pd.DataFrame, files: pd.DataFrame, converted: pd.DataFrame,
                  review: pd.DataFrame | None) -> pd.DataFrame:
    """One row per input series (kept / excluded / needs_review) and per excluded file.

    ``series`` and ``files`` are the index tables, ``converted`` the concatenated convert
    status rows of all candidates. Raises if a candidate has no conversion status.
    """
    candidates = series[series.verdict == "candidate"].scan
    missing = sorted(set(candidates) - set(converted.scan))
    if missing:
        raise ValueError(f"{len(missing)} candidate series have no conversion status, e.g. {missing[:3]}")
    header_excluded = series[series.verdict == "excluded"]
    rows = [pd.DataFrame({"unit": "series", "id": header_excluded.scan, "stage": "index", "status": "excluded",
                          "reason": header_excluded.reason, "detail": header_excluded.detail}),
            pd.DataFrame({"unit": "series", "id": converted.scan, "stage": converted.stage,
                          "status": converted.status, "reason": converted.reason, "detail": converted.detail})]
    bad_files = files[files.status == "excluded"]
    rows.append(pd.DataFrame({"unit": "file", "id": bad_files.file, "stage": "index", "status": "excluded",
                              "reason": bad_files.reason, "detail": bad_files.detail}))
    table = pd.concat(rows, ignore_index=True).fillna("")
    return apply_review(table, review).sort_values(["unit", "id"], ignore_index=True)[EXCLUSION_COLUMNS]


def exclusion_counts_markdown(table: pd.DataFrame, dataset: str) -> str:
    """Markdown table of series excluded by reason (thesis 003 Table 3.1 shape) plus file-level rows."""
    series = table[table.unit == "series"]
    lines = [f"# Exclusions: {dataset}", "",
             f"{len(series)} input series; {int((series.status == 'kept').sum())} kept, "
             f"{int((series.status == 'excluded').sum())} excluded, "
             f"{int((series.status == 'needs_review').sum())} awaiting review.", "",
             "| Reason for series exclusion | N |", "|---|---:|"]
    not_kept = series[series.status != "kept"]
    for reason, count in not_kept.reason.value_counts().sort_index().items():
        lines.append(f"| {REASON_LABELS.get(reason, reason)} | {count} |")
    lines.append(f"| **Total** | **{len(not_kept)}** |")
    files = table[table.unit == "file"]
    if len(files):
        lines += ["", "| Files that joined no series | N |", "|---|---:|"]
        for reason, count in files.reason.value_counts().sort_index().items():
            lines.append(f"| {REASON_LABELS.get(reason, reason)} | {count} |")
    return "\n".join(lines) + "\n"


def with_later_stages(ingest: pd.DataFrame, later: list[pd.DataFrame]) -> pd.DataFrame:
    """The ingest table with series excluded by later stages (rows: scan, stage, status, reason,
    detail) marked as such, in stage order; still one row per input series. A later row for a
    series that ingest did not keep is a bug."""
    table = ingest.copy()
    kept = set(table.loc[(table.unit == "series") & (table.status == "kept"), "id"])
    for stage_rows in later:
        for row in stage_rows.itertuples():
            if row.scan not in kept:
                raise ValueError(f"{row.stage} excluded {row.scan}, which ingest did not keep")
            mask = (table.unit == "series") & (table.id == row.scan)
            table.loc[mask, ["stage", "status", "reason", "detail"]] = [row.stage, row.status, row.reason, row.detail]
            kept.discard(row.scan)
    return table
