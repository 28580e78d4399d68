"""CT preprocessing: orientation, crop, pad/resize, slice sampling, windowing, masks, hemispheres, npz."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from cfbrain.preprocess import (CTPreprocessConfig, PlaneFit, UnusableScan, Volume, fit_planes, hu_to_unit,
                                load_ct, load_tensor, midline_columns_from_plane, preprocess_ct,
                                resample_mask_to_grid, sample_slices, save_tensor, skull_crop_box,
                                split_hemispheres)
from cfbrain.preprocess.figures import preprocessing_montage
from cfbrain.preprocess.intensity import diffusion_to_unit, unit_to_diffusion, unit_to_hu
from cfbrain.preprocess.volume import voxel_sizes


# ----------------------------------------------------------------------------- helpers

def display_affine(spacing=(5.0, 1.0, 1.0), origin=(-20.0, 80.0, 60.0)) -> np.ndarray:
    """(slice, row, col) -> RAS mm for the display convention: z up with slice, y down with row, x down with col."""
    affine = np.zeros((4, 4))
    affine[2, 0], affine[1, 1], affine[0, 2] = spacing[0], -spacing[1], -spacing[2]
    affine[:3, 3] = origin[2], origin[1], origin[0]
    affine[3, 3] = 1.0
    return affine


def stored(display: np.ndarray, affine: np.ndarray, perm, flips) -> nib.Nifti1Image:
    """Store a display-convention array in another voxel order: storage axis k = display axis perm[k]."""
    data = display.transpose(perm)
    to_display = np.zeros((4, 4))
    to_display[3, 3] = 1.0
    for k, (axis, flip) in enumerate(zip(perm, flips)):
        if flip:
            data = np.flip(data, axis=k)
            to_display[axis, k], to_display[axis, 3] = -1.0, display.shape[axis] - 1
        else:
            to_display[axis, k] = 1.0
    return nib.Nifti1Image(np.ascontiguousarray(data), affine @ to_display)


def ellipse(shape_hw, centre, radii) -> np.ndarray:
    rows, cols = np.ogrid[: shape_hw[0], : shape_hw[1]]
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0


def phantom_ct(n_slices=14, shape_hw=(150, 130), centre=(75, 65), radii=(60, 48), lesion_cols=None):
    """Head phantom in HU (display convention), 1 mm pixels: air, scalp, skull, brain, FOV padding, lesion."""
    hu = np.full((n_slices, *shape_hw), -1000.0, dtype=np.float32)
    hu[:, ellipse(shape_hw, centre, radii)] = 40.0
    hu[:, ellipse(shape_hw, centre, (radii[0] - 3, radii[1] - 3))] = 1200.0
    brain = ellipse(shape_hw, centre, (radii[0] - 9, radii[1] - 9))
    hu[:, brain] = 32.0
    hu[:, ~ellipse(shape_hw, (shape_hw[0] / 2, shape_hw[1] / 2), (shape_hw[0] / 2, shape_hw[1] / 2))] = -3024.0
    lesion = np.zeros(hu.shape, dtype=np.uint8)
    if lesion_cols is not None:
        lesion[3:n_slices - 3, centre[0] - 8:centre[0] + 8, lesion_cols[0]:lesion_cols[1]] = 1
        hu[lesion.astype(bool)] = 12.0
    return hu, lesion


# ----------------------------------------------------------------------------- orientation

@pytest.mark.parametrize("perm, flips", [
    ((2, 1, 0), (True, True, False)),   # RAS canonical
    ((2, 1, 0), (False, False, False)),  # LPS (DICOM patient axes)
    ((1, 0, 2), (True, False, True)),   # axes permuted and flipped
])
def test_any_storage_order_loads_to_the_same_display_array(tmp_path, perm, flips):
    display = np.random.default_rng(0).normal(size=(4, 6, 5)).astype(np.float32)
    affine = display_affine()
    nib.save(stored(display, affine, perm, flips), tmp_path / "ct.nii.gz")
    ct = load_ct(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(ct.data, display)
    np.testing.assert_allclose(ct.affine, affine)
    assert ct.voxel_mm == pytest.approx((5.0, 1.0, 1.0))


def test_patient_left_is_at_high_columns_anterior_at_low_rows_superior_at_high_slices(tmp_path):
    # RAS canonical storage: +x = patient right, +y = anterior, +z = superior
    data = np.zeros((20, 20, 10), dtype=np.int16)
    data[17, 10, 5] = 1   # patient right
    data[2, 10, 5] = 2    # patient left
    data[10, 18, 5] = 3   # anterior
    data[10, 10, 9] = 4   # superior
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "ct.nii.gz")
    ct = load_ct(tmp_path / "ct.nii.gz")
    where = {v: np.argwhere(ct.data == v)[0] for v in (1, 2, 3, 4)}
    assert where[1][2] < where[2][2]           # right before left along columns
    assert where[3][1] < ct.shape[1] / 2       # anterior near the top
    assert where[4][0] == ct.shape[0] - 1      # superior at the last slice
    world_right = ct.affine @ np.r_[where[1], 1.0]
    assert world_right[0] > 0                  # RAS +x is the patient's right


def test_oblique_affine_keeps_voxels_and_obliquity(tmp_path):
    display = np.random.default_rng(1).normal(size=(4, 6, 5)).astype(np.float32)
    tilt = np.radians(12.0)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]]
    affine = rotation @ display_affine()
    nib.save(stored(display, affine, (2, 1, 0), (False, False, False)), tmp_path / "ct.nii.gz")
    ct = load_ct(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(ct.data, display)
    np.testing.assert_allclose(ct.affine, affine, atol=1e-6)


def test_mask_on_a_shifted_flipped_grid_is_resampled_onto_the_ct_grid(tmp_path):
    affine = display_affine(spacing=(2.0, 1.0, 1.0))
    grid = Volume(np.zeros((6, 20, 16), np.float32), affine, voxel_sizes(affine))
    mask_display = np.zeros((6, 24, 24), dtype=np.uint8)
    mask_display[2:4, 5:9, 10:12] = 1
    # the mask grid starts 3 rows and 4 columns before the CT grid
    mask_affine = affine.copy()
    mask_affine[:3, 3] = (affine @ np.array([0.0, -3.0, -4.0, 1.0]))[:3]
    nib.save(stored(mask_display, mask_affine, (2, 1, 0), (True, False, True)), tmp_path / "mask.nii.gz")
    on_grid = resample_mask_to_grid(tmp_path / "mask.nii.gz", grid)
    expected = np.zeros(grid.shape, dtype=np.uint8)
    expected[2:4, 2:6, 6:8] = 1
    assert on_grid.dtype == np.uint8
    np.testing.assert_array_equal(on_grid, expected)


def test_midline_column_of_a_world_plane():
    affine = display_affine()   # x = 60 - col
    grid = Volume(np.zeros((5, 10, 120), np.float32), affine, voxel_sizes(affine))
    np.testing.assert_allclose(midline_columns_from_plane(grid, [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]), 60.0)
    tilted = midline_columns_from_plane(grid, [0.0, 0.0, 0.0], [1.0, 0.0, 0.1])  # x = -0.1 z
    z = affine[2, 0] * np.arange(5) + affine[2, 3]
    np.testing.assert_allclose(tilted, 60.0 + 0.1 * z, rtol=1e-6)


# ----------------------------------------------------------------------------- step 6: crop

def test_crop_box_is_the_skull_ring_box_despite_padding_and_a_stray_speck():
    hu = np.full((5, 120, 100), -1000.0, dtype=np.float32)
    ring = ellipse((120, 100), (60, 52), (40, 30)) & ~ellipse((120, 100), (60, 52), (36, 26))
    hu[:, ring] = 1500.0
    hu[:, :10, :10] = -32768.0
    hu[:, 110:, :] = -2000.0
    hu[2, 3, 95] = 2500.0              # lone bright speck far from the head
    hu[4, 115, 2:6] = 900.0            # a few bright voxels in the padding region
    box = skull_crop_box(hu)
    rows, cols = np.flatnonzero(ring.any(axis=1)), np.flatnonzero(ring.any(axis=0))
    assert (box.row0, box.row1, box.col0, box.col1) == (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1)
    assert box.source == "bone"
    assert box.apply(hu).shape == (5, rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0])


def test_crop_falls_back_to_the_head_without_bone_and_fails_without_a_head():
    hu = np.full((3, 40, 40), -1000.0, dtype=np.float32)
    hu[:, 10:30, 5:25] = 30.0
    box = skull_crop_box(hu)
    assert (box.row0, box.row1, box.col0, box.col1, box.source) == (10, 30, 5, 25, "head")
    with pytest.raises(UnusableScan) as problem:
        skull_crop_box(np.full((3, 40, 40), -1000.0, dtype=np.float32))
    assert problem.value.reason == "no_head_found"


# ----------------------------------------------------------------------------- step 7: pad / resize / sample

def test_smaller_planes_are_centred_with_zero_padding():
    volume = np.arange(2 * 50 * 39, dtype=np.float32).reshape(2, 50, 39) + 1.0
    fit = PlaneFit(in_hw=(50, 39), target_hw=(60, 50))
    assert fit.pad == ((5, 5), (5, 6)) and fit.resized_hw == (50, 39)
    out = fit_planes(volume, fit, "area")
    assert out.shape == (2, 60, 50) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 5:55, 5:44], volume)
    assert out[:, :5].max() == 0 and out[:, 55:].max() == 0 and out[:, :, :5].max() == 0 and out[:, :, 44:].max() == 0


def test_a_larger_axis_is_downsampled_the_other_padded():
    rows = np.repeat(np.arange(120, dtype=np.float32)[:, None], 30, axis=1)
    volume = np.stack([rows, np.full_like(rows, 7.0)])
    fit = PlaneFit(in_hw=(120, 30), target_hw=(60, 50))
    assert fit.resized_hw == (60, 30) and fit.pad == ((0, 0), (10, 10))
    out = fit_planes(volume, fit, "area")
    assert out.shape == (2, 60, 50)
    np.testing.assert_allclose(out[0, :, 10:40], (np.arange(0, 120, 2) + 0.5)[:, None] * np.ones((1, 30)))
    np.testing.assert_allclose(out[1, :, 10:40], 7.0)
    assert np.all(out[:, :, :10] == 0) and np.all(out[:, :, 40:] == 0)


def test_masks_stay_binary_and_columns_map_into_the_fitted_plane():
    mask = np.zeros((1, 130, 90), dtype=np.uint8)
    mask[0, :, 61] = 1
    fit = PlaneFit(in_hw=(130, 90), target_hw=(65, 120))
    out = fit_planes(mask, fit, "nearest")
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}
    assert out.shape == (1, 65, 120)
    assert np.flatnonzero(out[0].any(axis=0)).tolist() == [round(float(fit.cols_to_output(61)))]
    both = PlaneFit(in_hw=(130, 240), target_hw=(65, 120))
    assert both.cols_to_output(61.0) == pytest.approx(30.25)


def test_eleven_evenly_spaced_slices_include_first_and_last():
    index = sample_slices(0, 39, 11)
    assert len(index) == 11 and index[0] == 0 and index[-1] == 39
    assert np.all(np.abs(np.diff(index) - 3.9) <= 1)
    np.testing.assert_array_equal(sample_slices(0, 10, 11), np.arange(11))
    with pytest.raises(UnusableScan) as problem:
        sample_slices(0, 9, 11)
    assert problem.value.reason == "too_few_slices"


# ----------------------------------------------------------------------------- step 8 and pixel ranges

def test_window_and_scale():
    hu = np.array([-50.0, 0.0, 50.0, 100.0, 200.0])
    unit = hu_to_unit(hu)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit, [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(hu_to_unit(torch.tensor(hu)).numpy(), [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(hu_to_unit(hu, -20, 80), [0.0, 0.2, 0.7, 1.0, 1.0])


def test_pixel_range_round_trips():
    x = np.linspace(0.0, 1.0, 11, dtype=np.float32)
    np.testing.assert_allclose(hu_to_unit(unit_to_hu(x)), x, atol=1e-6)
    np.testing.assert_allclose(unit_to_hu(x), 100 * x, atol=1e-5)
    np.testing.assert_allclose(unit_to_diffusion(x)[[0, 5, 10]], [-1.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(diffusion_to_unit(unit_to_diffusion(x)), x, atol=1e-6)
    t = torch.linspace(0, 1, 5)
    assert torch.allclose(diffusion_to_unit(unit_to_diffusion(t)), t)
    np.testing.assert_allclose(diffusion_to_unit(np.array([-1.5, 1.5])), [0.0, 1.0])
    np.testing.assert_allclose(diffusion_to_unit(np.array([1.5]), clip=False), [1.25])


# ----------------------------------------------------------------------------- hemispheres

def test_split_at_the_centre_flips_the_left_half():
    volume = np.tile(np.arange(10, dtype=np.float32), (2, 3, 1))
    halves = split_hemispheres(volume)
    assert halves.shape == (2, 2, 3, 5)
    np.testing.assert_array_equal(halves[0, 0, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(halves[1, 0, 0], [9, 8, 7, 6, 5])
    np.testing.assert_array_equal(split_hemispheres(volume[..., ::-1].copy()), halves[::-1])


def test_split_follows_a_shifted_midline_without_interpolation():
    volume = np.tile(np.arange(10, dtype=np.float32) + 1, (2, 3, 1))
    halves = split_hemispheres(volume, np.array([6.3, 4.5]))
    np.testing.assert_array_equal(halves[0, 0, 0], [3, 4, 5, 6, 7])    # columns 2..6
    np.testing.assert_array_equal(halves[1, 0, 0], [0, 0, 10, 9, 8])   # columns 7..9, zero fill, flipped
    np.testing.assert_array_equal(halves[:, 1, 0], split_hemispheres(volume)[:, 1, 0])
    with pytest.raises(ValueError):
        split_hemispheres(np.zeros((1, 2, 9)))


def test_lesion_on_the_patients_right_lands_in_the_right_half(tmp_path):
    hu, _ = phantom_ct()
    lesion_hu = 12.0
    # RAS storage; the lesion is placed by world x > 0 (patient right), not by column
    affine = display_affine(spacing=(5.0, 1.0, 1.0))
    ras = stored(hu, affine, (2, 1, 0), (True, True, False))
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    data = np.asarray(ras.dataobj).copy()
    x = ras.affine[0, 0] * np.arange(data.shape[0]) + ras.affine[0, 3]
    data[(x > 10) & (x < 25), 70:80, 4:10] = lesion_hu
    nib.save(nib.Nifti1Image(data, ras.affine), tmp_path / "ct.nii.gz")
    halves = split_hemispheres(hu_to_unit(load_ct(tmp_path / "ct.nii.gz").data))
    right, left = np.isclose(halves, lesion_hu / 100).reshape(2, -1).sum(axis=1)
    assert right > 0 and left == 0


def test_lesion_near_a_shifted_midline_follows_the_midline():
    # skull box columns 30..120, its centre 75.5; the (given) midline is at column 81.5
    hu, lesion = phantom_ct(shape_hw=(150, 150), centre=(75, 75), lesion_cols=(76, 80))
    ct = Volume(hu, display_affine(spacing=(5.0, 1.0, 1.0)), (5.0, 1.0, 1.0))
    config = CTPreprocessConfig(target_hw=(120, 110), n_slices=11)
    with_midline = preprocess_ct(ct, config, lesion_mask=lesion, midline_col=np.full(hu.shape[0], 81.5))
    at_centre = preprocess_ct(ct, config, lesion_mask=lesion)
    assert with_midline.midline_source == "registration" and at_centre.midline_source == "centre"
    right, left = with_midline.hemispheres("lesion_mask").reshape(2, -1).sum(axis=1)
    assert right > 0 and left == 0
    right, left = at_centre.hemispheres("lesion_mask").reshape(2, -1).sum(axis=1)
    assert right == 0 and left > 0


# ----------------------------------------------------------------------------- whole pipeline, npz, figure

def test_preprocess_ct_shapes_ranges_and_masks():
    hu, lesion = phantom_ct(lesion_cols=(40, 55))
    ct = Volume(hu, display_affine(spacing=(5.0, 1.0, 1.0)), (5.0, 1.0, 1.0))
    tensor = preprocess_ct(ct, CTPreprocessConfig(target_hw=(100, 110), n_slices=11), lesion_mask=lesion)
    assert tensor.image.shape == (11, 100, 110) and tensor.image.dtype == np.float32
    assert 0.0 <= tensor.image.min() and tensor.image.max() <= 1.0
    assert tensor.crop_box.shape == (115, 91) and tensor.resized_hw == (100, 91)
    assert tensor.pad == ((0, 0), (9, 10)) and tensor.pixel_mm == pytest.approx((1.15, 1.0))
    for mask in (tensor.head_mask, tensor.brain_mask, tensor.lesion_mask):
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert np.all(tensor.brain_mask <= tensor.head_mask)
    assert np.all(tensor.lesion_mask <= tensor.brain_mask)
    brain_voxels = tensor.image[tensor.brain_mask.astype(bool)]
    assert np.median(brain_voxels) == pytest.approx(0.32, abs=0.02)
    assert tensor.image[:, :, :9].max() == 0 and tensor.image[:, :, -10:].max() == 0   # padding is black
    np.testing.assert_allclose(tensor.midline_col, 54.5)
    assert tensor.cols_from_source(65.0) == pytest.approx(54.0)    # head centre column: crop at 20, pad 9
    assert tensor.rows_from_source(75.0) == pytest.approx(49.5)    # head centre row: rows 18..132 -> 0..99
    assert tensor.lesion_mask.sum() > 0 and tensor.hemispheres("lesion_mask")[1].sum() == 0


def test_brain_slice_range_option_samples_inside_the_brain():
    hu, _ = phantom_ct(n_slices=30)
    hu[:8] = -1000.0
    hu[25:] = -1000.0
    ct = Volume(hu, display_affine(spacing=(5.0, 1.0, 1.0)), (5.0, 1.0, 1.0))
    tensor = preprocess_ct(ct, CTPreprocessConfig(target_hw=(120, 100), slice_range="brain"))
    assert tensor.slice_index[0] == 8 and tensor.slice_index[-1] == 24
    with pytest.raises(UnusableScan):
        preprocess_ct(Volume(hu[:10], ct.affine, ct.voxel_mm), CTPreprocessConfig(target_hw=(120, 100)))


def test_npz_round_trip_keys_and_reproducible_bytes(tmp_path):
    hu, lesion = phantom_ct(lesion_cols=(40, 55))
    ct = Volume(hu, display_affine(spacing=(5.0, 1.0, 1.0)), (5.0, 1.0, 1.0))
    tensor = preprocess_ct(ct, CTPreprocessConfig(target_hw=(120, 100)), lesion_mask=lesion)
    save_tensor(tmp_path / "a.npz", tensor)
    save_tensor(tmp_path / "b.npz", tensor)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as raw:
        assert set(raw.files) == {"image", "head_mask", "brain_mask", "lesion_mask", "midline_col", "midline_source",
                                  "slice_index", "crop_box", "crop_source", "resized_hw", "pad", "pixel_mm",
                                  "voxel_mm", "source_shape", "source_affine", "hu_window", "format"}
    loaded = load_tensor(tmp_path / "a.npz")
    for name in ("image", "head_mask", "brain_mask", "lesion_mask", "midline_col", "slice_index", "source_affine"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(tensor, name))
    assert loaded.crop_box == tensor.crop_box and loaded.pad == tensor.pad
    assert loaded.source_shape == hu.shape and loaded.hu_window == (0.0, 100.0)
    healthy = preprocess_ct(ct, CTPreprocessConfig(target_hw=(120, 100)))
    save_tensor(tmp_path / "c.npz", healthy)
    assert load_tensor(tmp_path / "c.npz").lesion_mask is None


def test_config_from_mapping():
    config = CTPreprocessConfig.from_mapping({"target_hw": [500, 400], "n_slices": 11, "slice_range": "brain"})
    assert config.target_hw == (500, 400) and config.slice_range == "brain"
    with pytest.raises(ValueError):
        CTPreprocessConfig.from_mapping({"target_size": [1, 2]})


def test_montage_is_written(tmp_path):
    hu, lesion = phantom_ct(lesion_cols=(40, 55))
    nib.save(stored(hu, display_affine(), (2, 1, 0), (True, True, False)), tmp_path / "ct.nii.gz")
    ct = load_ct(tmp_path / "ct.nii.gz")
    save_tensor(tmp_path / "ct.npz", preprocess_ct(ct, CTPreprocessConfig(target_hw=(120, 100)), lesion_mask=lesion))
    preprocessing_montage(tmp_path / "montage.png", [("scan-01", tmp_path / "ct.nii.gz", tmp_path / "ct.npz")] * 2)
    assert (tmp_path / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_npz_readers_refuse_a_file_of_another_kind(tmp_path):
    from cfbrain.preprocess.npz import read_npz, write_npz
    write_npz(tmp_path / "a.npz", {"format": np.str_("cfbrain-triplets/1"), "x": np.arange(3)})
    assert list(read_npz(tmp_path / "a.npz", "cfbrain-triplets/1")["x"]) == [0, 1, 2]
    with pytest.raises(ValueError, match="not a cfbrain-ct-tensor/1 file"):
        load_tensor(tmp_path / "a.npz")
