"""The per-scan conversion stage: dcm2niix, then the slice-count rules and the bone-noise check, always
ending in a status row."""
from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import pandas as pd
import pydicom

from cfbrain.convert.bone import BONE_NOISE_MAX_HU, converted_noise_hu, noise_verdict
from cfbrain.convert.dcm2niix import ConversionFailed, convert_series, n_slices
from cfbrain.convert.exclusions import STATUS_COLUMNS, SliceCountRules, slice_count_verdict

log = logging.getLogger(__name__)
CONVERT_STATUS_COLUMNS = STATUS_COLUMNS + ["n_slices", "shape", "voxel_mm", "correction", "dcm2niix_outputs",
                                           "noise_hu"]


def exported_image_type(dicom_dir: Path) -> str:
    """Backslash-joined ImageType of the first exported instance ('' when blank or absent)."""
    first = sorted(Path(dicom_dir).glob("*.dcm"))[0]
    value = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["ImageType"]).get("ImageType")
    if not value:
        return ""
    return "\\".join(str(v) for v in (value if not isinstance(value, str) else [value]) if str(v).strip())


def convert_scan(scan: str, dicom_dir: Path, out_dir: Path, status_tsv: Path, rules: SliceCountRules,
                 max_noise_hu: float = BONE_NOISE_MAX_HU) -> dict:
    """Convert one exported series into ``out_dir/image.nii.gz`` and write its one-row status table.

    A conversion failure, a slice-count exclusion or brain-tissue noise above ``max_noise_hu``
    (HU, a bone reconstruction whatever its name) is a status, not an exception.
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    row = {"scan": scan, "stage": "convert", "n_slices": None, "shape": "", "voxel_mm": "",
           "correction": "", "dcm2niix_outputs": "", "noise_hu": None}
    try:
        conversion = convert_series(dicom_dir, out_dir)
    except ConversionFailed as failure:
        row.update(status="excluded", reason="conversion_failed", detail=str(failure))
    else:
        image = nib.load(conversion.nifti)
        count = n_slices(image.shape)
        status, reason, detail = slice_count_verdict(count, exported_image_type(dicom_dir), rules)
        if status != "excluded":
            row["noise_hu"] = converted_noise_hu(image)
            noise_reason, noise_detail = noise_verdict(row["noise_hu"], max_noise_hu)
            status, reason = ("excluded", noise_reason) if noise_reason else (status, reason)
            detail = f"{detail}; {noise_detail}"
        row.update(status=status, reason=reason, detail=detail, n_slices=count,
                   shape="x".join(map(str, image.shape)),
                   voxel_mm="x".join(f"{v:.3g}" for v in image.header.get_zooms()[:3]),
                   correction=conversion.correction, dcm2niix_outputs=";".join(conversion.all_outputs))
    log.info("%s: %s %s %s", scan, row["status"], row["reason"], row["detail"])
    pd.DataFrame([row], columns=CONVERT_STATUS_COLUMNS).to_csv(status_tsv, sep="\t", index=False)
    return row
