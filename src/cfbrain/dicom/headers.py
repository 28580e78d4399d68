"""Read one DICOM file's header (never its pixels) into a flat record, or say why it cannot be used."""
from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
IMAGE_CLASSES = {"CT Image Storage": "ct", "Enhanced CT Image Storage": "enhanced_ct",
                 "Legacy Converted Enhanced CT Image Storage": "enhanced_ct",
                 "MR Image Storage": "mr", "Enhanced MR Image Storage": "enhanced_mr"}
FUNCTIONAL_GROUP_SEQUENCES = {"ImageOrientationPatient": "PlaneOrientationSequence",
                              "ImagePositionPatient": "PlanePositionSequence", "PixelSpacing": "PixelMeasuresSequence"}


class UnusableFile(Exception):
    """A file that cannot join any series; ``reason`` is the exclusion reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class FileHeader:
    """The header fields of one DICOM instance that the index and the filters need.

    Raw identifiers (``patient_id``, UIDs) are only held in memory by the ingest stage;
    ``orientation`` is ImageOrientationPatient (row then column direction cosines, LPS)
    and ``position`` is ImagePositionPatient in mm, or None when the file lacks them.
    """

    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class: str
    modality: str
    image_type: tuple[str, ...]
    kernel: str
    manufacturer: str
    description: str
    transfer_syntax: str
    rows: int
    cols: int
    frames: int
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    gantry_tilt: float
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    instance_number: int | None
    age_years: float | None
    sex: str
    missing: list[str] = field(default_factory=list)

    @property
    def slice_normal(self) -> np.ndarray | None:
        """Unit normal of the slice plane (row × column cosines), shape (3,), LPS; None if unknown."""
        if self.orientation is None:
            return None
        normal = np.cross(self.orientation[:3], self.orientation[3:])
        norm = np.linalg.norm(normal)
        return normal / norm if norm > 0 else None

    def plane(self, axial_max_angle_deg: float) -> str:
        """'axial', 'sagittal', 'coronal', 'oblique' or 'unknown'.

        Axial means the normal is within ``axial_max_angle_deg`` of the patient's
        foot-head axis, so gantry-tilted axial slices stay axial; otherwise the dominant
        axis of the normal names the plane ('oblique' when that is still the head-foot axis).
        """
        normal = self.slice_normal
        if normal is None:
            return "unknown"
        if abs(normal[2]) >= math.cos(math.radians(axial_max_angle_deg)):
            return "axial"
        return ("sagittal", "coronal", "oblique")[int(np.argmax(np.abs(normal)))]


def read_header(path: Path) -> FileHeader:
    """Read the header of ``path`` and check the pixel data is all there.

    Raises UnusableFile with a specific reason for empty, non-DICOM, DICOMDIR,
    truncated, non-image and identifier-less files.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise UnusableFile("empty_file")
    ds, header_end = _read_dataset(path)
    meta_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if meta_class == DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        raise UnusableFile("dicomdir")
    sop_class = str(ds.get("SOPClassUID", meta_class))
    if not sop_class:
        raise UnusableFile("corrupt_header", "no SOP Class UID in a damaged or incomplete header")
    class_name = UID(sop_class).name
    if class_name not in IMAGE_CLASSES:
        raise UnusableFile("non_image_object", class_name)
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not str(ds.get(keyword, "")).strip():
            raise UnusableFile("missing_identifier", keyword)
    header = _header_from_dataset(ds, class_name)
    _check_pixel_bytes(path, ds, header, header_end)
    _check_fragments(path, header, header_end)
    return header


def _read_dataset(path: Path) -> tuple[pydicom.Dataset, int]:
    """The header dataset and the byte offset where it ends.

    Files without the 128-byte preamble and 'DICM' (common in old archives) are read again
    with ``force=True`` and accepted only if they carry a SOP Class and Instance UID.
    """
    for force in (False, True):
        try:
            with open(path, "rb") as handle:
                ds = pydicom.dcmread(handle, stop_before_pixels=True, force=force)
                header_end = handle.tell()
        except InvalidDicomError:
            continue
        except Exception as error:  # pydicom raises many types on corrupt bytes; all mean the same here
            raise UnusableFile("corrupt_header", type(error).__name__) from None
        if not force:
            return ds, header_end
        try:
            if ds.get("SOPClassUID") and ds.get("SOPInstanceUID"):
                return ds, header_end
        except Exception:  # a forced parse of arbitrary bytes can fail on first access
            pass
    raise UnusableFile("not_dicom", "no DICOM preamble and no SOP Class/Instance UID")


def _header_from_dataset(ds: pydicom.Dataset, class_name: str) -> FileHeader:
    orientation = _geometry(ds, "ImageOrientationPatient", 6)
    position = _geometry(ds, "ImagePositionPatient", 3)
    spacing = _geometry(ds, "PixelSpacing", 2)
    missing = [k for k, v in (("ImageOrientationPatient", orientation), ("ImagePositionPatient", position),
                              ("PixelSpacing", spacing)) if v is None]
    return FileHeader(
        patient_id=str(ds.PatientID).strip(), study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID), sop_uid=str(ds.SOPInstanceUID), sop_class=class_name,
        modality=str(ds.get("Modality", "")).upper(), image_type=_image_type(ds),
        kernel=_text(ds.get("ConvolutionKernel", "")), manufacturer=_text(ds.get("Manufacturer", "")),
        description=_text(ds.get("SeriesDescription", "")),
        transfer_syntax=str(getattr(ds.file_meta, "TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else "",
        rows=int(ds.get("Rows", 0) or 0), cols=int(ds.get("Columns", 0) or 0),
        frames=int(ds.get("NumberOfFrames", 1) or 1), pixel_spacing=spacing,
        slice_thickness=_float(ds.get("SliceThickness")), gantry_tilt=_float(ds.get("GantryDetectorTilt")) or 0.0,
        orientation=orientation, position=position, instance_number=_int(ds.get("InstanceNumber")),
        age_years=_age_years(ds), sex=str(ds.get("PatientSex", "")).strip(), missing=missing,
    )


def _geometry(ds: pydicom.Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    """A geometry attribute from the top level, else (enhanced multi-frame objects) from the first
    shared or per-frame functional group item that has it."""
    value = _floats(ds, keyword, n)
    if value is not None:
        return value
    sequence = FUNCTIONAL_GROUP_SEQUENCES[keyword]
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in ds.get(group, [])[:1]:
            for sub in item.get(sequence, [])[:1]:
                value = _floats(sub, keyword, n)
                if value is not None:
                    return value
    return None


def _check_pixel_bytes(path: Path, ds: pydicom.Dataset, header: FileHeader, header_end: int) -> None:
    """Raise UnusableFile when the file has no pixel data after its header (``no_pixel_data``), no
    image size (``no_image_size``) or less uncompressed pixel data than Rows×Cols×frames×bytes
    (``truncated``)."""
    available = path.stat().st_size - header_end
    if available <= 0:
        raise UnusableFile("no_pixel_data", "no pixel data: the file ends after its header")
    if header.rows * header.cols == 0:
        raise UnusableFile("no_image_size", f"Rows {header.rows}, Columns {header.cols} with {available} bytes of pixel data")
    syntax = UID(header.transfer_syntax) if header.transfer_syntax else None
    if syntax is not None and syntax.is_compressed:
        return
    bits = int(ds.get("BitsAllocated", 16) or 16)
    expected = header.rows * header.cols * header.frames * int(ds.get("SamplesPerPixel", 1) or 1) * bits // 8
    if available < expected:
        raise UnusableFile("truncated", f"pixel data has {available} of {expected} bytes")


PIXEL_DATA_TAG, ITEM_TAG, SEQUENCE_DELIMITER_TAG = b"\xe0\x7f\x10\x00", b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0"


def _check_fragments(path: Path, header: FileHeader, header_end: int) -> None:
    """Raise UnusableFile('truncated') when compressed (encapsulated) pixel data ends before its sequence
    delimiter: a cut-off file whose header is complete. Reads 8 bytes per fragment, never the pixels."""
    if not header.transfer_syntax or not UID(header.transfer_syntax).is_compressed:
        return
    with open(path, "rb") as handle:
        handle.seek(header_end)
        if handle.read(12)[:4] != PIXEL_DATA_TAG:  # tag, VR OB, reserved, undefined length
            return
        while (item := handle.read(8))[:4] == ITEM_TAG and len(item) == 8:
            handle.seek(int.from_bytes(item[4:], "little"), 1)
        if item[:4] != SEQUENCE_DELIMITER_TAG:
            size = path.stat().st_size
            raise UnusableFile("truncated", f"compressed pixel data cut off: the file ends at byte {size}, "
                                            "before its last fragment does")


def _image_type(ds: pydicom.Dataset) -> tuple[str, ...]:
    value = ds.get("ImageType")
    if value is None or value == "":
        return ()
    values = [value] if isinstance(value, str) else list(value)
    return tuple(str(v).strip().upper() for v in values if str(v).strip())


def _text(value) -> str:
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, str)):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _floats(ds: pydicom.Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == n and all(math.isfinite(v) for v in numbers) else None


def _float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def _age_years(ds: pydicom.Dataset) -> float | None:
    """PatientAge ("072Y"), else StudyDate − PatientBirthDate, in years; None if neither is usable."""
    match = _AGE.match(str(ds.get("PatientAge", "")).strip().upper())
    if match:
        return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)]
    birth, study = str(ds.get("PatientBirthDate", "")), str(ds.get("StudyDate", ""))
    if len(birth) == 8 and len(study) == 8 and birth.isdigit() and study.isdigit():
        days = (dt.date(int(study[:4]), int(study[4:6]), int(study[6:])) -
                dt.date(int(birth[:4]), int(birth[4:6]), int(birth[6:]))).days
        return days / 365.25
    return None


def exported_series_age(dicom_dir: Path) -> float | None:
    """Age in years of an exported (de-identified, age-retaining) series, from its first instance."""
    first = min(Path(dicom_dir).glob("*.dcm"))
    return _age_years(pydicom.dcmread(first, stop_before_pixels=True))
