"""Synthetic MRI cohort (cfbrain.synth.mri): determinism, the truth it promises, and the readers that use it."""
from __future__ import annotations

from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cfbrain.preprocess.mri import mri_slice, process_mri_dataset
from cfbrain.preprocess.volume import load_volume
from cfbrain.synth import anatomy, mri

TINY = mri.SynthMRIConfig(n_healthy=2, n_stroke=1, n_tumour=1, seed=3)
"""One healthy subject and one lesioned subject in each dataset."""
SPEC_SIZE = 32


@pytest.fixture(scope="module")
def model():
    return anatomy.load_head_model(mri.TEMPLATE_RESOLUTION_MM)


@pytest.fixture(scope="module")
def plans(model):
    return mri.plan_mri_cohort(TINY, model)


@pytest.fixture(scope="module")
def rendered(model, plans):
    return {plan.kind: mri.render_subject(model, plan) for plan in plans}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("mri_cohort")
    table = mri.make_mri_cohort(out, TINY)
    return out, table


def test_plans_and_renders_are_deterministic(model, plans, rendered):
    again = mri.plan_mri_cohort(TINY, model)
    assert again == plans
    stroke = next(p for p in again if p.kind == "stroke")
    repeat = mri.render_subject(model, stroke)
    for name in ("image", "healthy", "labels", "brain_mask", "displacement_mm"):
        np.testing.assert_array_equal(getattr(repeat, name), getattr(rendered["stroke"], name))
    other_seed = mri.plan_mri_cohort(mri.SynthMRIConfig(n_healthy=2, n_stroke=1, n_tumour=1, seed=4), model)
    assert other_seed != plans


def test_healthy_subject_has_no_lesion_and_no_displacement(rendered):
    healthy = rendered["healthy"]
    assert not healthy.labels.any()
    assert not healthy.displacement_mm.any()
    np.testing.assert_array_equal(healthy.image, healthy.healthy)


def _kernel_reach_mm(sigma_mm: float) -> float:
    """Furthest a truncated separable Gaussian's gradient reaches: the cube of half-width round(3 sigma)
    voxels (its corner, sqrt(3) further) plus the gradient's voxel."""
    voxel = mri.TEMPLATE_RESOLUTION_MM
    return np.sqrt(3.0) * (int(3.0 * sigma_mm / voxel + 0.5) + 1) * voxel


@pytest.mark.parametrize("kind", ["stroke", "tumour"])
def test_indirect_effect_is_local_and_inside_the_brain(model, plans, rendered, kind):
    """Zero outside the brain and beyond the kernels' reach from the lesion and the ipsilateral ventricle
    (and, for the tumour, beyond the midline-shift bump)."""
    subject = rendered[kind]
    moved = subject.displacement_magnitude_mm > 0
    assert subject.displacement_magnitude_mm.max() > 1.0
    assert not (moved & ~subject.healthy_brain_mask).any()
    assert moved.sum() < 0.5 * subject.healthy_brain_mask.sum()
    plan = next(p for p in plans if p.kind == kind)
    shape, _ = mri.output_grid()
    coords = mri._template_coords(model, plan, np.indices(shape, dtype=np.float32).reshape(3, -1))
    region = mri._ventricle_region(model)
    ventricles = mri._region_on_grid(region.values, region.offset, coords).reshape(shape) > 0.5
    ipsilateral = ventricles & mri._hemisphere_mask(shape, plan.lesion.hemisphere)
    voxel = mri.TEMPLATE_RESOLUTION_MM
    from_lesion = ndimage.distance_transform_edt(~subject.lesion_mask) * voxel
    from_ventricle = ndimage.distance_transform_edt(~ipsilateral) * voxel
    reach = from_ventricle <= _kernel_reach_mm(mri._VENTRICLE_SIGMA_MM)
    if kind == "stroke":
        reach |= from_lesion <= _kernel_reach_mm(mri._PULL_SIGMA_MM)
    else:
        lesion = plan.lesion
        reach |= from_lesion <= _kernel_reach_mm(0.6 * (lesion.radius_mm + lesion.oedema_mm))
        centre = mri._lesion_centre_output_voxel(model, plan)
        centre[0] = (centre[0] + mri._midline_voxel()) / 2
        grid = np.indices(shape, dtype=np.float32)
        bump_distance = np.sqrt(sum((grid[a] - centre[a]) ** 2 for a in range(3))) * voxel
        reach |= bump_distance <= 3 * mri._MIDLINE_SIGMA_MM
    assert not (moved & ~reach).any()


def test_lesioned_equals_healthy_outside_lesion_and_displacement(rendered):
    for kind in ("stroke", "tumour"):
        subject = rendered[kind]
        near_lesion = ndimage.binary_dilation(subject.lesion_mask, np.ones((3, 3, 3), bool), iterations=3)
        touched = near_lesion | (subject.displacement_magnitude_mm > 0)
        np.testing.assert_array_equal(subject.image[~touched], subject.healthy[~touched])
        assert np.abs(subject.image - subject.healthy)[subject.lesion_mask].mean() > 0.1


def test_stroke_is_dark_and_tumour_has_a_bright_rim_around_a_dark_core(rendered):
    stroke = rendered["stroke"]
    assert stroke.image[stroke.lesion_mask].mean() < stroke.healthy[stroke.lesion_mask].mean() - 0.1
    tumour = rendered["tumour"]
    labels = tumour.labels
    assert set(np.unique(labels)) == {0, *mri.BRATS_LABELS.values()}
    rim = tumour.image[labels == mri.BRATS_LABELS["rim"]].mean()
    core = tumour.image[labels == mri.BRATS_LABELS["core"]].mean()
    assert rim > 0.85 > 0.4 > core


def test_cohort_layout_subjects_table_and_discovery(cohort):
    root, table = cohort
    assert list(table.columns) == mri.SUBJECT_COLUMNS
    assert table["kind"].value_counts().to_dict() == {"healthy": 2, "stroke": 1, "tumour": 1}
    assert (table.loc[table.kind != "healthy", "slice_lesion_pixels"] > 0).all()
    assert set(table["split"]) <= {"train", "val", "test"}
    for row in table.itertuples():
        for column in ("image", "lesion_mask", "brain_mask", *mri.TRUTH_FILES):
            path = getattr(row, column)
            assert (root / path).is_file() if (column not in mri.TRUTH_FILES or row.kind != "healthy") else path == ""
    read = mri.read_subjects(root)
    assert read["scan"].tolist() == table["scan"].tolist()
    for dataset in mri.DATASETS:
        pairs = mri.find_synthetic_pairs(root, dataset)
        expected = table.loc[table.dataset == dataset, "scan"]
        assert sorted(pairs["scan"]) == sorted(expected)
        assert (pairs["status"] == "kept").all() and pairs["brain_mask"].str.len().gt(0).all()
        slices, status = process_mri_dataset(pairs, mri.slice_spec(dataset, SPEC_SIZE))
        assert (status["status"] == "kept").all() and (status["brain_source"] == "file").all()
        lesioned = table.set_index("scan").loc[slices.scan, "kind"].to_numpy() != "healthy"
        np.testing.assert_array_equal(slices.lesion_mask.any(axis=(1, 2)), lesioned)
        assert slices.image.shape == (len(expected), SPEC_SIZE, SPEC_SIZE)


def test_cohort_files_are_byte_identical_with_parallel_workers(cohort, tmp_path):
    root, _ = cohort
    parallel = tmp_path / "parallel"
    mri.make_mri_cohort(parallel, replace(TINY, workers=2))
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(parallel) for p in parallel.rglob("*") if p.is_file())
    for name in files:
        assert (root / name).read_bytes() == (parallel / name).read_bytes(), name
    with pytest.raises(FileExistsError):
        mri.make_mri_cohort(parallel, TINY)


def test_written_volumes_match_the_render(cohort, rendered):
    root, table = cohort
    row = table[table.kind == "tumour"].iloc[0]
    subject = rendered["tumour"]
    image = load_volume(root / row.image)
    assert image.shape == (95, 117, 99)  # display order (S, P, L) of the 99 x 117 x 95 RAS grid
    stored = np.asarray(nib.load(root / row.image).dataobj)
    np.testing.assert_allclose(stored, subject.image, atol=mri._QUANTUM / 2 + 1e-6)
    field = np.asarray(nib.load(root / row.displacement).dataobj)
    np.testing.assert_allclose(np.moveaxis(field, -1, 0), subject.displacement_mm)


def test_truth_slices_share_the_prior_scale(cohort, tmp_path):
    root, table = cohort
    spec = mri.slice_spec("stroke", SPEC_SIZE)
    truth = mri.truth_slices(root, "stroke", spec)
    row = table[table.kind == "stroke"].iloc[0]
    assert truth.scan.tolist() == [row.scan]
    prior = mri_slice(root / row.healthy, root / row.lesion_mask, spec, root / row.healthy_brain_mask)
    np.testing.assert_array_equal(truth.healthy[0], prior.image)
    np.testing.assert_array_equal(truth.healthy_brain_mask[0], prior.brain_mask)
    np.testing.assert_array_equal(truth.lesion_mask[0], prior.lesion_mask)
    changed = np.abs(truth.lesioned[0] - truth.healthy[0]) > 1e-6
    explained = ndimage.binary_dilation((truth.lesion_mask[0] > 0) | (truth.displacement_mm[0] > 0), iterations=2)
    assert changed.any() and not (changed & ~explained).any()
    path = tmp_path / "truth.npz"
    mri.save_truth_slices(path, truth)
    loaded = mri.load_truth_slices(path)
    np.testing.assert_array_equal(loaded.lesioned, truth.lesioned)
    assert loaded.scan.tolist() == truth.scan.tolist()


def test_slice_spec_rejects_unknown_dataset():
    with pytest.raises(ValueError, match="unknown synthetic MRI dataset"):
        mri.slice_spec("wmh")
