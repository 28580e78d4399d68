"""Register the MRI template to one CT with FSL FLIRT or SimpleITK (thesis 003 §3.4.4 step 5).

Both backends write the same two files: a FLIRT-convention ``.mat`` (template -> CT) and
the template resampled onto the CT grid. The CT is never resampled.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from fsl.data.image import Image
from fsl.transform.flirt import readFlirt

from cfbrain.register.flirt_matrix import flirt_to_world, write_template_to_ct
from cfbrain.register.fsl_backend import run_flirt
from cfbrain.register.result import RegistrationFailed, RegistrationResult
from cfbrain.register.sitk_backend import SimpleITKSettings, register_simpleitk
from cfbrain.register.volumes import InvalidImage, Volume, load_volume, save_like

log = logging.getLogger(__name__)
BACKENDS = ("auto", "fsl", "simpleitk")


def resolve_backend(backend: str = "auto", environ=os.environ) -> str:
    """``fsl`` or ``simpleitk``; ``auto`` means FSL when ``FSLDIR`` is set (non-empty)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "fsl" if environ.get("FSLDIR") else "simpleitk"
    return backend


def load_ct(ct_path: str | Path) -> Volume:
    """The CT in HU, or :class:`RegistrationFailed` (``invalid_ct`` / ``blank_ct``)."""
    try:
        ct = load_volume(ct_path, name="CT")
    except InvalidImage as error:
        raise RegistrationFailed("invalid_ct", str(error)) from error
    if np.ptp(ct.data) == 0:
        raise RegistrationFailed("blank_ct", f"every voxel is {float(ct.data.flat[0]):g} HU")
    return ct


def check_template_to_ct(template_to_ct_ras: np.ndarray) -> None:
    """Raise ``degenerate_transform`` unless the (4, 4) world RAS affine is finite, invertible
    and keeps handedness (a mirrored template would swap the hemispheres)."""
    if not np.all(np.isfinite(template_to_ct_ras)):
        raise RegistrationFailed("degenerate_transform", "non-finite matrix")
    determinant = float(np.linalg.det(template_to_ct_ras[:3, :3]))
    if determinant <= 1e-6:
        raise RegistrationFailed("degenerate_transform", f"determinant of the linear part is {determinant:.3g}")


def check_flirt_file(matrix_path: str | Path, template_path: str | Path, ct_path: str | Path) -> None:
    """Raise :class:`RegistrationFailed` unless the ``.mat`` holds a 4 x 4 matrix whose world
    form passes :func:`check_template_to_ct`."""
    flirt = np.atleast_2d(readFlirt(str(matrix_path)))
    if flirt.shape != (4, 4):
        raise RegistrationFailed("backend_error", f"malformed FLIRT matrix of shape {flirt.shape} in {matrix_path}")
    check_template_to_ct(flirt_to_world(flirt, Image(str(template_path)), Image(str(ct_path))))


def register_template_to_ct(ct_path: str | Path, template_path: str | Path, matrix_path: str | Path,
                            template_in_ct_path: str | Path, *, backend: str = "auto", threads: int = 1,
                            settings: SimpleITKSettings = SimpleITKSettings()) -> RegistrationResult:
    """Register the template (NIfTI) to the CT (NIfTI, HU) with 12 DOF.

    Writes ``matrix_path`` (FLIRT ``.mat``, template = source, CT = reference) and
    ``template_in_ct_path`` (``.nii.gz``, float32, on the CT grid). ``threads`` and
    ``settings`` apply to SimpleITK only (FLIRT is single-threaded); SimpleITK reruns are
    bit-identical with ``threads=1`` only.

    Raises :class:`RegistrationFailed` for a per-scan failure (invalid or blank CT, backend
    error, no convergence, degenerate transform); no output file is left behind then. An
    invalid template raises :class:`InvalidImage` (a configuration error).
    """
    started = time.perf_counter()
    chosen = resolve_backend(backend)
    ct = load_ct(ct_path)
    template = load_volume(template_path, name="template")
    if chosen == "fsl":
        stdout = run_flirt(template_path, ct_path, matrix_path, template_in_ct_path)
        metric_value, iterations, converged = None, None, True
        stop_condition = "FLIRT exited 0" + (f": {stdout.strip().splitlines()[-1]}" if stdout.strip() else "")
    else:
        fit = register_simpleitk(template, ct, settings, threads)
        write_template_to_ct(fit.template_to_ct_ras, template_path, ct_path, matrix_path)
        save_like(fit.template_in_ct, ct, template_in_ct_path)
        metric_value, iterations, converged = fit.metric_value, fit.iterations, fit.converged
        stop_condition = fit.stop_condition
    try:
        check_flirt_file(matrix_path, template_path, ct_path)
    except RegistrationFailed:
        for path in (matrix_path, template_in_ct_path):
            Path(path).unlink(missing_ok=True)
        raise
    result = RegistrationResult(
        backend=chosen, matrix_path=Path(matrix_path), template_in_ct_path=Path(template_in_ct_path),
        metric_value=metric_value, iterations=iterations, converged=converged,
        stop_condition=stop_condition, seconds=time.perf_counter() - started)
    log.info("registered %s with %s in %.1f s", ct_path, chosen, result.seconds)
    return result
