"""Pseudonymise a user's labels table so it can leave the ingest stage."""
from __future__ import annotations

import logging

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
