"""MRI datasets of thesis 000 (MedEdit, section 4): ATLAS v2.0 strokes and BraTS 2023 tumours; and of thesis
003 chapter 6 (Dif-fuse): every slice of BraTS 2021 and WMH volumes (last part of this docstring).

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

Multi-contrast slices of whole volumes (thesis 003 §6.6.1: Dif-fuse on BraTS 2021 and WMH).

Every axial slice of a case becomes one sample (C, size, size) float32 in [0, 1], its contrasts stacked as
channels in a fixed order (:data:`VOLUME_CONTRASTS`: FLAIR, T1, T1-Gd, T2, the thesis's "concatenated over
the channel dimension"), with a lesion mask, a brain mask and an "ignore" mask (pixels no score counts).

* BraTS 2021 training layout (``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``,
  :func:`find_brats2021_cases`, :data:`BRATS2021_VOLUME_SPEC`): the 25 most inferior and 25 most superior
  slices dropped, then slices with an empty brain; 240 x 240 planes zero-padded to 256 x 256; tumour mask =
  any label > 0; brain = nonzero in any contrast (the images are skull-stripped).
* WMH challenge layout (``{site}/[{scanner}/]{id}/pre/{FLAIR,T1}.nii.gz`` + ``{id}/wmh.nii.gz``,
  :func:`find_wmh_cases`, :data:`WMH_VOLUME_SPEC`): every non-empty slice, centre-cropped to a square of the
  plane's shorter side and resized to 256 x 256; lesion mask = label 1; label 2 ("other pathology") is not
  a lesion and, as in the challenge's evaluation, its pixels are ignored by the scores (``ignore_mask``).

Intensities: per case and contrast, clamped at the ``percentile`` (99.5) of the volume's nonzero voxels
inside the kept slices and divided by it. Images are resized bilinearly with antialiasing, masks by nearest
neighbour.

Two contrasts against four (WMH is evaluated out of domain by the models trained on BraTS, §6.6.1):
:func:`reconcile_contrasts` places FLAIR and T1 in their BraTS channels and fills each missing channel from
a stated measured one (:data:`WMH_FILL`: T1-Gd <- T1, the same sequence without contrast agent, whose
healthy appearance it shares; T2 <- FLAIR, the other T2-weighted contrast, CSF excepted). ``observed``
records the measured contrasts, and anomaly maps are taken over those channels only.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
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


# --------------------------------------------------------------------------- thesis 003 chapter 6: every slice



VOLUME_CONTRASTS = ("flair", "t1", "t1gd", "t2")
VOLUME_SLICES_FORMAT = "cfbrain-mri-volume-slices/1"
CASE_COLUMNS = ["scan", "subject", *VOLUME_CONTRASTS, "mask", "brain_mask", "status", "reason", "detail"]
BRATS2021_CASE = re.compile(r"BraTS2021_\d{5}")
BRATS2021_FILES = {"flair": "flair", "t1": "t1", "t1gd": "t1ce", "t2": "t2"}
WMH_FILES = {"flair": "pre/FLAIR.nii.gz", "t1": "pre/T1.nii.gz"}
WMH_LESION_LABEL, WMH_OTHER_LABEL = 1, 2
WMH_FILL = {"t1gd": "t1", "t2": "flair"}
"""Missing BraTS channel -> the measured contrast that fills it on WMH (module docstring)."""


@dataclass(frozen=True)
class VolumeSliceSpec:
    """How a dataset's volumes become slices (module docstring).

    contrasts: the measured contrasts, in :data:`VOLUME_CONTRASTS` order; drop_inferior, drop_superior:
    slices removed at each end; geometry: ``"pad"`` (centre pad/crop to ``size``, no resizing),
    ``"crop"`` (centre crop to a square, resize) or ``"pad_resize"`` (pad to a square, resize);
    lesion_labels: label values that count as lesion (None: any > 0); ignore_labels: label values
    whose pixels the scores ignore.
    """

    dataset: str
    contrasts: tuple[str, ...]
    drop_inferior: int = 0
    drop_superior: int = 0
    geometry: Literal["pad", "crop", "pad_resize"] = "pad"
    size: int = 256
    percentile: float = 99.5
    lesion_labels: tuple[int, ...] | None = None
    ignore_labels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if [c for c in VOLUME_CONTRASTS if c in self.contrasts] != list(self.contrasts):
            raise ValueError(f"contrasts must be an ordered subset of {VOLUME_CONTRASTS}, got {self.contrasts}")

    @classmethod
    def from_mapping(cls, values: Mapping) -> "VolumeSliceSpec":
        """From a config section (YAML lists become tuples); unknown keys are an error."""
        return from_mapping(cls, values, "MRI volume slices")


BRATS2021_VOLUME_SPEC = VolumeSliceSpec("brats2021", VOLUME_CONTRASTS, 25, 25, "pad", 256)
WMH_VOLUME_SPEC = VolumeSliceSpec("wmh", ("flair", "t1"), 0, 0, "crop", 256, lesion_labels=(WMH_LESION_LABEL,),
                                  ignore_labels=(WMH_OTHER_LABEL,))


def case_row(scan: str, subject: str, images: Mapping[str, Path | None], mask: Path | None,
              brain_mask: Path | None = None) -> dict:
    """A CASE_COLUMNS row; excluded with the first missing file's reason."""
    missing = [name for name, path in [*images.items(), ("mask", mask)] if path is None or not Path(path).is_file()]
    row = {"scan": scan, "subject": subject, **{c: "" for c in VOLUME_CONTRASTS},
           **{c: str(p) for c, p in images.items() if p is not None and Path(p).is_file()},
           "mask": str(mask) if mask is not None and Path(mask).is_file() else "",
           "brain_mask": str(brain_mask or ""), "status": "kept", "reason": "", "detail": ""}
    if missing:
        row.update(status="excluded", reason="mask_missing" if missing == ["mask"] else "image_missing",
                   detail="missing: " + ", ".join(missing))
    return row


def _case_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=CASE_COLUMNS).sort_values("scan", kind="stable").reset_index(drop=True)


def find_brats2021_cases(root: str | Path) -> pd.DataFrame:
    """BraTS 2021 training layout: one CASE_COLUMNS row per ``BraTS2021_XXXXX`` folder (scan = subject =
    folder name); excluded "image_missing" / "mask_missing" when a contrast or ``_seg`` is absent."""
    rows = []
    for case in sorted(p for p in Path(root).rglob("BraTS2021_*") if p.is_dir() and BRATS2021_CASE.fullmatch(p.name)):
        images = {c: case / f"{case.name}_{suffix}.nii.gz" for c, suffix in BRATS2021_FILES.items()}
        rows.append(case_row(case.name, case.name, images, case / f"{case.name}_seg.nii.gz"))
    return _case_table(rows)


def find_wmh_cases(root: str | Path) -> pd.DataFrame:
    """WMH challenge layout: one CASE_COLUMNS row per subject folder holding ``pre/FLAIR.nii.gz`` (scan =
    subject = its path under ``root`` joined by "_", e.g. ``Amsterdam_GE3T_100``)."""
    root = Path(root)
    rows = []
    for flair in sorted(root.rglob(WMH_FILES["flair"])):
        folder = flair.parent.parent
        scan = "_".join(folder.relative_to(root).parts)
        rows.append(case_row(scan, scan, {c: folder / name for c, name in WMH_FILES.items()}, folder / "wmh.nii.gz"))
    return _case_table(rows)


@dataclass(frozen=True)
class VolumeSliceSet:
    """Slices of many cases (module docstring). scan, subject (N,) str; slice_index (N,) int (from inferior);
    image float32 (N, C, S, S) in [0, 1], channels = ``contrasts``; lesion_mask, brain_mask, ignore_mask
    uint8 (N, S, S); ``observed``: the measured contrasts (the others were filled)."""

    dataset: str
    contrasts: tuple[str, ...]
    observed: tuple[str, ...]
    scan: np.ndarray
    subject: np.ndarray
    slice_index: np.ndarray
    image: np.ndarray
    lesion_mask: np.ndarray
    brain_mask: np.ndarray
    ignore_mask: np.ndarray

    @property
    def lesion(self) -> np.ndarray:
        """(N,) bool: the slice shows a lesion (its healthy/lesion flag)."""
        return self.lesion_mask.reshape(len(self.scan), -1).any(axis=1)

    def select(self, keep: np.ndarray) -> "VolumeSliceSet":
        """The slices where the (N,) bool ``keep`` is True (or at the given indices)."""
        return VolumeSliceSet(self.dataset, self.contrasts, self.observed, self.scan[keep], self.subject[keep],
                              self.slice_index[keep], self.image[keep], self.lesion_mask[keep],
                              self.brain_mask[keep], self.ignore_mask[keep])


def _volume_planes(volumes: np.ndarray, spec: VolumeSliceSpec, mode: str) -> np.ndarray:
    """(K, h, w) planes -> float32 (K, size, size) with the spec's geometry."""
    height, width = volumes.shape[-2:]
    if spec.geometry == "pad":
        return centre_crop_or_pad(np.asarray(volumes, np.float32), (spec.size, spec.size))
    side = min(height, width) if spec.geometry == "crop" else max(height, width)
    square = centre_crop_or_pad(np.asarray(volumes, np.float32), (side, side))
    return resize_planes(square, (spec.size, spec.size), mode)


def volume_case_slices(case: Mapping, spec: VolumeSliceSpec) -> VolumeSliceSet:
    """Every kept slice of one case (a kept CASE_COLUMNS row), or :class:`UnusableScan`.

    Data problems: "grid_mismatch" (a file's shape differs from the first contrast's), "too_few_slices"
    (nothing left after dropping the ends), "empty_slice" (no brain in any kept slice).
    """
    volumes = []
    for contrast in spec.contrasts:
        volume = load_volume(case[contrast]).data
        if volumes and volume.shape != volumes[0].shape:
            raise UnusableScan("grid_mismatch", f"{contrast} has shape {volume.shape}, {spec.contrasts[0]} "
                                                f"{volumes[0].shape}")
        volumes.append(volume)
    labels = load_volume(case["mask"]).data
    if labels.shape != volumes[0].shape:
        raise UnusableScan("grid_mismatch", f"mask has shape {labels.shape}, images {volumes[0].shape}")
    n_slices = labels.shape[0]
    kept = np.arange(spec.drop_inferior, n_slices - spec.drop_superior)
    if kept.size == 0:
        raise UnusableScan("too_few_slices", f"{n_slices} slices, {spec.drop_inferior}+{spec.drop_superior} dropped")
    images = np.stack(volumes)[:, kept]  # (C, K, h, w)
    labels = np.rint(labels[kept]).astype(np.int64)
    brain_path = case.get("brain_mask") or ""
    brain = load_volume(brain_path).data[kept] > 0 if brain_path else (images > 0).any(axis=0)
    has_brain = brain.reshape(len(kept), -1).any(axis=1)
    if not has_brain.any():
        raise UnusableScan("empty_slice", f"no brain in slices {kept[0]}..{kept[-1]}")
    images, labels, brain, kept = images[:, has_brain], labels[has_brain], brain[has_brain], kept[has_brain]
    lesion = labels > 0 if spec.lesion_labels is None else np.isin(labels, spec.lesion_labels)
    ignore = np.isin(labels, spec.ignore_labels)
    normalised = []
    for channel in images:
        pixels = channel[channel > 0]
        ceiling = float(np.percentile(pixels, spec.percentile)) if pixels.size else 0.0
        normalised.append(np.clip(channel, 0.0, ceiling) / ceiling if ceiling > 0 else np.zeros_like(channel))
    n = len(kept)
    image = _volume_planes(np.concatenate(normalised), spec, "bilinear").reshape(len(spec.contrasts), n,
                                                                                 spec.size, spec.size)
    masks = _volume_planes(np.concatenate([lesion, brain, ignore]), spec, "nearest").reshape(3, n, spec.size,
                                                                                             spec.size)
    return VolumeSliceSet(
        dataset=spec.dataset, contrasts=spec.contrasts, observed=spec.contrasts,
        scan=np.full(n, str(case["scan"])), subject=np.full(n, str(case["subject"])), slice_index=kept,
        image=np.clip(image.transpose(1, 0, 2, 3), 0.0, 1.0).astype(np.float32),
        lesion_mask=masks[0].astype(np.uint8), brain_mask=masks[1].astype(np.uint8),
        ignore_mask=masks[2].astype(np.uint8))


def concat_volume_slices(parts: Sequence[VolumeSliceSet], spec: VolumeSliceSpec) -> VolumeSliceSet:
    """One slice set from the cases' sets (in order); empty when ``parts`` is."""
    channels, size = len(spec.contrasts), spec.size
    if not parts:
        empty = np.zeros((0, size, size), np.uint8)
        return VolumeSliceSet(spec.dataset, spec.contrasts, spec.contrasts, np.zeros(0, str), np.zeros(0, str),
                              np.zeros(0, np.int64), np.zeros((0, channels, size, size), np.float32), empty,
                              empty, empty)
    return VolumeSliceSet(
        spec.dataset, parts[0].contrasts, parts[0].observed,
        *(np.concatenate([getattr(p, key) for p in parts]) for key in
          ("scan", "subject", "slice_index", "image", "lesion_mask", "brain_mask", "ignore_mask")))


def process_volume_dataset(cases: pd.DataFrame, spec: VolumeSliceSpec) -> tuple[VolumeSliceSet, pd.DataFrame]:
    """Slices of every kept case (from ``find_brats2021_cases`` / ``find_wmh_cases`` /
    ``cfbrain.synth.mri.find_synthetic_cases``) and a status table: SLICE_COLUMNS-like, one row per case
    (stage "find_files" or "volume_slices", ``n_slices`` and ``n_lesion_slices`` for kept ones)."""
    parts, status = [], []
    for case in cases.to_dict("records"):
        record = {"scan": case["scan"], "subject": case["subject"], "stage": "find_files", "status": case["status"],
                  "reason": case["reason"], "detail": case["detail"], "n_slices": 0, "n_lesion_slices": 0}
        if case["status"] == "kept":
            record["stage"] = "volume_slices"
            try:
                part = volume_case_slices(case, spec)
            except UnusableScan as problem:
                record.update(status="excluded", reason=problem.reason, detail=problem.detail)
            except UNREADABLE_FILE_ERRORS as problem:
                record.update(status="excluded", reason="unreadable", detail=f"{type(problem).__name__}: {problem}")
            else:
                parts.append(part)
                record.update(n_slices=len(part.scan), n_lesion_slices=int(part.lesion.sum()))
        if record["status"] == "excluded":
            log.warning("%s: excluded at %s (%s) %s", case["scan"], record["stage"], record["reason"], record["detail"])
        status.append(record)
    return concat_volume_slices(parts, spec), pd.DataFrame(status)


def reconcile_contrasts(slices: VolumeSliceSet, contrasts: Sequence[str] = VOLUME_CONTRASTS,
                        fill: Mapping[str, str | None] = WMH_FILL) -> VolumeSliceSet:
    """The slices with channels ``contrasts``: measured ones copied, each missing one filled from the measured
    contrast ``fill`` names (None: zeros); ``observed`` keeps the measured ones (module docstring)."""
    index = {c: i for i, c in enumerate(slices.contrasts)}
    channels = []
    for contrast in contrasts:
        source = contrast if contrast in index else fill.get(contrast)
        if source is not None and source not in index:
            raise ValueError(f"cannot fill {contrast} from {source}: measured contrasts are {slices.contrasts}")
        channels.append(slices.image[:, index[source]] if source is not None else np.zeros_like(slices.image[:, 0]))
    observed = tuple(c for c in contrasts if c in index)
    return VolumeSliceSet(slices.dataset, tuple(contrasts), observed, slices.scan, slices.subject,
                          slices.slice_index, np.stack(channels, axis=1), slices.lesion_mask, slices.brain_mask,
                          slices.ignore_mask)


def save_volume_slices(path: str | Path, slices: VolumeSliceSet) -> None:
    """Write a :class:`VolumeSliceSet` as .npz (keys: its field names plus ``format``)."""
    write_npz(path, {"format": np.str_(VOLUME_SLICES_FORMAT), "dataset": np.str_(slices.dataset),
                     "contrasts": np.array(slices.contrasts, dtype=str), "observed": np.array(slices.observed, dtype=str),
                     **{key: getattr(slices, key) for key in ("scan", "subject", "slice_index", "image",
                                                              "lesion_mask", "brain_mask", "ignore_mask")}})


def load_volume_slices(path: str | Path) -> VolumeSliceSet:
    """Read a file written by :func:`save_volume_slices`."""
    a = read_npz(path, VOLUME_SLICES_FORMAT)
    return VolumeSliceSet(str(a["dataset"]), tuple(a["contrasts"].tolist()), tuple(a["observed"].tolist()),
                          a["scan"], a["subject"], a["slice_index"], a["image"], a["lesion_mask"],
                          a["brain_mask"], a["ignore_mask"])
