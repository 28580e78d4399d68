"""De-identification, export and dcm2niix conversion of hand-made series."""
from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import generate_uid

from cfbrain.convert.dcm2niix import ConversionFailed, convert_series, dcm2niix_command
from cfbrain.convert.exclusions import SliceCountRules, slice_count_verdict
from cfbrain.convert.stage import convert_scan
from cfbrain.dicom.export import export_series
from cfbrain.dicom.pseudonymise import PseudonymKey, deidentify
from conftest import ct_slice, write_series

PHI = ("DOE^JANE", "DOE", "IST00001", "19400102", "ST ELSEWHERE", "HOUSE^GREGORY", "ACC998877", "20120301")


def test_deidentify_removes_identifiers_and_keeps_age(key):
    study, series = generate_uid(), generate_uid()
    ds = deidentify(ct_slice(study_uid=study, series_uid=series, index=0), key, patient_id="IST00001")
    assert str(ds.PatientName) == str(ds.PatientID) == key.patient("IST00001")
    assert ds.PatientAge == "072Y" and ds.PatientSex == "F"
    assert "PatientBirthDate" not in ds and "InstitutionName" not in ds and ds.AccessionNumber == ""
    assert ds.StudyDate == "" and ds.ReferringPhysicianName == ""
    assert not any(element.tag.is_private for element in ds)
    assert ds.StudyInstanceUID == key.uid(study) != study and ds.SeriesInstanceUID == key.uid(series)
    assert ds.SOPClassUID == pydicom.uid.CTImageStorage
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.PatientIdentityRemoved == "YES"


def test_pseudonyms_depend_on_key_only(tmp_path):
    a = PseudonymKey.load_or_create(tmp_path / "a" / "key")
    assert PseudonymKey.load(tmp_path / "a" / "key").patient("X1") == a.patient("X1")
    b = PseudonymKey.load_or_create(tmp_path / "b" / "key")
    assert a.patient("X1") != b.patient("X1") and a.patient("X1") != a.patient("X2")
    assert (tmp_path / "a" / "key").stat().st_mode & 0o777 == 0o600
    (tmp_path / "a" / "key").chmod(0o644)
    with pytest.raises(PermissionError):
        PseudonymKey.load(tmp_path / "a" / "key")


def test_export_leaves_no_phi_in_bytes_or_names(tmp_path, key):
    sources = write_series(tmp_path / "DOE_JANE_IST00001" / "20120301", 5)
    raw_uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in sources}
    written = export_series(sources, tmp_path / "out", key)
    assert [p.name for p in written] == ["0001.dcm", "0002.dcm", "0003.dcm", "0004.dcm", "0005.dcm"]
    for path in written:
        blob = path.read_bytes()
        for text in PHI + tuple(raw_uids):
            assert text.encode() not in blob, text


def test_a_file_without_preamble_or_file_meta_is_exported_as_a_standard_file(tmp_path, key):
    study, series = generate_uid(), generate_uid()
    ds = ct_slice(study_uid=study, series_uid=series, index=0)
    del ds.file_meta
    ds.save_as(tmp_path / "old.dcm", implicit_vr=True, little_endian=True)  # as old archives store it
    written = export_series([tmp_path / "old.dcm"], tmp_path / "out", key)[0]
    exported = pydicom.dcmread(written)  # raises without preamble and file meta
    assert exported.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    assert exported.file_meta.MediaStorageSOPInstanceUID == exported.SOPInstanceUID == key.uid(ds.SOPInstanceUID)
    assert not any(text.encode() in written.read_bytes() for text in PHI + (study, series))


def _exported(tmp_path, key, n, noise_hu=3.0, **kwargs):
    sources = write_series(tmp_path / "src", n, n_rows=64, noise_hu=noise_hu, **kwargs)
    return export_series(sources, tmp_path / "dicom", key)[0].parent


def test_convert_keeps_a_full_series(tmp_path, key):
    status = convert_scan("S", _exported(tmp_path, key, 30), tmp_path / "nifti", tmp_path / "status.tsv",
                          SliceCountRules())
    assert status["status"] == "kept" and status["n_slices"] == 30 and status["correction"] == "none"
    image = nib.load(tmp_path / "nifti" / "image.nii.gz")
    assert image.shape == (64, 64, 30)
    sidecar = (tmp_path / "nifti" / "image.json").read_text()
    assert not any(text in sidecar for text in PHI)
    assert pd.read_csv(tmp_path / "status.tsv", sep="\t").status.item() == "kept"


def test_convert_flags_short_series_for_review_and_blank_localisers(tmp_path, key):
    short = convert_scan("S", _exported(tmp_path / "a", key, 12), tmp_path / "a" / "n", tmp_path / "a" / "s.tsv",
                         SliceCountRules())
    assert (short["status"], short["reason"]) == ("needs_review", "split_skull_review")
    blank = convert_scan("S", _exported(tmp_path / "b", key, 2, image_type=None), tmp_path / "b" / "n",
                         tmp_path / "b" / "s.tsv", SliceCountRules())
    assert (blank["status"], blank["reason"]) == ("excluded", "localiser")


def test_slice_count_rules():
    rules = SliceCountRules(localiser_below=3, review_below=25)
    assert slice_count_verdict(2, "", rules)[1] == "localiser"
    assert slice_count_verdict(2, "ORIGINAL\\PRIMARY\\AXIAL", rules)[0] == "needs_review"
    assert slice_count_verdict(24, "", rules)[0] == "needs_review"
    assert slice_count_verdict(25, "", rules)[0] == "kept"


def test_gantry_tilt_is_corrected_by_dcm2niix(tmp_path, key):
    tilt = math.radians(20)
    folder = tmp_path / "src"
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    for i in range(30):
        ds = ct_slice(study_uid=study, series_uid=series, index=i, n_rows=32,
                      orientation=(1.0, 0.0, 0.0, 0.0, math.cos(tilt), -math.sin(tilt)))
        ds.GantryDetectorTilt = 20
        ds.ImagePositionPatient = [-16.0, -16.0, 5.0 * i]   # slices stacked along z, planes tilted
        ds.save_as(folder / f"{i}.dcm", enforce_file_format=True)
    exported = export_series(sorted(folder.glob("*.dcm")), tmp_path / "dicom", key)[0].parent
    conversion = convert_series(exported, tmp_path / "nifti")
    assert conversion.correction == "gantry_tilt_corrected"
    assert any("_Tilt_" in name for name in conversion.all_outputs)


def test_conversion_failure_is_an_exception_with_reason(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionFailed, match="no NIfTI"):
        convert_series(tmp_path / "empty", tmp_path / "out")


def test_dcm2niix_command_is_anonymising(tmp_path):
    command = dcm2niix_command(tmp_path / "in", tmp_path / "out", "image")
    assert command[1:] == ["-z", "y", "-b", "y", "-ba", "y", "-f", "image", "-o", str(tmp_path / "out"),
                           str(tmp_path / "in")]


def test_enhanced_multiframe_and_rle_series_are_indexed_exported_and_converted(tmp_path, key):
    from pydicom.uid import RLELossless

    from cfbrain.dicom.index import index_source
    from conftest import enhanced_ct
    source = tmp_path / "source"
    enhanced_ct(source / "ROE" / "enhanced.dcm", n_rows=64)
    for path in write_series(source / "DOE" / "rle", 26, n_rows=64):
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    index = index_source(source, key)
    assert index.series.verdict.tolist() == ["candidate", "candidate"]
    for scan, rows in index.manifest.groupby("scan"):
        exported = export_series([Path(p) for p in rows.sort_values("rank").path], tmp_path / "dicom" / scan, key)
        status = convert_scan(scan, exported[0].parent, tmp_path / "nifti" / scan, tmp_path / f"{scan}.tsv",
                              SliceCountRules())
        assert (status["status"], status["n_slices"]) == ("kept", 26), status


def _indexed_and_converted(tmp_path, key, noise_hu: float, kernel: str) -> tuple[pd.Series, dict]:
    """A 30-slice head series whose headers say nothing about bone (no BONE ImageType or description word),
    with ``kernel``: its index row and its conversion status."""
    from cfbrain.dicom.index import index_source
    sources = write_series(tmp_path / "src", 30, n_rows=64, kernel=kernel, noise_hu=noise_hu)
    index = index_source(tmp_path / "src", key)
    exported = export_series(sources, tmp_path / "dicom", key)[0].parent
    return index.series.iloc[0], convert_scan("S", exported, tmp_path / "nifti", tmp_path / "status.tsv",
                                              SliceCountRules())


def test_an_unknown_kernel_with_bone_noise_is_excluded_by_the_image_check(tmp_path, key):
    indexed, status = _indexed_and_converted(tmp_path, key, noise_hu=40.0, kernel="XR-7")
    assert (indexed.verdict, indexed.kernel_class) == ("candidate", "unknown")
    assert (status["status"], status["reason"]) == ("excluded", "bone_noise")
    assert status["noise_hu"] > 30 and f"brain-tissue noise {status['noise_hu']:.1f} HU > 10 HU" in status["detail"]
    assert pd.read_csv(tmp_path / "status.tsv", sep="\t").reason.item() == "bone_noise"


def test_a_soft_tissue_series_with_an_unusual_kernel_name_is_kept(tmp_path, key):
    indexed, status = _indexed_and_converted(tmp_path, key, noise_hu=3.0, kernel="NEURO SMOOTH 2")
    assert (indexed.verdict, indexed.kernel_class) == ("candidate", "unknown")
    assert (status["status"], status["reason"]) == ("kept", "") and status["noise_hu"] < 5
