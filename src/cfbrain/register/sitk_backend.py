"""SimpleITK backend: a 12-DOF affine of the MRI template onto one CT, FLIRT-like.

Fixed image = CT, moving image = template, so the optimised transform maps CT physical
points (LPS mm) to template points (LPS mm); the CT itself is never resampled for the
output. Steps:

1. CT smoothed and resampled onto an isotropic working grid for the metric (CT slices
   are often 5 mm while pixels are 0.5 mm, and SimpleITK shrinks all axes alike),
   clipped to the brain window ``ct_window_hu`` (default [0, 100] HU, the thesis window:
   air, fat and FOV padding become 0, bone saturates at 100) and, by default, set to 0
   outside the skull. The default template (nilearn's MNI152) is brain-extracted; with
   skull and scalp left in the CT, mutual information prefers a template blown up to the
   skull (about 20 % too large and 9 mm off on synthetic heads, worse with smoothing).
   Turn ``intracranial_only`` off for whole-head templates.
2. Centred initialisation: the centres of mass of the fixed CT and the template.
3. Coarse rotation search, like FLIRT's: the metric on a grid of rotations about the
   three axes (default +-30 deg in 15 deg steps, 125 poses) at the coarsest level; the
   best pose starts the optimisation. Heads in clinical CT are often pitched or turned.
4. Rigid (Euler) stage over the coarse pyramid levels, then the affine stage over all
   levels; Mattes mutual information (multimodal), regular-step gradient descent,
   parameter scales from physical shift.

Deterministic on CPU with one thread: the metric's random sample uses a fixed non-zero
seed (SimpleITK reads seed 0 as "seed from the wall clock"); see :func:`register_simpleitk`.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from cfbrain.register.flirt_matrix import moving_to_fixed_ras, sitk_fixed_to_moving_lps
from cfbrain.register.result import RegistrationFailed
from cfbrain.register.volumes import Volume, from_sitk, to_sitk

log = logging.getLogger(__name__)
AIR_HU = -1024.0


@dataclass(frozen=True)
class SimpleITKSettings:
    """Registration settings; lengths in mm, windows in HU.

    Attributes:
        ct_window_hu: (low, high) clip of the CT before registration.
        intracranial_only: keep only the inside of the skull (for brain-extracted templates).
        bone_hu: CT threshold for skull when outlining the intracranial space.
        skull_gap_mm: in-plane gaps in the skull ring (sutures, thin temporal bone) closed.
        min_intracranial_ml: a smaller enclosed volume means no usable head in the scan.
        working_spacing_mm: isotropic metric grid; a coarser CT keeps its finest spacing.
        shrink_factors: pyramid shrink of the working grid, coarse to fine.
        smoothing_sigmas_mm: Gaussian sigma per pyramid level (physical units).
        rigid_levels: how many of the coarsest levels the rigid stage uses.
        rotation_search_deg, rotation_search_step_deg: half-range and step of the coarse
            rotation grid (same for the three axes); a half-range of 0 skips the search.
        histogram_bins: Mattes mutual information bins.
        sampling_fraction: fraction of working-grid voxels sampled (random, seeded).
        seed: metric sampling seed, > 0.
        max_iterations: per level and stage; hitting it at the finest affine level is
            a failure to converge.
        learning_rate, min_step: regular-step gradient descent step bounds (scaled
            parameter units; with physical-shift scales ~ mm of voxel motion).
    """

    ct_window_hu: tuple[float, float] = (0.0, 100.0)
    intracranial_only: bool = True
    bone_hu: float = 300.0
    skull_gap_mm: float = 4.0
    min_intracranial_ml: float = 300.0
    working_spacing_mm: float = 2.0
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (4.0, 2.0, 0.0)
    rigid_levels: int = 2
    rotation_search_deg: float = 30.0
    rotation_search_step_deg: float = 15.0
    histogram_bins: int = 32
    sampling_fraction: float = 0.1
    seed: int = 1
    max_iterations: int = 300
    learning_rate: float = 1.0
    min_step: float = 1e-2

    def __post_init__(self):
        if self.seed <= 0:
            raise ValueError("seed must be > 0 (SimpleITK treats 0 as 'seed from the wall clock')")
        if len(self.shrink_factors) != len(self.smoothing_sigmas_mm):
            raise ValueError("shrink_factors and smoothing_sigmas_mm need one entry per level")
        if not 1 <= self.rigid_levels <= len(self.shrink_factors):
            raise ValueError("rigid_levels must be between 1 and the number of pyramid levels")


@dataclass(frozen=True, eq=False)
class SimpleITKFit:
    """Outcome of :func:`register_simpleitk`.

    Attributes:
        template_to_ct_ras: (4, 4) template world RAS mm -> CT world RAS mm.
        template_in_ct: (I, J, K) float32 template resampled onto the CT grid (linear).
        metric_value: final Mattes MI (negative; lower is better).
        iterations: optimiser iterations over both stages and all levels.
        converged: the finest affine level stopped before ``max_iterations``.
        stop_condition: SimpleITK's stop description of the finest affine level.
    """

    template_to_ct_ras: np.ndarray
    template_in_ct: np.ndarray
    metric_value: float
    iterations: int
    converged: bool
    stop_condition: str


def working_grid_hu(ct: sitk.Image, settings: SimpleITKSettings) -> sitk.Image:
    """The CT (HU) anti-alias filtered and resampled (linear) onto an isotropic grid of spacing
    max(working_spacing_mm, finest CT spacing) with the CT's origin and direction (LPS),
    covering its extent; outside the CT is air (-1024 HU).

    The anti-alias filter is a block average over whole voxels per axis (``BinShrink``, e.g.
    4 x 4 x 1 for 0.5 mm pixels and 2 mm working voxels), then a Gaussian for what is left of
    the ratio: the same low-pass as a Gaussian on the full CT at a fraction of its cost.
    """
    spacing = max(settings.working_spacing_mm, min(ct.GetSpacing()))
    ct = sitk.BinShrink(ct, [max(int(spacing // voxel_mm), 1) for voxel_mm in ct.GetSpacing()])
    for axis, voxel_mm in enumerate(ct.GetSpacing()):
        if voxel_mm < spacing:
            smoother = sitk.RecursiveGaussianImageFilter()
            smoother.SetSigma((spacing - voxel_mm) / 2.0)
            smoother.SetDirection(axis)
            ct = smoother.Execute(ct)
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputOrigin(ct.GetOrigin())
    resampler.SetOutputDirection(ct.GetDirection())
    resampler.SetOutputSpacing([spacing] * 3)
    resampler.SetSize([max(int(np.ceil(n * s / spacing)), 1) for n, s in zip(ct.GetSize(), ct.GetSpacing())])
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(AIR_HU)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return resampler.Execute(ct)


def intracranial_mask(hu: np.ndarray, spacing_mm: float, slice_axis: int, settings: SimpleITKSettings) -> np.ndarray:
    """Bool mask of the space inside the skull, same shape as ``hu`` (isotropic voxels).

    Bone (> ``bone_hu``) is closed in-plane over ``skull_gap_mm`` gaps, each slice along
    ``slice_axis`` has the holes of its skull ring filled (slice by slice because the
    foramen magnum opens the cavity to the neck in 3-D), bone and one voxel around it
    are removed, and the largest 3-D connected part is kept (dropping e.g. the orbits).
    """
    radius = max(int(round(settings.skull_gap_mm / spacing_mm)), 1)
    offsets = np.arange(-radius, radius + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius ** 2
    bone = np.moveaxis(hu > settings.bone_hu, slice_axis, 0)
    sealed = ndimage.binary_closing(bone, structure=disk[None], border_value=0)
    inside = np.stack([ndimage.binary_fill_holes(section) for section in sealed])
    inside &= ~ndimage.binary_dilation(sealed, structure=ndimage.generate_binary_structure(3, 1))
    labels, n_parts = ndimage.label(inside)
    if n_parts == 0:
        return np.zeros(hu.shape, dtype=bool)
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return np.moveaxis(labels == largest, 0, slice_axis)


def fixed_image(ct: sitk.Image, settings: SimpleITKSettings) -> sitk.Image:
    """The registration's fixed image: the working-grid CT clipped to ``ct_window_hu`` and,
    with ``intracranial_only``, set to the window floor outside the skull.

    Raises :class:`RegistrationFailed` (``blank_ct``) when nothing varies inside the window,
    (``no_intracranial_region``) when the skull encloses less than ``min_intracranial_ml``.
    """
    hu_image = working_grid_hu(ct, settings)
    hu = sitk.GetArrayFromImage(hu_image)
    low, high = settings.ct_window_hu
    windowed = np.clip(hu, low, high)
    if np.ptp(windowed) == 0:
        raise RegistrationFailed("blank_ct", f"the CT is constant inside the window {settings.ct_window_hu} HU")
    if settings.intracranial_only:
        spacing = hu_image.GetSpacing()[0]
        # sitk arrays are (k, j, i); the slice axis is the index axis closest to world z
        slice_axis = 2 - int(np.argmax(np.abs(np.array(ct.GetDirection()).reshape(3, 3)[2])))
        mask = intracranial_mask(hu, spacing, slice_axis, settings)
        volume_ml = mask.sum() * spacing ** 3 / 1000.0
        if volume_ml < settings.min_intracranial_ml:
            raise RegistrationFailed("no_intracranial_region",
                                     f"the skull encloses {volume_ml:.0f} mL < {settings.min_intracranial_ml:g} mL")
        windowed = np.where(mask, windowed, low)
    fixed = sitk.GetImageFromArray(windowed.astype(np.float32))
    fixed.CopyInformation(hu_image)
    return fixed


def _registration_method(settings: SimpleITKSettings, levels: slice,
                         search: bool = False) -> sitk.ImageRegistrationMethod:
    """Mattes MI method over pyramid ``levels``: gradient descent, or with ``search`` the
    exhaustive grid over the three Euler angles (translation fixed)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(settings.sampling_fraction, settings.seed)
    method.SetInterpolator(sitk.sitkLinear)
    if search:
        steps = int(round(settings.rotation_search_deg / settings.rotation_search_step_deg))
        method.SetOptimizerAsExhaustive([steps] * 3 + [0] * 3, stepLength=np.deg2rad(settings.rotation_search_step_deg))
        method.SetOptimizerScales([1.0] * 6)
    else:
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=settings.learning_rate, minStep=settings.min_step,
            numberOfIterations=settings.max_iterations, relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
        method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors[levels]))
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_sigmas_mm[levels]))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _run_stage(method: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image,
               transform: sitk.Transform, stage: str) -> int:
    """Optimise ``transform`` in place; returns the iterations used. SimpleITK errors (e.g. no
    sample of the CT maps into the template) become :class:`RegistrationFailed`."""
    iterations = [0]
    method.AddCommand(sitk.sitkIterationEvent, lambda: iterations.__setitem__(0, iterations[0] + 1))
    method.SetInitialTransform(transform, inPlace=True)
    try:
        method.Execute(fixed, moving)
    except RuntimeError as error:
        last_line = str(error).strip().splitlines()[-1]
        raise RegistrationFailed("backend_error", f"SimpleITK {stage} stage: {last_line}") from error
    log.info("%s stage: metric %.4f after %d iterations (%s)", stage, method.GetMetricValue(), iterations[0],
             method.GetOptimizerStopConditionDescription())
    return iterations[0]


@contextmanager
def sitk_threads(threads: int):
    """SimpleITK's process-wide default thread count set to ``threads`` inside the block.

    Parts of the registration (the metric, the pyramid filters) follow only the global
    default. The previous default is restored on exit.
    """
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def register_simpleitk(template: Volume, ct: Volume, settings: SimpleITKSettings = SimpleITKSettings(),
                       threads: int = 1) -> SimpleITKFit:
    """Affine (12 DOF) registration of ``template`` (moving) to ``ct`` (fixed, HU) on
    ``threads`` CPU threads. Bit-identical reruns need ``threads=1``: with more, ITK sums the
    metric in a scheduling-dependent order (matrix entries then differ by ~1e-3, well
    under 0.1 mm); parallelise over scans instead.

    Raises :class:`RegistrationFailed` for a CT without contrast inside the window or without
    a skull-enclosed region, a SimpleITK error, or no convergence at the finest level.
    """
    with sitk_threads(threads):
        return _register(template, ct, settings)


def _register(template: Volume, ct: Volume, settings: SimpleITKSettings) -> SimpleITKFit:
    ct_image = to_sitk(ct)
    fixed = fixed_image(ct_image, settings)
    moving = to_sitk(template)

    try:
        rigid = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                  sitk.CenteredTransformInitializerFilter.MOMENTS)
    except RuntimeError as error:
        raise RegistrationFailed("backend_error", f"centre-of-mass initialisation: {error}") from error
    rigid = sitk.Euler3DTransform(rigid)
    _run_stage(_registration_method(settings, slice(0, 1), search=True), fixed, moving, rigid, "rotation search")
    iterations = _run_stage(_registration_method(settings, slice(0, settings.rigid_levels)),
                            fixed, moving, rigid, "rigid")

    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    method = _registration_method(settings, slice(None))
    iterations += _run_stage(method, fixed, moving, affine, "affine")
    stop_condition = method.GetOptimizerStopConditionDescription()
    converged = method.GetOptimizerIteration() < settings.max_iterations
    if not converged:
        raise RegistrationFailed("not_converged", stop_condition)

    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(ct_image)
    resampler.SetTransform(affine)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(0.0)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    template_in_ct = from_sitk(resampler.Execute(moving))

    return SimpleITKFit(
        template_to_ct_ras=moving_to_fixed_ras(sitk_fixed_to_moving_lps(affine)),
        template_in_ct=template_in_ct,
        metric_value=float(method.GetMetricValue()),
        iterations=iterations,
        converged=converged,
        stop_condition=stop_condition,
    )
