"""Index and header-level filters on hand-made series and on the real test files pydicom ships."""
from __future__ import annotations

import shutil

import pydicom
import pytest
from pydicom.uid import RLELossless, generate_uid

from cfbrain.convert.bone import KernelTable
from cfbrain.dicom.headers import UnusableFile, read_header
from cfbrain.dicom.index import HeaderRules, index_source, write_index
from conftest import AXIAL, CORONAL, PYDICOM_TEST_FILES, SAGITTAL, ct_slice, write_series


@pytest.fixture
def messy_source(tmp_path):
    """A source tree with one series of every kind the index must tell apart, under PHI-bearing folder names."""
    root = tmp_path / "source"
    study = generate_uid(entropy_srcs=["study-1"])
    base = root / "DOE_JANE_IST00001" / "20120301"
    write_series(base / "SE2", 30, study_uid=study, prefix="AX")
    write_series(base / "SE3", 30, study_uid=study, prefix="BK", kernel="H70h")
    write_series(base / "SE4", 30, study_uid=study, prefix="BT", image_type=("ORIGINAL", "PRIMARY", "AXIAL", "BONE"))
    write_series(base / "SE1", 1, study_uid=study, prefix="LO", orientation=SAGITTAL,
                 image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    write_series(base / "SE5", 20, study_uid=study, prefix="SAG", orientation=SAGITTAL)
    write_series(base / "SE6", 20, study_uid=study, prefix="COR", orientation=CORONAL)
    mixed_uid = generate_uid(entropy_srcs=["mixed"])
    write_series(base / "SE7", 28, study_uid=study, series_uid=mixed_uid, prefix="MX")
    for i in range(2):
        ct_slice(study_uid=study, series_uid=mixed_uid, index=100 + i, orientation=SAGITTAL).save_as(
            base / "SE7" / f"SAGX{i}.dcm", enforce_file_format=True)
    write_series(base / "SHARED", 12, study_uid=study, prefix="A")   # two series in one folder
    write_series(base / "SHARED", 14, study_uid=study, prefix="B")
    no_geometry = write_series(base / "SE8", 26, study_uid=study, prefix="NG")
    for path in no_geometry[:3]:
        ds = pydicom.dcmread(path)
        del ds.ImageOrientationPatient
        ds.save_as(path)
    rle = write_series(base / "SE9", 26, study_uid=study, prefix="RLE")
    for path in rle:
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    junk = root / "junk"
    junk.mkdir()
    (junk / "empty.dcm").write_bytes(b"")
    (junk / "notes.txt").write_text("patient DOE^JANE called back")
    good = sorted((base / "SE2").glob("*.dcm"))
    (junk / "truncated.dcm").write_bytes(good[0].read_bytes()[:-200])
    shutil.copy(good[1], junk / "duplicate.dcm")
    for name in ("CT_small.dcm", "MR_small.dcm", "test-SR.dcm", "rtstruct.dcm", "liver_1frame.dcm", "MR_truncated.dcm"):
        shutil.copy(PYDICOM_TEST_FILES / name, junk / name)
    shutil.copy(PYDICOM_TEST_FILES / "dicomdirtests" / "DICOMDIR", junk / "DICOMDIR")
    return root


def test_every_file_is_accounted_for(messy_source, key):
    index = index_source(messy_source, key)
    n_files = sum(1 for p in messy_source.rglob("*") if p.is_file())
    assert len(index.files) == n_files
    assert set(index.files.status) <= {"used", "unused", "excluded"}
    in_series = index.files[index.files.scan != ""]
    assert set(in_series.scan) == set(index.series.scan)
    assert (index.series.set_index("scan").n_files == in_series.groupby("scan").size()).all()


def test_header_verdicts(messy_source, key):
    table = index_source(messy_source, key).series
    assert len(table) == 13
    assert table.groupby("reason").size().to_dict() == {
        "": 6, "bone_kernel": 2, "localiser": 1, "non_axial": 2, "missing_geometry": 1, "wrong_modality": 1}
    assert set(table[table.reason == ""].verdict) == {"candidate"}
    mixed = table[table.n_sagittal == 2]
    assert len(mixed) == 1 and mixed.verdict.item() == "candidate" and mixed.n_axial.item() == 28
    assert "kept the 28 axial of 30" in mixed.detail.item()


def test_file_level_reasons(messy_source, key):
    files = index_source(messy_source, key).files
    reasons = files[files.status == "excluded"].reason.value_counts().to_dict()
    assert reasons == {"empty_file": 1, "not_dicom": 1, "truncated": 2, "duplicate_instance": 1,
                       "non_image_object": 3, "dicomdir": 1}
    assert (files[files.status == "unused"].reason == "non_axial_slice").sum() == 2


def test_compressed_transfer_syntax_is_a_candidate(messy_source, key):
    series = index_source(messy_source, key).series
    rle = series[series.transfer_syntax == RLELossless]
    assert len(rle) == 1 and rle.verdict.item() == "candidate"


def test_rules_are_configurable(messy_source, key):
    strict = HeaderRules(kernel_table=KernelTable(()), bone_image_types=())
    reasons = index_source(messy_source, key, strict).series.reason.value_counts().to_dict()
    assert "bone_kernel" not in reasons


def test_tables_hold_no_raw_identifiers(messy_source, key, tmp_path):
    out = tmp_path / "results"
    write_index(messy_source, key, HeaderRules(), series_tsv=out / "series.tsv", files_tsv=out / "files.tsv",
                manifest_tsv=tmp_path / "private" / "manifest.tsv", pseudonym_map_json=tmp_path / "private" / "map.json")
    text = (out / "series.tsv").read_text() + (out / "files.tsv").read_text()
    for raw in ("IST00001", "DOE", "JANE", "19400102", generate_uid(entropy_srcs=["study-1"])):
        assert raw not in text
    assert "DOE_JANE_IST00001" in (tmp_path / "private" / "manifest.tsv").read_text()
    assert (tmp_path / "private" / "manifest.tsv").stat().st_mode & 0o077 == 0


def test_read_header_reasons(tmp_path):
    (tmp_path / "zero").write_bytes(b"")
    with pytest.raises(UnusableFile) as info:
        read_header(tmp_path / "zero")
    assert info.value.reason == "empty_file"
    header = read_header(PYDICOM_TEST_FILES / "CT_small.dcm")
    assert header.plane(45) == "axial" and header.modality == "CT"
    with pytest.raises(UnusableFile) as info:
        read_header(PYDICOM_TEST_FILES / "MR_truncated.dcm")
    assert info.value.reason == "truncated"


def test_a_header_only_file_says_no_pixel_data(tmp_path):
    ds = ct_slice(study_uid="1.2.3", series_uid="1.2.3.4", index=0)
    del ds.PixelData
    ds.save_as(tmp_path / "header_only.dcm", enforce_file_format=True)
    with pytest.raises(UnusableFile) as info:
        read_header(tmp_path / "header_only.dcm")
    assert (info.value.reason, info.value.detail) == ("no_pixel_data", "no pixel data: the file ends after its header")


def _retag(paths, **tags):
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


def test_bone_reconstructions_are_found_by_kernel_and_by_description(tmp_path, key):
    """Philips series: a bone letter kernel; BONE BRAIN with a soft letter kernel and no BONE ImageType;
    BRAIN POST FOSSA (neither BRAIN nor FOSSA holds a bone word) with the same soft kernel."""
    study = generate_uid(entropy_srcs=["bone-study"])
    _retag(write_series(tmp_path / "src" / "D", 26, study_uid=study, prefix="D", kernel="D"), Manufacturer="Philips",
           SeriesDescription="HEAD")
    _retag(write_series(tmp_path / "src" / "BB", 26, study_uid=study, prefix="BB", kernel="C"), Manufacturer="Philips",
           SeriesDescription="BONE BRAIN")
    _retag(write_series(tmp_path / "src" / "BR", 26, study_uid=study, prefix="BR", kernel="C"), Manufacturer="Philips",
           SeriesDescription="BRAIN POST FOSSA")
    series = index_source(tmp_path / "src", key).series
    assert sorted(series.verdict) == ["candidate", "excluded", "excluded"]
    by_kernel = series[series.kernel == "D"]
    assert (by_kernel.reason.item(), by_kernel.kernel_class.item()) == ("bone_kernel", "bone")
    assert by_kernel.detail.item().startswith("ConvolutionKernel D (Philips sharp filters")
    soft = series[series.kernel == "C"].sort_values("verdict")
    assert soft.kernel_class.tolist() == ["soft", "soft"]
    assert soft.reason.tolist() == ["", "bone_kernel"] and soft.detail.tolist()[1] == "SeriesDescription word BONE"


def test_gantry_tilt_stays_axial(tmp_path):
    import math
    tilt = math.radians(20)
    ds = ct_slice(study_uid="1.2.3", series_uid="1.2.3.4", index=0,
                  orientation=(1.0, 0.0, 0.0, 0.0, math.cos(tilt), -math.sin(tilt)))
    ds.save_as(tmp_path / "t.dcm", enforce_file_format=True)
    assert read_header(tmp_path / "t.dcm").plane(45) == "axial"
    assert read_header(tmp_path / "t.dcm").plane(15) == "oblique"


def test_corrupt_header_and_missing_position_are_specific(tmp_path, key):
    good = write_series(tmp_path / "elsewhere", 1)[0]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "corrupt.dcm").write_bytes(good.read_bytes()[:132] + b"\xff" * 400)  # garbage after DICM
    no_position = write_series(tmp_path / "src" / "b", 26, prefix="NP")
    for path in no_position[:1]:
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path)
    index = index_source(tmp_path / "src", key)
    corrupt = index.files[index.files.reason == "corrupt_header"]
    assert len(corrupt) == 1 and index.files[index.files.scan == ""].reason.tolist() == ["corrupt_header"]
    missing = index.series[index.series.n_files == 26]
    assert missing.reason.item() == "missing_geometry" and "ImagePositionPatient" in missing.detail.item()


def test_private_folders_are_0700_including_those_made_before_the_job(messy_source, tmp_path):
    from cfbrain.dicom.private import private_dir
    from cfbrain.dicom.pseudonymise import PseudonymKey
    private = tmp_path / "private"
    (private / "ds").mkdir(parents=True, mode=0o755)  # as Snakemake makes the folders of a job's outputs
    private_dir(private / "ds", root=private)
    key = PseudonymKey.load_or_create(private / "ds" / "pseudonym.key")
    out = tmp_path / "results"
    write_index(messy_source, key, HeaderRules(), series_tsv=out / "series.tsv", files_tsv=out / "files.tsv",
                manifest_tsv=private / "ds" / "manifest.tsv",
                pseudonym_map_json=private / "ds" / "new" / "deeper" / "map.json")
    for folder in (private, private / "ds", private / "ds" / "new", private / "ds" / "new" / "deeper"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    PseudonymKey.load_or_create(tmp_path / "other" / "deep" / "pseudonym.key")
    assert all((tmp_path / p).stat().st_mode & 0o777 == 0o700 for p in ("other", "other/deep"))


def test_source_folder_is_referenced_by_a_keyed_digest(messy_source, key):
    index = index_source(messy_source, key)
    assert index.pseudonym_map["source_dirs"] == {key.source_dir(messy_source): str(messy_source)}
    assert key.source_dir(str(messy_source) + "/") == key.source_dir(messy_source)
