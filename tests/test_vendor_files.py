"""Index and ingest (index, export with pseudonyms, dcm2niix, exclusion accounting) over every test file pydicom
ships, all at once: real vendor files (JPEG 2000, JPEG-LS, RLE, big endian, implicit VR, DICOMDIR trees, MR, RT,
SR, waveforms, broken files) plus three damaged variants of them. Every file gets a row, every series an
outcome, and nothing crashes."""
from __future__ import annotations

import shutil

import pandas as pd
import pydicom
import pytest
from pydicom.uid import JPEGExtended12Bit, generate_uid

from cfbrain.convert.exclusions import SliceCountRules, ingest_status
from cfbrain.convert.stage import convert_scan
from cfbrain.dicom.export import export_scan
from cfbrain.dicom.index import HeaderRules, write_index
from cfbrain.dicom.pseudonymise import PseudonymKey
from conftest import PYDICOM_TEST_FILES

OUTCOMES = {"kept", "excluded", "needs_review"}


def _no_preamble_ct(path):
    """CT_small as an old archive writes it: no preamble, no file meta, implicit VR (a new series)."""
    ds = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(entropy_srcs=["no-preamble"]), generate_uid()
    del ds.file_meta
    ds.preamble = None
    ds.save_as(path, implicit_vr=True, little_endian=True)


def _cut_off_jpeg2000(path):
    """A JPEG 2000 CT cut off inside its pixel data: the header alone looks complete."""
    blob = (PYDICOM_TEST_FILES / "J2K_pixelrep_mismatch.dcm").read_bytes()
    path.write_bytes(blob[:-50_000])


def _jpeg_extended_ct(path):
    """A CT slice whose pixels are the 12-bit JPEG Extended stream of JPGExtended.dcm, which dcm2niix cannot decode."""
    ds = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    jpeg = pydicom.dcmread(PYDICOM_TEST_FILES / "JPGExtended.dcm")
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(entropy_srcs=["jpeg-extended"]), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = JPEGExtended12Bit
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData"):
        ds[keyword] = jpeg[keyword]
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("vendor")
    source = root / "source"
    shutil.copytree(PYDICOM_TEST_FILES, source / "pydicom")
    (source / "damaged").mkdir()
    _no_preamble_ct(source / "damaged" / "no_preamble.dcm")
    _cut_off_jpeg2000(source / "damaged" / "cut_off_j2k.dcm")
    _jpeg_extended_ct(source / "damaged" / "jpeg_extended.dcm")
    key = PseudonymKey.load_or_create(root / "private" / "pseudonym.key")
    index = write_index(source, key, HeaderRules(), series_tsv=root / "index" / "series.tsv",
                        files_tsv=root / "index" / "files.tsv", manifest_tsv=root / "private" / "manifest.tsv",
                        pseudonym_map_json=root / "private" / "map.json")
    statuses = []
    for scan in index.series.loc[index.series.verdict == "candidate", "scan"]:
        export_scan(root / "private" / "manifest.tsv", scan, root / "dicom" / scan, key)
        convert_scan(scan, root / "dicom" / scan, root / "nifti" / scan, root / f"{scan}.tsv", SliceCountRules())
        statuses.append(pd.read_csv(root / f"{scan}.tsv", sep="\t", keep_default_na=False))
    read = lambda name: pd.read_csv(root / "index" / name, sep="\t", keep_default_na=False)
    table = ingest_status(read("series.tsv"), read("files.tsv"), pd.concat(statuses, ignore_index=True), None)
    files = {p.relative_to(source).as_posix(): key.file(p.relative_to(source).as_posix())
             for p in source.rglob("*") if p.is_file()}
    return {"index": index, "table": table, "files": files, "candidates": len(statuses)}


def test_every_file_has_one_row(ingested):
    rows = ingested["index"].files
    assert len(ingested["files"]) > 150
    assert sorted(rows.file) == sorted(ingested["files"].values())
    assert set(rows.status) == {"used", "unused", "excluded"}
    assert (rows[rows.status != "used"].reason != "").all()


def test_every_series_has_one_outcome_with_a_reason(ingested):
    series = ingested["table"][ingested["table"].unit == "series"]
    assert sorted(series.id) == sorted(ingested["index"].series.scan)
    assert set(series.status) <= OUTCOMES
    assert (series[series.status != "kept"].reason != "").all()
    assert ingested["candidates"] >= 5


def _reason(ingested, name):
    row = ingested["index"].files.set_index("file").loc[ingested["files"][name]]
    return row.status, row.reason, row.detail


def _series_outcome(ingested, name):
    scan = ingested["index"].files.set_index("file").scan[ingested["files"][name]]
    return ingested["table"].set_index("id").loc[scan, ["stage", "status", "reason", "detail"]].tolist()


def _converted(ingested, name):
    """Whether dcm2niix converted the series of source file ``name`` (whatever the later verdict on it)."""
    stage, _, reason, _ = _series_outcome(ingested, name)
    return stage == "convert" and reason != "conversion_failed"


def test_vendor_encodings_are_read_or_named(ingested):
    assert _reason(ingested, "pydicom/MR_small_jpeg_ls_lossless.dcm")[1] == "duplicate_instance"
    assert _reason(ingested, "pydicom/MR_truncated.dcm")[1] == "truncated"
    assert _reason(ingested, "pydicom/dicomdirtests/DICOMDIR")[1] == "dicomdir"
    for jpeg2000_ct in ("pydicom/693_J2KI.dcm", "pydicom/J2K_pixelrep_mismatch.dcm"):
        assert _converted(ingested, jpeg2000_ct)


def test_a_file_without_preamble_is_exported_and_converted(ingested):
    assert _reason(ingested, "damaged/no_preamble.dcm")[0] == "used"
    assert _converted(ingested, "damaged/no_preamble.dcm")


def test_cut_off_compressed_pixel_data_is_a_truncated_file(ingested):
    status, reason, detail = _reason(ingested, "damaged/cut_off_j2k.dcm")
    assert (status, reason) == ("excluded", "truncated") and "compressed pixel data cut off" in detail


def test_pixels_no_decoder_reads_are_an_exclusion_saying_so(ingested):
    stage, status, reason, detail = _series_outcome(ingested, "damaged/jpeg_extended.dcm")
    assert (stage, status, reason) == ("convert", "excluded", "conversion_failed")
    assert "Unable to decode" in detail and "1.2.840.10008.1.2.4.51" in detail
