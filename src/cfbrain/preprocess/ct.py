"""Thesis 003 section 3.4.4 steps 6-8 for one CT volume, and the ``preproc/{scan}.npz`` format.

``preprocess_ct(load_ct(path), CTPreprocessConfig())`` runs, in order:

1. out-of-field padding (anything below ``air_hu``, e.g. -2000 or -32768) is set
   to air so it cannot bleed into tissue when a plane is downsampled;
2. step 6: one skull bounding rectangle over all slices (:func:`skull_crop_box`),
   found on the CT itself (the thesis finds it on the registered image, which
   has the CT's grid, and applies it to the CT: the same box);
3. head and brain masks on the cropped volume (:mod:`cfbrain.preprocess.masks`);
4. step 7: ``n_slices`` slices sampled evenly over the whole scan (the thesis)
   or over the brain-containing slices (``slice_range="brain"``); each plane
   padded or downsampled per axis to ``target_hw`` (images: area or bilinear
   interpolation in HU; masks: nearest);
5. step 8: HU window -> [0, 1] (:func:`hu_to_unit`); the padding is 0 in that
   range, which is what the thesis's zero padding in HU gives with its [0, 100] window.

NPZ KEYS (``save_tensor`` / ``load_tensor``), S = n_slices, (H, W) = target_hw:

=================  ============  ===========================================================
key                dtype, shape  meaning
=================  ============  ===========================================================
image              float32 SxHxW HU-windowed image in [0, 1] (contract 7)
head_mask          uint8 SxHxW   head (1) / outside (0)
brain_mask         uint8 SxHxW   brain (1) / not brain (0)
lesion_mask        uint8 SxHxW   only when the dataset has lesion masks
midline_col        float32 S     midsagittal column per slice in tensor columns (fractional)
midline_source     str           "centre" (fallback) or what the caller named it (e.g. "registration")
slice_index        int64 S       slice of the loaded volume each tensor slice comes from
crop_box           int32 4       [row0, row1, col0, col1) in the loaded volume's plane
crop_source        str           "bone" (thesis rule) or "head" (fallback)
resized_hw         int32 2       plane size after downsampling, before padding
pad                int32 2x2     [[top, bottom], [left, right]] padding in pixels
pixel_mm           float32 2     tensor pixel size (row, col) in mm
voxel_mm           float32 3     loaded volume's (slice, row, col) spacing in mm
source_shape       int32 3       loaded volume's (S, H, W)
source_affine      float64 4x4   loaded volume's (slice, row, col, 1) -> RAS mm
hu_window          float32 2     [low, high] HU mapped to [0, 1]
format             str           "cfbrain-ct-tensor/1"
=================  ============  ===========================================================

"Loaded volume" is the output of :func:`cfbrain.preprocess.volume.load_ct`
(display convention: slice inferior->superior, row anterior->posterior,
col patient right->left). A tensor pixel (s, r, c) comes from loaded slice
``slice_index[s]``, row ``crop_box[0] + (r - pad[0,0] + 0.5) / scale_r - 0.5``, and
likewise for columns, with scale = resized_hw / crop size.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from cfbrain.preprocess.geometry import (CropBox, PlaneFit, ResizeMode, brain_slice_range, fit_planes,
                                        pad_planes, resize_planes, sample_slices, skull_crop_box,
                                        source_cols_to_output, source_rows_to_output)
from cfbrain.preprocess.hemispheres import centre_columns, split_hemispheres
from cfbrain.preprocess.intensity import hu_to_unit
from cfbrain.preprocess.masks import brain_mask, head_mask
from cfbrain.preprocess.npz import read_npz, write_npz
from cfbrain.preprocess.volume import Volume
from cfbrain.settings import from_mapping

log = logging.getLogger(__name__)

TENSOR_FORMAT = "cfbrain-ct-tensor/1"


@dataclass(frozen=True)
class CTPreprocessConfig:
    """Parameters of steps 6-8; defaults are the thesis's values where it gives one."""

    target_hw: tuple[int, int] = (500, 400)
    n_slices: int = 11
    slice_range: Literal["scan", "brain"] = "scan"
    hu_window: tuple[float, float] = (0.0, 100.0)
    resize_mode: ResizeMode = "area"
    bone_hu: float = 300.0
    min_bone_component_fraction: float = 0.05
    crop_margin_px: int = 0
    air_hu: float = -1024.0
    head_hu: float = -500.0
    brain_tissue_hu: tuple[float, float] = (0.0, 80.0)
    brain_erosion_mm: float = 4.0
    brain_slice_min_fraction: float = 0.1

    @classmethod
    def from_mapping(cls, values: Mapping) -> "CTPreprocessConfig":
        """From a config section (YAML lists become tuples); unknown keys are an error."""
        return from_mapping(cls, values, "CT preprocessing")


@dataclass(frozen=True)
class CTTensor:
    """One preprocessed scan; field meanings are the NPZ keys of the module docstring."""

    image: np.ndarray
    head_mask: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray | None
    midline_col: np.ndarray
    midline_source: str
    slice_index: np.ndarray
    crop_box: CropBox
    resized_hw: tuple[int, int]
    pad: tuple[tuple[int, int], tuple[int, int]]
    pixel_mm: tuple[float, float]
    voxel_mm: tuple[float, float, float]
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    hu_window: tuple[float, float]

    @property
    def plane_fit(self) -> PlaneFit:
        """Step 7's mapping from the cropped plane to the tensor plane."""
        return PlaneFit(in_hw=self.crop_box.shape, target_hw=self.image.shape[1:])

    def rows_from_source(self, rows) -> np.ndarray:
        """Fractional rows of the loaded volume -> fractional rows of the tensor (crop, then step 7)."""
        return source_rows_to_output(rows, self.crop_box, self.plane_fit)

    def cols_from_source(self, cols) -> np.ndarray:
        """Fractional columns of the loaded volume -> fractional columns of the tensor (crop, then step 7)."""
        return source_cols_to_output(cols, self.crop_box, self.plane_fit)

    def labels_from_source(self, volume: np.ndarray) -> np.ndarray:
        """A label or mask volume on the loaded volume's grid (``source_shape``) -> (S, H, W) on this
        tensor's grid, by the crop, slice selection and step 7 the image went through (nearest)."""
        if volume.shape != self.source_shape:
            raise ValueError(f"volume {volume.shape} is not on the loaded volume's grid {self.source_shape}")
        return labels_to_tensor(volume, self.crop_box, self.slice_index, self.plane_fit)

    def hemispheres(self, which: str = "image") -> np.ndarray:
        """(2, S, H, W/2) [right, left] halves of ``image`` or of a mask field, split at ``midline_col``."""
        return split_hemispheres(getattr(self, which), self.midline_col)


def labels_to_tensor(volume: np.ndarray, box: CropBox, index: np.ndarray, fit: PlaneFit) -> np.ndarray:
    """Crop, slice selection and step 7 of a label or mask volume (S0, H0, W0) on the loaded CT's grid:
    (S, H, W) in the same dtype, by nearest neighbour (labels keep their values)."""
    return fit_planes(box.apply(volume)[index], fit, "nearest")


def preprocess_ct(ct: Volume, config: CTPreprocessConfig = CTPreprocessConfig(),
                  lesion_mask: np.ndarray | None = None, midline_col: np.ndarray | None = None,
                  midline_source: str = "registration") -> CTTensor:
    """Steps 6-8 on a loaded CT (HU, display convention) -> :class:`CTTensor`.

    lesion_mask: uint8 (S0, H0, W0) on the CT's grid (see ``resample_mask_to_grid``), or None.
    midline_col: (S0,) fractional midsagittal column per loaded slice, or None for
        the image centre (then ``midline_source`` is recorded as "centre").
    Raises :class:`~cfbrain.preprocess.errors.UnusableScan` for data problems (no head, too few slices, empty brain).
    """
    if lesion_mask is not None and lesion_mask.shape != ct.shape:
        raise ValueError(f"lesion mask {lesion_mask.shape} is not on the CT grid {ct.shape}")
    if midline_col is not None and np.shape(midline_col) != (ct.shape[0],):
        raise ValueError(f"midline_col must have shape ({ct.shape[0]},), got {np.shape(midline_col)}")
    hu = np.maximum(ct.data, np.float32(config.air_hu))
    box = skull_crop_box(hu, config.bone_hu, config.min_bone_component_fraction,
                         config.crop_margin_px, config.head_hu)
    cropped = box.apply(hu)
    head = head_mask(cropped, config.head_hu)
    brain = brain_mask(cropped, head, ct.voxel_mm, config.brain_tissue_hu, config.bone_hu, config.brain_erosion_mm)
    first, last = (0, ct.shape[0] - 1) if config.slice_range == "scan" else \
        brain_slice_range(brain, config.brain_slice_min_fraction)
    index = sample_slices(first, last, config.n_slices)

    fit = PlaneFit(in_hw=box.shape, target_hw=tuple(config.target_hw))
    resized_hu = resize_planes(cropped[index], fit.resized_hw, config.resize_mode)
    image = pad_planes(hu_to_unit(resized_hu, *config.hu_window), fit.pad, 0.0)

    def fitted_mask(cropped_mask: np.ndarray) -> np.ndarray:
        return fit_planes(cropped_mask[index].astype(np.uint8), fit, "nearest")

    if midline_col is None:
        columns, midline_source = centre_columns(len(index), fit.target_hw[1]), "centre"
    else:
        columns = source_cols_to_output(np.asarray(midline_col)[index], box, fit).astype(np.float32)
    log.info("crop %s (%s) -> resized %s, pad %s; slices %s; midline %s", box.as_array().tolist(), box.source,
             fit.resized_hw, fit.pad, index.tolist(), midline_source)
    return CTTensor(
        image=image,
        head_mask=fitted_mask(head),
        brain_mask=fitted_mask(brain),
        lesion_mask=None if lesion_mask is None else labels_to_tensor(lesion_mask.astype(np.uint8), box, index, fit),
        midline_col=columns,
        midline_source=midline_source,
        slice_index=index,
        crop_box=box,
        resized_hw=fit.resized_hw,
        pad=fit.pad,
        pixel_mm=tuple(float(mm / s) for mm, s in zip(ct.voxel_mm[1:], fit.scale)),
        voxel_mm=ct.voxel_mm,
        source_shape=ct.shape,
        source_affine=ct.affine,
        hu_window=tuple(config.hu_window),
    )


def _check(tensor: CTTensor) -> None:
    shape = tensor.image.shape
    if tensor.image.dtype != np.float32 or tensor.image.ndim != 3:
        raise ValueError(f"image must be float32 (S, H, W), got {tensor.image.dtype} {shape}")
    if tensor.image.size and not (0.0 <= tensor.image.min() and tensor.image.max() <= 1.0):
        raise ValueError("image must lie in [0, 1] (HU-windowed, contract 7)")
    masks = {"head_mask": tensor.head_mask, "brain_mask": tensor.brain_mask, "lesion_mask": tensor.lesion_mask}
    for name, mask in masks.items():
        if mask is not None and (mask.shape != shape or mask.dtype != np.uint8 or mask.max(initial=0) > 1):
            raise ValueError(f"{name} must be uint8 in {{0, 1}} with the image's shape {shape}")
    if tensor.midline_col.shape != shape[:1] or tensor.slice_index.shape != shape[:1]:
        raise ValueError("midline_col and slice_index need one value per slice")


def save_tensor(path: str | Path, tensor: CTTensor) -> None:
    """Write ``tensor`` to ``path`` (.npz, compressed, byte-reproducible) with the documented keys."""
    _check(tensor)
    arrays = {
        "image": tensor.image,
        "head_mask": tensor.head_mask,
        "brain_mask": tensor.brain_mask,
        "midline_col": np.asarray(tensor.midline_col, dtype=np.float32),
        "midline_source": np.str_(tensor.midline_source),
        "slice_index": np.asarray(tensor.slice_index, dtype=np.int64),
        "crop_box": tensor.crop_box.as_array(),
        "crop_source": np.str_(tensor.crop_box.source),
        "resized_hw": np.asarray(tensor.resized_hw, dtype=np.int32),
        "pad": np.asarray(tensor.pad, dtype=np.int32),
        "pixel_mm": np.asarray(tensor.pixel_mm, dtype=np.float32),
        "voxel_mm": np.asarray(tensor.voxel_mm, dtype=np.float32),
        "source_shape": np.asarray(tensor.source_shape, dtype=np.int32),
        "source_affine": np.asarray(tensor.source_affine, dtype=np.float64),
        "hu_window": np.asarray(tensor.hu_window, dtype=np.float32),
        "format": np.str_(TENSOR_FORMAT),
    }
    if tensor.lesion_mask is not None:
        arrays["lesion_mask"] = tensor.lesion_mask
    write_npz(path, arrays)


def load_tensor(path: str | Path) -> CTTensor:
    """Read a file written by :func:`save_tensor`."""
    arrays = read_npz(path, TENSOR_FORMAT)
    row0, row1, col0, col1 = (int(v) for v in arrays["crop_box"])
    return CTTensor(
        image=arrays["image"],
        head_mask=arrays["head_mask"],
        brain_mask=arrays["brain_mask"],
        lesion_mask=arrays.get("lesion_mask"),
        midline_col=arrays["midline_col"],
        midline_source=str(arrays["midline_source"]),
        slice_index=arrays["slice_index"],
        crop_box=CropBox(row0, row1, col0, col1, source=str(arrays["crop_source"])),
        resized_hw=tuple(int(v) for v in arrays["resized_hw"]),
        pad=tuple(tuple(int(v) for v in side) for side in arrays["pad"]),
        pixel_mm=tuple(float(v) for v in arrays["pixel_mm"]),
        voxel_mm=tuple(float(v) for v in arrays["voxel_mm"]),
        source_shape=tuple(int(v) for v in arrays["source_shape"]),
        source_affine=arrays["source_affine"],
        hu_window=tuple(float(v) for v in arrays["hu_window"]),
    )
