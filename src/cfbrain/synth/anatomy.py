"""Template head model shared by the synthetic image generators.

The model lives on one voxel grid: the MNI152 2009a (symmetric) grid shipped with
nilearn, zero-padded so that a skull and scalp fit around the brain.  Template
space is MNI RAS millimetres (``HeadModel.affine`` maps voxel indices to it);
patient space is DICOM LPS millimetres (+x = patient left, +y = posterior,
+z = superior).  A :class:`Pose` maps template space to patient space.

Everything here is a pure function of its arguments (the few random fields use
a fixed seed), so the model can be cached and shared between cohorts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

TISSUE_AIR, TISSUE_SCALP, TISSUE_SKULL, TISSUE_CSF, TISSUE_GM, TISSUE_WM = range(6)
TERRITORIES = ("MCA", "ACA", "PCA")
HEMISPHERES = ("left", "right")

PAD_MM = 24.0
"""Margin added around the nilearn grid (mm) so the skull shell closes."""
SKULL_BASE_Z_MM = -62.0
"""Template z (mm) of the posterior-fossa floor: lower edge of a routine head CT."""
_HEAD_CENTRE_MM = np.array([0.0, -17.0, 5.0])
_ANATOMY_SEED = 152
_CSF_MM, _SKULL_MM, _SCALP_MM = (2.0, 3.0), (5.0, 8.0), (3.0, 5.0)
_BLOB_RADIUS_MM = 12.0
_BLOB_NOISE_WEIGHT = 0.5
_BLOB_NOISE_SIGMA_MM = 3.0
_LESION_EDGE_SIGMA_MM = 1.0
_MAX_TERRITORY_FILL = 0.6


@dataclass(frozen=True, eq=False)
class HeadModel:
    """Tissue maps of the template head on one padded grid of shape (X, Y, Z).

    Attributes:
        affine: (4, 4) voxel index -> MNI RAS mm.
        t1: (X, Y, Z) float32 MNI T1 intensity in [0, 1].
        gm, wm: (X, Y, Z) float32 grey / white matter probability in [0, 1].
        brain: (X, Y, Z) bool brain mask (includes ventricles and sulcal CSF).
        labels: (X, Y, Z) uint8 dominant tissue class (``TISSUE_*``).
        skull_depth: (X, Y, Z) float32, position across the skull from the inner
            (0) to the outer (1) table; 0 outside the skull.
        head_points_mm: (N, 3) float64 MNI RAS mm of a ~3 mm lattice of head voxels.
    """

    affine: np.ndarray
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    labels: np.ndarray
    skull_depth: np.ndarray
    head_points_mm: np.ndarray

    @property
    def voxel_mm(self) -> float:
        """Isotropic voxel size (mm)."""
        return float(self.affine[0, 0])

    @property
    def parenchyma(self) -> np.ndarray:
        """(X, Y, Z) bool: brain voxels dominated by grey or white matter."""
        return np.isin(self.labels, (TISSUE_GM, TISSUE_WM))


@dataclass(frozen=True)
class Region:
    """A box-cropped array on the :class:`HeadModel` grid.

    Attributes:
        offset: voxel index (3 ints) of the box corner in the full grid.
        values: (a, b, c) array (bool mask or float32 map) inside the box.
    """

    offset: tuple[int, int, int]
    values: np.ndarray


@dataclass(frozen=True)
class BlobSpec:
    """One lesion blob: a territory/hemisphere, a volume (ml) and a random seed."""

    territory: str
    hemisphere: str
    volume_ml: float
    seed: tuple[int, ...]


@dataclass(frozen=True)
class Pose:
    """Rigid + isotropic-scale placement of the template head in the scanner.

    ``patient = shift + R @ (scale * F @ template)`` with F = diag(-1, -1, 1)
    (RAS -> LPS) and R = Rz @ Ry @ Rx (rotations about patient LPS axes, degrees).
    """

    rot_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0

    def patient_from_template(self) -> np.ndarray:
        """(4, 4) matrix: template MNI RAS mm -> patient LPS mm."""
        matrix = np.eye(4)
        matrix[:3, :3] = rotation_matrix(self.rot_deg) @ np.diag([-1.0, -1.0, 1.0]) * self.scale
        matrix[:3, 3] = self.shift_mm
        return matrix


def rotation_matrix(rot_deg: tuple[float, float, float]) -> np.ndarray:
    """(3, 3) rotation Rz @ Ry @ Rx for angles (x, y, z) in degrees."""
    ax, ay, az = np.deg2rad(rot_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def voxel_from_patient(model: HeadModel, pose: Pose) -> np.ndarray:
    """(4, 4) matrix: patient LPS mm -> template voxel index (float)."""
    return np.linalg.inv(model.affine) @ np.linalg.inv(pose.patient_from_template())


def voxel_centres_mm(affine: np.ndarray, index: tuple[np.ndarray, ...]) -> np.ndarray:
    """(N, 3) mm coordinates of voxels given as a tuple of 3 index arrays of length N."""
    ijk = np.stack(index, axis=1).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


@functools.lru_cache(maxsize=2)
def load_head_model(resolution_mm: int = 1) -> HeadModel:
    """Build the padded template head from nilearn's MNI152 2009a maps (offline).

    Args:
        resolution_mm: 1 or 2, nilearn template resolution.
    """
    from nilearn import datasets  # heavy import, only needed here

    gm_img = datasets.load_mni152_gm_template(resolution=resolution_mm)
    pad = int(round(PAD_MM / resolution_mm))

    def padded(img) -> np.ndarray:
        return np.pad(np.asarray(img.dataobj, dtype=np.float32), pad)

    affine = gm_img.affine.copy()
    affine[:3, 3] -= pad * np.diag(affine)[:3]
    gm = padded(gm_img)
    wm = padded(datasets.load_mni152_wm_template(resolution=resolution_mm))
    t1 = padded(datasets.load_mni152_template(resolution=resolution_mm))
    brain = padded(datasets.load_mni152_brain_mask(resolution=resolution_mm)) > 0
    labels, skull_depth = _tissue_labels(affine, gm, wm, brain)
    return HeadModel(
        affine=affine, t1=t1, gm=gm, wm=wm, brain=brain, labels=labels,
        skull_depth=skull_depth, head_points_mm=_lattice_points(affine, labels > TISSUE_AIR),
    )


def _tissue_labels(
    affine: np.ndarray, gm: np.ndarray, wm: np.ndarray, brain: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Label brain tissue by dominant probability and grow CSF/skull/scalp shells.

    Shell thicknesses vary smoothly with direction (CSF 2-3, skull 5-8, scalp
    3-5 mm) and are measured with a Euclidean distance transform from the brain.

    Returns:
        labels: (X, Y, Z) uint8 ``TISSUE_*``; skull_depth: (X, Y, Z) float32 in [0, 1].
    """
    labels = np.full(brain.shape, TISSUE_AIR, np.uint8)
    gm_in, wm_in = gm[brain], wm[brain]
    csf_in = np.clip(1.0 - gm_in - wm_in, 0.0, 1.0)
    labels[brain] = np.argmax(np.stack([csf_in, gm_in, wm_in]), axis=0) + TISSUE_CSF
    skull_depth = np.zeros(brain.shape, np.float32)

    distance_mm = ndimage.distance_transform_edt(~brain, sampling=float(affine[0, 0]))
    max_shell = _CSF_MM[1] + _SKULL_MM[1] + _SCALP_MM[1]
    shell = np.nonzero((distance_mm > 0) & (distance_mm <= max_shell))
    directions = voxel_centres_mm(affine, shell) - _HEAD_CENTRE_MM
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    rng = np.random.default_rng(_ANATOMY_SEED)
    csf_mm, skull_mm, scalp_mm = (
        low + (high - low) * _smooth_sphere_field(directions, rng)
        for low, high in (_CSF_MM, _SKULL_MM, _SCALP_MM)
    )
    depth = distance_mm[shell]
    inner_table = csf_mm
    outer_table = csf_mm + skull_mm
    labels[shell] = np.select(
        [depth <= inner_table, depth <= outer_table, depth <= outer_table + scalp_mm],
        [TISSUE_CSF, TISSUE_SKULL, TISSUE_SCALP],
        TISSUE_AIR,
    )
    skull_depth[shell] = np.where(
        labels[shell] == TISSUE_SKULL, (depth - inner_table) / skull_mm, 0.0
    )
    return labels, skull_depth


def _smooth_sphere_field(directions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth random function of unit directions (N, 3), rescaled to [0, 1]."""
    waves = rng.normal(size=(6, 3)) * 1.5
    phases = rng.uniform(0, 2 * np.pi, size=6)
    field = np.cos(directions @ waves.T + phases).sum(axis=1)
    return (field - field.min()) / (field.max() - field.min())


def _lattice_points(affine: np.ndarray, mask: np.ndarray, step_mm: float = 3.0) -> np.ndarray:
    """(N, 3) mm coordinates of mask voxels on a lattice every ``step_mm``."""
    step = max(1, int(round(step_mm / affine[0, 0])))
    sub = np.nonzero(mask[::step, ::step, ::step])
    return voxel_centres_mm(affine, tuple(axis * step for axis in sub))


def _ellipsoid(x, y, z, centre: tuple, radii: tuple) -> np.ndarray:
    """Bool (broadcast shape of x, y, z) inside the axis-aligned ellipsoid (mm)."""
    (cx, cy, cz), (rx, ry, rz) = centre, radii
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0


def _territory_shapes(x, y, z, side: float) -> dict[str, np.ndarray]:
    """Bool masks of simple vascular territories for one hemisphere.

    Args:
        x, y, z: broadcastable arrays of MNI RAS mm.
        side: -1 for the left hemisphere (x < 0), +1 for the right.

    MCA: lateral fronto-temporo-parietal cortex plus deep grey matter;
    ACA: medial superior frontal and parietal; PCA: occipital lobe and
    inferomedial temporal lobe.  Cerebellum and brainstem are excluded.
    """
    lateral = x * side
    base = (lateral >= 2.0) & (z > -40.0) & ~((y < -42.0) & (z < -14.0))
    aca = _ellipsoid(x, y, z, (9.0 * side, 8.0, 38.0), (13.0, 60.0, 40.0)) & (z > 0.0)
    pca = _ellipsoid(x, y, z, (18.0 * side, -80.0, 8.0), (24.0, 28.0, 26.0)) | _ellipsoid(
        x, y, z, (30.0 * side, -36.0, -12.0), (14.0, 22.0, 12.0)
    )
    mca = _ellipsoid(x, y, z, (40.0 * side, -14.0, 16.0), (34.0, 62.0, 50.0)) & (lateral >= 14.0)
    return {"ACA": aca & base, "PCA": pca & base & ~aca, "MCA": mca & base & ~aca & ~pca}


def grid_axes_mm(model: HeadModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNI mm along each (axis-aligned) grid axis, shaped (X,1,1), (1,Y,1), (1,1,Z)."""
    shape = model.labels.shape
    return tuple(
        (model.affine[axis, axis] * np.arange(n) + model.affine[axis, 3]).reshape(
            [n if a == axis else 1 for a in range(3)]
        )
        for axis, n in enumerate(shape)
    )


@functools.lru_cache(maxsize=2)
def territory_regions(model: HeadModel) -> dict[tuple[str, str], Region]:
    """Parenchymal territory masks, keyed by (territory, hemisphere), box-cropped."""
    x, y, z = grid_axes_mm(model)
    parenchyma = model.parenchyma
    regions = {}
    for hemisphere, side in (("left", -1.0), ("right", 1.0)):
        for territory, mask in _territory_shapes(x, y, z, side).items():
            regions[territory, hemisphere] = _crop(mask & parenchyma)
    return regions


def _crop(mask: np.ndarray, margin: int = 0) -> Region:
    """Smallest box (plus margin voxels) holding all True voxels of mask."""
    index = np.nonzero(mask)
    low = np.maximum([i.min() - margin for i in index], 0)
    high = np.minimum([i.max() + 1 + margin for i in index], mask.shape)
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    return Region(offset=tuple(int(v) for v in low), values=mask[box].copy())


def lesion_blob(model: HeadModel, blob: BlobSpec) -> Region:
    """Bool mask of one irregular, compact lesion inside its territory.

    The blob is the top-``volume`` voxels of ``-distance/12 mm + 0.5 * noise``
    around a random deep point of the territory, where noise is Gaussian-filtered
    (3 mm) white noise.  The random draws do not depend on the volume, so a
    larger volume with the same seed gives a superset (lesion growth).
    """
    region = territory_regions(model)[blob.territory, blob.hemisphere]
    inside = region.values
    rng = np.random.default_rng(np.random.SeedSequence(blob.seed))
    depth = ndimage.distance_transform_edt(inside)
    core = np.argwhere(depth >= 0.5 * depth.max())
    centre = core[rng.integers(len(core))]
    noise = ndimage.gaussian_filter(
        rng.standard_normal(inside.shape).astype(np.float32),
        _BLOB_NOISE_SIGMA_MM / model.voxel_mm,
    )
    noise /= noise.std()
    grid = np.indices(inside.shape, dtype=np.float32)
    distance_mm = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(axis=0)) * model.voxel_mm
    score = np.where(inside, -distance_mm / _BLOB_RADIUS_MM + _BLOB_NOISE_WEIGHT * noise, -np.inf)
    n_voxels = min(
        int(round(blob.volume_ml * 1000.0 / model.voxel_mm**3)),
        int(_MAX_TERRITORY_FILL * inside.sum()),
    )
    flat = score.ravel()
    chosen = np.zeros(flat.shape, bool)
    chosen[np.argpartition(-flat, n_voxels - 1)[:n_voxels]] = True
    return Region(offset=region.offset, values=chosen.reshape(inside.shape))


def lesion_map(model: HeadModel, blobs: tuple[BlobSpec, ...]) -> Region:
    """Soft (float32 in [0, 1], 1 mm Gaussian edge) union of lesion blobs.

    The returned box covers all blobs plus a margin for the soft edge.
    """
    full = np.zeros(model.labels.shape, bool)
    for blob in blobs:
        part = lesion_blob(model, blob)
        box = tuple(slice(o, o + n) for o, n in zip(part.offset, part.values.shape))
        full[box] |= part.values
    union = _crop(full, margin=int(np.ceil(4 * _LESION_EDGE_SIGMA_MM / model.voxel_mm)))
    soft = ndimage.gaussian_filter(
        union.values.astype(np.float32), _LESION_EDGE_SIGMA_MM / model.voxel_mm
    )
    return Region(offset=union.offset, values=soft)
