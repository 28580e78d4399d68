"""Score counterfactuals with nnU-Net v2 (the thesis's segmenter) instead of the built-in one.

nnU-Net is not a dependency; it runs outside the package, between two calls:

1. ``export_for_nnunet(counterfactuals, case_ids, folder)`` writes each image as
   ``{case_id}_0000.nii.gz`` (float32 [0, 1], shape (H, W, 1), identity affine: nnU-Net treats a
   one-slice volume as 2-D);
2. the user runs ``nnUNetv2_predict -i folder -o predictions -d <dataset> -c 2d`` with a model trained on the
   training slices exported the same way (labels as ``{case_id}.nii.gz`` in ``labelsTr``);
3. ``read_predicted_masks(predictions, case_ids)`` returns the (N, H, W) uint8 masks (any label > 0 is
   lesion, as BraTS subregions are fused), ready for
   :func:`cfbrain.counterfactual.evaluate.evaluate_counterfactuals` as ``predicted_masks``.

nnU-Net keeps the input geometry, so the masks come back in the images' pixel order.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np


def case_ids(method: str, n: int) -> list[str]:
    """nnU-Net case identifiers ``{method}_{index:04d}`` of a method's N counterfactuals."""
    return [f"{method}_{index:04d}" for index in range(n)]


def export_for_nnunet(images: np.ndarray, ids: Sequence[str], folder: str | Path) -> list[Path]:
    """Write images (N, H, W) in [0, 1] as nnU-Net inputs ``{id}_0000.nii.gz``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(ids) != len(images):
        raise ValueError(f"{len(ids)} case ids for {len(images)} images")
    paths = []
    for case, image in zip(ids, np.asarray(images, np.float32)):
        path = folder / f"{case}_0000.nii.gz"
        nib.Nifti1Image(image[:, :, None], np.eye(4)).to_filename(path)
        paths.append(path)
    return paths


def read_predicted_masks(folder: str | Path, ids: Sequence[str]) -> np.ndarray:
    """Predicted masks ``{id}.nii.gz`` of ``folder`` as uint8 (N, H, W) in {0, 1}, in the order of ``ids``.

    Raises:
        FileNotFoundError: if a case has no prediction.
    """
    masks = []
    for case in ids:
        path = Path(folder) / f"{case}.nii.gz"
        if not path.is_file():
            raise FileNotFoundError(f"no nnU-Net prediction {path}")
        data = np.asarray(nib.load(path).dataobj)
        masks.append((data.reshape(data.shape[:2]) > 0).astype(np.uint8))
    return np.stack(masks)
