"""MRI datasets of thesis 000 (MedEdit, section 4): ATLAS v2.0 strokes and BraTS 2023 tumours.

One axial slice per scan, 128 x 128, image in [0, 1] (the same range as CT
tensors; diffusion models convert with :func:`cfbrain.preprocess.intensity.unit_to_diffusion`):

* ATLAS v2.0 (section 4.1): T1w, slice 95; intensities clamped at the 98th
  percentile and max-normalised; padded to a square; resized to 128 x 128.
* BraTS 2023 (section 4.2): T1-Gd ("t1c"), slice 90; 99.5th percentile; centre
  crop 200 x 200; resized to 128 x 128; the subregions (NCR 1, ED 2, ET 3) fused
  into one lesion mask (any label > 0).

Conventions. Volumes are reoriented to the display convention of
:mod:`cfbrain.preprocess.volume`; the slice number counts from the inferior end
(for ATLAS in MNI152NLin2009aSym and BraTS in SRI24 this is the stored k index),
and the 2-D slice is shown radiologically (rows anterior->posterior, columns
patient right->left). The percentile is taken over the whole slice
(``percentile_of="slice"``: the thesis's "normalize the mid-axial slices to the
98th percentile", also what the public reference code does) or over brain pixels
only (``"brain"``). Images are resized bilinearly with antialiasing, masks by
nearest neighbour (they stay binary).

Brain mask. The MedEdit model takes a brain mask as input. A brain-mask file
per scan is used when the pairs table has a ``brain_mask`` column (e.g. from a
skull-stripping tool); otherwise the brain mask is the slice's non-zero pixels
(largest component, holes filled). That is exact for skull-stripped BraTS but a
HEAD mask for ATLAS v2.0, whose T1w images are defaced, not skull-stripped
(and with background noise it can cover most of the field of view): supply
brain masks for ATLAS.

Size groups (sections 4.1, 4.2). Over the scans whose 128 x 128 lesion mask is
non-empty, q25 and q75 are the 25th and 75th percentiles of the lesion area
in pixels (numpy's linear interpolation; the thesis's 18.5 and 135.75 are such
values). small: area < q25; large: area > q75; medium: otherwise; "healthy"
when the area is 0.

File discovery returns one row per scan found (image or mask) with
``status`` "kept" or "excluded" and a ``reason``; nothing is dropped silently.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import ndimage

from cfbrain.preprocess.errors import UNREADABLE_FILE_ERRORS, UnusableScan
from cfbrain.preprocess.geometry import resize_planes
from cfbrain.preprocess.npz import read_npz, write_npz
from cfbrain.preprocess.volume import load_volume
from cfbrain.settings import from_mapping

log = logging.getLogger(__name__)

PAIR_COLUMNS = ["scan", "subject", "image", "mask", "status", "reason", "detail"]
SLICE_COLUMNS = ["scan", "stage", "status", "reason", "detail", "lesion_area", "size_group", "brain_source"]
ATLAS_IMAGE_SUFFIX = "_T1w.nii.gz"
ATLAS_MASK_SUFFIX = "_label-L_desc-T1lesion_mask.nii.gz"
BRATS_CASE = re.compile(r"BraTS-[A-Z]+-\d{5}-\d{3}")
SLICES_FORMAT = "cfbrain-mri-slices/1"


@dataclass(frozen=True)
class MRISliceSpec:
    """How one dataset's volumes become 2-D slices; ATLAS_SPEC and BRATS_SPEC hold the thesis's values.

    slice_index: axial slice counted from the inferior end; percentile: clamp
    level (of the slice or of the brain, ``percentile_of``); pad_square: pad the
    plane to a square first; crop_hw: centre crop (or pad) to this size; size:
    output side in pixels.
    """

    dataset: str
    slice_index: int
    percentile: float
    pad_square: bool
    crop_hw: tuple[int, int] | None
    size: int = 128
    percentile_of: Literal["slice", "brain"] = "slice"

    @classmethod
    def from_mapping(cls, values: Mapping) -> "MRISliceSpec":
        """From a config section (YAML lists become tuples); unknown keys are an error."""
        return from_mapping(cls, values, "MRI slice")


ATLAS_SPEC = MRISliceSpec("atlas", slice_index=95, percentile=98.0, pad_square=True, crop_hw=None)
BRATS_SPEC = MRISliceSpec("brats", slice_index=90, percentile=99.5, pad_square=False, crop_hw=(200, 200))


def _row(scan, subject, image, mask, reason="", detail="") -> dict:
    return {"scan": scan, "subject": subject, "image": str(image or ""), "mask": str(mask or ""),
            "status": "excluded" if reason else "kept", "reason": reason, "detail": detail}


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=PAIR_COLUMNS).sort_values("scan", kind="stable").reset_index(drop=True)


def find_atlas_pairs(root: str | Path) -> pd.DataFrame:
    """ATLAS v2.0 BIDS: ``.../sub-*/ses-*/anat/*_T1w.nii.gz`` with ``*_label-L_desc-T1lesion_mask.nii.gz``.

    One row per session folder holding either file (PAIR_COLUMNS); scan =
    "sub-X_ses-Y". Excluded: "mask_missing", "image_missing", "name_mismatch"
    (file name not starting with its folders' sub-X_ses-Y), "duplicate" (two T1w
    in one session).
    """
    root = Path(root)
    found: dict[Path, dict[str, list[Path]]] = {}
    for kind, suffix in (("image", ATLAS_IMAGE_SUFFIX), ("mask", ATLAS_MASK_SUFFIX)):
        for path in sorted(root.rglob(f"sub-*/ses-*/anat/*{suffix}")):
            found.setdefault(path.parent, {"image": [], "mask": []})[kind].append(path)
    rows = []
    for anat, files in sorted(found.items()):
        subject, session = anat.parent.parent.name, anat.parent.name
        scan = f"{subject}_{session}"
        images, masks = files["image"], files["mask"]
        wrong = [p.name for p in images + masks if not p.name.startswith(f"{scan}_")]
        if wrong:
            rows.append(_row(scan, subject, images[0] if images else None, masks[0] if masks else None,
                             "name_mismatch", f"not named {scan}_*: {', '.join(wrong)}"))
        elif len(images) > 1 or len(masks) > 1:
            rows.append(_row(scan, subject, images[0], masks[0] if masks else None, "duplicate",
                             f"{len(images)} T1w and {len(masks)} lesion masks in {anat.relative_to(root)}"))
        elif not images:
            rows.append(_row(scan, subject, None, masks[0], "image_missing", f"no *{ATLAS_IMAGE_SUFFIX}"))
        else:
            expected = anat / (images[0].name[: -len(ATLAS_IMAGE_SUFFIX)] + ATLAS_MASK_SUFFIX)
            if not masks:
                rows.append(_row(scan, subject, images[0], None, "mask_missing", f"no {expected.name}"))
            elif masks[0] != expected:
                rows.append(_row(scan, subject, images[0], masks[0], "name_mismatch",
                                 f"mask {masks[0].name} does not match image {images[0].name}"))
            else:
                rows.append(_row(scan, subject, images[0], masks[0]))
    return _table(rows)


def find_brats_pairs(root: str | Path, modality: str = "t1c") -> pd.DataFrame:
    """BraTS 2023: ``.../BraTS-GLI-XXXXX-XXX/BraTS-GLI-XXXXX-XXX-{modality}.nii.gz`` + ``-seg.nii.gz``.

    One row per case folder (PAIR_COLUMNS); scan = folder name, subject = folder
    name without the timepoint. Excluded: "image_missing", "mask_missing",
    "name_mismatch" (a file of that kind exists but is named after another case).
    """
    rows = []
    for case in sorted(p for p in Path(root).rglob("BraTS-*") if p.is_dir() and BRATS_CASE.fullmatch(p.name)):
        subject = case.name.rsplit("-", 1)[0]
        image, mask = case / f"{case.name}-{modality}.nii.gz", case / f"{case.name}-seg.nii.gz"
        problems = []
        for path, kind in ((image, "image"), (mask, "mask")):
            if not path.is_file():
                others = sorted(p.name for p in case.glob(f"*-{path.name.rsplit('-', 1)[1]}"))
                problems.append(("name_mismatch", f"{kind} named {', '.join(others)}, expected {path.name}")
                                if others else (f"{kind}_missing", f"no {path.name}"))
        reason = problems[0][0] if problems else ""
        rows.append(_row(case.name, subject, image if image.is_file() else None, mask if mask.is_file() else None,
                         reason, "; ".join(detail for _, detail in problems)))
    return _table(rows)


@dataclass(frozen=True)
class MRISlice:
    """One processed slice: image float32 (size, size) in [0, 1]; masks uint8 (size, size) in {0, 1}."""

    image: np.ndarray
    lesion_mask: np.ndarray
    brain_mask: np.ndarray
    brain_source: str


def centre_crop_or_pad(plane: np.ndarray, out_hw: tuple[int, int], value: float = 0.0) -> np.ndarray:
    """(..., h, w) -> (..., H, W): per axis, keep the centre H (W) pixels or pad symmetrically (odd pixel after)."""
    out = plane
    for axis, target in zip((-2, -1), out_hw):
        n = out.shape[axis]
        if n > target:
            start = (n - target) // 2
            out = np.take(out, np.arange(start, start + target), axis=axis)
        elif n < target:
            widths = [(0, 0)] * out.ndim
            widths[axis] = ((target - n) // 2, target - n - (target - n) // 2)
            out = np.pad(out, widths, constant_values=value)
    return out


def _nonzero_brain(plane: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(plane > 0)
    if n == 0:
        return np.zeros(plane.shape, dtype=bool)
    return ndimage.binary_fill_holes(labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1)


def _plane(path: str | Path, index: int, shape: tuple | None = None) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Slice ``index`` (display convention) of a volume, and the volume's shape."""
    volume = load_volume(path)
    if shape is not None and volume.shape != shape:
        raise UnusableScan("grid_mismatch", f"{Path(path).name} has shape {volume.shape}, image has {shape}")
    if not 0 <= index < volume.shape[0]:
        raise UnusableScan("slice_out_of_range", f"slice {index} of {volume.shape[0]} in {Path(path).name}")
    return volume.data[index], volume.shape


def to_slice_grid(planes: np.ndarray, spec: MRISliceSpec, mode: str) -> np.ndarray:
    """(C, h, w) planes -> float32 (C, size, size): padded to a square and/or centre-cropped as ``spec`` says,
    then resized (``mode`` "bilinear" for images, "nearest" for masks)."""
    planes = np.asarray(planes, dtype=np.float32)
    height, width = planes.shape[1:]
    if spec.pad_square:
        planes = centre_crop_or_pad(planes, (max(height, width),) * 2)
    if spec.crop_hw is not None:
        planes = centre_crop_or_pad(planes, spec.crop_hw)
    return resize_planes(planes, (spec.size, spec.size), mode)


def mri_slice(image_path: str | Path, mask_path: str | Path, spec: MRISliceSpec,
              brain_mask_path: str | Path | None = None) -> MRISlice:
    """The thesis-000 slice of one scan (module docstring), or :class:`UnusableScan`.

    Data problems: "grid_mismatch" (mask shape differs), "slice_out_of_range",
    "empty_slice" (percentile <= 0).
    """
    plane, shape = _plane(image_path, spec.slice_index)
    lesion = _plane(mask_path, spec.slice_index, shape)[0] > 0
    if brain_mask_path is not None:
        brain, brain_source = _plane(brain_mask_path, spec.slice_index, shape)[0] > 0, "file"
    else:
        brain, brain_source = _nonzero_brain(plane), "nonzero"
    pixels = plane if spec.percentile_of == "slice" else plane[brain]
    ceiling = float(np.percentile(pixels, spec.percentile)) if pixels.size else 0.0
    if ceiling <= 0:
        raise UnusableScan("empty_slice", f"{spec.percentile}th percentile of slice {spec.slice_index} is {ceiling:g}")
    image = np.clip(plane, 0.0, ceiling) / ceiling

    image = np.clip(to_slice_grid(image[None], spec, "bilinear")[0], 0.0, 1.0)
    masks = to_slice_grid(np.stack([lesion, brain]), spec, "nearest").astype(np.uint8)
    return MRISlice(image=image.astype(np.float32), lesion_mask=masks[0], brain_mask=masks[1],
                    brain_source=brain_source)


def lesion_size_groups(areas: np.ndarray, thresholds: tuple[float, float] | None = None
                       ) -> tuple[np.ndarray, tuple[float, float]]:
    """Size group per lesion area (pixels): "healthy" / "small" / "medium" / "large" (module docstring).

    thresholds: (q25, q75) to reuse (e.g. from the training set); None computes
    them from the non-zero ``areas``. Returns (groups object (N,), (q25, q75)).
    """
    areas = np.asarray(areas, dtype=np.float64)
    if thresholds is None:
        lesional = areas[areas > 0]
        thresholds = tuple(float(q) for q in np.percentile(lesional, [25, 75])) if lesional.size else (np.nan, np.nan)
    low, high = thresholds
    groups = np.select([areas == 0, areas < low, areas > high], ["healthy", "small", "large"], default="medium")
    return groups.astype(object), thresholds


@dataclass(frozen=True)
class MRISliceSet:
    """All kept slices of one dataset: scan (N,) str; image float32 (N, size, size); masks uint8 (N, size, size)."""

    dataset: str
    scan: np.ndarray
    image: np.ndarray
    lesion_mask: np.ndarray
    brain_mask: np.ndarray


def process_mri_dataset(pairs: pd.DataFrame, spec: MRISliceSpec) -> tuple[MRISliceSet, pd.DataFrame]:
    """Slices for every kept row of ``pairs`` (from ``find_*_pairs``; optional ``brain_mask`` column).

    Returns the slice set and a status table (SLICE_COLUMNS) with one row per
    row of ``pairs``: rows excluded at discovery keep their reason (stage
    "find_files"); unreadable files ("unreadable") and :class:`UnusableScan`
    problems are excluded at stage "mri_slice". Size groups use this table's
    own quartiles (see :func:`lesion_size_groups` to apply training thresholds).
    """
    slices, status = [], []
    for row in pairs.itertuples(index=False):
        record = {"scan": row.scan, "stage": "find_files", "status": row.status, "reason": row.reason,
                  "detail": row.detail, "lesion_area": np.nan, "size_group": "", "brain_source": ""}
        if row.status == "kept":
            record["stage"] = "mri_slice"
            brain_path = getattr(row, "brain_mask", None)
            brain_path = brain_path if isinstance(brain_path, (str, Path)) and str(brain_path) else None
            try:
                result = mri_slice(row.image, row.mask, spec, brain_path)
            except UnusableScan as problem:
                record.update(status="excluded", reason=problem.reason, detail=problem.detail)
            except UNREADABLE_FILE_ERRORS as problem:
                record.update(status="excluded", reason="unreadable", detail=f"{type(problem).__name__}: {problem}")
            else:
                slices.append((row.scan, result))
                record.update(lesion_area=int(result.lesion_mask.sum()), brain_source=result.brain_source)
        if record["status"] == "excluded":
            log.warning("%s: excluded at %s (%s) %s", row.scan, record["stage"], record["reason"], record["detail"])
        status.append(record)
    table = pd.DataFrame(status, columns=SLICE_COLUMNS)
    kept = table["status"] == "kept"
    table.loc[kept, "size_group"] = lesion_size_groups(table.loc[kept, "lesion_area"].to_numpy())[0]
    size = (0, spec.size, spec.size)
    slice_set = MRISliceSet(
        dataset=spec.dataset,
        scan=np.array([scan for scan, _ in slices], dtype=str),
        image=np.stack([s.image for _, s in slices]) if slices else np.zeros(size, np.float32),
        lesion_mask=np.stack([s.lesion_mask for _, s in slices]) if slices else np.zeros(size, np.uint8),
        brain_mask=np.stack([s.brain_mask for _, s in slices]) if slices else np.zeros(size, np.uint8),
    )
    return slice_set, table


def save_mri_slices(path: str | Path, slices: MRISliceSet) -> None:
    """Write a slice set as .npz: keys scan, image, lesion_mask, brain_mask, dataset, format."""
    write_npz(path, {"scan": slices.scan, "image": slices.image, "lesion_mask": slices.lesion_mask,
                     "brain_mask": slices.brain_mask, "dataset": np.str_(slices.dataset),
                     "format": np.str_(SLICES_FORMAT)})


def load_mri_slices(path: str | Path) -> MRISliceSet:
    """Read a file written by :func:`save_mri_slices`."""
    arrays = read_npz(path, SLICES_FORMAT)
    return MRISliceSet(dataset=str(arrays["dataset"]), scan=arrays["scan"], image=arrays["image"],
                       lesion_mask=arrays["lesion_mask"], brain_mask=arrays["brain_mask"])
