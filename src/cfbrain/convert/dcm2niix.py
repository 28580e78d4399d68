"""Convert one exported series with dcm2niix and pick the output a user would analyse."""
from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib

log = logging.getLogger(__name__)

# dcm2niix writes an uncorrected volume plus a corrected one in these two cases; the corrected one wins.
CORRECTED_SUFFIXES = (("_Tilt_", "gantry_tilt_corrected"), ("_Eq_", "equidistant_resampled"))


class ConversionFailed(Exception):
    """dcm2niix produced no usable NIfTI; the message says why (de-identified input, safe to log)."""


@dataclass(frozen=True)
class Conversion:
    """The chosen NIfTI + sidecar in ``out_dir`` and how it was chosen."""

    nifti: Path
    sidecar: Path
    correction: str
    all_outputs: tuple[str, ...]


def dcm2niix_executable() -> str:
    """Path of dcm2niix (the PyPI package puts it next to the interpreter)."""
    found = shutil.which("dcm2niix")
    if found is None:
        raise FileNotFoundError("dcm2niix is not on PATH; install cfbrain's environment (make venv)")
    return found


def dcm2niix_command(dicom_dir: Path, out_dir: Path, stem: str) -> list[str]:
    """The dcm2niix call: compressed NIfTI, BIDS sidecar without identifying fields, no renaming by tags."""
    return [dcm2niix_executable(), "-z", "y", "-b", "y", "-ba", "y", "-f", stem, "-o", str(out_dir), str(dicom_dir)]


def convert_series(dicom_dir: Path, out_dir: Path, stem: str = "image") -> Conversion:
    """Run dcm2niix on ``dicom_dir`` and move the chosen output to ``out_dir/{stem}.nii.gz`` (+ ``.json``).

    When dcm2niix writes several volumes, the gantry-tilt-corrected one is preferred, then the
    equidistant one, then the volume with most slices; the names of all outputs are recorded.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        scratch = Path(scratch)
        result = subprocess.run(dcm2niix_command(dicom_dir, scratch, stem), capture_output=True, text=True)
        log.info("dcm2niix exit %d\n%s", result.returncode, result.stdout[-4000:])
        outputs = sorted(scratch.glob("*.nii.gz"))
        if not outputs:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ConversionFailed(f"dcm2niix exit {result.returncode}, no NIfTI: {' | '.join(tail)}")
        chosen, correction = _choose_output(outputs)
        nifti, sidecar = out_dir / f"{stem}.nii.gz", out_dir / f"{stem}.json"
        shutil.move(chosen, nifti)
        # corrected volumes (_Tilt_1, _Eq_1) share the sidecar of the uncorrected one
        candidates = [Path(str(chosen).removesuffix(".nii.gz") + ".json"), scratch / f"{stem}.json"]
        chosen_sidecar = next((p for p in candidates if p.exists()), None)
        if chosen_sidecar is None:
            raise ConversionFailed(f"dcm2niix wrote {chosen.name} without a JSON sidecar")
        shutil.move(chosen_sidecar, sidecar)
        return Conversion(nifti, sidecar, correction, tuple(p.name for p in outputs))


def _choose_output(outputs: list[Path]) -> tuple[Path, str]:
    for marker, correction in CORRECTED_SUFFIXES:
        corrected = [p for p in outputs if marker in p.name]
        if corrected:
            return corrected[0], correction
    if len(outputs) == 1:
        return outputs[0], "none"
    slices = {p: n_slices(nib.load(p).shape) for p in outputs}
    return max(outputs, key=lambda p: (slices[p], p.name)), "largest_of_several"


def n_slices(shape: tuple[int, ...]) -> int:
    """Slices of a NIfTI volume: the third axis, 1 for a 2-D image."""
    return int(shape[2]) if len(shape) >= 3 else 1
