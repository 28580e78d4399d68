"""Multi-contrast output and white-matter hyperintensities of the synthetic MRI cohort (thesis 003 §6.6.1)."""
from __future__ import annotations

import numpy as np
import pytest

from cfbrain.preprocess.mri import VOLUME_CONTRASTS, process_volume_dataset
from cfbrain.synth import anatomy, mri

CONFIG = mri.SynthMRIConfig(n_healthy=1, n_stroke=0, n_tumour=1, n_wmh=1, seed=3, contrasts=VOLUME_CONTRASTS)


@pytest.fixture(scope="module")
def model():
    return anatomy.load_head_model(mri.TEMPLATE_RESOLUTION_MM)


@pytest.fixture(scope="module")
def rendered(model):
    return {plan.kind: (plan, mri.render_subject(model, plan)) for plan in mri.plan_mri_cohort(CONFIG, model)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("contrast_cohort")
    return root, mri.make_mri_cohort(root, CONFIG)


def test_extra_contrasts_leave_the_main_image_unchanged(model, rendered):
    for kind in ("healthy", "tumour"):
        plan, with_contrasts = rendered[kind]
        plain = mri.render_subject(model, mri.SubjectPlan(**{**plan.__dict__, "contrasts": ()}))
        np.testing.assert_array_equal(plain.image, with_contrasts.image)
        np.testing.assert_array_equal(with_contrasts.contrasts["t1gd"], with_contrasts.image)
        assert sorted(with_contrasts.contrasts) == sorted(VOLUME_CONTRASTS)
        assert plain.contrasts == {}


def test_contrasts_have_their_own_tissue_order(model, rendered):
    _, healthy = rendered["healthy"]
    plan, _ = rendered["healthy"]
    coords = mri._template_coords(model, plan, np.indices(healthy.image.shape, dtype=np.float32).reshape(3, -1))
    labels = mri._sample(model.labels.astype(np.float32), coords).reshape(healthy.image.shape)
    brain = healthy.brain_mask
    means = {c: {t: float(image[brain & (np.rint(labels) == t)].mean())
                 for t in (anatomy.TISSUE_CSF, anatomy.TISSUE_GM, anatomy.TISSUE_WM)}
             for c, image in healthy.contrasts.items()}
    csf, gm, wm = anatomy.TISSUE_CSF, anatomy.TISSUE_GM, anatomy.TISSUE_WM
    assert means["t1"][csf] < means["t1"][gm] < means["t1"][wm]
    assert means["t2"][csf] > means["t2"][gm] > means["t2"][wm]
    assert means["flair"][csf] < means["flair"][wm] < means["flair"][gm]


def test_wmh_are_small_periventricular_bright_on_flair_without_displacement(model, rendered):
    plan, wmh = rendered["wmh"]
    assert plan.dataset == mri.WMH_DATASET and sorted(wmh.contrasts) == ["flair", "t1"]
    lesion = wmh.lesion_mask
    assert 0 < lesion.sum() < 2000 and set(np.unique(wmh.labels)) == {0, 1}
    assert not wmh.displacement_mm.any()
    white = wmh.brain_mask & ~lesion & (wmh.image > 0.45) & (wmh.image < 0.65)
    assert wmh.contrasts["flair"][lesion].mean() > wmh.contrasts["flair"][white].mean() + 0.25
    assert wmh.contrasts["t1"][lesion].mean() < np.median(wmh.contrasts["t1"][wmh.brain_mask & ~lesion]) + 0.2
    distance = mri._ventricle_distance_mm(model)
    assert all(distance[c] <= CONFIG.wmh_periventricular_mm for c in plan.lesion.centres)


def test_cohort_files_read_back_as_multi_contrast_slices(cohort):
    root, table = cohort
    assert table["kind"].value_counts().to_dict() == {"healthy": 1, "tumour": 1, "wmh": 1}
    for dataset, channels in (("tumour", 4), (mri.WMH_DATASET, 2)):
        cases = mri.find_synthetic_cases(root, dataset)
        assert (cases["status"] == "kept").all() and len(cases) == (table.dataset == dataset).sum()
        slices, status = process_volume_dataset(cases, mri.volume_slice_spec(dataset, size=32))
        assert (status["status"] == "kept").all()
        assert slices.image.shape[1:] == (channels, 32, 32) and 0 <= slices.image.min() and slices.image.max() <= 1
        assert slices.lesion.any() and (~slices.lesion).any()
        lesioned_scans = set(table.loc[(table.dataset == dataset) & (table.kind != "healthy"), "scan"])
        assert set(slices.scan[slices.lesion]) <= lesioned_scans
