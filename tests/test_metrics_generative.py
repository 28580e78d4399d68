"""FID/KID on known feature distributions (cfbrain.metrics.generative)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cfbrain.metrics.generative import (bootstrap_fid, extract_features, frechet_distance, generative_scores,
                                        kernel_distance)

RNG = np.random.default_rng(0)
REAL = RNG.normal(size=(300, 8))
FAKE = RNG.normal(size=(300, 8))


def gaussian_fid(mu1, cov1, mu2, cov2) -> float:
    """Closed form for commuting (here diagonal) covariances."""
    return float(((mu1 - mu2) ** 2).sum() + (np.sqrt(cov1) - np.sqrt(cov2)) ** 2 @ np.ones(len(mu1)))


def test_fid_is_zero_for_identical_sets_and_matches_the_formula():
    assert frechet_distance(REAL, REAL) == pytest.approx(0.0, abs=1e-8)
    mean, var = REAL.mean(0), REAL.var(0, ddof=1)
    shifted = REAL * 2.0 + 1.0  # mean 2 mu + 1, covariance 4 S: FID = ||mu + 1||^2 + Tr(S)
    cov = np.cov(REAL, rowvar=False)
    expected = ((mean + 1.0) ** 2).sum() + np.trace(cov)
    assert frechet_distance(REAL, shifted) == pytest.approx(expected, rel=1e-6)
    assert gaussian_fid(mean, var, 2 * mean + 1, 4 * var) == pytest.approx(expected, rel=0.05)


def test_fid_and_kid_grow_monotonically_with_a_shift():
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0]
    fids = [frechet_distance(REAL, FAKE + s) for s in shifts]
    kids = [kernel_distance(REAL, FAKE + s, subsets=10, subset_size=100)[0] for s in shifts]
    assert np.all(np.diff(fids) > 0) and np.all(np.diff(kids) > 0)
    assert fids[0] < 0.5 and abs(kids[0]) < 0.05
    assert fids[-1] == pytest.approx(fids[0] + 8 * 2.0**2, rel=0.05)


def test_kid_is_seeded_and_reports_a_spread():
    first = kernel_distance(REAL, FAKE + 0.5, subsets=20, subset_size=50, seed=1)
    assert kernel_distance(REAL, FAKE + 0.5, subsets=20, subset_size=50, seed=1) == first
    assert kernel_distance(REAL, FAKE + 0.5, subsets=20, subset_size=50, seed=2) != first
    assert first[1] > 0


def test_bootstrap_resamples_the_real_set_only():
    result = bootstrap_fid(REAL, FAKE, n_bootstrap=10, seed=3)
    assert len(result.values) == 10 and len(set(result.values)) == 10
    assert result.mean == pytest.approx(np.mean(result.values)) and result.std == pytest.approx(np.std(result.values))
    assert bootstrap_fid(REAL, FAKE, n_bootstrap=10, seed=3) == result
    scores = generative_scores(REAL, FAKE + 1.0, n_bootstrap=4, kid_subsets=5)
    assert set(scores) == {"fid_mean", "fid_std", "kid_mean", "kid_std"}
    assert scores["fid_mean"] > result.mean


def test_extract_features_batches_like_one_pass():
    torch.manual_seed(0)
    extractor = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = np.random.default_rng(1).random((7, 12, 12)).astype(np.float32)
    features = extract_features(extractor, images, batch_size=3)
    assert features.shape == (7, 3) and features.dtype == torch.float64
    with torch.no_grad():
        expected = extractor(torch.from_numpy(images)[:, None]).double()
    torch.testing.assert_close(features, expected)
    with pytest.raises(ValueError, match="expected \\(N, d\\) features"):
        frechet_distance(REAL[:, :, None], FAKE)
