"""Deterministic synthetic T1 MRI cohort: healthy, stroke-like and tumour-like brains, each lesion with its
healthy counterpart and the ground-truth indirect effect (thesis 000, MedEdit, on data with known answers).

``make_mri_cohort(out_dir, SynthMRIConfig())`` writes two datasets on the MNI152 2009a 2 mm grid
(99 x 117 x 95 voxels, RAS storage, nilearn's affine; the ATLAS v2.0 1 mm grid subsampled by 2)::

    subjects.tsv                                   one row per subject (SUBJECT_COLUMNS below)
    atlas/sub-sNNN/ses-1/anat/                     "stroke" dataset, ATLAS v2.0 BIDS names
        sub-sNNN_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz
        sub-sNNN_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz   (all 0 if healthy)
        sub-sNNN_ses-1_space-MNI152NLin2009aSym_desc-brain_mask.nii.gz
    brats/BraTS-GLI-NNNNN-000/                     "tumour" dataset, BraTS 2023 names
        BraTS-GLI-NNNNN-000-t1c.nii.gz
        BraTS-GLI-NNNNN-000-seg.nii.gz             1 necrotic core, 2 oedema, 3 enhancing rim (all 0 if healthy)
        BraTS-GLI-NNNNN-000-brain.nii.gz
    truth/{scan}/                                  lesioned scans only
        healthy_T1w.nii.gz                         the same subject without lesion and deformation
        healthy_brain_mask.nii.gz
        displacement_mm.nii.gz                     (X, Y, Z, 3) float32: u in RAS mm
        displacement_magnitude_mm.nii.gz           |u| in mm

Chapter 6 of thesis 003 (Dif-fuse) adds two opt-in outputs, off by default so the files above do not change:

* ``contrasts`` (any of :data:`CONTRASTS`: FLAIR, T1, T1-Gd, T2): every tumour subject also gets one file per
  contrast, rendered from the same anatomy, pose, bias, deformation and lesion with contrast-specific tissue
  and lesion intensities (:data:`CONTRAST_FILES`, BraTS 2023 suffixes ``t2f``, ``t1n``, ``t1c``, ``t2w``; the
  ``t1c`` file is the main image itself); :func:`find_synthetic_cases` lists them.
* ``n_wmh`` subjects with white-matter hyperintensities in a third dataset laid out like the WMH
  segmentation challenge (``wmh/Synthetic/{n}/pre/FLAIR.nii.gz``, ``pre/T1.nii.gz``, ``wmh.nii.gz`` with
  label 1; the brain mask in ``pre/brain.nii.gz``): a few small periventricular lesions, bright on FLAIR
  and T2, mildly dark on T1, without mass effect (``u = 0``).

Contrast model: each contrast maps the template's T1 value inside the brain through a piecewise-linear
curve anchored at the T1 values of CSF, grey and white matter (:data:`_CONTRAST_ANCHORS`; FLAIR: CSF
suppressed, grey brighter than white; T2: CSF bright), and has its own fixed values outside the brain and
its own lesion intensities. Each contrast's Rician noise is drawn after the main image's, so the main image
is the same with or without extra contrasts.

``preprocess.mri.find_atlas_pairs(out/"atlas")`` and ``find_brats_pairs(out/"brats")`` read the two
datasets; :func:`find_synthetic_pairs` adds the brain-mask column and :func:`slice_spec` gives the
axial slice to take (index 47 of 95 counted from inferior, z = 22 mm MNI: the 2 mm counterpart of ATLAS
slice 95, through the bodies of the lateral ventricles). Lesion centres are drawn within
``lesion_slice_window_mm`` of that plane so nearly every lesion shows on the slice
(``slice_lesion_pixels`` in subjects.tsv counts it).

Image model. Intensities are T1-like on a scale where white matter is about 0.84 (the template's T1 inside
the brain; fixed values for extra-cerebral CSF, skull, marrow and scalp fat outside). Every subject has a
small pose (the residual of a registration to MNI: rotation, shift, isotropic scale), mild global atrophy
(bilateral ventricular enlargement by ``atrophy_mm``), a smooth multiplicative bias field and Rician noise.
With ``H`` the subject's noise-free healthy anatomy on the output grid, ``b`` the bias and ``n1, n2`` the
noise, the images are

    healthy  h(x) = | b(x) H(x) + n1(x) + i n2(x) |
    lesioned y(x) = | b(x) [ (1 - l(x)) H(x + u(x)) + lesion intensities ] + n1(x) + i n2(x) |

with the same ``b, n1, n2``: beyond 2 voxels of the lesion mask (where its soft edge ends) and outside the
support of the displacement ``u`` the two images are identical, so ``y - h`` is exactly the pathology's
direct plus indirect effect. ``u`` (backward displacement: the lesioned image at ``x`` shows the healthy
anatomy at ``x + u(x)``) is a sum of smooth terms, each the normalised gradient of a Gaussian-blurred
indicator, scaled in mm, times a brain weight that is zero outside the brain and in its outer 2 voxels
(skull and scalp never move). The blur is truncated at 3 sigma, so a term is exactly zero beyond the cube
of half-width 3 sigma (plus one voxel) around its structure:

* stroke: local atrophy, tissue pulled towards the infarct (``-grad G*lesion``), and ex-vacuo enlargement
  of the ipsilateral lateral ventricle (``+grad G*ventricle``); the infarct itself is T1-hypointense;
* tumour: mass effect pushing tissue away (``+grad G*tumour``), compression of the ipsilateral ventricle
  (``-grad G*ventricle``) and a midline shift (a compact lateral bump between tumour and midline); the
  lesion has a dark necrotic core, a bright enhancing rim and a mildly hypointense oedema.

Kernel widths: 5 mm (stroke pull), 4 mm (ventricles), 0.6 x the tumour's outer radius (mass effect),
14 mm (midline bump). Amplitudes are drawn from the config ranges (given for a 20 ml lesion) and scaled by
the cube root of the lesion volume over 20 ml. Every draw comes from ``numpy`` generators seeded by
(seed, purpose, index); images are stored as int16 with scale slope 0.001 (loaders apply it).
"""
from __future__ import annotations

import functools
import logging
import multiprocessing
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from cfbrain.preprocess.mri import (CASE_COLUMNS, VOLUME_CONTRASTS, MRISliceSpec, VolumeSliceSpec, case_row, find_atlas_pairs,
                                    find_brats_pairs, to_slice_grid)
from cfbrain.preprocess.npz import read_npz, write_npz
from cfbrain.preprocess.splits import patient_splits
from cfbrain.preprocess.volume import load_volume
from cfbrain.synth import anatomy
from cfbrain.synth.anatomy import HeadModel, Region

log = logging.getLogger(__name__)

DATASETS = {"stroke": "atlas", "tumour": "brats"}
"""Dataset name -> folder under the cohort root (its layout follows ATLAS v2.0 / BraTS 2023)."""
WMH_DATASET = "wmh"
"""Name and folder of the white-matter-hyperintensity dataset (WMH challenge layout, ``n_wmh`` > 0 only)."""
WMH_SITE = "Synthetic"
CONTRASTS = ("flair", "t1", "t1gd", "t2")
"""Contrasts the generator renders (thesis 003 §6.6.1: BraTS 2021's four)."""
MAIN_CONTRAST = {"stroke": "t1", "tumour": "t1gd", WMH_DATASET: "flair"}
"""The contrast of each dataset's main image (subjects.tsv ``image``)."""
CONTRAST_FILES = {"tumour": {"flair": "t2f", "t1": "t1n", "t1gd": "t1c", "t2": "t2w"},
                  WMH_DATASET: {"flair": "pre/FLAIR.nii.gz", "t1": "pre/T1.nii.gz"}}
"""Per dataset, contrast -> BraTS 2023 file suffix (tumour) or path in the subject folder (WMH)."""
SLICE_INDEX = 47
SLICE_Z_MM = 22.0
"""Axial slice (from inferior) of the 2 mm grid that :func:`slice_spec` takes, and its MNI z."""
TEMPLATE_RESOLUTION_MM = 2
ATLAS_SPACE = "space-MNI152NLin2009aSym"
TRUTH_FILES = {
    "healthy": "healthy_T1w.nii.gz",
    "healthy_brain_mask": "healthy_brain_mask.nii.gz",
    "displacement": "displacement_mm.nii.gz",
    "displacement_magnitude": "displacement_magnitude_mm.nii.gz",
}
SUBJECT_COLUMNS = [
    "subject", "dataset", "scan", "kind", "split", "territory", "side", "lesion_ml", "slice_lesion_pixels",
    "max_displacement_mm", "atrophy_mm", "noise_sigma", "rot_x_deg", "rot_y_deg", "rot_z_deg",
    "shift_x_mm", "shift_y_mm", "shift_z_mm", "scale", "image", "lesion_mask", "brain_mask",
    *TRUTH_FILES,
]
"""subjects.tsv: paths are relative to the cohort root (truth paths empty for healthy subjects)."""
BRATS_LABELS = {"core": 1, "oedema": 2, "rim": 3}
"""BraTS 2023 label of each tumour compartment (NCR 1, ED 2, ET 3)."""
TRUTH_SLICES_FORMAT = "cfbrain-mri-truth/1"

_INTENSITY = {"outer_csf": 0.12, "skull": 0.06, "marrow": 0.45, "scalp": 0.95}
_OUTSIDE_INTENSITY = {"t1": _INTENSITY, "t1gd": _INTENSITY,
                      "t2": {"outer_csf": 0.95, "skull": 0.05, "marrow": 0.5, "scalp": 0.7},
                      "flair": {"outer_csf": 0.08, "skull": 0.05, "marrow": 0.45, "scalp": 0.8}}
_CONTRAST_ANCHORS = {"t1_values": (0.0, 0.30, 0.66, 0.84, 1.0),
                     "t2": (1.0, 1.0, 0.62, 0.45, 0.40), "flair": (0.10, 0.10, 0.70, 0.55, 0.50)}
"""Brain intensity curves: T1 value (background, CSF, grey, white, brightest) -> contrast value."""
_LESION_CSF = 0.22
_STROKE_TARGET = {"t1": _LESION_CSF, "t1gd": _LESION_CSF, "t2": 1.0, "flair": 0.9}
_TUMOUR_INTENSITY = {"core": 0.22, "rim": 1.02, "oedema": 0.58}
_TUMOUR_INTENSITIES = {"t1gd": _TUMOUR_INTENSITY, "t1": {"core": 0.22, "rim": 0.6, "oedema": 0.58},
                       "t2": {"core": 1.0, "rim": 0.75, "oedema": 0.9},
                       "flair": {"core": 0.45, "rim": 0.85, "oedema": 1.0}}
_WMH_INTENSITY = {"flair": 1.1, "t2": 0.95, "t1": 0.6, "t1gd": 0.6}
_HEAD_CENTRE_MM = np.array([0.0, -17.0, 5.0])
_REFERENCE_LESION_ML = 20.0
_EDGE_MM = 2.0
_STROKE_RADIUS_MM = 10.0
_STROKE_NOISE_WEIGHT = 0.5
_STROKE_NOISE_SIGMA_MM = 3.0
_STROKE_MAX_TERRITORY_FILL = 0.6
_PULL_SIGMA_MM = 5.0
_VENTRICLE_SIGMA_MM = 4.0
_MIDLINE_SIGMA_MM = 14.0
_BRAIN_WEIGHT_EROSION = 3
_FIELD_TRUNCATE = 3.0
_QUANTUM = 1e-3
"""Images are stored as int16 with this scale slope."""


@dataclass(frozen=True)
class SynthMRIConfig:
    """Cohort size, randomness and the ranges every per-subject quantity is drawn from (uniform).

    Healthy subjects go with the lesioned ones (:func:`healthy_in_stroke_dataset`): a stroke-only cohort
    puts all of them in the stroke dataset; with both kinds they are shared out.
    ``split_fractions`` (train, val, test) are applied per dataset, stratified by kind
    (:func:`cfbrain.preprocess.splits.patient_splits`). Ranges of deformation amplitudes (mm) are for a
    20 ml lesion (scaled by the cube root of the volume); ``stroke_volume_ml`` is drawn log-uniformly;
    ``noise_sigma`` is the Rician sigma in image units (white matter ~0.84); ``bias_amplitude`` the largest
    log-gain of the bias field; ``workers`` > 1 renders subjects in forked processes (identical output).
    ``contrasts``: extra contrast files of the tumour subjects (module docstring); ``n_wmh`` subjects with
    ``wmh_count`` lesions of radius ``wmh_radius_mm``, centred in white matter within
    ``wmh_periventricular_mm`` of the lateral ventricles.
    """

    n_healthy: int = 20
    n_stroke: int = 20
    n_tumour: int = 20
    seed: int = 0
    workers: int = 1
    split_fractions: tuple[float, float, float] = (0.6, 0.1, 0.3)
    max_rotation_deg: float = 3.0
    max_shift_mm: float = 3.0
    scale_range: tuple[float, float] = (0.95, 1.05)
    noise_sigma: tuple[float, float] = (0.01, 0.025)
    bias_amplitude: float = 0.1
    atrophy_mm: tuple[float, float] = (0.0, 2.0)
    lesion_slice_window_mm: float = 6.0
    stroke_territory_probs: dict[str, float] = field(
        default_factory=lambda: {"MCA": 0.7, "PCA": 0.15, "ACA": 0.15})
    stroke_volume_ml: tuple[float, float] = (3.0, 40.0)
    stroke_contrast: tuple[float, float] = (0.6, 0.95)
    stroke_pull_mm: tuple[float, float] = (1.5, 3.0)
    stroke_ventricle_mm: tuple[float, float] = (2.0, 4.0)
    tumour_radius_mm: tuple[float, float] = (7.0, 15.0)
    tumour_rim_mm: tuple[float, float] = (2.5, 4.0)
    tumour_oedema_mm: tuple[float, float] = (2.0, 8.0)
    tumour_push_mm: tuple[float, float] = (2.5, 5.0)
    tumour_ventricle_mm: tuple[float, float] = (1.0, 2.5)
    tumour_midline_mm: tuple[float, float] = (1.0, 3.0)
    n_wmh: int = 0
    contrasts: tuple[str, ...] = ()
    wmh_count: tuple[int, int] = (2, 6)
    wmh_radius_mm: tuple[float, float] = (2.0, 4.5)
    wmh_periventricular_mm: float = 8.0

    def __post_init__(self) -> None:
        if min(self.n_healthy, self.n_stroke, self.n_tumour, self.n_wmh) < 0:
            raise ValueError("subject counts must be >= 0")
        unknown = set(self.contrasts) - set(CONTRASTS)
        if unknown:
            raise ValueError(f"unknown contrasts {sorted(unknown)}; expected some of {CONTRASTS}")


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Placement:
    """Small rigid + scale residual of a registration to MNI: output RAS mm -> template RAS mm is the inverse
    of ``r = shift + c + R scale (t - c)`` with c the head centre and R from ``rot_deg`` (x, y, z)."""

    rot_deg: tuple[float, float, float]
    shift_mm: tuple[float, float, float]
    scale: float

    def template_from_output_mm(self) -> np.ndarray:
        """(4, 4) output RAS mm -> template RAS mm."""
        forward = np.eye(4)
        forward[:3, :3] = anatomy.rotation_matrix(self.rot_deg) * self.scale
        forward[:3, 3] = np.asarray(self.shift_mm) + _HEAD_CENTRE_MM - forward[:3, :3] @ _HEAD_CENTRE_MM
        return np.linalg.inv(forward)


@dataclass(frozen=True)
class StrokePlan:
    """Infarct in a territory: volume, centre (template voxel of the padded grid), hypointensity (fraction
    of the way to CSF), local-atrophy pull and ipsilateral ventricle enlargement (mm)."""

    territory: str
    hemisphere: str
    volume_ml: float
    centre_voxel: tuple[int, int, int]
    contrast: float
    pull_mm: float
    ventricle_mm: float


@dataclass(frozen=True)
class TumourPlan:
    """Ring-enhancing tumour: centre (template voxel), radii (mm) of enhancing tumour, rim and oedema,
    and the mass-effect amplitudes (mm)."""

    hemisphere: str
    centre_voxel: tuple[int, int, int]
    radius_mm: float
    rim_mm: float
    oedema_mm: float
    push_mm: float
    ventricle_mm: float
    midline_mm: float


@dataclass(frozen=True)
class WmhPlan:
    """White-matter hyperintensities: centres (template voxels) and radii (mm) of small spheres;
    ``centre_voxel`` is the first one's, ``hemisphere`` is "both" (they may lie on either side)."""

    hemisphere: str
    centre_voxel: tuple[int, int, int]
    centres: tuple[tuple[int, int, int], ...]
    radii_mm: tuple[float, ...]


@dataclass(frozen=True)
class SubjectPlan:
    """Everything drawn for one subject (no images)."""

    seed: int
    index: int
    subject: str
    dataset: str
    kind: str
    placement: Placement
    noise_sigma: float
    bias: tuple[tuple[float, float, float, float, float], ...]
    atrophy_mm: float
    lesion: StrokePlan | TumourPlan | WmhPlan | None
    contrasts: tuple[str, ...] = ()

    @property
    def scan(self) -> str:
        """Name the dataset's discovery function gives the scan (``find_atlas_pairs`` / ``find_brats_pairs``
        / ``find_wmh_cases``)."""
        if self.dataset == "stroke":
            return f"sub-{self.subject}_ses-1"
        if self.dataset == WMH_DATASET:
            return f"{WMH_SITE}_{self.index + 1}"
        return f"BraTS-GLI-{self.index + 1:05d}-000"

    @property
    def main_contrast(self) -> str:
        return MAIN_CONTRAST[self.dataset]


def _rng(seed: int, purpose: str, *indices: int) -> np.random.Generator:
    """Independent generator for (cohort seed, purpose, indices)."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode()), *indices])


def healthy_in_stroke_dataset(cfg: SynthMRIConfig) -> int:
    """How many of the healthy subjects go to the stroke dataset: all of them when only strokes are asked
    for, none when only tumours are, otherwise half (the stroke dataset gets the extra one)."""
    if cfg.n_tumour == 0 and cfg.n_stroke > 0:
        return cfg.n_healthy
    if cfg.n_stroke == 0 and cfg.n_tumour > 0:
        return 0
    return (cfg.n_healthy + 1) // 2


def plan_mri_cohort(cfg: SynthMRIConfig, model: HeadModel | None = None) -> list[SubjectPlan]:
    """Draw every subject's kind, dataset, placement, scanner effects and lesion (no images)."""
    model = model or anatomy.load_head_model(TEMPLATE_RESOLUTION_MM)
    n_healthy_stroke = healthy_in_stroke_dataset(cfg)
    roles = ([("stroke", "healthy")] * n_healthy_stroke + [("tumour", "healthy")] * (cfg.n_healthy - n_healthy_stroke)
             + [("stroke", "stroke")] * cfg.n_stroke + [("tumour", "tumour")] * cfg.n_tumour
             + [(WMH_DATASET, "wmh")] * cfg.n_wmh)
    contrasts = {"stroke": (), "tumour": cfg.contrasts, WMH_DATASET: tuple(CONTRAST_FILES[WMH_DATASET])}
    plans = []
    for index, (dataset, kind) in enumerate(roles):
        rng = _rng(cfg.seed, "subject", index)
        rotation = tuple(float(v) for v in rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg, 3))
        shift = tuple(float(v) for v in rng.uniform(-cfg.max_shift_mm, cfg.max_shift_mm, 3))
        placement = Placement(rotation, shift, float(rng.uniform(*cfg.scale_range)))
        n_waves = 4
        bias = tuple(tuple(float(v) for v in row) for row in np.column_stack(
            [rng.normal(0.0, 2.0, (n_waves, 3)), rng.uniform(0.0, 2 * np.pi, n_waves),
             rng.uniform(-1.0, 1.0, n_waves) * cfg.bias_amplitude / n_waves]))
        lesion_rng = _rng(cfg.seed, kind, index)
        lesion = None
        if kind == "stroke":
            lesion = _plan_stroke(cfg, model, lesion_rng)
        elif kind == "tumour":
            lesion = _plan_tumour(cfg, model, lesion_rng)
        elif kind == "wmh":
            lesion = _plan_wmh(cfg, model, lesion_rng)
        plans.append(SubjectPlan(
            seed=cfg.seed, index=index, subject=f"s{index + 1:03d}", dataset=dataset, kind=kind, placement=placement,
            noise_sigma=float(rng.uniform(*cfg.noise_sigma)), bias=bias,
            atrophy_mm=float(rng.uniform(*cfg.atrophy_mm)), lesion=lesion, contrasts=contrasts[dataset],
        ))
    return plans


def _size_factor(volume_ml: float) -> float:
    return float(np.cbrt(volume_ml / _REFERENCE_LESION_ML))


def _first_candidates(*masks: np.ndarray) -> np.ndarray:
    """(K, 3) voxel indices of the first mask with any voxel set (the last one must have some)."""
    for mask in masks:
        if mask.any():
            return np.argwhere(mask)
    raise ValueError("no candidate voxel for a lesion centre")


def _near_slice(model: HeadModel, window_mm: float) -> np.ndarray:
    """(1, 1, Z) bool: template planes within ``window_mm`` of the slice plane."""
    _, _, z = anatomy.grid_axes_mm(model)
    return np.abs(z - SLICE_Z_MM) <= window_mm


def _plan_stroke(cfg: SynthMRIConfig, model: HeadModel, rng: np.random.Generator) -> StrokePlan:
    """Territory, side, log-uniform volume and a deep territory voxel near the slice plane as centre."""
    territories = list(cfg.stroke_territory_probs)
    weights = np.array([cfg.stroke_territory_probs[t] for t in territories], float)
    territory = territories[rng.choice(len(territories), p=weights / weights.sum())]
    hemisphere = anatomy.HEMISPHERES[rng.integers(2)]
    volume = float(np.exp(rng.uniform(*np.log(cfg.stroke_volume_ml))))
    region = anatomy.territory_regions(model)[territory, hemisphere]
    depth = ndimage.distance_transform_edt(region.values)
    near = _near_slice(model, cfg.lesion_slice_window_mm)[..., region.offset[2]:region.offset[2] + depth.shape[2]]
    deep = depth >= 0.3 * depth.max()
    candidates = _first_candidates(deep & near, region.values & near, deep)
    centre = candidates[rng.integers(len(candidates))] + np.asarray(region.offset)
    factor = _size_factor(volume)
    return StrokePlan(
        territory=territory, hemisphere=hemisphere, volume_ml=volume,
        centre_voxel=tuple(int(v) for v in centre), contrast=float(rng.uniform(*cfg.stroke_contrast)),
        pull_mm=float(rng.uniform(*cfg.stroke_pull_mm)) * factor,
        ventricle_mm=float(rng.uniform(*cfg.stroke_ventricle_mm)) * factor,
    )


def _plan_tumour(cfg: SynthMRIConfig, model: HeadModel, rng: np.random.Generator) -> TumourPlan:
    """Side, radii, and a white-matter centre near the slice plane, deep enough for the whole tumour."""
    hemisphere = anatomy.HEMISPHERES[rng.integers(2)]
    radius = float(rng.uniform(*cfg.tumour_radius_mm))
    rim = min(float(rng.uniform(*cfg.tumour_rim_mm)), 0.6 * radius)
    oedema = float(rng.uniform(*cfg.tumour_oedema_mm))
    x, _, _ = anatomy.grid_axes_mm(model)
    depth_mm = _brain_depth_mm(model)
    side = 1.0 if hemisphere == "right" else -1.0
    allowed = ((model.labels == anatomy.TISSUE_WM) & (x * side >= 12.0) & _near_slice(model, cfg.lesion_slice_window_mm)
               & ~_ventricles(model))
    candidates = _first_candidates(*(allowed & (depth_mm >= margin)
                                     for margin in (radius + oedema + 4.0, radius + 4.0, radius)), allowed)
    centre = candidates[rng.integers(len(candidates))]
    volume = 4.0 / 3.0 * np.pi * (radius + oedema) ** 3 / 1000.0
    factor = _size_factor(volume)
    return TumourPlan(
        hemisphere=hemisphere, centre_voxel=tuple(int(v) for v in centre), radius_mm=radius, rim_mm=rim,
        oedema_mm=oedema, push_mm=float(rng.uniform(*cfg.tumour_push_mm)) * factor,
        ventricle_mm=float(rng.uniform(*cfg.tumour_ventricle_mm)) * factor,
        midline_mm=float(rng.uniform(*cfg.tumour_midline_mm)) * factor,
    )


def _plan_wmh(cfg: SynthMRIConfig, model: HeadModel, rng: np.random.Generator) -> WmhPlan:
    """A few white-matter centres within ``wmh_periventricular_mm`` of the lateral ventricles, near the slice."""
    near_ventricles = (_ventricle_distance_mm(model) <= cfg.wmh_periventricular_mm) & ~_ventricles(model)
    allowed = (model.labels == anatomy.TISSUE_WM) & model.brain & near_ventricles
    candidates = _first_candidates(allowed & _near_slice(model, cfg.lesion_slice_window_mm), allowed)
    count = int(rng.integers(cfg.wmh_count[0], cfg.wmh_count[1] + 1))
    centres = tuple(tuple(int(v) for v in candidates[i]) for i in rng.integers(len(candidates), size=count))
    radii = tuple(float(r) for r in rng.uniform(*cfg.wmh_radius_mm, size=count))
    return WmhPlan(hemisphere="both", centre_voxel=centres[0], centres=centres, radii_mm=radii)


# --------------------------------------------------------------------------- template-space maps


@functools.lru_cache(maxsize=2)
def _ventricle_distance_mm(model: HeadModel) -> np.ndarray:
    """(X, Y, Z) float32 distance (mm) to the nearest lateral-ventricle voxel."""
    return ndimage.distance_transform_edt(~_ventricles(model), sampling=model.voxel_mm).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _brain_depth_mm(model: HeadModel) -> np.ndarray:
    """(X, Y, Z) float32 distance (mm) of brain voxels to the outside of the brain."""
    return ndimage.distance_transform_edt(model.brain, sampling=model.voxel_mm).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _ventricles(model: HeadModel) -> np.ndarray:
    """(X, Y, Z) bool lateral (and third) ventricles: the two largest deep CSF components near the centre."""
    x, y, z = anatomy.grid_axes_mm(model)
    csf = (model.labels == anatomy.TISSUE_CSF) & model.brain
    box = (np.abs(x) < 30.0) & (y > -50.0) & (y < 35.0) & (z > -5.0) & (z < 35.0)
    labels, n = ndimage.label(csf & box & (_brain_depth_mm(model) > 12.0))
    sizes = np.bincount(labels.ravel())[1:]
    return np.isin(labels, np.argsort(sizes)[-2:] + 1) if n else np.zeros(csf.shape, bool)


@functools.lru_cache(maxsize=8)
def _anatomy_image(model: HeadModel, contrast: str = "t1") -> np.ndarray:
    """(X, Y, Z) float32 noise-free image of one contrast: the template's T1 in the brain (through the
    contrast's curve, :data:`_CONTRAST_ANCHORS`; T1 and T1-Gd unchanged), fixed values outside."""
    brain_values = model.t1
    if contrast in _CONTRAST_ANCHORS:
        brain_values = np.interp(model.t1, _CONTRAST_ANCHORS["t1_values"], _CONTRAST_ANCHORS[contrast])
    image = np.where(model.brain, brain_values, 0.0).astype(np.float32)
    intensity = _OUTSIDE_INTENSITY[contrast]
    outside = ~model.brain
    labels = model.labels
    image[outside & (labels == anatomy.TISSUE_CSF)] = intensity["outer_csf"]
    image[outside & (labels == anatomy.TISSUE_SCALP)] = intensity["scalp"]
    skull = labels == anatomy.TISSUE_SKULL
    marrow = np.clip(1.0 - np.abs(model.skull_depth - 0.5) / 0.3, 0.0, 1.0)
    image[skull] = (intensity["skull"] + (intensity["marrow"] - intensity["skull"]) * marrow[skull])
    return image


@functools.lru_cache(maxsize=2)
def _ventricle_region(model: HeadModel) -> Region:
    """:func:`_ventricles` as float32 in its bounding box (plus one voxel)."""
    return _crop_region(_ventricles(model).astype(np.float32), _ventricles(model))


@functools.lru_cache(maxsize=2)
def _atrophy_region(model: HeadModel) -> Region:
    """(3, a, b, c) float32 template-voxel field enlarging both lateral ventricles, max magnitude 1 voxel
    (scaled per subject by ``atrophy_mm``), in the bounding box of its support."""
    field = _indicator_gradient(_ventricles(model).astype(np.float32), _VENTRICLE_SIGMA_MM / model.voxel_mm)
    field = field * _brain_weight(model.brain)
    return _crop_region(field, np.abs(field).sum(axis=0) > 0)


def _crop_region(values: np.ndarray, support: np.ndarray) -> Region:
    """``values`` (..., X, Y, Z) cropped to the bounding box of ``support`` (X, Y, Z) plus one voxel."""
    index = np.nonzero(support)
    low = np.maximum([i.min() - 1 for i in index], 0)
    high = np.minimum([i.max() + 2 for i in index], support.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    return Region(offset=tuple(int(v) for v in low), values=values[(..., *box)].copy())


@functools.lru_cache(maxsize=1)
def output_grid() -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and (4, 4) RAS affine of the cohort's voxel grid (nilearn's MNI152 2009a, 2 mm)."""
    from nilearn import datasets

    image = datasets.load_mni152_brain_mask(resolution=TEMPLATE_RESOLUTION_MM)
    return tuple(int(n) for n in image.shape), image.affine.copy()


# --------------------------------------------------------------------------- fields


def _indicator_gradient(indicator: np.ndarray, sigma_vox: float) -> np.ndarray:
    """(3, ...) gradient of the Gaussian-blurred indicator, normalised to max magnitude 1.

    Points towards the structure. The separable blur is truncated at 3 sigma, so the result is zero outside
    the cube of half-width round(3 sigma) + 1 voxels around every voxel of the structure.
    """
    blurred = ndimage.gaussian_filter(indicator.astype(np.float32), sigma_vox, truncate=_FIELD_TRUNCATE)
    gradient = np.stack(np.gradient(blurred)).astype(np.float32)
    peak = float(np.sqrt((gradient**2).sum(axis=0)).max())
    return gradient / peak if peak > 0 else gradient


def _brain_weight(brain: np.ndarray) -> np.ndarray:
    """Smooth weight in [0, 1], exactly 0 outside the brain and in its outermost 2 voxels (a full-cube
    erosion by 3 voxels, blurred by a Gaussian of 1 voxel truncated at 2 voxels)."""
    core = ndimage.binary_erosion(brain, structure=np.ones((3, 3, 3), bool), iterations=_BRAIN_WEIGHT_EROSION)
    return ndimage.gaussian_filter(core.astype(np.float32), 1.0, truncate=2.0)


def _midline_bump(shape: tuple[int, ...], centre_vox: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Gaussian bump, max 1, set to 0 beyond 3 sigma (compact support)."""
    grid = np.indices(shape, dtype=np.float32)
    squared = sum((grid[a] - centre_vox[a]) ** 2 for a in range(3)) / sigma_vox**2
    return np.where(squared <= _FIELD_TRUNCATE**2, np.exp(-0.5 * squared), 0.0).astype(np.float32)


def indirect_effect_field(plan: SubjectPlan, lesion: np.ndarray, ventricles_ipsi: np.ndarray, brain: np.ndarray,
                          lesion_centre_vox: np.ndarray, voxel_mm: float) -> np.ndarray:
    """(3, X, Y, Z) float32 backward displacement ``u`` in output voxels (module docstring).

    Args:
        lesion: (X, Y, Z) bool lesion (whole tumour) on the output grid.
        ventricles_ipsi: (X, Y, Z) bool ipsilateral lateral ventricle of the healthy subject.
        brain: (X, Y, Z) bool brain of the healthy subject.
        lesion_centre_vox: (3,) lesion centre in output voxels.
    """
    shape = lesion.shape
    if plan.lesion is None or isinstance(plan.lesion, WmhPlan):
        return np.zeros((3, *shape), np.float32)
    ventricle = _indicator_gradient(ventricles_ipsi, _VENTRICLE_SIGMA_MM / voxel_mm)
    if isinstance(plan.lesion, StrokePlan):
        pull = _indicator_gradient(lesion, _PULL_SIGMA_MM / voxel_mm)
        field = -plan.lesion.pull_mm * pull + plan.lesion.ventricle_mm * ventricle
    else:
        tumour = plan.lesion
        sigma = 0.6 * (tumour.radius_mm + tumour.oedema_mm) / voxel_mm
        push = _indicator_gradient(lesion, sigma)
        side = 1.0 if tumour.hemisphere == "right" else -1.0
        midline_centre = lesion_centre_vox.copy()
        midline_centre[0] = (lesion_centre_vox[0] + _midline_voxel()) / 2.0
        midline = np.zeros((3, *shape), np.float32)
        midline[0] = side * _midline_bump(shape, midline_centre, _MIDLINE_SIGMA_MM / voxel_mm)
        field = tumour.push_mm * push - tumour.ventricle_mm * ventricle + tumour.midline_mm * midline
    return (field / voxel_mm * _brain_weight(brain)).astype(np.float32)


def _midline_voxel() -> float:
    """Output-grid x index of MNI x = 0."""
    _, affine = output_grid()
    return float(-affine[0, 3] / affine[0, 0])


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class RenderedSubject:
    """One subject on the output grid (X, Y, Z), RAS storage.

    image: float32 observed main contrast (:data:`MAIN_CONTRAST`; lesioned for lesioned subjects); healthy:
    float32 the healthy counterpart (equal to ``image`` for healthy subjects); labels: uint8 lesion labels
    (stroke and WMH 1; tumour: BRATS_LABELS; 0 = none); brain_mask / healthy_brain_mask: bool;
    displacement_mm: (3, X, Y, Z) float32 ``u`` in mm; contrasts: the plan's contrasts, observed (the main
    contrast is ``image`` itself).
    """

    image: np.ndarray
    healthy: np.ndarray
    labels: np.ndarray
    brain_mask: np.ndarray
    healthy_brain_mask: np.ndarray
    displacement_mm: np.ndarray
    contrasts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def lesion_mask(self) -> np.ndarray:
        return self.labels > 0

    @property
    def displacement_magnitude_mm(self) -> np.ndarray:
        return np.sqrt((self.displacement_mm**2).sum(axis=0))


def _sample(volume: np.ndarray, coords: np.ndarray, cval: float = 0.0) -> np.ndarray:
    """Trilinear samples of ``volume`` at (3, N) voxel coordinates."""
    return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=cval, prefilter=False)


def _template_coords(model: HeadModel, plan: SubjectPlan, output_vox: np.ndarray) -> np.ndarray:
    """(3, N) padded-template voxel coordinates of (3, N) output voxel coordinates, after the subject's
    placement and global atrophy."""
    _, out_affine = output_grid()
    matrix = np.linalg.inv(model.affine) @ plan.placement.template_from_output_mm() @ out_affine
    coords = (matrix[:3, :3] @ output_vox + matrix[:3, 3:]).astype(np.float32)
    if plan.atrophy_mm > 0:
        field = _atrophy_region(model)
        scale = plan.atrophy_mm / model.voxel_mm
        coords = coords + scale * _region_on_grid(field.values, field.offset, coords)
    return coords


def _region_on_grid(values: np.ndarray, offset: tuple[int, ...], coords: np.ndarray) -> np.ndarray:
    """Trilinear samples of a box-cropped template map (a, b, c) -> (N,), or of each channel of (C, a, b, c)
    -> (C, N), at (3, N) padded-template coordinates; 0 outside the box (only points inside are interpolated)."""
    channels = values.reshape(-1, *values.shape[-3:]).astype(np.float32)
    shifted = coords - np.asarray(offset, np.float32)[:, None]
    inside = np.all((shifted > -1.0) & (shifted < np.asarray(channels.shape[1:], np.float32)[:, None]), axis=0)
    shifted = shifted[:, inside]
    samples = np.zeros((len(channels), coords.shape[1]), np.float32)
    for channel, volume in enumerate(channels):
        samples[channel, inside] = _sample(volume, shifted)
    return samples.reshape(*values.shape[:-3], coords.shape[1])


def _bias_field(plan: SubjectPlan, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth multiplicative field ``exp(sum_k w_k cos(k . x + phase_k))`` over the grid scaled to [-1, 1]^3."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    log_gain = sum(weight * np.cos(kx * x + ky * y + kz * z + phase) for kx, ky, kz, phase, weight in plan.bias)
    return np.exp(log_gain).astype(np.float32)


def _stroke_region(model: HeadModel, lesion: StrokePlan, rng: np.random.Generator) -> Region:
    """Soft (edge ``_EDGE_MM``) infarct map in its territory box: the top-volume voxels of
    ``-distance / 10 mm + 0.5 * smooth noise`` around the planned centre."""
    region = anatomy.territory_regions(model)[lesion.territory, lesion.hemisphere]
    inside = region.values
    noise = ndimage.gaussian_filter(rng.standard_normal(inside.shape).astype(np.float32),
                                    _STROKE_NOISE_SIGMA_MM / model.voxel_mm)
    noise /= noise.std()
    centre = np.asarray(lesion.centre_voxel) - np.asarray(region.offset)
    grid = np.indices(inside.shape, dtype=np.float32)
    distance_mm = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(axis=0)) * model.voxel_mm
    score = np.where(inside, -distance_mm / _STROKE_RADIUS_MM + _STROKE_NOISE_WEIGHT * noise, -np.inf)
    n_voxels = max(1, min(int(round(lesion.volume_ml * 1000.0 / model.voxel_mm**3)),
                          int(_STROKE_MAX_TERRITORY_FILL * inside.sum())))
    chosen = np.zeros(score.size, bool)
    chosen[np.argpartition(-score.ravel(), n_voxels - 1)[:n_voxels]] = True
    soft = ndimage.gaussian_filter(chosen.reshape(inside.shape).astype(np.float32), 0.5 * _EDGE_MM / model.voxel_mm,
                                   truncate=2.0)  # compact edge: the soft lesion ends within 1 voxel
    return Region(offset=region.offset, values=soft)


def _tumour_compartments(model: HeadModel, tumour: TumourPlan, rng: np.random.Generator
                         ) -> tuple[tuple[int, ...], dict[str, np.ndarray]]:
    """Soft maps (box offset, {"core", "rim", "oedema"}) of a tumour with a noisy spherical outline."""
    outer = tumour.radius_mm + tumour.oedema_mm
    half = int(np.ceil((1.3 * outer + 2 * _EDGE_MM) / model.voxel_mm))
    centre = np.asarray(tumour.centre_voxel)
    low = np.maximum(centre - half, 0)
    high = np.minimum(centre + half + 1, model.labels.shape)
    shape = tuple(int(v) for v in high - low)
    grid = np.indices(shape, dtype=np.float32)
    distance_mm = np.sqrt(((grid - (centre - low)[:, None, None, None]) ** 2).sum(axis=0)) * model.voxel_mm
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 4.0 / model.voxel_mm)
    distance_mm = distance_mm * (1.0 + 0.12 * noise / max(float(noise.std()), 1e-6))

    def inside(radius: float) -> np.ndarray:
        return np.clip((radius - distance_mm) / _EDGE_MM + 0.5, 0.0, 1.0)

    whole, enhancing, core = inside(outer), inside(tumour.radius_mm), inside(tumour.radius_mm - tumour.rim_mm)
    brain = model.brain[tuple(slice(a, b) for a, b in zip(low, high))]
    return tuple(int(v) for v in low), {"core": core * brain, "rim": (enhancing - core) * brain,
                                        "oedema": (whole - enhancing) * brain}


def _wmh_region(model: HeadModel, lesion: WmhPlan) -> Region:
    """Soft (edge ``_EDGE_MM``) union of the plan's spheres inside the brain, in their bounding box."""
    reach = max(lesion.radii_mm) + 2 * _EDGE_MM
    centres = np.asarray(lesion.centres)
    low = np.maximum(centres.min(axis=0) - int(np.ceil(reach / model.voxel_mm)), 0)
    high = np.minimum(centres.max(axis=0) + int(np.ceil(reach / model.voxel_mm)) + 1, model.labels.shape)
    grid = np.indices(tuple(int(v) for v in high - low), dtype=np.float32)
    soft = np.zeros(grid.shape[1:], np.float32)
    for centre, radius in zip(centres - low, lesion.radii_mm):
        distance_mm = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(axis=0)) * model.voxel_mm
        soft = np.maximum(soft, np.clip((radius - distance_mm) / _EDGE_MM + 0.5, 0.0, 1.0))
    brain = model.brain[tuple(slice(a, b) for a, b in zip(low, high))]
    return Region(offset=tuple(int(v) for v in low), values=soft * brain)


def render_subject(model: HeadModel, plan: SubjectPlan) -> RenderedSubject:
    """Render one subject's images, masks and true displacement on the output grid (module docstring)."""
    shape, _ = output_grid()
    voxels = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = _template_coords(model, plan, voxels)
    healthy_clean = _sample(_anatomy_image(model, plan.main_contrast), coords).reshape(shape)
    healthy_brain = (_sample(model.brain.astype(np.float32), coords) > 0.5).reshape(shape)

    rng = _rng(plan.seed, "pixels", plan.index)
    bias = _bias_field(plan, shape)
    noise = rng.standard_normal((2, *shape), dtype=np.float32) * plan.noise_sigma

    def observe(clean: np.ndarray) -> np.ndarray:
        return np.sqrt((bias * clean + noise[0]) ** 2 + noise[1] ** 2)

    healthy = observe(healthy_clean)
    extra = [c for c in plan.contrasts if c != plan.main_contrast]
    extra_noise = {c: rng.standard_normal((2, *shape), dtype=np.float32) * plan.noise_sigma for c in extra}

    def observe_contrast(contrast: str, clean: np.ndarray) -> np.ndarray:
        noise_c = extra_noise[contrast]
        return np.sqrt((bias * clean + noise_c[0]) ** 2 + noise_c[1] ** 2)

    if plan.lesion is None:
        contrasts = {c: observe_contrast(c, _sample(_anatomy_image(model, c), coords).reshape(shape)) for c in extra}
        return RenderedSubject(image=healthy, healthy=healthy, labels=np.zeros(shape, np.uint8),
                               brain_mask=healthy_brain, healthy_brain_mask=healthy_brain,
                               displacement_mm=np.zeros((3, *shape), np.float32),
                               contrasts={plan.main_contrast: healthy, **contrasts} if plan.contrasts else {})

    compartments = _lesion_compartments(model, plan, coords, shape)
    lesion_mask = (sum(compartments.values()) > 0.5) & healthy_brain
    # the soft edge is painted only next to the mask, so y = h beyond 2 voxels of it (outside u's support)
    near_lesion = ndimage.binary_dilation(lesion_mask, np.ones((3, 3, 3), bool), iterations=2)
    compartments = {name: fraction * near_lesion for name, fraction in compartments.items()}
    whole = sum(compartments.values())
    ventricle_region = _ventricle_region(model)
    ventricles = (_region_on_grid(ventricle_region.values, ventricle_region.offset, coords) > 0.5).reshape(shape)
    ventricles_ipsi = ventricles & _hemisphere_mask(shape, plan.lesion.hemisphere)
    voxel_mm = float(abs(output_grid()[1][0, 0]))
    field = indirect_effect_field(plan, lesion_mask, ventricles_ipsi, healthy_brain,
                                  _lesion_centre_output_voxel(model, plan), voxel_mm)

    deformed_clean, deformed_brain = _deform(model, plan, healthy_clean, healthy_brain, field, plan.main_contrast)
    image = observe(_paint_lesion(plan, deformed_clean, compartments, whole, plan.main_contrast))
    contrasts = {}
    for contrast in extra:
        clean = _sample(_anatomy_image(model, contrast), coords).reshape(shape)
        deformed = _deform(model, plan, clean, healthy_brain, field, contrast)[0]
        contrasts[contrast] = observe_contrast(contrast, _paint_lesion(plan, deformed, compartments, whole, contrast))
    return RenderedSubject(image=image, healthy=healthy,
                           labels=_lesion_labels(plan, compartments, lesion_mask),
                           brain_mask=deformed_brain | lesion_mask, healthy_brain_mask=healthy_brain,
                           displacement_mm=field * voxel_mm,
                           contrasts={plan.main_contrast: image, **contrasts} if plan.contrasts else {})


def _deform(model: HeadModel, plan: SubjectPlan, healthy_clean: np.ndarray, healthy_brain: np.ndarray,
            field: np.ndarray, contrast: str) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free anatomy (of ``contrast``) and brain mask at ``x + u(x)``: resampled from the template where
    ``u`` is nonzero, copied from the healthy subject elsewhere."""
    moved = np.abs(field).sum(axis=0) > 0
    deformed_clean, deformed_brain = healthy_clean.copy(), healthy_brain.copy()
    if moved.any():
        displaced = np.argwhere(moved).T.astype(np.float32) + field[:, moved]
        displaced_coords = _template_coords(model, plan, displaced)
        deformed_clean[moved] = _sample(_anatomy_image(model, contrast), displaced_coords)
        deformed_brain[moved] = _sample(model.brain.astype(np.float32), displaced_coords) > 0.5
    return deformed_clean, deformed_brain


def _lesion_labels(plan: SubjectPlan, compartments: dict[str, np.ndarray], lesion_mask: np.ndarray) -> np.ndarray:
    """uint8 labels in the mask: 1 for an infarct or WMH, the dominant compartment's BraTS label for a tumour."""
    labels = np.zeros(lesion_mask.shape, np.uint8)
    if not isinstance(plan.lesion, TumourPlan):
        labels[lesion_mask] = 1
    else:
        dominant = np.argmax(np.stack([compartments[k] for k in BRATS_LABELS]), axis=0)
        labels[lesion_mask] = np.asarray(list(BRATS_LABELS.values()), np.uint8)[dominant[lesion_mask]]
    return labels


def _hemisphere_mask(shape: tuple[int, ...], hemisphere: str) -> np.ndarray:
    """(X, 1, 1) bool: output-grid columns of one hemisphere (RAS storage: left is x < 0)."""
    x = np.arange(shape[0], dtype=np.float32)[:, None, None]
    return x < _midline_voxel() if hemisphere == "left" else x > _midline_voxel()


def _lesion_centre_output_voxel(model: HeadModel, plan: SubjectPlan) -> np.ndarray:
    """(3,) output voxel of the planned lesion centre (placement only)."""
    _, out_affine = output_grid()
    matrix = np.linalg.inv(model.affine) @ plan.placement.template_from_output_mm() @ out_affine
    centre = np.append(np.asarray(plan.lesion.centre_voxel, np.float64), 1.0)
    return (np.linalg.inv(matrix) @ centre)[:3]


def _lesion_compartments(model: HeadModel, plan: SubjectPlan, coords: np.ndarray, shape: tuple[int, ...]
                         ) -> dict[str, np.ndarray]:
    """Soft lesion fractions on the output grid: {"infarct"}, {"wmh"} or {"core", "rim", "oedema"}, float32
    (X, Y, Z)."""
    rng = _rng(plan.seed, "lesion_shape", plan.index)
    if isinstance(plan.lesion, WmhPlan):
        region = _wmh_region(model, plan.lesion)
        return {"wmh": _region_on_grid(region.values, region.offset, coords).reshape(shape)}
    if isinstance(plan.lesion, StrokePlan):
        region = _stroke_region(model, plan.lesion, rng)
        return {"infarct": _region_on_grid(region.values, region.offset, coords).reshape(shape)}
    offset, maps = _tumour_compartments(model, plan.lesion, rng)
    return {name: _region_on_grid(values, offset, coords).reshape(shape) for name, values in maps.items()}


def _paint_lesion(plan: SubjectPlan, clean: np.ndarray, compartments: dict[str, np.ndarray],
                  whole: np.ndarray, contrast: str) -> np.ndarray:
    """Noise-free lesioned image of ``contrast``: an infarct moves the tissue towards the contrast's lesion
    value by the plan's ``contrast`` fraction (T1: CSF); tumour compartments and WMH take fixed intensities."""
    if isinstance(plan.lesion, StrokePlan):
        return clean - compartments["infarct"] * plan.lesion.contrast * (clean - _STROKE_TARGET[contrast])
    intensity = _TUMOUR_INTENSITIES[contrast] if isinstance(plan.lesion, TumourPlan) else {
        "wmh": _WMH_INTENSITY[contrast]}
    painted = clean * (1.0 - whole)
    for name, fraction in compartments.items():
        painted += fraction * intensity[name]
    return painted


# --------------------------------------------------------------------------- files


def layout_paths(plan: SubjectPlan) -> dict[str, str]:
    """Paths (relative to the cohort root) of a subject's files; truth paths are "" for healthy subjects."""
    if plan.dataset == "stroke":
        stem = f"{DATASETS['stroke']}/sub-{plan.subject}/ses-1/anat/{plan.scan}_{ATLAS_SPACE}"
        paths = {"image": f"{stem}_T1w.nii.gz", "lesion_mask": f"{stem}_label-L_desc-T1lesion_mask.nii.gz",
                 "brain_mask": f"{stem}_desc-brain_mask.nii.gz"}
    elif plan.dataset == WMH_DATASET:
        stem = f"{WMH_DATASET}/{WMH_SITE}/{plan.index + 1}"
        paths = {"image": f"{stem}/{CONTRAST_FILES[WMH_DATASET]['flair']}", "lesion_mask": f"{stem}/wmh.nii.gz",
                 "brain_mask": f"{stem}/pre/brain.nii.gz"}
    else:
        stem = f"{DATASETS['tumour']}/{plan.scan}/{plan.scan}"
        paths = {"image": f"{stem}-t1c.nii.gz", "lesion_mask": f"{stem}-seg.nii.gz",
                 "brain_mask": f"{stem}-brain.nii.gz"}
    for key, name in TRUTH_FILES.items():
        paths[key] = f"truth/{plan.scan}/{name}" if plan.lesion is not None else ""
    return paths


def contrast_paths(dataset: str, image_path: str) -> dict[str, str]:
    """Contrast -> path of each contrast file a subject of ``dataset`` may have, from its main image path
    (subjects.tsv ``image``, relative or absolute); {} for the stroke dataset (T1 only)."""
    if dataset == "tumour":
        stem = image_path[: -len(f"-{CONTRAST_FILES['tumour']['t1gd']}.nii.gz")]
        return {c: f"{stem}-{suffix}.nii.gz" for c, suffix in CONTRAST_FILES["tumour"].items()}
    if dataset == WMH_DATASET:
        folder = image_path[: -len(CONTRAST_FILES[WMH_DATASET]["flair"])]
        return {c: f"{folder}{name}" for c, name in CONTRAST_FILES[WMH_DATASET].items()}
    return {}


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=4)
    image.set_sform(affine, code=4)
    image.to_filename(path)


def _save_t1(path: Path, volume: np.ndarray, affine: np.ndarray) -> None:
    """float image -> int16 NIfTI with scale slope ``_QUANTUM`` (loaders apply the scaling)."""
    stored = np.clip(np.rint(volume / _QUANTUM), 0, np.iinfo(np.int16).max).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(stored, affine)
    image.header.set_slope_inter(_QUANTUM, 0.0)
    image.set_qform(affine, code=4)
    image.set_sform(affine, code=4)
    image.to_filename(path)


def _write_subject(out_dir: Path, model: HeadModel, plan: SubjectPlan) -> dict:
    """Render and write one subject; return its subjects.tsv row (without split)."""
    rendered = render_subject(model, plan)
    _, affine = output_grid()
    paths = layout_paths(plan)
    _save_t1(out_dir / paths["image"], rendered.image, affine)
    for contrast, path in contrast_paths(plan.dataset, paths["image"]).items():
        if contrast in rendered.contrasts and contrast != plan.main_contrast:
            _save_t1(out_dir / path, rendered.contrasts[contrast], affine)
    _save(out_dir / paths["lesion_mask"], rendered.labels, affine)
    _save(out_dir / paths["brain_mask"], rendered.brain_mask.astype(np.uint8), affine)
    if plan.lesion is not None:
        _save_t1(out_dir / paths["healthy"], rendered.healthy, affine)
        _save(out_dir / paths["healthy_brain_mask"], rendered.healthy_brain_mask.astype(np.uint8), affine)
        _save(out_dir / paths["displacement"], np.moveaxis(rendered.displacement_mm, 0, -1), affine)
        _save(out_dir / paths["displacement_magnitude"], rendered.displacement_magnitude_mm, affine)
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    lesion = plan.lesion
    placement = plan.placement
    return {
        "subject": plan.subject, "dataset": plan.dataset, "scan": plan.scan, "kind": plan.kind,
        "territory": lesion.territory if isinstance(lesion, StrokePlan) else "",
        "side": lesion.hemisphere if lesion is not None else "none",
        "lesion_ml": round(float(rendered.lesion_mask.sum()) * voxel_ml, 3),
        "slice_lesion_pixels": int(rendered.lesion_mask[:, :, SLICE_INDEX].sum()),
        "max_displacement_mm": round(float(rendered.displacement_magnitude_mm.max()), 3),
        "atrophy_mm": round(plan.atrophy_mm, 3), "noise_sigma": round(plan.noise_sigma, 4),
        **{f"rot_{a}_deg": round(v, 3) for a, v in zip("xyz", placement.rot_deg)},
        **{f"shift_{a}_mm": round(v, 3) for a, v in zip("xyz", placement.shift_mm)},
        "scale": round(placement.scale, 4), **paths,
    }


def _split_column(plans: list[SubjectPlan], cfg: SynthMRIConfig) -> dict[str, str]:
    """Subject -> suggested split, per dataset, stratified by kind."""
    splits = {}
    for dataset in (*DATASETS, WMH_DATASET):
        table = pd.DataFrame([{"subject": p.subject, "kind": p.kind} for p in plans if p.dataset == dataset])
        if not table.empty:
            assigned = patient_splits(table, cfg.seed, cfg.split_fractions, stratify="kind", patient_col="subject")
            splits.update(zip(assigned["subject"], assigned["split"]))
    return splits


def make_mri_cohort(out_dir: str | Path, cfg: SynthMRIConfig) -> pd.DataFrame:
    """Write the cohort (module docstring) under ``out_dir``; returns the subjects table also written as
    ``subjects.tsv``.

    Raises:
        FileExistsError: if ``out_dir/subjects.tsv`` already exists.
    """
    out_dir = Path(out_dir)
    if (out_dir / "subjects.tsv").exists():
        raise FileExistsError(f"{out_dir / 'subjects.tsv'} exists")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = anatomy.load_head_model(TEMPLATE_RESOLUTION_MM)
    for warm_cache in (_ventricle_region, _atrophy_region, anatomy.territory_regions):
        warm_cache(model)  # computed once, inherited by forked workers
    output_grid()
    plans = plan_mri_cohort(cfg, model)
    for contrast in sorted({c for plan in plans for c in (plan.main_contrast, *plan.contrasts)}):
        _anatomy_image(model, contrast)
    write = functools.partial(_write_subject, out_dir, model)
    if cfg.workers > 1:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(cfg.workers, mp_context=context) as pool:
            rows = list(pool.map(write, plans))
    else:
        rows = [write(plan) for plan in plans]
    splits = _split_column(plans, cfg)
    table = pd.DataFrame(rows).assign(split=lambda t: t["subject"].map(splits))[SUBJECT_COLUMNS]
    table.to_csv(out_dir / "subjects.tsv", sep="\t", index=False, lineterminator="\n")
    log.info("synthetic MRI cohort: %s", table.groupby(["dataset", "kind"]).size().to_dict())
    return table


def read_subjects(root: str | Path) -> pd.DataFrame:
    """subjects.tsv of a cohort (empty truth paths read as "")."""
    return pd.read_csv(Path(root) / "subjects.tsv", sep="\t", keep_default_na=False,
                       dtype={"territory": str, "side": str})


# --------------------------------------------------------------------------- reading back


def slice_spec(dataset: str, size: int = 128) -> MRISliceSpec:
    """The slice spec of a synthetic dataset: slice 47 of the 2 mm grid, padded to square, ``size`` pixels.

    Percentiles follow the thesis datasets: 98 (strokes, like ATLAS) and 99.5 (tumours, like BraTS).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown synthetic MRI dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    percentile = 98.0 if dataset == "stroke" else 99.5
    return MRISliceSpec(f"synth-{dataset}", slice_index=SLICE_INDEX, percentile=percentile, pad_square=True,
                        crop_hw=None, size=size)


def find_synthetic_pairs(root: str | Path, dataset: str) -> pd.DataFrame:
    """``find_atlas_pairs`` / ``find_brats_pairs`` on one dataset of the cohort at ``root``, plus the
    ``brain_mask`` column ``process_mri_dataset`` reads (absolute paths)."""
    root = Path(root)
    finder = find_atlas_pairs if dataset == "stroke" else find_brats_pairs
    pairs = finder(root / DATASETS[dataset])
    subjects = read_subjects(root)
    brain = dict(zip(subjects["scan"], subjects["brain_mask"]))
    pairs["brain_mask"] = [str(root / brain[scan]) if scan in brain else "" for scan in pairs["scan"]]
    return pairs


def find_synthetic_cases(root: str | Path, dataset: str) -> pd.DataFrame:
    """The multi-contrast cases of the tumour or WMH dataset of the cohort at ``root``: one
    ``preprocess.mri.CASE_COLUMNS`` row per subject (absolute paths, brain mask from subjects.tsv), for
    :func:`cfbrain.preprocess.mri.process_volume_dataset`; a contrast file not written (the cohort was made
    without ``contrasts``) excludes the case as "image_missing"."""
    if dataset not in CONTRAST_FILES:
        raise ValueError(f"no multi-contrast files in dataset {dataset!r}; expected one of {sorted(CONTRAST_FILES)}")
    root = Path(root)
    subjects = read_subjects(root)
    rows = []
    for row in subjects[subjects["dataset"] == dataset].itertuples(index=False):
        images = {c: root / path for c, path in contrast_paths(dataset, row.image).items()}
        rows.append(case_row(row.scan, row.subject, images, root / row.lesion_mask, root / row.brain_mask))
    return pd.DataFrame(rows, columns=CASE_COLUMNS)


def volume_slice_spec(dataset: str, size: int = 128, drop_slices: int = 15) -> VolumeSliceSpec:
    """Multi-contrast slice spec of the synthetic tumour (four contrasts, BraTS 2021's role) or WMH (FLAIR and
    T1) dataset: ``drop_slices`` of the 95 planes dropped at each end (BraTS 2021 drops 25 of 155), padded
    to a square and resized to ``size``; WMH lesions are label 1."""
    if dataset == "tumour":
        return VolumeSliceSpec("synth-tumour", VOLUME_CONTRASTS, drop_slices, drop_slices, "pad_resize", size)
    if dataset == WMH_DATASET:
        return VolumeSliceSpec("synth-wmh", tuple(CONTRAST_FILES[WMH_DATASET]), drop_slices, drop_slices,
                               "pad_resize", size, lesion_labels=(1,))
    raise ValueError(f"no multi-contrast spec for dataset {dataset!r}; expected 'tumour' or {WMH_DATASET!r}")


@dataclass(frozen=True)
class TruthSlices:
    """The counterfactual ground truth of the lesioned scans on the processed slice grid.

    scan (N,) str; healthy float32 (N, S, S) in [0, 1]: the healthy counterpart, normalised by its own
    percentile (exactly what ``mri_slice`` gives for it); lesioned float32 (N, S, S): the lesioned scan on
    the SAME intensity scale (the healthy slice's ceiling), so ``lesioned - healthy`` is the pathology's
    effect; lesion_mask, healthy_brain_mask uint8 (N, S, S); displacement_mm float32 (N, S, S) the
    magnitude of the true displacement (bilinear; millimetres, not rescaled).
    """

    dataset: str
    scan: np.ndarray
    healthy: np.ndarray
    lesioned: np.ndarray
    lesion_mask: np.ndarray
    healthy_brain_mask: np.ndarray
    displacement_mm: np.ndarray


def truth_slices(root: str | Path, dataset: str, spec: MRISliceSpec) -> TruthSlices:
    """Ground-truth slices (:class:`TruthSlices`) of every lesioned scan of one dataset of the cohort."""
    root = Path(root)
    subjects = read_subjects(root)
    rows = subjects[(subjects["dataset"] == dataset) & (subjects["kind"] != "healthy")]
    arrays = {key: [] for key in ("healthy", "lesioned", "lesion_mask", "healthy_brain_mask", "displacement_mm")}
    for row in rows.itertuples(index=False):
        planes = {key: load_volume(root / getattr(row, key)).data[spec.slice_index]
                  for key in ("image", "healthy", "lesion_mask", "healthy_brain_mask", "displacement_magnitude")}
        brain = planes["healthy_brain_mask"] > 0
        pixels = planes["healthy"] if spec.percentile_of == "slice" else planes["healthy"][brain]
        ceiling = float(np.percentile(pixels, spec.percentile))
        images = np.stack([planes["healthy"], planes["image"]]).clip(0.0, ceiling) / ceiling
        healthy, lesioned = np.clip(to_slice_grid(images, spec, "bilinear"), 0.0, 1.0)
        masks = to_slice_grid(np.stack([planes["lesion_mask"] > 0, brain]), spec, "nearest").astype(np.uint8)
        arrays["healthy"].append(healthy)
        arrays["lesioned"].append(lesioned)
        arrays["lesion_mask"].append(masks[0])
        arrays["healthy_brain_mask"].append(masks[1])
        arrays["displacement_mm"].append(to_slice_grid(planes["displacement_magnitude"][None], spec, "bilinear")[0])
    size = (0, spec.size, spec.size)
    stacked = {key: np.stack(values) if values else np.zeros(size, np.float32) for key, values in arrays.items()}
    return TruthSlices(dataset=dataset, scan=rows["scan"].to_numpy(dtype=str), healthy=stacked["healthy"],
                       lesioned=stacked["lesioned"], lesion_mask=stacked["lesion_mask"].astype(np.uint8),
                       healthy_brain_mask=stacked["healthy_brain_mask"].astype(np.uint8),
                       displacement_mm=stacked["displacement_mm"])


def save_truth_slices(path: str | Path, truth: TruthSlices) -> None:
    """Write :class:`TruthSlices` as .npz (keys: the field names plus ``format``)."""
    write_npz(path, {"format": np.str_(TRUTH_SLICES_FORMAT), "dataset": np.str_(truth.dataset),
                     "scan": truth.scan, "healthy": truth.healthy, "lesioned": truth.lesioned,
                     "lesion_mask": truth.lesion_mask, "healthy_brain_mask": truth.healthy_brain_mask,
                     "displacement_mm": truth.displacement_mm})


def load_truth_slices(path: str | Path) -> TruthSlices:
    """Read a file written by :func:`save_truth_slices`."""
    arrays = read_npz(path, TRUTH_SLICES_FORMAT)
    return TruthSlices(dataset=str(arrays["dataset"]), scan=arrays["scan"], healthy=arrays["healthy"],
                       lesioned=arrays["lesioned"], lesion_mask=arrays["lesion_mask"],
                       healthy_brain_mask=arrays["healthy_brain_mask"], displacement_mm=arrays["displacement_mm"])
