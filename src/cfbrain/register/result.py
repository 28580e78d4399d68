"""What a registration returns, and how it fails."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

FAILURE_REASONS = {
    "invalid_ct": "the CT is not a usable 3-D volume (dimensionality, size, NaN, sheared axes)",
    "blank_ct": "the CT has no contrast (constant, or nothing inside the HU window)",
    "no_intracranial_region": "no skull-enclosed brain found to register to (SimpleITK backend)",
    "not_converged": "the optimiser hit its iteration limit at the finest level",
    "degenerate_transform": "the transform is non-finite, singular or mirrors the template",
    "backend_error": "the registration tool itself failed on this scan",
}


class RegistrationFailed(Exception):
    """A registration that failed or did not converge: an expected per-scan outcome that the
    pipeline records as an exclusion (stage ``register``), never a crash.

    Attributes:
        reason: one key of :data:`FAILURE_REASONS`.
        detail: human-readable specifics.
    """

    def __init__(self, reason: str, detail: str):
        if reason not in FAILURE_REASONS:
            raise ValueError(f"unknown registration failure reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RegistrationResult:
    """One template -> CT registration.

    Attributes:
        backend: ``fsl`` or ``simpleitk``.
        matrix_path: FLIRT-convention ``.mat`` (template = source, CT = reference).
        template_in_ct_path: the template resampled onto the CT grid (NIfTI, float32).
        metric_value: final cost (SimpleITK: Mattes mutual information, negative, lower is
            better); None for FSL, whose FLIRT run does not report it.
        iterations: optimiser iterations summed over stages and levels; None for FSL.
        converged: the optimiser stopped on its own criterion, not the iteration limit.
        stop_condition: the optimiser's (or FLIRT's) own account of why it stopped.
        seconds: wall-clock time of the whole call.
    """

    backend: str
    matrix_path: Path
    template_in_ct_path: Path
    metric_value: float | None
    iterations: int | None
    converged: bool
    stop_condition: str
    seconds: float

    def as_row(self) -> dict:
        """Flat dict (paths as strings) for a TSV row or a provenance record."""
        row = asdict(self)
        row["matrix_path"], row["template_in_ct_path"] = str(self.matrix_path), str(self.template_in_ct_path)
        return row
