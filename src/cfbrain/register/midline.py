"""The template's mid-sagittal plane in CT voxel space, for the hemisphere split.

The plane is x = 0 in template world RAS mm (MNI space). Mapped through the registration
(template world RAS -> CT world RAS) and the CT's world RAS -> voxel affine, it becomes
a plane a*i + b*j + c*k + d = 0 over CT voxel indices (0-based, NIfTI array order).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fsl.data.image import Image
from nibabel.orientations import io_orientation

from cfbrain.register.flirt_matrix import read_template_to_ct

_PARALLEL_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class Midline:
    """The template mid-sagittal plane in one CT.

    Attributes:
        plane_voxel: (4,) (a, b, c, d) with a*i + b*j + c*k + d = 0 for CT voxel indices
            (i, j, k) on the plane; positive for voxels on the template's right side
            (MNI x > 0, the patient's right), scaled by a positive factor so that
            (a, b, c) has unit length.
        lr_axis, ap_axis, slice_axis: CT array axes closest to world left-right,
            anterior-posterior and inferior-superior.
        lr_index: (n_slices,) fractional index along ``lr_axis`` where the plane crosses
            the centre row ((n_ap - 1) / 2 along ``ap_axis``) of each slice.
    """

    plane_voxel: np.ndarray
    lr_axis: int
    ap_axis: int
    slice_axis: int
    lr_index: np.ndarray


def ct_axes(ct_vox_to_ras: np.ndarray) -> tuple[int, int, int]:
    """(lr_axis, ap_axis, slice_axis): the CT array axis nearest world RAS x, y and z."""
    world_axis_of_voxel_axis = io_orientation(ct_vox_to_ras)[:, 0].astype(int)
    lr, ap, si = (int(np.flatnonzero(world_axis_of_voxel_axis == w)[0]) for w in range(3))
    return lr, ap, si


def midline_from_affines(template_to_ct_ras: np.ndarray, ct_vox_to_ras: np.ndarray, ct_shape) -> Midline:
    """The plane x = 0 of template world RAS in the voxel space of a CT of ``ct_shape``
    (3 ints) with (4, 4) voxel -> world RAS affine ``ct_vox_to_ras``, given the (4, 4)
    template world RAS -> CT world RAS affine."""
    plane = np.array([1.0, 0.0, 0.0, 0.0]) @ np.linalg.inv(template_to_ct_ras) @ ct_vox_to_ras
    lr, ap, si = ct_axes(ct_vox_to_ras)
    plane /= np.linalg.norm(plane[:3])
    if abs(plane[lr]) < _PARALLEL_TOLERANCE:
        raise ValueError("the template mid-sagittal plane is parallel to the CT's left-right axis")
    slices = np.arange(ct_shape[si], dtype=np.float64)
    centre_row = (ct_shape[ap] - 1) / 2.0
    lr_index = -(plane[ap] * centre_row + plane[si] * slices + plane[3]) / plane[lr]
    return Midline(plane_voxel=plane, lr_axis=lr, ap_axis=ap, slice_axis=si, lr_index=lr_index)


def midline_in_ct(matrix_path: str | Path, template_path: str | Path, ct_path: str | Path) -> Midline:
    """:class:`Midline` of a CT from its FLIRT ``.mat`` (template -> CT) and both images."""
    ct = Image(str(ct_path))
    return midline_from_affines(read_template_to_ct(matrix_path, template_path, ct_path),
                                np.asarray(ct.voxToWorldMat), ct.shape[:3])
