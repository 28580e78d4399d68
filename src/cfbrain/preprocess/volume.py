"""Load NIfTI volumes in cfbrain's display orientation and bring other images onto that grid.

THE ARRAY CONVENTION (every other preprocessing function relies on it)
=====================================================================

A loaded volume is a float32 array indexed ``[slice, row, col]`` with shape (S, H, W):

* ``slice`` increases from INFERIOR to SUPERIOR (index 0 = lowest slice);
* ``row`` increases from ANTERIOR to POSTERIOR (row 0 = top of the image = front of the head);
* ``col`` increases from PATIENT RIGHT to PATIENT LEFT (radiological display:
  the patient's right is on the image's left; the patient's left is at high columns).

In nibabel axis codes the array axes point to ("S", "P", "L"). The file is
reoriented by the closest axis permutation and flips (``nibabel.orientations``,
the same rule as ``as_closest_canonical``), never interpolated: an oblique or
gantry-tilt-corrected acquisition keeps its voxels, and its obliquity stays in
the returned affine. The returned ``affine`` maps ``(slice, row, col, 1)`` of the
returned array to RAS+ world millimetres (+x = patient right, +y = anterior,
+z = superior; so increasing ``col`` means decreasing x), and ``voxel_mm`` is
the spacing along (slice, row, col) in mm.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations
from nibabel.processing import resample_from_to

from cfbrain.preprocess.errors import UnusableScan

log = logging.getLogger(__name__)

DISPLAY_AXCODES = ("S", "P", "L")
"""Where the (slice, row, col) axes of every loaded volume point."""


@dataclass(frozen=True)
class Volume:
    """A volume in display orientation.

    data: float32 (S, H, W); HU for CT, scanner units for MRI.
    affine: float64 (4, 4), (slice, row, col, 1) -> RAS+ mm.
    voxel_mm: (slice, row, col) spacing in mm.
    """

    data: np.ndarray
    affine: np.ndarray
    voxel_mm: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.data.shape


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Spacing in mm along each array axis of a 4x4 voxel-to-world affine."""
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))


def as_3d(image: nib.spatialimages.SpatialImage) -> nib.spatialimages.SpatialImage:
    """Drop trailing singleton axes (a 4-D file holding one volume); anything else not 3-D is
    an :class:`UnusableScan` ("not_3d")."""
    shape = image.shape
    if len(shape) > 3 and all(n == 1 for n in shape[3:]):
        image = image.slicer[(...,) + (0,) * (len(shape) - 3)]
    if len(image.shape) != 3:
        raise UnusableScan("not_3d", f"image shape {shape}")
    return image


def to_display(image: nib.spatialimages.SpatialImage, dtype=np.float32) -> Volume:
    """Reorient a 3-D NIfTI image (any orientation) to the (S, P, L) display convention (see :func:`as_3d`)."""
    image = as_3d(image)
    data = np.asarray(image.dataobj, dtype=dtype)
    transform = orientations.ornt_transform(orientations.io_orientation(image.affine),
                                            orientations.axcodes2ornt(DISPLAY_AXCODES))
    data = np.ascontiguousarray(orientations.apply_orientation(data, transform))
    affine = image.affine @ orientations.inv_ornt_aff(transform, image.shape)
    return Volume(data=data, affine=affine, voxel_mm=voxel_sizes(affine))


def load_volume(path: str | Path, dtype=np.float32) -> Volume:
    """Load a NIfTI file (scaling applied: HU for dcm2niix CT) in the (S, P, L) display convention."""
    return to_display(nib.load(str(path)), dtype=dtype)


def load_ct(path: str | Path) -> Volume:
    """Load a dcm2niix CT NIfTI as HU float32 (S, H, W) in the display convention (module docstring)."""
    volume = load_volume(path)
    log.debug("%s: %s voxels of %s mm, HU range [%g, %g]", Path(path).name, volume.shape,
              tuple(round(v, 3) for v in volume.voxel_mm), volume.data.min(), volume.data.max())
    return volume


def resample_to_grid(image: str | Path | nib.spatialimages.SpatialImage, grid: Volume,
                     order: int = 0) -> np.ndarray:
    """Resample ``image`` (any grid and orientation) onto ``grid`` through both affines.

    Returns float32 (S, H, W) in ``grid``'s display array order; points outside
    ``image`` are 0. ``order=0`` is nearest neighbour (labels survive unchanged).
    """
    source = as_3d(nib.load(str(image)) if isinstance(image, (str, Path)) else image)
    resampled = resample_from_to(source, (grid.shape, grid.affine), order=order, mode="constant", cval=0.0)
    return np.asarray(resampled.dataobj, dtype=np.float32)


def resample_mask_to_grid(mask: str | Path | nib.spatialimages.SpatialImage, grid: Volume) -> np.ndarray:
    """A mask (any label > 0 counts) on ``grid`` by nearest neighbour: uint8 (S, H, W) in {0, 1}."""
    return (resample_to_grid(mask, grid, order=0) > 0).astype(np.uint8)


def midline_columns_from_plane(grid: Volume, point_ras: np.ndarray, normal_ras: np.ndarray,
                               row: float | None = None) -> np.ndarray:
    """Column where a world-space plane (e.g. the registered midsagittal plane) cuts each slice.

    point_ras, normal_ras: (3,) a point on the plane and its normal, RAS mm.
    row: the row at which the plane's line in each slice is read (default: the
        array's centre row); a yawed plane gives a slightly different column per row.
    Returns float32 (S,) fractional column indices in ``grid``'s array.
    """
    normal = np.asarray(normal_ras, dtype=np.float64)
    linear, offset = grid.affine[:3, :3], grid.affine[:3, 3]
    per_slice, per_row, per_col = normal @ linear
    if abs(per_col) < 1e-6 * np.linalg.norm(normal) * np.linalg.norm(linear[:, 2]):
        raise ValueError("the plane is parallel to the column axis: it has no column per slice")
    row = (grid.shape[1] - 1) / 2 if row is None else row
    slices = np.arange(grid.shape[0], dtype=np.float64)
    at_origin = normal @ (np.asarray(point_ras, dtype=np.float64) - offset)
    columns = (at_origin - per_slice * slices - per_row * row) / per_col
    return columns.astype(np.float32)
