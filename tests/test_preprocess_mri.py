"""MRI datasets of thesis 000: ATLAS v2.0 and BraTS 2023 layouts, slices, size groups."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cfbrain.preprocess.errors import UnusableScan
from cfbrain.preprocess.mri import (ATLAS_SPEC, BRATS_SPEC, centre_crop_or_pad, find_atlas_pairs, find_brats_pairs,
                                    lesion_size_groups, load_mri_slices, mri_slice, process_mri_dataset,
                                    save_mri_slices)

ATLAS_SPACE = "space-MNI152NLin2009aSym"


def head(shape, value=100.0) -> np.ndarray:
    """Ellipsoid 'head' of ``value`` (plus a gentle gradient) on a zero background, (x, y, z) storage.

    Centred in-plane and at 70 % of the height, so the thesis slices (90, 95 of 100) cut through it.
    """
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = ((shape[0] - 1) / 2, (shape[1] - 1) / 2, 0.7 * shape[2])
    inside = sum(((a - c) / (0.45 * n)) ** 2 for a, c, n in zip((x, y, z), centre, shape)) <= 1
    return np.where(inside, value + 0.2 * y, 0.0).astype(np.float32)


def save(path: Path, data: np.ndarray, affine=np.eye(4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.fixture
def atlas_root(tmp_path) -> Path:
    root = tmp_path / "ATLAS_2" / "Training"
    shape = (30, 36, 100)
    t1 = head(shape)
    t1[12, 18, 95] = 5000.0                      # one very bright voxel: clamped at the percentile
    lesion = np.zeros(shape, dtype=np.uint8)
    lesion[20:26, 14:22, 93:98] = 1              # x > centre = patient right (RAS storage)

    def subject(cohort, sub, image=True, mask=True, mask_name=None, mask_data=lesion):
        anat = root / cohort / f"sub-{sub}" / "ses-1" / "anat"
        stem = f"sub-{sub}_ses-1_{ATLAS_SPACE}"
        if image:
            save(anat / f"{stem}_T1w.nii.gz", t1)
        if mask:
            save(anat / (mask_name or f"{stem}_label-L_desc-T1lesion_mask.nii.gz"), mask_data)
        return anat

    subject("R001", "r001s001")
    subject("R001", "r001s002", mask=False)
    subject("R002", "r002s003", mask_data=np.zeros(shape, np.uint8))
    subject("R002", "r002s004", mask_name=f"sub-r002s999_ses-1_{ATLAS_SPACE}_label-L_desc-T1lesion_mask.nii.gz")
    subject("R002", "r002s005", mask_data=np.zeros((30, 36, 90), np.uint8))
    subject("R002", "r002s006", image=False)
    corrupt = subject("R003", "r003s007", image=False)
    (corrupt / f"sub-r003s007_ses-1_{ATLAS_SPACE}_T1w.nii.gz").write_bytes(b"not a gzip file")
    return tmp_path


@pytest.fixture
def brats_root(tmp_path) -> Path:
    root = tmp_path / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
    shape = (48, 48, 100)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    seg = np.zeros(shape, dtype=np.uint8)
    seg[30:34, 20:28, 88:93] = 2                 # oedema
    seg[31:33, 22:26, 90] = 1                    # necrotic core
    seg[34:36, 20:28, 90] = 3                    # enhancing tumour
    for case, files in {"BraTS-GLI-00000-000": ("t1c", "t1n", "seg"),
                        "BraTS-GLI-00001-000": ("t1c", "t1n"),
                        "BraTS-GLI-00002-000": ("seg",)}.items():
        for kind in files:
            save(root / case / f"{case}-{kind}.nii.gz", seg if kind == "seg" else head(shape), lps)
    save(root / "BraTS-GLI-00002-000" / "BraTS-GLI-00003-000-t1c.nii.gz", head(shape), lps)
    return tmp_path


def test_atlas_pairs_report_every_problem(atlas_root):
    pairs = find_atlas_pairs(atlas_root).set_index("scan")
    assert pairs.loc["sub-r001s001_ses-1", "status"] == "kept"
    assert pairs.loc["sub-r001s001_ses-1", "mask"].endswith("_label-L_desc-T1lesion_mask.nii.gz")
    assert pairs.loc["sub-r001s002_ses-1", "reason"] == "mask_missing"
    assert pairs.loc["sub-r002s004_ses-1", "reason"] == "name_mismatch"
    assert pairs.loc["sub-r002s006_ses-1", "reason"] == "image_missing"
    assert pairs.loc["sub-r002s003_ses-1", "subject"] == "sub-r002s003"
    assert len(pairs) == 7 and set(pairs["status"]) == {"kept", "excluded"}


def test_brats_pairs_report_every_problem(brats_root):
    pairs = find_brats_pairs(brats_root).set_index("scan")
    assert pairs.loc["BraTS-GLI-00000-000", "status"] == "kept"
    assert pairs.loc["BraTS-GLI-00000-000", "image"].endswith("BraTS-GLI-00000-000-t1c.nii.gz")
    assert pairs.loc["BraTS-GLI-00000-000", "subject"] == "BraTS-GLI-00000"
    assert pairs.loc["BraTS-GLI-00001-000", "reason"] == "mask_missing"
    assert pairs.loc["BraTS-GLI-00002-000", "reason"] == "name_mismatch"
    assert "BraTS-GLI-00003-000-t1c.nii.gz" in pairs.loc["BraTS-GLI-00002-000", "detail"]


def test_atlas_slice_is_normalised_square_and_radiological(atlas_root):
    pairs = find_atlas_pairs(atlas_root).set_index("scan")
    row = pairs.loc["sub-r001s001_ses-1"]
    result = mri_slice(row["image"], row["mask"], ATLAS_SPEC)
    assert result.image.shape == (128, 128) and result.image.dtype == np.float32
    assert 0.0 <= result.image.min() and result.image.max() == pytest.approx(1.0, abs=0.01)
    assert result.lesion_mask.dtype == np.uint8 and set(np.unique(result.lesion_mask)) == {0, 1}
    lesion_cols = np.flatnonzero(result.lesion_mask.any(axis=0))
    assert lesion_cols.max() < 64                # patient right is on the image's left
    # padded to square: the 30 columns of the 36 x 30 plane fill 30/36 of the width
    brain_cols = np.flatnonzero(result.image.any(axis=0))
    assert brain_cols.min() > 0 and brain_cols.max() < 127
    assert result.brain_source == "nonzero" and np.all(result.lesion_mask <= result.brain_mask)


def test_brats_slice_fuses_subregions_and_keeps_orientation(brats_root):
    pairs = find_brats_pairs(brats_root).set_index("scan")
    row = pairs.loc["BraTS-GLI-00000-000"]
    spec = replace(BRATS_SPEC, crop_hw=(40, 40))
    result = mri_slice(row["image"], row["mask"], spec)
    assert result.image.shape == (128, 128)
    assert result.lesion_mask.sum() > 0 and set(np.unique(result.lesion_mask)) == {0, 1}
    # storage x index 30..35 with an LPS affine: x = -i, i.e. the patient's left -> high columns
    assert np.flatnonzero(result.lesion_mask.any(axis=0)).min() > 64
    whole = mri_slice(row["image"], row["mask"], replace(spec, slice_index=88))
    assert 0 < whole.lesion_mask.sum() < result.lesion_mask.sum()   # only oedema on slice 88


def test_thesis_slice_specs_and_centre_crop():
    atlas, brats = ATLAS_SPEC, BRATS_SPEC
    assert (atlas.slice_index, atlas.percentile, atlas.pad_square, atlas.size) == (95, 98.0, True, 128)
    assert (brats.slice_index, brats.percentile, brats.crop_hw, brats.size) == (90, 99.5, (200, 200), 128)
    plane = np.arange(240 * 240, dtype=np.float32).reshape(240, 240)
    cropped = centre_crop_or_pad(plane, (200, 200))
    assert cropped.shape == (200, 200) and cropped[0, 0] == plane[20, 20]
    padded = centre_crop_or_pad(np.ones((3, 5)), (5, 5))
    assert padded.shape == (5, 5) and padded[0].sum() == 0 and padded[1:4].min() == 1


def test_problems_in_files_become_exclusion_rows(atlas_root):
    pairs = find_atlas_pairs(atlas_root)
    slices, table = process_mri_dataset(pairs, ATLAS_SPEC)
    assert len(table) == len(pairs)
    status = table.set_index("scan")
    assert status.loc["sub-r002s005_ses-1", "reason"] == "grid_mismatch"
    assert status.loc["sub-r003s007_ses-1", "reason"] == "unreadable"
    assert status.loc["sub-r001s002_ses-1", "stage"] == "find_files"
    kept = status[status["status"] == "kept"]
    assert sorted(kept.index) == ["sub-r001s001_ses-1", "sub-r002s003_ses-1"]
    assert kept.loc["sub-r002s003_ses-1", "size_group"] == "healthy"
    assert list(slices.scan) == ["sub-r001s001_ses-1", "sub-r002s003_ses-1"]
    assert slices.image.shape == (2, 128, 128) and slices.lesion_mask.dtype == np.uint8
    assert kept.loc["sub-r001s001_ses-1", "lesion_area"] == slices.lesion_mask[0].sum()


def test_slice_out_of_range_is_a_data_problem(tmp_path):
    image = save(tmp_path / "t1.nii.gz", head((20, 20, 40)))
    mask = save(tmp_path / "mask.nii.gz", np.zeros((20, 20, 40), np.uint8))
    with pytest.raises(UnusableScan) as problem:
        mri_slice(image, mask, ATLAS_SPEC)
    assert problem.value.reason == "slice_out_of_range"


def test_size_groups_follow_the_lesion_area_quartiles():
    groups, thresholds = lesion_size_groups(np.array([0, 10, 20, 30, 40, 50]))
    assert thresholds == (20.0, 40.0)
    assert groups.tolist() == ["healthy", "small", "medium", "medium", "medium", "large"]
    reused, _ = lesion_size_groups(np.array([5, 25, 45]), thresholds)
    assert reused.tolist() == ["small", "medium", "large"]


def test_slice_set_round_trip(tmp_path, atlas_root):
    slices, _ = process_mri_dataset(find_atlas_pairs(atlas_root), ATLAS_SPEC)
    save_mri_slices(tmp_path / "atlas.npz", slices)
    loaded = load_mri_slices(tmp_path / "atlas.npz")
    assert loaded.dataset == "atlas" and list(loaded.scan) == list(slices.scan)
    np.testing.assert_array_equal(loaded.image, slices.image)
    np.testing.assert_array_equal(loaded.brain_mask, slices.brain_mask)
