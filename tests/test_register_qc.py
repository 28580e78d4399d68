"""Cohort registration QC: polar decomposition, PCA + GMM verdicts, review overrides, the
tiny-cohort path, matrix loading and the QC figures."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation

from cfbrain.register import QCCriteria, load_linear_parts, read_review, registration_qc, write_template_to_ct
from cfbrain.register.figures import montage_members, plot_pca_clusters, plot_registration_montage
from cfbrain.register.qc import SCAN_COLUMNS, decompose_linear

N_GOOD, N_FLIPPED, N_HALVED = 30, 5, 3


def near_identity(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3, 3): rotations up to ~5 deg times scales 0.95-1.05 with a little shear."""
    rotations = Rotation.from_rotvec(rng.normal(0.0, np.radians(3.0), (n, 3))).as_matrix()
    stretch = np.eye(3) * rng.uniform(0.95, 1.05, (n, 1, 3)) + rng.normal(0.0, 0.01, (n, 3, 3))
    return rotations @ stretch


@pytest.fixture(scope="module")
def cohort():
    """(linear parts (38, 3, 3), scan names, names of the planted outliers)."""
    rng = np.random.default_rng(7)
    flip_z = Rotation.from_euler("z", 180, degrees=True).as_matrix()
    linear = np.concatenate([near_identity(rng, N_GOOD), flip_z @ near_identity(rng, N_FLIPPED),
                             0.5 * near_identity(rng, N_HALVED)])
    names = [f"good{i:02d}" for i in range(N_GOOD)] + [f"flip{i}" for i in range(N_FLIPPED)] \
        + [f"half{i}" for i in range(N_HALVED)]
    return linear, names, set(names[N_GOOD:])


@pytest.fixture(scope="module")
def cohort_qc(cohort):
    linear, names, _ = cohort
    return registration_qc(linear, names, seed=0)


def test_decompose_linear():
    rotation = Rotation.from_rotvec(np.radians(30.0) * np.array([1.0, 2.0, 2.0]) / 3.0).as_matrix()
    linear = np.stack([rotation @ np.diag([1.2, 0.9, 1.0]), np.diag([-1.0, 1.0, 1.0]), 0.5 * np.eye(3)])
    parts = decompose_linear(linear)
    np.testing.assert_allclose(parts.rotation_deg, [30.0, 180.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(parts.scale_min, [0.9, 1.0, 0.5])
    np.testing.assert_allclose(parts.scale_max, [1.2, 1.0, 0.5])
    assert parts.reflection.tolist() == [False, True, False]


def test_planted_outliers_are_rejected(cohort, cohort_qc):
    _, _, outliers = cohort
    scans = cohort_qc.scans
    assert list(scans.columns) == SCAN_COLUMNS and len(scans) == N_GOOD + N_FLIPPED + N_HALVED
    verdict = scans.set_index("scan").verdict
    assert (verdict[sorted(outliers)] == "reject").all()
    good = verdict.drop(sorted(outliers))
    assert (good == "accept").mean() >= 0.95
    assert cohort_qc.method == "pca_gmm" and (scans.qc_method == "pca_gmm").all()
    assert cohort_qc.explained_variance_ratio.shape == (3,) and cohort_qc.explained_variance_ratio.sum() <= 1.0
    assert min(cohort_qc.bic, key=cohort_qc.bic.get) == len(cohort_qc.clusters)
    rejected = scans[scans.verdict == "reject"]
    assert rejected.reason.str.contains("rotation|scale").all()


def test_clusters_are_numbered_by_size(cohort_qc):
    clusters = cohort_qc.clusters
    assert clusters.cluster.tolist() == list(range(len(clusters)))
    assert clusters.n_scans.is_monotonic_decreasing
    assert clusters.loc[0, "verdict"] == "accept"
    assert set(clusters.auto_verdict) == {"accept", "reject"}


def test_thresholds_are_arguments(cohort):
    linear, names, _ = cohort
    lenient = registration_qc(linear, names, criteria=QCCriteria(max_rotation_deg=190.0, scale_range=(0.4, 2.0)))
    assert (lenient.scans.verdict == "accept").all()


def test_review_overrides(cohort, cohort_qc):
    linear, names, _ = cohort
    flipped_cluster = int(cohort_qc.scans.set_index("scan").cluster["flip0"])
    review = pd.DataFrame({
        "scan": ["", "flip1", "good03"],
        "cluster": [flipped_cluster, None, None],
        "verdict": ["accept", "reject", "reject"],
        "note": ["checked by eye", "", "motion"],
    })
    reviewed = registration_qc(linear, names, review=review, seed=0)
    scans = reviewed.scans.set_index("scan")
    assert scans.loc["flip0", "verdict"] == "accept" and scans.loc["flip0", "verdict_source"] == "cluster (review)"
    assert scans.loc["flip1", "verdict"] == "reject" and scans.loc["flip1", "verdict_source"] == "scan (review)"
    assert scans.loc["good03", "verdict"] == "reject" and scans.loc["good03", "reason"] == "review: reject (motion)"
    clusters = reviewed.clusters.set_index("cluster")
    assert clusters.loc[flipped_cluster, "verdict"] == "accept"
    assert clusters.loc[flipped_cluster, "auto_verdict"] == "reject"


@pytest.mark.parametrize("review, message", [
    (pd.DataFrame({"scan": ["nobody"], "verdict": ["accept"]}), "unknown"),
    (pd.DataFrame({"cluster": [99], "verdict": ["accept"]}), "unknown"),
    (pd.DataFrame({"scan": ["good01"], "verdict": ["keep"]}), "accept or reject"),
    (pd.DataFrame({"scan": ["good01"], "cluster": [0], "verdict": ["accept"]}), "exactly one"),
    (pd.DataFrame({"scan": ["good01", "good01"], "verdict": ["accept", "reject"]}), "twice"),
])
def test_review_errors(cohort, review, message):
    linear, names, _ = cohort
    with pytest.raises(ValueError, match=message):
        registration_qc(linear, names, review=review)


def test_read_review(tmp_path):
    path = tmp_path / "review.tsv"
    path.write_text("scan\tcluster\tverdict\tnote\nflip2\t\taccept\tok on inspection\n\t1\treject\t\n")
    review = read_review(path)
    assert review.scan.tolist() == ["flip2", ""] and review.verdict.tolist() == ["accept", "reject"]
    assert review.cluster.isna().tolist() == [True, False]
    assert read_review(tmp_path / "absent.tsv").empty


def test_tiny_cohort_judges_each_scan(cohort):
    flip = Rotation.from_euler("z", 180, degrees=True).as_matrix()
    qc = registration_qc(np.stack([np.eye(3), flip, 0.5 * np.eye(3)]), ["a", "b", "c"])
    assert qc.method == "per_scan" and qc.clusters.empty and qc.explained_variance_ratio.size == 0
    assert qc.scans.verdict.tolist() == ["accept", "reject", "reject"]
    assert qc.scans.qc_method.str.startswith("per_scan").all()
    assert qc.scans[["pc1", "pc2", "pc3"]].isna().all().all()
    overridden = registration_qc(np.stack([np.eye(3), flip, 0.5 * np.eye(3)]), ["a", "b", "c"],
                                 review=pd.DataFrame({"scan": ["b"], "verdict": ["accept"]}))
    assert overridden.scans.verdict.tolist() == ["accept", "accept", "reject"]
    with pytest.raises(ValueError, match="unknown"):
        registration_qc(np.stack([np.eye(3)]), ["a"], review=pd.DataFrame({"cluster": [0], "verdict": ["reject"]}))


def test_input_checks():
    with pytest.raises(ValueError, match="shape"):
        registration_qc(np.zeros((4, 3, 3)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="unique"):
        registration_qc(np.stack([np.eye(3)] * 4), ["a", "a", "b", "c"])


def save_nifti(data: np.ndarray, affine: np.ndarray, path) -> str:
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, str(path))
    return str(path)


def test_load_linear_parts_gives_world_linear_parts(tmp_path):
    template = save_nifti(np.zeros((20, 24, 18)), np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "tpl.nii.gz")
    ct = save_nifti(np.zeros((32, 32, 8)), np.diag([-0.7, 0.7, 5.0, 1.0]), tmp_path / "ct.nii.gz")
    worlds = []
    for i, angle in enumerate((0.0, 20.0, 180.0)):
        world = np.eye(4)
        world[:3, :3] = Rotation.from_euler("z", angle, degrees=True).as_matrix() * 1.1
        world[:3, 3] = [i, 2.0, -3.0]
        write_template_to_ct(world, template, ct, tmp_path / f"s{i}.mat")
        worlds.append(world[:3, :3])
    linear = load_linear_parts([tmp_path / f"s{i}.mat" for i in range(3)], [template] * 3, [ct] * 3)
    np.testing.assert_allclose(linear, np.stack(worlds), atol=1e-9)


def test_pca_figure(cohort, cohort_qc, tmp_path):
    linear, names, _ = cohort
    reviewed = registration_qc(linear, names, review=pd.DataFrame({"scan": ["good00"], "verdict": ["reject"]}))
    assert plot_pca_clusters(reviewed, tmp_path / "pca.png").stat().st_size > 10_000
    tiny = registration_qc(np.stack([np.eye(3)] * 2), ["a", "b"])
    assert plot_pca_clusters(tiny, tmp_path / "tiny.png").is_file()


def test_montage(tmp_path, cohort_qc):
    members = montage_members(cohort_qc.scans, per_cluster=4, seed=0)
    assert members == montage_members(cohort_qc.scans, per_cluster=4, seed=0)
    assert set(members) == set(cohort_qc.clusters.cluster)
    assert all(1 <= len(names) <= 4 for names in members.values())
    affine = np.diag([-1.5, 1.5, 5.0, 1.0])
    i, j = np.mgrid[:64, :64]
    disk = ((i - 32) ** 2 + (j - 30) ** 2 < 20 ** 2).astype(float)
    pairs = []
    for n in range(2):
        ct = np.repeat((disk * 35.0 + ((i - 32) ** 2 + (j - 30) ** 2 < 23 ** 2) * 500.0)[:, :, None], 8, axis=2)
        template = np.repeat(np.roll(disk, 2 * n, axis=0)[:, :, None], 8, axis=2)
        pairs.append((save_nifti(ct, affine, tmp_path / f"ct{n}.nii.gz"),
                      save_nifti(template, affine, tmp_path / f"t{n}.nii.gz")))
    out = plot_registration_montage(pairs, tmp_path / "montage.png", titles=["s0", "s1"], title="cluster 0 (accept)")
    assert out.stat().st_size > 5_000
    mismatched = save_nifti(np.zeros((10, 10, 8)), affine, tmp_path / "small.nii.gz")
    with pytest.raises(ValueError, match="grid"):
        plot_registration_montage([(pairs[0][0], mismatched)], tmp_path / "bad.png")


def test_no_successful_registration_gives_an_empty_table_not_a_crash(tmp_path):
    qc = registration_qc(load_linear_parts([], [], []), [])
    assert qc.scans.empty and qc.method == "per_scan"
    assert plot_pca_clusters(qc, tmp_path / "qc.png").exists()
