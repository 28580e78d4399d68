"""Provenance records and code fingerprints (ARCHITECTURE.md contracts 2 and 3)."""
from __future__ import annotations

import datetime as dt
import shutil

import pytest

from cfbrain.provenance import code_fingerprint, job_record, sha256_path
from cfbrain.provenance.fingerprint import PACKAGE_ROOT
from cfbrain.provenance.record import record_path


@pytest.fixture
def package_copy(tmp_path):
    copy = tmp_path / "cfbrain"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_fingerprint_follows_only_the_named_code(package_copy):
    dicom, convert = code_fingerprint("dicom", package_root=package_copy), code_fingerprint("convert", package_root=package_copy)
    with open(package_copy / "convert" / "dcm2niix.py", "a") as handle:
        handle.write("\n# edited\n")
    assert code_fingerprint("dicom", package_root=package_copy) == dicom
    assert code_fingerprint("convert", package_root=package_copy) != convert
    assert code_fingerprint("convert.exclusions", package_root=package_copy) == code_fingerprint(
        "convert.exclusions", package_root=PACKAGE_ROOT)


def test_fingerprint_includes_shared_provenance_code(package_copy):
    before = code_fingerprint("dicom", package_root=package_copy)
    with open(package_copy / "provenance" / "record.py", "a") as handle:
        handle.write("\n# edited\n")
    assert code_fingerprint("dicom", package_root=package_copy) != before


def test_fingerprint_rejects_unknown_modules():
    with pytest.raises(ValueError, match="no module"):
        code_fingerprint("no_such_stage")


def test_directory_hash_is_content_and_name_based(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("one")
    first = sha256_path(tmp_path / "d")
    (tmp_path / "d" / ".snakemake_timestamp").write_text("")
    assert sha256_path(tmp_path / "d") == first
    (tmp_path / "d" / "a.txt").write_text("two")
    assert sha256_path(tmp_path / "d")["sha256"] != first["sha256"]
    assert first["n_files"] == 1 and "a.txt" not in str(first)


def test_job_record_fields(tmp_path):
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "out.txt").write_text("y")
    now = dt.datetime.now(dt.timezone.utc)
    record = job_record(rule="convert", wildcards={"dataset": "d", "scan": "s"},
                        inputs={"dicom": tmp_path / "in.txt"}, outputs={"status": [tmp_path / "out.txt"]},
                        params={"code": "abc"}, seed=3, started=now, finished=now)
    assert record["inputs"]["dicom"]["sha256"] == sha256_path(tmp_path / "in.txt")["sha256"]
    assert record["outputs"]["status[0]"]["path"].endswith("out.txt")
    assert record["seed"] == 3 and record["params"] == {"code": "abc"}
    assert {"numpy", "pydicom", "python"} <= set(record["libraries"])
    assert set(record["git"]) == {"commit", "dirty"} and record["device"].startswith(("cpu", "cuda"))
    assert record_path(tmp_path, "convert", {"dataset": "d", "scan": "s"}) == tmp_path / "d/provenance/convert/scan-s.json"
