"""Noise-schedule maths against MONAI's DDPMScheduler/DDIMScheduler on the same inputs and noise."""
from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from cfbrain.diffusion.schedule import NoiseSchedule, reverse_pairs

torch.set_num_threads(1)

# MONAI keeps its schedule in float32, where 1 - ᾱ_0 = 1e-4 has only ~3 significant digits; the step
# formulas are compared with MONAI's step code run on our float64 β, to a tolerance that checks the maths.
TOLERANCE = dict(rtol=1e-9, atol=1e-9)


def in_float64(scheduler):
    """A MONAI scheduler computing with our float64 β (its own float32 β are checked separately)."""
    scheduler.betas = NoiseSchedule().betas
    scheduler.alphas = 1 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    if isinstance(scheduler, DDIMScheduler):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


@pytest.fixture
def batch():
    """x0, x_t and a network output ε, (3, 1, 8, 8) float64 each, x0 in [-1, 1]."""
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 8, 8, generator=generator, dtype=torch.float64) * 2 - 1
    x_t = torch.randn(3, 1, 8, 8, generator=generator, dtype=torch.float64)
    eps = torch.randn(3, 1, 8, 8, generator=generator, dtype=torch.float64)
    return x0, x_t, eps


def seeded_noise(seed: int, shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kind, monai_name", [("linear", "linear_beta"), ("cosine", "cosine")])
def test_schedules_match_monai(kind, monai_name):
    ours = NoiseSchedule(kind=kind)
    theirs = DDPMScheduler(schedule=monai_name)
    torch.testing.assert_close(ours.betas.float(), theirs.betas, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.alphas_cumprod.float(), theirs.alphas_cumprod, rtol=1e-4, atol=1e-7)
    assert ours.alpha_bar(-1) == 1.0


def test_q_sample_matches_monai_add_noise(batch):
    x0, _, eps = batch
    timesteps = torch.tensor([0, 500, 999])
    expected = in_float64(DDPMScheduler()).add_noise(x0, eps, timesteps)
    torch.testing.assert_close(NoiseSchedule().q_sample(x0, timesteps, eps), expected, **TOLERANCE)
    mean, std = NoiseSchedule().q_mean_std(x0, 500)
    same_step = in_float64(DDPMScheduler()).add_noise(x0, eps, torch.full((3,), 500))
    torch.testing.assert_close(mean + std * eps, same_step, **TOLERANCE)


def test_q_sample_from_composes_to_the_marginal(batch):
    schedule = NoiseSchedule()
    x0, _, _ = batch
    # noiseless composition recovers the marginal mean sqrt(ᾱ_t) x0
    torch.testing.assert_close(
        schedule.q_sample_from(schedule.q_sample(x0, 100, torch.zeros_like(x0)), 100, 300, torch.zeros_like(x0)),
        schedule.q_mean_std(x0, 300)[0],
    )
    # and the variances add up to 1 - ᾱ_t
    first, second = seeded_noise(1, (20000,)), seeded_noise(2, (20000,))
    composed = schedule.q_sample_from(schedule.q_sample(torch.zeros(20000), 100, first), 100, 300, second)
    assert composed.var().item() == pytest.approx(1 - schedule.alpha_bar(300), rel=0.03)


@pytest.mark.parametrize("t", [0, 1, 10, 500, 999])
def test_posterior_mean_and_variance_match_monai(batch, t):
    x0, x_t, _ = batch
    theirs = in_float64(DDPMScheduler())
    mean, variance = NoiseSchedule().posterior_mean_variance(x0, x_t, t, t - 1)
    torch.testing.assert_close(mean, theirs._get_mean(t, x0, x_t), **TOLERANCE)
    assert variance == pytest.approx(theirs._get_variance(t).item(), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("variance, monai_variance", [("small", "fixed_small"), ("large", "fixed_large")])
@pytest.mark.parametrize("t", [1, 250, 999])
def test_reverse_variance_matches_monai(variance, monai_variance, t):
    theirs = in_float64(DDPMScheduler(variance_type=monai_variance))._get_variance(t).item()
    assert NoiseSchedule().reverse_variance(t, t - 1, variance) == pytest.approx(theirs, rel=1e-9)


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("t", [0, 1, 300, 999])
def test_ddpm_step_matches_monai_with_the_same_noise(batch, clip, variance, t):
    _, x_t, eps = batch
    expected, _ = in_float64(DDPMScheduler(variance_type=variance, clip_sample=clip)).step(
        eps, t, x_t, generator=torch.Generator().manual_seed(7)
    )
    ours = NoiseSchedule().ddpm_step(
        x_t, t, t - 1, eps, seeded_noise(7, x_t.shape), variance.removeprefix("fixed_"), clip_x0=clip
    )
    torch.testing.assert_close(ours, expected, **TOLERANCE)


def test_ddpm_mean_is_the_eps_form_of_the_theses(batch):
    """Without clipping, μ_θ = (x_t - β_t / sqrt(1 - ᾱ_t) ε) / sqrt(α_t) (thesis 003 §6.5.1, 000 eq. 3.1)."""
    schedule = NoiseSchedule()
    _, x_t, eps = batch
    t = 400
    beta = float(schedule.betas[t])
    expected = (x_t - beta / (1 - schedule.alpha_bar(t)) ** 0.5 * eps) / (1 - beta) ** 0.5
    torch.testing.assert_close(schedule.ddpm_step(x_t, t, t - 1, eps, None), expected)


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("t", [0, 20, 40, 980])
def test_strided_ddim_step_matches_monai(batch, clip, eta, t):
    _, x_t, eps = batch
    theirs = in_float64(DDIMScheduler(clip_sample=clip))
    theirs.set_timesteps(50)  # MONAI steps from t to t - 1000 // 50
    expected, _ = theirs.step(eps, t, x_t, eta=eta, generator=torch.Generator().manual_seed(3))
    prev = t - 20 if t >= 20 else -1
    ours = NoiseSchedule().ddim_step(x_t, t, prev, eps, eta, seeded_noise(3, x_t.shape), clip_x0=clip)
    torch.testing.assert_close(ours, expected, **TOLERANCE)


@pytest.mark.parametrize("s", [0, 20, 480])
def test_ddim_inversion_step_matches_monai_reversed_step(batch, s):
    _, x_s, eps = batch
    theirs = in_float64(DDIMScheduler(clip_sample=False))
    theirs.set_timesteps(50)
    expected, _ = theirs.reversed_step(eps, s, x_s)
    torch.testing.assert_close(NoiseSchedule().ddim_inversion_step(x_s, s, s + 20, eps), expected, **TOLERANCE)


def test_ddim_step_undoes_the_inversion_step_for_the_same_eps(batch):
    schedule = NoiseSchedule()
    x0, _, eps = batch
    for s, t in [(-1, 0), (0, 20), (300, 499)]:
        there = schedule.ddim_inversion_step(x0, s, t, eps)
        torch.testing.assert_close(schedule.ddim_step(there, t, s, eps), x0, **TOLERANCE)


def test_ddim_with_eta_one_has_the_ddpm_variance(batch):
    """Thesis 003 eq. 6.8: σ_t = the DDPM value gives DDPM's step, so the two agree given the same noise."""
    schedule = NoiseSchedule()
    _, x_t, eps = batch
    noise = seeded_noise(5, x_t.shape)
    torch.testing.assert_close(
        schedule.ddim_step(x_t, 600, 599, eps, 1.0, noise), schedule.ddpm_step(x_t, 600, 599, eps, noise), **TOLERANCE
    )


def test_timesteps_and_pairs():
    schedule = NoiseSchedule()
    assert schedule.timesteps(999) == list(range(999, -1, -1))
    strided = schedule.timesteps(999, 20)
    assert strided[:3] == [999, 980, 960] and strided[-1] == 0 and len(strided) == 51
    assert schedule.timesteps(40, 20) == [40, 20, 0]
    assert schedule.timesteps(-1, 20) == []
    assert reverse_pairs([40, 20, 0]) == [(40, 20), (20, 0), (0, -1)]
    with pytest.raises(ValueError):
        schedule.timesteps(1000)
    with pytest.raises(ValueError):
        schedule.ddpm_step(torch.zeros(1), 10, 10, torch.zeros(1), None)
