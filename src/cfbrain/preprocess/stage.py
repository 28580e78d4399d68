"""The per-scan preprocessing stage: registered CT -> model-ready tensor, always ending in a status row."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cfbrain.convert.exclusions import STATUS_COLUMNS
from cfbrain.preprocess.ct import CTPreprocessConfig, preprocess_ct, save_tensor
from cfbrain.preprocess.errors import UNREADABLE_FILE_ERRORS, UnusableScan
from cfbrain.preprocess.volume import load_ct, midline_columns_from_plane, resample_mask_to_grid
from cfbrain.register.flirt_matrix import read_template_to_ct

log = logging.getLogger(__name__)
TENSOR = "tensor.npz"
PREPROCESS_STATUS_COLUMNS = STATUS_COLUMNS + ["midline_source", "lesion_voxels"]


def registered_midline(matrix: Path, template: Path, ct_path: Path, grid) -> np.ndarray:
    """Per-slice midsagittal column of ``grid`` (the loaded CT): the template's x = 0 plane
    (MNI midline, RAS mm) carried into CT world space by the registration."""
    template_to_ct = read_template_to_ct(matrix, template, ct_path)
    point = template_to_ct[:3, 3]
    normal = np.linalg.inv(template_to_ct[:3, :3]).T @ np.array([1.0, 0.0, 0.0])
    return midline_columns_from_plane(grid, point, normal)


def preprocess_scan(scan: str, ct_path: Path, registration_dir: Path | None, lesion_mask_path: Path | None,
                    config: CTPreprocessConfig, out_dir: Path, status_tsv: Path) -> dict:
    """Crop, pad/resize, sample slices, window; hemisphere midline from the registration when given.

    Writes ``out_dir/tensor.npz`` (see :mod:`cfbrain.preprocess.ct`) and a one-row status table;
    a data problem (:class:`UnusableScan`, unreadable file) is an exclusion row, not an exception.
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    row = {"scan": scan, "stage": "preprocess", "midline_source": "", "lesion_voxels": None}
    try:
        ct = load_ct(ct_path)
        midline, source = None, "centre"
        if registration_dir is not None:
            template = Path((Path(registration_dir) / "template.txt").read_text().strip())
            midline = registered_midline(Path(registration_dir) / "template_to_ct.mat", template, ct_path, ct)
            source = "registration"
        lesion = resample_mask_to_grid(lesion_mask_path, ct) if lesion_mask_path else None
        tensor = preprocess_ct(ct, config, lesion_mask=lesion, midline_col=midline, midline_source=source)
    except UnusableScan as problem:
        row.update(status="excluded", reason=problem.reason, detail=problem.detail)
    except UNREADABLE_FILE_ERRORS as error:
        row.update(status="excluded", reason="unreadable", detail=f"{type(error).__name__}: {error}")
    else:
        save_tensor(Path(out_dir) / TENSOR, tensor)
        lesion_voxels = None if tensor.lesion_mask is None else int(tensor.lesion_mask.sum())
        row.update(status="kept", reason="", detail=f"{tensor.image.shape}", midline_source=source,
                   lesion_voxels=lesion_voxels)
    log.info("%s: %s %s %s", scan, row["status"], row["reason"], row["detail"])
    pd.DataFrame([row], columns=PREPROCESS_STATUS_COLUMNS).to_csv(status_tsv, sep="\t", index=False)
    return row
