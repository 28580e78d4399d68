"""Preprocessing: NIfTI volumes -> fixed-size tensors (thesis 003 section 3.4.4 steps 6-8; thesis 000 section 4).

Conventions used by every function of this package:

* Volumes are (S, H, W) arrays: slice inferior->superior, row anterior->posterior,
  column patient RIGHT->LEFT (radiological display). See :mod:`.volume`.
* CT values are HU until step 8; tensors on disk are in [0, 1]; diffusion models
  work in [-1, 1]. All conversions live in :mod:`.intensity`.
* Masks are uint8 in {0, 1} and go through the same geometry as their image,
  by nearest neighbour.
* Data problems raise :class:`UnusableScan` (reason, detail); per-scan rules turn
  it into an exclusion row. Anything else is a bug.

Modules: volume (load, reorient, resample onto a grid), geometry (crop, pad or
downsample, slice sampling), masks (head, brain), intensity (pixel ranges),
hemispheres (midline split), ct (the CT pipeline and the .npz format), figures
(QC montage), splits (patient-level splits), mri (ATLAS v2.0, BraTS 2023).
"""
from cfbrain.preprocess.ct import CTPreprocessConfig, CTTensor, load_tensor, preprocess_ct, save_tensor
from cfbrain.preprocess.errors import UNREADABLE_FILE_ERRORS, UnusableScan
from cfbrain.preprocess.geometry import (CropBox, PlaneFit, brain_slice_range, fit_planes, sample_slices,
                                        skull_crop_box, source_cols_to_output, source_rows_to_output)
from cfbrain.preprocess.hemispheres import split_hemispheres
from cfbrain.preprocess.intensity import diffusion_to_unit, hu_to_unit, unit_to_diffusion, unit_to_hu
from cfbrain.preprocess.masks import brain_mask, head_mask
from cfbrain.preprocess.volume import (Volume, load_ct, load_volume, midline_columns_from_plane,
                                       resample_mask_to_grid, resample_to_grid)

__all__ = [
    "CTPreprocessConfig", "CTTensor", "CropBox", "PlaneFit", "UNREADABLE_FILE_ERRORS", "UnusableScan", "Volume",
    "brain_mask", "brain_slice_range", "diffusion_to_unit", "fit_planes", "head_mask", "hu_to_unit",
    "load_ct", "load_tensor", "load_volume", "midline_columns_from_plane", "preprocess_ct",
    "resample_mask_to_grid", "resample_to_grid", "sample_slices", "save_tensor", "skull_crop_box",
    "source_cols_to_output", "source_rows_to_output", "split_hemispheres", "unit_to_diffusion", "unit_to_hu",
]
