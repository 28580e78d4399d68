"""FLIRT matrices <-> world (RAS mm) affines, and the SimpleITK transform as a world affine.

A FLIRT matrix maps *FSL coordinates* of the source image to FSL coordinates of the
reference image (FSL coordinates: voxel index x voxel size, with the i axis flipped when
the voxel -> world affine has a positive determinant). In this package the source is
always the template and the reference the CT, so every ``.mat`` file maps
template -> CT. The world form of the same mapping takes template world RAS mm to CT world
RAS mm; fslpy's ``fromFlirt`` / ``toFlirt`` convert between the two given both images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from fsl.data.image import Image
from fsl.transform.flirt import fromFlirt, readFlirt, toFlirt, writeFlirt

from cfbrain.register.volumes import LPS_FROM_RAS


def world_to_flirt(template_to_ct_ras: np.ndarray, template: Image, ct: Image) -> np.ndarray:
    """(4, 4) FLIRT matrix (template FSL coords -> CT FSL coords) of a (4, 4) template world
    RAS mm -> CT world RAS mm affine."""
    return toFlirt(template_to_ct_ras, template, ct, from_="world", to="world")


def flirt_to_world(flirt: np.ndarray, template: Image, ct: Image) -> np.ndarray:
    """(4, 4) template world RAS mm -> CT world RAS mm affine of a (4, 4) FLIRT matrix."""
    return fromFlirt(flirt, template, ct, from_="world", to="world")


def write_template_to_ct(template_to_ct_ras: np.ndarray, template_path: str | Path, ct_path: str | Path,
                         matrix_path: str | Path) -> Path:
    """Write a template world RAS -> CT world RAS affine as a FLIRT ``.mat`` file."""
    flirt = world_to_flirt(template_to_ct_ras, Image(str(template_path)),
                           Image(str(ct_path)))
    Path(matrix_path).parent.mkdir(parents=True, exist_ok=True)
    writeFlirt(flirt, str(matrix_path))
    return Path(matrix_path)


def read_template_to_ct(matrix_path: str | Path, template_path: str | Path, ct_path: str | Path) -> np.ndarray:
    """(4, 4) template world RAS mm -> CT world RAS mm affine of a FLIRT ``.mat`` file
    (template = FLIRT source, CT = FLIRT reference)."""
    return flirt_to_world(readFlirt(str(matrix_path)), Image(str(template_path)),
                          Image(str(ct_path)))


def sitk_fixed_to_moving_lps(transform: sitk.Transform) -> np.ndarray:
    """(4, 4) LPS mm affine of a SimpleITK matrix-offset transform (affine, Euler, similarity, ...).

    SimpleITK computes y = A (x - c) + c + t, mapping fixed-image physical points x to
    moving-image points y.
    """
    linear = np.array(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)
    centre = np.array(transform.GetCenter(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = np.array(transform.GetTranslation()) + centre - linear @ centre
    return affine


def moving_to_fixed_ras(fixed_to_moving_lps: np.ndarray) -> np.ndarray:
    """(4, 4) moving world RAS -> fixed world RAS affine from SimpleITK's fixed LPS -> moving LPS
    affine (with template = moving and CT = fixed: template -> CT in RAS)."""
    fixed_to_moving_ras = LPS_FROM_RAS @ fixed_to_moving_lps @ LPS_FROM_RAS
    return np.linalg.inv(fixed_to_moving_ras)
