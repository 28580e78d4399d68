"""Tests of the synthetic IST-3-like CT cohort (cfbrain.synth.ct) on a tiny cohort."""

from __future__ import annotations

import collections
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from cfbrain.synth import anatomy
from cfbrain.synth.ct import (
    EXPECTED_VERDICT, KINDS, MASKED_KINDS, SITES, SynthCTConfig, cohort_config, make_ct_cohort, plan_cohort,
)

TINY = SynthCTConfig(n_patients=4, seed=2, matrix_probs={128: 0.5, 160: 0.5})
"""Seed 2 gives studies without lesions and with left, right and bilateral lesions."""
EVENLY_SPACED_MASKED = {"axial", "full_size", "mixed", "bad_pose", "tilt"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ct_cohort")
    make_ct_cohort(out, TINY)
    return out


def read_tsv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture(scope="module")
def series_rows(cohort) -> list[dict]:
    return read_tsv(cohort / "truth" / "series.tsv")


@pytest.fixture(scope="module")
def labels(cohort) -> dict[str, dict]:
    return {row["study_uid"]: row for row in read_tsv(cohort / "labels.tsv")}


@pytest.fixture(scope="module")
def files(cohort) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """Series UID -> [(path, dataset with decoded pixel array cached)]."""
    by_series = collections.defaultdict(list)
    for path in sorted((cohort / "dicom").rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path)
            assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
            by_series[ds.SeriesInstanceUID].append((path, ds))
    return dict(by_series)


@pytest.fixture(scope="module")
def model() -> anatomy.HeadModel:
    return anatomy.load_head_model(TINY.template_resolution_mm)


# --------------------------------------------------------------------------- helpers


def normal_of(ds) -> np.ndarray:
    orientation = np.array(ds.ImageOrientationPatient, float)
    return np.cross(orientation[:3], orientation[3:])


def is_axial(ds) -> bool:
    return abs(normal_of(ds)[2]) > 0.8


def axial_volume(datasets) -> tuple[list, np.ndarray]:
    """Axial slices sorted by position along the normal, and HU (K, R, C)."""
    slices = sorted((ds for ds in datasets if is_axial(ds)),
                    key=lambda ds: float(np.dot(normal_of(ds), ds.ImagePositionPatient)))
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                   for ds in slices])
    return slices, hu


def pose_of(row: dict) -> anatomy.Pose:
    return anatomy.Pose(
        rot_deg=tuple(float(row[f"rot_{a}_deg"]) for a in "xyz"),
        shift_mm=tuple(float(row[f"t{a}_mm"]) for a in "xyz"),
        scale=float(row["scale"]),
    )


def pixel_points_lps(ds) -> np.ndarray:
    """(R, C, 3) LPS mm of the pixel centres of one slice."""
    orientation = np.array(ds.ImageOrientationPatient, float)
    spacing = float(ds.PixelSpacing[0])
    r, c = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
    return (np.array(ds.ImagePositionPatient, float)
            + c[..., None] * spacing * orientation[:3] + r[..., None] * spacing * orientation[3:])


def to_template_voxels(points_lps: np.ndarray, model, pose) -> np.ndarray:
    """(3, ...) template voxel coordinates of LPS points (..., 3)."""
    matrix = anatomy.voxel_from_patient(model, pose)
    return np.moveaxis(points_lps @ matrix[:3, :3].T + matrix[:3, 3], -1, 0)


def rows_of(series_rows, *kinds) -> list[dict]:
    return [row for row in series_rows if row["kind"] in kinds]


# --------------------------------------------------------------------------- structure


def test_every_kind_occurs_with_its_expected_verdict(series_rows):
    assert {row["kind"] for row in series_rows} == set(KINDS)
    for row in series_rows:
        assert row["expected"] == EXPECTED_VERDICT[row["kind"]]
    assert any(row["rows"] == "512" for row in rows_of(series_rows, "full_size"))


def test_series_table_matches_files_on_disk(series_rows, files, labels):
    assert {row["series_uid"] for row in series_rows} == set(files)
    for row in series_rows:
        datasets = [ds for _, ds in files[row["series_uid"]]]
        assert len(datasets) == int(row["n_files"])
        assert {ds.StudyInstanceUID for ds in datasets} == {row["study_uid"]}
        assert {ds.PatientID for ds in datasets} == {row["patient_id"]}
        assert {(ds.Rows, ds.Columns) for ds in datasets} == {(int(row["rows"]), int(row["cols"]))}
        assert row["study_uid"] in labels


def test_each_study_has_one_brain_candidate_or_a_split_pair(series_rows, labels):
    kinds_by_study = collections.defaultdict(list)
    for row in series_rows:
        kinds_by_study[row["study_uid"]].append(row["kind"])
    assert set(kinds_by_study) == set(labels)
    for kinds in kinds_by_study.values():
        candidates = [k for k in kinds if k in MASKED_KINDS]
        split = tuple(sorted(k for k in kinds if k.startswith("split")))
        assert (len(candidates), split) in {(1, ()), (0, ("split_base", "split_vault"))}


def test_labels_are_consistent(labels):
    timepoints = collections.Counter(row["timepoint"] for row in labels.values())
    assert timepoints["baseline"] == TINY.n_patients
    for row in labels.values():
        assert 40 <= int(row["age"]) <= 95
        if row["lesion"] == "1":
            assert row["side"] in {"left", "right", "both"}
            assert set(row["territory"].split(",")) <= {"MCA", "ACA", "PCA"}
            assert 1 <= int(row["size"]) <= 4 and int(row["n_lesions"]) >= 1
        else:
            no_lesion = (row["side"], row["territory"], row["size"], row["n_lesions"])
            assert no_lesion == ("none", "", "0", "0")


def test_identifying_data_is_present_for_the_pseudonymiser(files):
    for path, ds in (entries[0] for entries in files.values()):
        assert str(ds.PatientName).isupper() and ds.PatientID.startswith("IST")
        assert ds.PatientID in str(path) or ds.PatientName.family_name in str(path)
        assert ds.InstitutionName and ds.PatientBirthDate and ds.AccessionNumber
        block = ds.private_block(0x0019, "PACS EXPORT 2.1")
        assert block[0x10].value == str(ds.PatientName)


def test_some_folder_holds_two_series(files):
    series_per_folder = collections.defaultdict(set)
    for uid, entries in files.items():
        for path, _ in entries:
            series_per_folder[path.parent].add(uid)
    assert any(len(uids) == 2 for uids in series_per_folder.values())


def test_file_names_are_not_sorted_like_slice_positions(files, series_rows):
    row = rows_of(series_rows, "axial", "full_size", "tilt")[0]
    entries = files[row["series_uid"]]
    by_name = [float(ds.ImagePositionPatient[2])
               for _, ds in sorted(entries, key=lambda entry: entry[0].name)]
    assert by_name != sorted(by_name) and by_name != sorted(by_name, reverse=True)


# --------------------------------------------------------------------------- geometry


def test_tilt_series_is_tilted_consistently(series_rows, files):
    for row in rows_of(series_rows, "tilt"):
        slices, _ = axial_volume(ds for _, ds in files[row["series_uid"]])
        tilt = float(slices[0].GantryDetectorTilt)
        assert 10 <= tilt <= 25
        column = np.array(slices[0].ImageOrientationPatient[3:], float)
        angle = np.radians(tilt)
        np.testing.assert_allclose(column, [0, np.cos(angle), -np.sin(angle)], atol=1e-5)
        steps = np.diff([np.array(ds.ImagePositionPatient, float) for ds in slices], axis=0)
        np.testing.assert_allclose(steps[:, :2], 0, atol=1e-3)
        thickness = float(slices[0].SliceThickness)
        np.testing.assert_allclose(steps @ normal_of(slices[0]), thickness, atol=1e-3)


def test_mixed_series_has_one_or_two_sagittal_slices(series_rows, files):
    for row in rows_of(series_rows, "mixed"):
        datasets = [ds for _, ds in files[row["series_uid"]]]
        other = [ds for ds in datasets if not is_axial(ds)]
        assert 1 <= len(other) <= 2
        for ds in other:
            np.testing.assert_allclose(ds.ImageOrientationPatient, [0, 1, 0, 0, 0, -1])


def test_uneven_series_has_two_slice_spacings(series_rows, files):
    for row in rows_of(series_rows, "uneven"):
        slices, _ = axial_volume(ds for _, ds in files[row["series_uid"]])
        gaps = np.round(np.diff([float(ds.ImagePositionPatient[2]) for ds in slices]), 3)
        assert set(gaps) == {2.5, 3.75, 5.0}


def test_split_series_are_short(series_rows):
    for row in rows_of(series_rows, "split_base", "split_vault"):
        assert int(row["n_files"]) < 25


def test_localisers_reformats_and_bone_look_like_their_kind(series_rows, files):
    bone_kernels = {k for site in SITES for k in site.bone_kernels}
    for row in series_rows:
        datasets = [ds for _, ds in files[row["series_uid"]]]
        image_types = {tuple(ds.get("ImageType") or ()) for ds in datasets}
        kind = row["kind"]
        if kind == "localizer":
            assert len(datasets) <= 2 and image_types == {("ORIGINAL", "PRIMARY", "LOCALIZER")}
        elif kind == "localizer_blank":
            assert len(datasets) <= 2 and image_types == {()}
            assert all(is_axial(ds) for ds in datasets)
        elif kind in {"sagittal", "coronal"}:
            expected = [0, 1, 0, 0, 0, -1] if kind == "sagittal" else [1, 0, 0, 0, 0, -1]
            for ds in datasets:
                np.testing.assert_allclose(ds.ImageOrientationPatient, expected)
        elif kind == "bone":
            ds = datasets[0]
            assert ds.ConvolutionKernel in bone_kernels or "BONE" in ds.ImageType
        elif kind in MASKED_KINDS:
            assert image_types == {("ORIGINAL", "PRIMARY", "AXIAL")} or kind == "mixed"


def test_padding_outside_the_reconstruction_circle(series_rows, files):
    for row in rows_of(series_rows, *MASKED_KINDS):
        ds = files[row["series_uid"]][0][1]
        corner = ds.pixel_array[0, 0]
        if "PixelPaddingValue" in ds:
            assert corner == ds.PixelPaddingValue
        else:
            assert corner * float(ds.RescaleSlope) + float(ds.RescaleIntercept) == -1024


# --------------------------------------------------------------------------- image content


def test_tissue_hu_in_the_middle_axial_slice(series_rows, files, model):
    row = rows_of(series_rows, "axial")[0]
    slices, hu = axial_volume(ds for _, ds in files[row["series_uid"]])
    middle = len(slices) // 2
    voxels = to_template_voxels(pixel_points_lps(slices[middle]), model, pose_of(row))

    def sample(volume, order=1):
        return ndimage.map_coordinates(np.asarray(volume, np.float32), voxels, order=order)

    image = hu[middle]
    gm, wm = sample(model.gm), sample(model.wm)
    brain = sample(model.brain) > 0.99
    skull = sample(ndimage.binary_erosion(model.labels == anatomy.TISSUE_SKULL), order=0) > 0
    air = sample(ndimage.binary_erosion(model.labels == anatomy.TISSUE_AIR, iterations=5), 0) > 0
    air &= image > -1500  # inside the reconstruction circle
    regions = {
        "WM": (wm > 0.95, 17, 33),
        "GM": (gm > 0.85, 28, 46),
        "CSF": (brain & (gm + wm < 0.1), -8, 18),
        "bone": (skull, 600, 1900),
        "air": (air, -1030, -960),
    }
    for name, (mask, low, high) in regions.items():
        assert mask.sum() > 20, name
        assert low <= np.median(image[mask]) <= high, (name, np.median(image[mask]))


def masked_series(series_rows):
    return rows_of(series_rows, *MASKED_KINDS)


def test_truth_masks_exist_on_the_axial_grid(cohort, series_rows, files):
    for row in masked_series(series_rows):
        slices, _ = axial_volume(ds for _, ds in files[row["series_uid"]])
        for suffix in ("", "_brain"):
            image = nib.load(cohort / "truth" / "masks" / f"{row['series_uid']}{suffix}.nii.gz")
            assert image.shape == (slices[0].Columns, slices[0].Rows, len(slices))
            assert image.get_data_dtype() == np.uint8
            first = np.array(slices[0].ImagePositionPatient, float) * [-1, -1, 1]
            np.testing.assert_allclose(image.affine[:3, 3], first, atol=1e-3)
            if row["kind"] != "uneven":
                last = np.array(slices[-1].ImagePositionPatient, float) * [-1, -1, 1]
                np.testing.assert_allclose(image.affine @ [0, 0, len(slices) - 1, 1], [*last, 1],
                                           atol=1e-3)
        slices_table = read_tsv(cohort / "truth" / "masks" / f"{row['series_uid']}_slices.tsv")
        assert [float(r["ipp_z"]) for r in slices_table] == pytest.approx(
            [float(ds.ImagePositionPatient[2]) for ds in slices], abs=1e-3)


def load_mask(cohort, uid, suffix="") -> np.ndarray:
    """Mask as (K, R, C) bool, matching axial_volume order."""
    data = np.asarray(nib.load(cohort / "truth" / "masks" / f"{uid}{suffix}.nii.gz").dataobj)
    return data.transpose(2, 1, 0) > 0


def test_lesion_mask_non_empty_exactly_for_lesion_studies_and_inside_brain(
    cohort, series_rows, labels
):
    for row in masked_series(series_rows):
        lesion = load_mask(cohort, row["series_uid"])
        brain = load_mask(cohort, row["series_uid"], "_brain")
        assert lesion.any() == (labels[row["study_uid"]]["lesion"] == "1"), row["kind"]
        assert not (lesion & ~brain).any()
        assert brain.sum() > 1000


def one_sided_lesion_series(series_rows, labels) -> list[tuple[dict, int]]:
    """Evenly spaced brain series of left/right lesion studies, with +1 right / -1 left."""
    return [
        (row, 1 if labels[row["study_uid"]]["side"] == "right" else -1)
        for row in rows_of(series_rows, *EVENLY_SPACED_MASKED)
        if labels[row["study_uid"]]["side"] in ("left", "right")
    ]


def lesion_voxels(cohort, row) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Lesion voxel indices (k, r, c), their LPS mm (N, 3) and the mask's RAS affine."""
    image = nib.load(cohort / "truth" / "masks" / f"{row['series_uid']}.nii.gz")
    k, r, c = np.nonzero(load_mask(cohort, row["series_uid"]))
    ras = np.c_[c, r, k, np.ones_like(k)] @ image.affine.T
    return (k, r, c), ras[:, :3] * [-1, -1, 1], image.affine


def template_mm_of(lps: np.ndarray, pose: anatomy.Pose) -> np.ndarray:
    """MNI RAS mm (N, 3) of patient LPS points (N, 3)."""
    linear = pose.patient_from_template()[:3, :3]
    return (lps - pose.shift_mm) @ np.linalg.inv(linear).T


def test_lesions_lie_in_the_planned_hemisphere(cohort, series_rows, labels):
    cases = one_sided_lesion_series(series_rows, labels)
    assert {sign for _, sign in cases} == {-1, 1}
    for row, sign in cases:
        _, lps, _ = lesion_voxels(cohort, row)
        pose = pose_of(row)
        assert sign * template_mm_of(lps, pose)[:, 0].mean() > 5  # MNI RAS: right is x > 0
        if row["kind"] != "bad_pose":
            patient_left = pose.patient_from_template()[:3, :3] @ [-1.0, 0.0, 0.0]
            assert patient_left[0] > 0.9  # DICOM LPS: +x is the patient's left
            assert -sign * ((lps - pose.shift_mm) @ patient_left).mean() > 5


def test_lesions_are_darker_than_the_mirror_region(cohort, series_rows, labels, files):
    for row, _ in one_sided_lesion_series(series_rows, labels):
        _, hu = axial_volume(ds for _, ds in files[row["series_uid"]])
        (k, r, c), lps, affine = lesion_voxels(cohort, row)
        pose = pose_of(row)
        mirrored_mm = template_mm_of(lps, pose) * [-1, 1, 1]
        mirrored_lps = mirrored_mm @ pose.patient_from_template()[:3, :3].T + pose.shift_mm
        ras = np.c_[mirrored_lps * [-1, -1, 1], np.ones(len(k))]
        voxel = np.rint(ras @ np.linalg.inv(affine).T)[:, :3].astype(int)
        column, row_index, slice_index = voxel.T
        inside = ((slice_index >= 0) & (slice_index < hu.shape[0]) & (row_index >= 0)
                  & (row_index < hu.shape[1]) & (column >= 0) & (column < hu.shape[2]))
        mirror_hu = hu[slice_index[inside], row_index[inside], column[inside]]
        assert inside.mean() > 0.9
        assert hu[k, r, c].mean() < mirror_hu.mean() - 3


# --------------------------------------------------------------------------- reproducibility


def test_rerun_is_byte_identical(tmp_path):
    config = SynthCTConfig(n_patients=2, seed=3, matrix_probs={128: 1.0})
    first, second = tmp_path / "first", tmp_path / "second"
    make_ct_cohort(first, config)
    make_ct_cohort(second, config)
    first_files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    second_files = sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert first_files == second_files and len(first_files) > 20
    for relative in first_files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


def test_refuses_to_overwrite_an_existing_export(cohort):
    with pytest.raises(FileExistsError):
        make_ct_cohort(cohort, TINY)


# --------------------------------------------------------------------------- dcm2niix


def find_dcm2niix() -> str | None:
    venv_binary = Path(sys.executable).with_name("dcm2niix")
    return str(venv_binary) if venv_binary.exists() else shutil.which("dcm2niix")


@pytest.mark.skipif(find_dcm2niix() is None, reason="dcm2niix not installed")
def test_dcm2niix_converts_axial_and_corrects_tilt(series_rows, files, tmp_path):
    for kind in ("axial", "tilt"):
        row = rows_of(series_rows, kind)[0]
        source, target = tmp_path / f"{kind}_dicom", tmp_path / f"{kind}_nifti"
        source.mkdir()
        target.mkdir()
        for path, _ in files[row["series_uid"]]:
            shutil.copy(path, source / path.name)
        command = [find_dcm2niix(), "-z", "y", "-f", "series", "-o", str(target), str(source)]
        subprocess.run(command, check=True, capture_output=True)
        image = nib.load(target / "series.nii.gz")
        assert image.shape == (int(row["cols"]), int(row["rows"]), int(row["n_files"]))
        tilt_corrected = list(target.glob("series_Tilt*.nii.gz"))
        assert bool(tilt_corrected) == (kind == "tilt")


def test_lesion_contrast_range_is_configurable_and_split_by_timepoint():
    """Baseline lesions darken by the lower half of the configured range, follow-up lesions by the upper."""
    for low, high in ((6.0, 15.0), (20.0, 35.0)):
        studies = [s for s in plan_cohort(SynthCTConfig(n_patients=30, seed=3, lesion_contrast_hu=(low, high)))
                   if s.lesion is not None]
        darkening = {tp: [-s.lesion.contrast_hu for s in studies if s.timepoint == tp] for tp in ("baseline", "followup")}
        middle = (low + high) / 2
        assert darkening["baseline"] and darkening["followup"]
        assert all(low <= d <= middle for d in darkening["baseline"])
        assert all(middle <= d <= high for d in darkening["followup"])
    assert cohort_config(30, 3, lesion_contrast_hu=[20, 35]).lesion_contrast_hu == (20, 35)
    assert cohort_config(30, 3, lesion_contrast_hu=None).lesion_contrast_hu == SynthCTConfig().lesion_contrast_hu
