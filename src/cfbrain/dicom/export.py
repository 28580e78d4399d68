"""Export one series: read the source files, de-identify, write them under pseudonymous names."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from cfbrain.dicom.pseudonymise import PseudonymKey, deidentify
from cfbrain.provenance import sha256_path

log = logging.getLogger(__name__)


def read_source(path: Path) -> pydicom.Dataset:
    """The whole dataset of a source file, also of one without preamble and file meta (old archives; the
    index accepts it when it carries SOP Class and Instance UIDs): its export, written with the transfer
    syntax it was read in, is then a standard DICOM file that dcm2niix reads."""
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        return pydicom.dcmread(path, force=True)


def export_series(source_files: list[Path], out_dir: Path, key: PseudonymKey) -> list[Path]:
    """De-identify ``source_files`` (already in slice order) into ``out_dir/0001.dcm``, ``0002.dcm``, ...

    File names carry only the slice rank, never a DICOM string. Returns the written paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, source in enumerate(source_files, start=1):
        ds = read_source(source)
        deidentify(ds, key, patient_id=str(ds.PatientID).strip())
        target = out_dir / f"{rank:04d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        written.append(target)
    log.info("exported %d de-identified instances", len(written))
    return written


def manifest_rows(manifest_tsv: Path, scan: str) -> pd.DataFrame:
    """The manifest rows (file pseudonym, raw path) of ``scan`` in slice order."""
    manifest = pd.read_csv(manifest_tsv, sep="\t", dtype=str)
    rows = manifest[manifest.scan == scan].assign(rank=lambda m: m["rank"].astype(int)).sort_values("rank")
    if rows.empty:
        raise KeyError(f"scan {scan} is not in the source manifest; rerun the index")
    return rows


def export_scan(manifest_tsv: Path, scan: str, out_dir: Path, key: PseudonymKey) -> dict[str, str]:
    """Export ``scan`` from its source files; returns {file pseudonym: sha256 of the source file},
    the link from the export back to the source that provenance records without any path."""
    rows = manifest_rows(manifest_tsv, scan)
    export_series([Path(p) for p in rows.path], out_dir, key)
    return {file_id: sha256_path(Path(path))["sha256"] for file_id, path in zip(rows.file, rows.path)}
