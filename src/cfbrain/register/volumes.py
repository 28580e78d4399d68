"""NIfTI volumes as arrays and SimpleITK images, with the world conventions spelled out.

Two world frames appear in this package, both in millimetres:

- **RAS** (NIfTI / FSL scanner space): +x = patient right, +y = anterior, +z = superior.
  Every 4x4 affine in this package is RAS unless its name says LPS.
- **LPS** (DICOM / SimpleITK physical space): +x = patient left, +y = posterior, +z = superior.

They differ by ``LPS_FROM_RAS = diag(-1, -1, 1, 1)``, which is its own inverse. Voxel
indices are 0-based in NIfTI array order (i, j, k) = array axes (0, 1, 2).

The voxel -> world RAS affine of a file is taken from fslpy (sform if its code is set,
else qform, else pixdim scaling), the same choice FSL makes, so that these affines and
FLIRT matrices (:mod:`cfbrain.register.flirt_matrix`) always agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from fsl.data.image import Image

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MIN_VOXELS_PER_AXIS = 4
"""Fewer voxels along any axis cannot support a 3-D, 12-DOF fit."""
_ORTHOGONALITY_TOLERANCE = 1e-4


class InvalidImage(ValueError):
    """The image is not a usable 3-D scalar volume (wrong dimensionality, empty, NaN, sheared)."""


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D scalar image.

    Attributes:
        data: (I, J, K) float32, in NIfTI array order, scaling (scl_slope/inter) applied
            (HU for CT).
        vox_to_ras: (4, 4) float64, voxel index (i, j, k) -> world RAS mm.
    """

    data: np.ndarray
    vox_to_ras: np.ndarray

    @property
    def spacing_mm(self) -> np.ndarray:
        """(3,) voxel size along i, j, k (mm)."""
        return np.linalg.norm(self.vox_to_ras[:3, :3], axis=0)


def load_volume(path: str | Path, name: str = "image") -> Volume:
    """Read a NIfTI file as a checked :class:`Volume`; ``name`` labels error messages.

    Trailing singleton dimensions (X, Y, Z, 1) are dropped. Raises :class:`InvalidImage`.
    """
    image = Image(str(path))
    data = np.asarray(image.nibImage.get_fdata(dtype=np.float32))
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    volume = Volume(data=data, vox_to_ras=np.asarray(image.voxToWorldMat, dtype=np.float64))
    check_volume(volume, name)
    return volume


def check_volume(volume: Volume, name: str = "image") -> None:
    """Raise :class:`InvalidImage` unless ``volume`` is 3-D, at least 4 voxels along each axis,
    finite everywhere and has orthogonal (unsheared) voxel axes."""
    shape = volume.data.shape
    if volume.data.ndim != 3:
        raise InvalidImage(f"{name} is {volume.data.ndim}-D with shape {shape}; a 3-D volume is required")
    if min(shape) < MIN_VOXELS_PER_AXIS:
        raise InvalidImage(f"{name} has shape {shape}; at least {MIN_VOXELS_PER_AXIS} voxels per axis are required")
    n_bad = int(np.count_nonzero(~np.isfinite(volume.data)))
    if n_bad:
        raise InvalidImage(f"{name} has {n_bad} NaN or infinite voxels")
    if not np.all(np.isfinite(volume.vox_to_ras)) or abs(np.linalg.det(volume.vox_to_ras[:3, :3])) < 1e-9:
        raise InvalidImage(f"{name} has a singular or non-finite voxel-to-world affine")
    axes = volume.vox_to_ras[:3, :3] / volume.spacing_mm
    if not np.allclose(axes.T @ axes, np.eye(3), atol=_ORTHOGONALITY_TOLERANCE):
        raise InvalidImage(f"{name} has sheared voxel axes (e.g. uncorrected gantry tilt)")


def to_sitk(volume: Volume) -> sitk.Image:
    """The volume as a float32 SimpleITK image on the same grid, geometry in LPS."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.data.transpose(2, 1, 0), dtype=np.float32))
    lps = LPS_FROM_RAS @ volume.vox_to_ras
    image.SetSpacing(volume.spacing_mm.tolist())
    image.SetDirection((lps[:3, :3] / volume.spacing_mm).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def from_sitk(image: sitk.Image) -> np.ndarray:
    """(I, J, K) array of a SimpleITK image in NIfTI array order."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def save_like(data: np.ndarray, reference: Volume, path: str | Path) -> Path:
    """Write (I, J, K) ``data`` as float32 NIfTI on ``reference``'s grid (sform = qform = its
    voxel -> RAS affine, code 1 = scanner)."""
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), reference.vox_to_ras)
    image.set_sform(reference.vox_to_ras, code=1)
    image.set_qform(reference.vox_to_ras, code=1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return Path(path)


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) points mapped by a (4, 4) affine."""
    return points @ affine[:3, :3].T + affine[:3, 3]
