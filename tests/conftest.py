"""Shared fixtures: small hand-made CT series for the ingest unit tests, and the tiny workflow run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]
PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def head_hu(n_rows: int, n_frames: int, noise_hu: float, seed: int) -> np.ndarray:
    """(n_frames, n_rows, n_rows) HU of a head phantom: 35 HU brain inside a 1000 HU skull ring in air, plus
    white noise of ``noise_hu`` HU (soft-tissue kernels leave a few HU; bone kernels 15-30 HU or more)."""
    radius = np.hypot(*np.mgrid[:n_rows, :n_rows] - (n_rows - 1) / 2) / (n_rows / 2)
    head = np.select([radius < 0.75, radius < 0.9], [35.0, 1000.0], -1000.0)
    return head + np.random.default_rng(seed).normal(0, noise_hu, (n_frames, n_rows, n_rows))


def stored(hu: np.ndarray) -> bytes:
    """HU -> the int16 pixel data of the hand-made files (RescaleIntercept -1024, slope 1)."""
    return (np.round(hu) + 1024).astype(np.int16).tobytes()


def ct_slice(*, patient_id="IST00001", name="DOE^JANE", study_uid, series_uid, index, n_rows=16,
             orientation=AXIAL, image_type=("ORIGINAL", "PRIMARY", "AXIAL"), kernel="H30s",
             slice_gap=5.0, noise_hu=3.0) -> Dataset:
    """A tiny but valid CT Image Storage instance with identifying tags (for de-identification tests);
    its pixels are a head phantom with ``noise_hu`` of noise (:func:`head_hu`)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    sop_uid = generate_uid(entropy_srcs=[series_uid, str(index)])
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientAge, ds.PatientSex = name, patient_id, "19400102", "072Y", "F"
    ds.InstitutionName, ds.ReferringPhysicianName, ds.AccessionNumber = "ST ELSEWHERE HOSPITAL", "HOUSE^GREGORY", "ACC998877"
    ds.StudyDate, ds.StudyTime = "20120301", "101500"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, generate_uid(entropy_srcs=[study_uid, "frame"])
    ds.SeriesNumber, ds.InstanceNumber = 2, index + 1
    if image_type is not None:
        ds.ImageType = list(image_type)
    ds.ConvolutionKernel = kernel
    ds.ImageOrientationPatient = list(orientation)
    normal = np.cross(orientation[:3], orientation[3:])
    ds.ImagePositionPatient = [float(v) for v in (-8.0, -8.0, 0.0) + normal * slice_gap * index]
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], slice_gap
    ds.Rows = ds.Columns = n_rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = stored(head_hu(n_rows, 1, noise_hu, seed=index))
    ds.add_new(0x00190010, "LO", "ACME PRIVATE")
    ds.add_new(0x00191001, "LO", name)
    return ds


def write_series(folder: Path, n: int, *, study_uid=None, series_uid=None, prefix="IM", **kwargs) -> list[Path]:
    """Write ``n`` slices of one series into ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid(entropy_srcs=[str(folder), "study"])
    series_uid = series_uid or generate_uid(entropy_srcs=[str(folder), prefix, "series"])
    paths = []
    for i in range(n):
        path = folder / f"{prefix}{i:04d}.dcm"
        ct_slice(study_uid=study_uid, series_uid=series_uid, index=i, **kwargs).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def key(tmp_path):
    from cfbrain.dicom.pseudonymise import PseudonymKey
    return PseudonymKey.load_or_create(tmp_path / "private" / "key")


def enhanced_ct(path: Path, n_frames: int = 26, n_rows: int = 16) -> Path:
    """A minimal Enhanced CT Image Storage object (one file, ``n_frames`` axial frames)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID, ds.PatientAge = "CT", "ROE^RICHARD", "IST00077", "081Y"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(path), "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(path), "series"])
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[str(path), "frame"])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames, ds.Rows, ds.Columns = n_frames, n_rows, n_rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    orientation, measures, transform = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = list(AXIAL)
    measures.PixelSpacing, measures.SliceThickness = [1.0, 1.0], 5.0
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = -1024, 1, "HU"
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orientation], [measures]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for i in range(n_frames):
        item, position, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [-8.0, -8.0, 5.0 * i]
        content.DimensionIndexValues = [1, i + 1]
        item.PlanePositionSequence, item.FrameContentSequence = [position], [content]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = stored(head_hu(n_rows, n_frames, 3.0, seed=0))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def snakemake(workdir: Path, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """This repository's workflow on config/tiny.yaml in ``workdir``, with this venv's Python and tools."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(env_extra or {})}
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(REPO / "config" / "tiny.yaml"), "--cores", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The whole tiny workflow, run once per session (tests/test_workflow.py, tests/test_report.py).
    Tests that share it must leave its files as they are (dry runs, reports written elsewhere)."""
    workdir = tmp_path_factory.mktemp("tiny")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (small networks: thread start-up costs more than it saves)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
