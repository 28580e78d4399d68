"""Every-slice loaders of thesis 003 chapter 6: BraTS 2021 training layout and WMH challenge layout."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cfbrain.preprocess.mri import (BRATS2021_VOLUME_SPEC, VOLUME_CONTRASTS, WMH_FILL, WMH_VOLUME_SPEC,
                                    find_brats2021_cases, find_wmh_cases, load_volume_slices, process_volume_dataset,
                                    reconcile_contrasts, save_volume_slices)


def save(path: Path, data: np.ndarray) -> None:
    """(X, Y, Z) RAS storage with an identity affine: z is the slice axis, counted from inferior."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), path)


def brats_case(root: Path, name: str, *, slices: int = 60, tumour_z: int = 30, skip: str | None = None) -> None:
    brain = np.zeros((240, 240, slices), np.float32)
    brain[60:180, 50:190, 27:slices - 27] = 1.0  # empty planes next to the 25 dropped at each end
    seg = np.zeros(brain.shape, np.uint8)
    seg[100:120, 100:110, tumour_z] = 2
    seg[105:110, 100:105, tumour_z] = 4
    for contrast, value in zip(("flair", "t1", "t1ce", "t2"), (50.0, 80.0, 90.0, 120.0)):
        if contrast != skip:
            save(root / name / f"{name}_{contrast}.nii.gz", brain * value)
    save(root / name / f"{name}_seg.nii.gz", seg)


@pytest.fixture
def brats_root(tmp_path) -> Path:
    root = tmp_path / "BraTS2021_Training_Data"
    brats_case(root, "BraTS2021_00000")
    brats_case(root, "BraTS2021_00002", tumour_z=40)
    brats_case(root, "BraTS2021_00003", skip="t1ce")
    return root


def test_brats2021_drops_the_ends_and_empty_slices_and_pads_to_256(brats_root):
    cases = find_brats2021_cases(brats_root)
    assert cases["scan"].tolist() == ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00003"]
    assert cases["status"].tolist() == ["kept", "kept", "excluded"]
    assert cases.loc[2, "reason"] == "image_missing" and "t1gd" in cases.loc[2, "detail"]
    slices, status = process_volume_dataset(cases, BRATS2021_VOLUME_SPEC)
    assert status["n_slices"].tolist() == [6, 6, 0]  # 60 - 2 x 25 = 10 kept planes, 27..32 have brain
    assert slices.image.shape == (12, 4, 256, 256) and slices.contrasts == VOLUME_CONTRASTS
    np.testing.assert_array_equal(slices.slice_index[:6], np.arange(27, 33))
    # 240 -> 256 by zero padding (8 pixels each side), no resizing: the brain box keeps its size
    assert slices.brain_mask[0].sum() == 120 * 140
    assert slices.image[0, :, :8].max() == 0 and slices.image[0, :, :, -8:].max() == 0
    np.testing.assert_allclose(slices.image[0][:, slices.brain_mask[0] > 0], 1.0)
    # the tumour (labels 2 and 4) is one mask on exactly its slice
    lesioned = [(str(scan), int(index)) for scan, index in zip(slices.scan[slices.lesion], slices.slice_index[slices.lesion])]
    assert lesioned == [("BraTS2021_00000", 30)]  # case 00002's tumour plane (40) has no brain: dropped
    assert slices.lesion_mask[slices.lesion].sum() == 20 * 10
    assert not slices.ignore_mask.any()


def test_brats2021_tumour_outside_the_kept_slices_gives_healthy_slices_only(brats_root):
    cases = find_brats2021_cases(brats_root)
    slices, _ = process_volume_dataset(cases[cases.scan == "BraTS2021_00002"], BRATS2021_VOLUME_SPEC)
    assert not slices.lesion.any()  # slice 40 has no brain: dropped as empty
    slices, _ = process_volume_dataset(cases[cases.scan == "BraTS2021_00000"], BRATS2021_VOLUME_SPEC)
    assert slices.lesion.tolist() == [False, False, False, True, False, False]


@pytest.fixture
def wmh_root(tmp_path) -> Path:
    root = tmp_path / "WMH"
    for folder in ("Utrecht/0", "Amsterdam/GE3T/100"):
        subject = root / folder
        head = np.zeros((200, 240, 4), np.float32)
        head[50:150, 40:200] = 100.0
        labels = np.zeros(head.shape, np.uint8)
        labels[90:100, 110:120, 1] = 1
        labels[120:125, 110:115, 1] = 2
        save(subject / "pre" / "FLAIR.nii.gz", head)
        save(subject / "pre" / "T1.nii.gz", head * 2)
        save(subject / "wmh.nii.gz", labels)
    return root


def test_wmh_layout_crops_resizes_and_ignores_other_pathology(wmh_root, tmp_path):
    cases = find_wmh_cases(wmh_root)
    assert cases["scan"].tolist() == ["Amsterdam_GE3T_100", "Utrecht_0"] and (cases.status == "kept").all()
    slices, status = process_volume_dataset(cases, WMH_VOLUME_SPEC)
    assert slices.image.shape == (8, 2, 256, 256) and slices.contrasts == ("flair", "t1")
    # 200 x 240 plane (display rows = y) -> centre crop to 200 x 200 -> 256 x 256 (x 1.28)
    assert slices.lesion.tolist() == [False, True, False, False] * 2
    area = slices.lesion_mask[1].sum()
    assert abs(area - 100 * 1.28**2) < 30
    assert abs(slices.ignore_mask[1].sum() - 25 * 1.28**2) < 15 and not (slices.ignore_mask & slices.lesion_mask).any()
    save_volume_slices(tmp_path / "wmh.npz", slices)
    again = load_volume_slices(tmp_path / "wmh.npz")
    np.testing.assert_array_equal(again.image, slices.image)
    assert again.contrasts == slices.contrasts and again.observed == slices.observed


def test_two_contrasts_are_placed_in_the_brats_channels_and_filled_by_the_stated_rule(wmh_root):
    slices, _ = process_volume_dataset(find_wmh_cases(wmh_root), WMH_VOLUME_SPEC)
    four = reconcile_contrasts(slices)
    assert four.contrasts == VOLUME_CONTRASTS and four.observed == ("flair", "t1")
    for index, contrast in enumerate(VOLUME_CONTRASTS):
        source = contrast if contrast in slices.contrasts else WMH_FILL[contrast]
        np.testing.assert_array_equal(four.image[:, index], slices.image[:, slices.contrasts.index(source)])
    zeros = reconcile_contrasts(slices, fill={"t1gd": None, "t2": None})
    assert not zeros.image[:, 2:].any()
    with pytest.raises(ValueError, match="cannot fill"):
        reconcile_contrasts(slices, fill={"t1gd": "t2", "t2": None})

