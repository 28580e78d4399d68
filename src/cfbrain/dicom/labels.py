"""Pseudonymise a user's labels table so it can leave the ingest stage."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from cfbrain.dicom.pseudonymise import PseudonymKey

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("timepoint", "lesion", "side", "territory", "size", "n_lesions", "age")
SIDES = {"left", "right", "both", "none"}


def pseudonymise_labels(raw: pd.DataFrame, key: PseudonymKey) -> pd.DataFrame:
    """Labels keyed by pseudonyms: ``patient`` (from patient_id) and ``study`` (from study_uid, if given).

    Only the documented label columns are kept; any other column is dropped (it may identify
    someone) and its name logged. Raises on missing patient_id or invalid lesion/side values.
    """
    if "patient_id" not in raw.columns:
        raise ValueError("labels table needs a patient_id column (the DICOM PatientID)")
    out = pd.DataFrame({"patient": [key.patient(str(p).strip()) for p in raw.patient_id]})
    if "study_uid" in raw.columns:
        out["study"] = [key.study(str(s).strip()) for s in raw.study_uid]
    for column in LABEL_COLUMNS:
        if column in raw.columns:
            out[column] = raw[column].values
    dropped = sorted(set(raw.columns) - set(LABEL_COLUMNS) - {"patient_id", "study_uid"})
    if dropped:
        log.warning("labels: dropped columns %s (not label columns; may identify patients)", dropped)
    if "lesion" in out and not out.lesion.isin([0, 1]).all():
        raise ValueError("labels: lesion must be 0 or 1")
    if "side" in out and not out.side.fillna("none").isin(SIDES).all():
        raise ValueError(f"labels: side must be one of {sorted(SIDES)}")
    return out.sort_values(list(out.columns[:2]), ignore_index=True)


def import_truth_mask(truth_series_tsv: Path, masks_dir: Path, scan: str, key: PseudonymKey, out_path: Path) -> bool:
    """Copy a synthetic cohort's ground-truth lesion mask of ``scan`` to ``out_path`` (pseudonymous name).

    The cohort keys its masks by raw SeriesInstanceUID; the scan is found by recomputing each
    series' pseudonym with ``key``. Returns False (and writes nothing) when the series has no mask.
    """
    series = pd.read_csv(truth_series_tsv, sep="\t", dtype=str)
    match = [row for row in series.itertuples() if key.scan(row.patient_id, row.study_uid, row.series_uid) == scan]
    if len(match) != 1:
        raise KeyError(f"scan {scan} matches {len(match)} series of the synthetic truth table")
    source = Path(masks_dir) / f"{match[0].series_uid}.nii.gz"
    if not source.exists():
        return False
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out_path)
    return True
