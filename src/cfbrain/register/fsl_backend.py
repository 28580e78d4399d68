"""FSL backend: FLIRT through fslpy, as in the thesis (cost corratio, 12 DOF).

FLIRT is run with the template as input (``-in``, the FLIRT source) and the CT as
reference (``-ref``), so ``-omat`` maps template -> CT and ``-out`` is the template
resampled onto the CT grid; the CT is never resampled.
"""
from __future__ import annotations

import logging
from pathlib import Path

from fsl.wrappers import flirt

from cfbrain.register.result import RegistrationFailed

log = logging.getLogger(__name__)
FLIRT_OPTIONS = {"cost": "corratio", "dof": 12}


def flirt_command(template_path: str | Path, ct_path: str | Path, matrix_path: str | Path,
                  template_in_ct_path: str | Path) -> list[str]:
    """The FLIRT command line fslpy would run (needs ``$FSLDIR/bin/flirt`` to exist)."""
    return flirt(str(template_path), str(ct_path), omat=str(matrix_path), out=str(template_in_ct_path),
                 cmdonly=True, **FLIRT_OPTIONS)


def run_flirt(template_path: str | Path, ct_path: str | Path, matrix_path: str | Path,
              template_in_ct_path: str | Path) -> str:
    """Run FLIRT; returns its stdout. A non-zero exit becomes :class:`RegistrationFailed`
    (partial outputs removed, last line of stderr in the detail). ``template_in_ct_path`` must end in ``.nii.gz`` and
    ``FSLOUTPUTTYPE`` must be ``NIFTI_GZ`` (FSL's default), else FLIRT names it otherwise."""
    for path in (matrix_path, template_in_ct_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    log.info("flirt: %s -> %s", template_path, ct_path)
    results = flirt(str(template_path), str(ct_path), omat=str(matrix_path), out=str(template_in_ct_path),
                    log={"tee": False}, stdout=True, stderr=True, exitcode=True, **FLIRT_OPTIONS)
    stdout, stderr, exitcode = results.stdout
    if exitcode != 0:
        for path in (matrix_path, template_in_ct_path):
            Path(path).unlink(missing_ok=True)
        last_line = (stderr.strip().splitlines() or [""])[-1]
        raise RegistrationFailed("backend_error", f"FLIRT exited {exitcode}: {last_line}")
    missing = [str(p) for p in (matrix_path, template_in_ct_path) if not Path(p).is_file()]
    if missing:
        raise RuntimeError(f"FLIRT exited 0 but did not write {missing}; is FSLOUTPUTTYPE=NIFTI_GZ?")
    return stdout
