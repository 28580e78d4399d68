"""Dif-fuse (thesis 003 Algorithm 2): the lines the sampler tests do not pin down, each checked by hand.

- the DDIM-inverted latent is at the level the first reverse step uses (level K - 1 = thesis step K);
- the DDPM branch adds Algorithm 2's σ_t (the DDPM posterior std, not sqrt(β_t));
- the anomaly map is an opening followed by a closing;
- the mask is smoothed first, then binarised at the percentile τ of the smoothed map.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from cfbrain.diffusion.masks import difuse_mask
from cfbrain.diffusion.samplers import StepInfo, anomaly_map, dif_fuse
from cfbrain.diffusion.schedule import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fixed_noise(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(7))


def test_inverted_latent_is_at_the_level_of_the_first_reverse_step():
    """With a network that predicts the same ε everywhere, DDIM inversion of x0 lands exactly on
    q(x_L | x0) = sqrt(ᾱ_L) x0 + sqrt(1 - ᾱ_L) ε at the level L it targets, and a DDIM step from level t
    returns x0 only when t = L. Unmasked Dif-fuse therefore gives x0 back iff the backward loop starts at
    the latent's level."""
    schedule = NoiseSchedule()
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    eps = fixed_noise((2, 1, 8, 8))
    steps: list[StepInfo] = []
    result = dif_fuse(lambda x, t, cond: eps, x0, torch.zeros(2, 1, 8, 8), inversion_depth=500, stride=50,
                      callback=steps.append)
    latent_level = 499  # thesis step K = 500 is index K - 1
    expected_latent = math.sqrt(schedule.alpha_bar(latent_level)) * x0 + math.sqrt(
        1 - schedule.alpha_bar(latent_level)) * eps
    torch.testing.assert_close(result.latent, expected_latent, rtol=0, atol=1e-5)
    assert steps[0].t == latent_level
    torch.testing.assert_close(result.images, x0, rtol=0, atol=1e-4)


def test_ddpm_branch_adds_the_posterior_sigma_of_algorithm_2():
    """Full mask, K = 2 (levels 1 -> 0 -> clean): the first step is x_DDPM = μ_θ + σ_t ε_t with
    μ_θ = (x_t - β_t / sqrt(1 - ᾱ_t) ε_θ) / sqrt(α_t) (eq. 6.7) and
    σ_t = sqrt((1 - ᾱ_{t-1}) / (1 - ᾱ_t)) sqrt(1 - ᾱ_t / ᾱ_{t-1}) (§6.5.1), computed here from the β list.
    At thesis step t = 2 σ_t is 0.74 sqrt(β_t), so the spread of x_DDPM - μ_θ over 16,384 pixels tells
    the two apart (standard error 0.6 %)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    beta_t, abar_t, abar_prev = float(betas[1]), float(alpha_bar[1]), float(alpha_bar[0])
    sigma = math.sqrt((1 - abar_prev) / (1 - abar_t)) * math.sqrt(1 - abar_t / abar_prev)
    eps = fixed_noise((1, 1, 128, 128))
    x0 = torch.zeros(1, 1, 128, 128)
    steps: list[StepInfo] = []
    result = dif_fuse(lambda x, t, cond: eps, x0, torch.ones(1, 1, 128, 128), inversion_depth=2,
                      callback=steps.append)
    assert [(s.t, s.prev) for s in steps] == [(1, 0), (0, -1)]
    x_t = result.latent.double()
    mean = (x_t - beta_t / math.sqrt(1 - abar_t) * eps.double()) / math.sqrt(1 - beta_t)
    residual = steps[0].x.double() - mean
    assert residual.std().item() == pytest.approx(sigma, rel=0.03)
    assert abs(residual.mean().item()) < 3 * sigma / 128


def test_anomaly_map_is_an_opening_then_a_closing():
    difference = (np.random.default_rng(0).random((24, 24)) < 0.45).astype(np.float32)
    open_close = ndimage.grey_closing(ndimage.grey_opening(difference, size=5, mode="nearest"), size=5,
                                      mode="nearest")
    close_open = ndimage.grey_opening(ndimage.grey_closing(difference, size=5, mode="nearest"), size=5,
                                      mode="nearest")
    assert not np.array_equal(open_close, close_open)  # the order matters for this input
    amap = anomaly_map(torch.zeros(1, 1, 24, 24), torch.from_numpy(difference)[None, None])
    np.testing.assert_array_equal(amap[0, 0].numpy(), open_close)


def test_mask_smooths_the_saliency_then_binarises_at_its_percentile():
    saliency = np.random.default_rng(1).random((2, 1, 20, 20)).astype(np.float32) ** 4
    sigma = 0.3 * ((5 - 1) / 2 - 1) + 0.8  # OpenCV's sigma for a 5 x 5 kernel
    for image, mask in zip(saliency[:, 0], difuse_mask(saliency)[:, 0]):
        smooth = ndimage.gaussian_filter(image, sigma, mode="mirror", truncate=2 / sigma)
        expected = smooth > np.percentile(smooth, 90)
        np.testing.assert_array_equal(mask > 0, expected)
        assert mask.sum() == 40  # τ = the 90th percentile keeps a tenth of the pixels
    authors = difuse_mask(saliency, order="threshold_blur")
    assert (authors.sum(axis=(1, 2, 3)) > 100).all()  # threshold, blur, > 0 grows the kept tenth
