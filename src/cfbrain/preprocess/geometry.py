"""Thesis 003 steps 6-7: skull crop, per-axis pad-or-downsample, uniform slice sampling.

All arrays are (S, H, W) in the display convention of :mod:`cfbrain.preprocess.volume`
(slice inferior->superior, row anterior->posterior, col patient right->left).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cfbrain.preprocess.errors import UnusableScan

log = logging.getLogger(__name__)

ResizeMode = Literal["area", "bilinear", "nearest"]


@dataclass(frozen=True)
class CropBox:
    """One in-plane rectangle for the whole volume, half-open: rows [row0, row1), cols [col0, col1).

    source: what bounded it: "bone" (skull voxels, the thesis rule) or "head"
    (the fallback when a volume has no bone: the head mask).
    """

    row0: int
    row1: int
    col0: int
    col1: int
    source: str = "bone"

    @property
    def shape(self) -> tuple[int, int]:
        return self.row1 - self.row0, self.col1 - self.col0

    def apply(self, volume: np.ndarray) -> np.ndarray:
        """Crop (..., H, W) -> (..., row1 - row0, col1 - col0) (a view)."""
        return volume[..., self.row0:self.row1, self.col0:self.col1]

    def as_array(self) -> np.ndarray:
        return np.array([self.row0, self.row1, self.col0, self.col1], dtype=np.int32)


def _box_of(mask_hw: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask_hw.any(axis=1)), np.flatnonzero(mask_hw.any(axis=0))
    height, width = mask_hw.shape
    return (max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, height),
            max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, width))


def _large_components(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """Keep 26-connected components with at least ``min_fraction`` of the largest one's voxels."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_fraction * sizes.max()) + 1
    return np.isin(labels, keep)


def skull_crop_box(hu: np.ndarray, bone_hu: float = 300.0, min_component_fraction: float = 0.05,
                   margin: int = 0, head_hu: float = -500.0) -> CropBox:
    """Step 6: the bounding rectangle of skull voxels over all slices of ``hu`` (S, H, W).

    Skull = voxels >= ``bone_hu`` ("skull voxels are the brightest in the scan").
    Bright specks outside the head (head-holder screws, stray pixels) are ignored
    by keeping only 3-D connected bone components of at least
    ``min_component_fraction`` of the largest one (the skull). Padding values
    (-2000, -32768, ...) are below any bone threshold and never count. One
    rectangle spans all slices, so every slice keeps the same in-plane geometry.
    ``margin`` pixels are added on each side (clipped to the image).

    Without any bone the head mask (> ``head_hu``) bounds the box (source "head");
    without a head either the scan is unusable ("no_head_found").
    """
    bone = _large_components(hu >= bone_hu, min_component_fraction)
    if bone.any():
        return CropBox(*_box_of(bone.any(axis=0), margin), source="bone")
    head = _large_components(hu > head_hu, 1.0)
    if not head.any():
        raise UnusableScan("no_head_found", f"no voxel above {head_hu} HU")
    log.warning("no voxel >= %g HU: cropping to the head mask instead of the skull", bone_hu)
    return CropBox(*_box_of(head.any(axis=0), margin), source="head")


@dataclass(frozen=True)
class PlaneFit:
    """How step 7 maps a cropped (h, w) plane onto the target (H, W), one axis at a time.

    An axis longer than the target is downsampled to the target length; a shorter
    (or downsampled) axis is then padded symmetrically (the odd pixel goes after).
    Aspect ratio is NOT preserved when only one axis is downsampled: this is the
    thesis's "zero-padded or resized each cropped CT image to 500x400".
    """

    in_hw: tuple[int, int]
    target_hw: tuple[int, int]

    @property
    def resized_hw(self) -> tuple[int, int]:
        return tuple(min(n, t) for n, t in zip(self.in_hw, self.target_hw))

    @property
    def pad(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) padding in pixels."""
        return tuple(((t - n) // 2, t - n - (t - n) // 2) for n, t in zip(self.resized_hw, self.target_hw))

    @property
    def scale(self) -> tuple[float, float]:
        """Output pixels per input pixel along (row, col); 1 where the axis is only padded."""
        return tuple(r / n for r, n in zip(self.resized_hw, self.in_hw))

    def rows_to_output(self, rows):
        """Fractional row coordinates of the cropped plane -> rows of the fitted plane."""
        return (np.asarray(rows, dtype=np.float64) + 0.5) * self.scale[0] - 0.5 + self.pad[0][0]

    def cols_to_output(self, cols):
        """Fractional column coordinates of the cropped plane -> columns of the fitted plane.

        Pixel centres map as the resizers see them (align_corners=False):
        out + 0.5 = (in + 0.5) * scale, then shifted by the left padding.
        """
        return (np.asarray(cols, dtype=np.float64) + 0.5) * self.scale[1] - 0.5 + self.pad[1][0]


def source_rows_to_output(rows, box: CropBox, fit: PlaneFit) -> np.ndarray:
    """Fractional rows of the uncropped plane -> rows of the fitted plane (crop, then step 7)."""
    return fit.rows_to_output(np.asarray(rows, dtype=np.float64) - box.row0)


def source_cols_to_output(cols, box: CropBox, fit: PlaneFit) -> np.ndarray:
    """Fractional columns of the uncropped plane -> columns of the fitted plane (crop, then step 7).

    This is how a midline column found on the loaded CT (e.g. from registration)
    reaches tensor space.
    """
    return fit.cols_to_output(np.asarray(cols, dtype=np.float64) - box.col0)


def resize_planes(volume: np.ndarray, out_hw: tuple[int, int], mode: ResizeMode) -> np.ndarray:
    """Resize every plane of ``volume`` (S, h, w) to ``out_hw`` with ``torch.nn.functional.interpolate``.

    mode: "area" (mean over each output pixel's footprint; the default for
    images), "bilinear" (with antialiasing), or "nearest" (PyTorch
    "nearest-exact", for masks: values stay in the input's label set).
    Returns the input unchanged when it already has ``out_hw``; dtype is kept.
    """
    if volume.shape[1:] == tuple(out_hw):
        return volume
    options = {"area": {"mode": "area"},
               "bilinear": {"mode": "bilinear", "antialias": True, "align_corners": False},
               "nearest": {"mode": "nearest-exact"}}[mode]
    planes = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[:, None]
    return F.interpolate(planes, size=tuple(out_hw), **options)[:, 0].numpy().astype(volume.dtype, copy=False)


def pad_planes(volume: np.ndarray, pad: tuple[tuple[int, int], tuple[int, int]], value: float = 0.0) -> np.ndarray:
    """Pad every plane of ``volume`` (S, h, w) by ((top, bottom), (left, right)) pixels of ``value``."""
    return np.pad(volume, ((0, 0), *pad), constant_values=value)


def fit_planes(volume: np.ndarray, fit: PlaneFit, mode: ResizeMode, pad_value: float = 0.0) -> np.ndarray:
    """Step 7 on every slice: (S, h, w) -> (S, H, W), same dtype; downsample long axes, then pad."""
    if volume.shape[1:] != tuple(fit.in_hw):
        raise ValueError(f"volume planes {volume.shape[1:]} do not match the fit's input {fit.in_hw}")
    return pad_planes(resize_planes(volume, fit.resized_hw, mode), fit.pad, pad_value)


def sample_slices(first: int, last: int, n: int) -> np.ndarray:
    """Step 7: ``n`` slice indices evenly spaced over [first, last], both ends included.

    ``np.round(np.linspace(first, last, n))`` (numpy rounds halves to even).
    Fewer than ``n`` slices in the range is an :class:`UnusableScan` ("too_few_slices"):
    the thesis chose 11 because every kept scan had at least 11.
    """
    if last - first + 1 < n:
        raise UnusableScan("too_few_slices", f"{last - first + 1} slices in [{first}, {last}], need {n}")
    return np.round(np.linspace(first, last, n)).astype(np.int64)


def brain_slice_range(brain: np.ndarray, min_fraction: float = 0.1) -> tuple[int, int]:
    """First and last slice (inclusive) whose brain-mask area is >= ``min_fraction`` of the largest slice's.

    brain: (S, H, W) bool/uint8. Raises :class:`UnusableScan` ("no_brain_found") for an empty mask.
    """
    areas = brain.reshape(brain.shape[0], -1).sum(axis=1)
    if areas.max() == 0:
        raise UnusableScan("no_brain_found", "empty brain mask")
    slices = np.flatnonzero(areas >= min_fraction * areas.max())
    return int(slices[0]), int(slices[-1])
