"""Bone reconstructions under any vendor's naming (thesis 003 §3.4.4 removed bone reformats).

Three cues from the header (the kernel against a vendor kernel table, ImageType, words of the
series description) and one from the pixels that needs no name: a bone kernel leaves far more
high-frequency noise in brain tissue than a soft-tissue kernel.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import median_abs_deviation

SHIPPED_KERNEL_TABLE = Path(__file__).resolve().parents[3] / "resources" / "vendor_kernels.tsv"
KERNEL_TABLE_COLUMNS = ["vendor", "pattern", "class", "note"]
KERNEL_CLASSES = ("soft", "bone")
DEFAULT_DESCRIPTION_WORDS = ("BONE", "BONES", "OSSEOUS", "KNOCHEN", "KNOCHENFENSTER", "OS", "OSSEUX", "OSSO",
                             "HUESO", "FELSENBEIN", "PETROUS")

BRAIN_TISSUE_HU = (10.0, 70.0)
"""Grey and white matter, after smoothing: the voxels whose noise is measured."""
TISSUE_SMOOTHING_PX = 2.0
"""In-plane Gaussian sigma of the image that selects brain tissue: it must stay in range under bone-kernel
noise of 100+ HU (thin slices), or the sharpest series would have nothing to measure."""
MIN_NOISE_VOXELS = 1000
"""Fewer brain-tissue voxels than this (a phantom, a localiser) and the noise is not measured."""
NOISE_SLICES = 24
"""Most slices measured per volume: noise is a property of each slice, so a few suffice."""
BONE_NOISE_MAX_HU = 10.0
"""Brain-tissue noise above this is a bone reconstruction (calibration: resources/README.md)."""


@dataclass(frozen=True)
class KernelRule:
    """One row of the kernel table: ``pattern`` must match the whole kernel name and ``vendor`` be
    found in the Manufacturer tag (both regular expressions, case-insensitive; an empty vendor
    matches any manufacturer)."""

    vendor: str
    pattern: str
    kernel_class: str
    note: str

    def matches(self, kernel: str, manufacturer: str) -> bool:
        """Whether this rule names ``kernel`` of a series whose Manufacturer is ``manufacturer``
        (a blank Manufacturer, as de-identified exports often have, matches every vendor)."""
        vendor_ok = not self.vendor or not manufacturer or re.search(self.vendor, manufacturer, re.IGNORECASE)
        return bool(vendor_ok and re.fullmatch(self.pattern, kernel, re.IGNORECASE))


@dataclass(frozen=True)
class KernelTable:
    """Soft-tissue and bone kernels of the main vendors; the first matching row decides."""

    rules: tuple[KernelRule, ...]

    @classmethod
    def load(cls, path: str | Path = SHIPPED_KERNEL_TABLE) -> "KernelTable":
        """Read a TSV with columns vendor, pattern, class (soft or bone), note; a bad row is an error
        naming its line."""
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        missing = set(KERNEL_TABLE_COLUMNS) - set(table.columns)
        if missing:
            raise ValueError(f"kernel table {path} lacks the columns {sorted(missing)}")
        rules = []
        for line, (vendor, pattern, kernel_class, note) in enumerate(
                table[KERNEL_TABLE_COLUMNS].itertuples(index=False, name=None), start=2):
            if kernel_class not in KERNEL_CLASSES:
                raise ValueError(f"{path} line {line}: class must be one of {KERNEL_CLASSES}, got {kernel_class!r}")
            for expression in (vendor, pattern):
                try:
                    re.compile(expression)
                except re.error as error:
                    raise ValueError(f"{path} line {line}: {expression!r}: {error}") from None
            rules.append(KernelRule(vendor, pattern, kernel_class, note))
        return cls(tuple(rules))

    def rule_for(self, kernel: str, manufacturer: str = "") -> KernelRule | None:
        """The first rule naming the kernel, or None for a kernel the table does not know.

        ``kernel`` is the index's backslash-joined ConvolutionKernel; only its first value is the
        kernel name (Siemens adds the iterative strength as a second value, e.g. ``Hr38\\3``).
        """
        name = kernel.split("\\")[0].strip()
        if not name:
            return None
        return next((rule for rule in self.rules if rule.matches(name, manufacturer)), None)

    def kernel_class(self, kernel: str, manufacturer: str = "") -> str:
        """``soft``, ``bone`` or ``unknown``."""
        rule = self.rule_for(kernel, manufacturer)
        return rule.kernel_class if rule else "unknown"


def bone_description_word(description: str, words: tuple[str, ...]) -> str:
    """The first of ``words`` that is a whole word of the series description ('' when none).

    Whole words only, so BONE never matches inside another word and OS never inside POST FOSSA.
    """
    tokens = set(re.findall(r"[^\W\d_]+", description.upper()))
    return next((word for word in words if word.upper() in tokens), "")


def brain_tissue_noise_hu(volume_hu: np.ndarray) -> float | None:
    """High-frequency noise in brain tissue, HU: the robust (MAD) standard deviation of the
    difference between the volume and its 3 x 3 in-plane median (which keeps tissue edges, so
    anatomy is not counted), over brain tissue: voxels whose in-plane smoothed value lies in
    :data:`BRAIN_TISSUE_HU`.

    ``volume_hu``: (X, Y, slices[, ...]) in HU, slices along the third axis. None when fewer than
    :data:`MIN_NOISE_VOXELS` voxels qualify (nothing to measure).
    """
    volume = np.asarray(volume_hu, dtype=np.float32)
    volume = volume.reshape(volume.shape[0], volume.shape[1], -1)
    smooth = ndimage.gaussian_filter(volume, (TISSUE_SMOOTHING_PX, TISSUE_SMOOTHING_PX, 0))
    tissue = (smooth >= BRAIN_TISSUE_HU[0]) & (smooth <= BRAIN_TISSUE_HU[1])
    if tissue.sum() < MIN_NOISE_VOXELS:
        return None
    residual = volume - ndimage.median_filter(volume, size=(3, 3, 1))
    return float(median_abs_deviation(residual[tissue], scale="normal"))


def converted_noise_hu(image: nib.Nifti1Image, max_slices: int = NOISE_SLICES) -> float | None:
    """:func:`brain_tissue_noise_hu` of a converted NIfTI (HU after its scaling), measured on every
    k-th slice of the third axis so that at most ``max_slices`` are read."""
    if len(image.shape) < 3:
        return brain_tissue_noise_hu(np.asanyarray(image.dataobj)[:, :, None])
    step = -(-image.shape[2] // max_slices)
    return brain_tissue_noise_hu(image.dataobj[:, :, ::step])


def noise_verdict(noise_hu: float | None, max_noise_hu: float) -> tuple[str, str]:
    """(reason, detail) of the content check: ``bone_noise`` above ``max_noise_hu``, else ''."""
    if noise_hu is None:
        return "", "brain-tissue noise not measured (too little brain-tissue HU)"
    if noise_hu > max_noise_hu:
        return "bone_noise", f"brain-tissue noise {noise_hu:.1f} HU > {max_noise_hu:g} HU (bone-kernel-like)"
    return "", f"brain-tissue noise {noise_hu:.1f} HU"
