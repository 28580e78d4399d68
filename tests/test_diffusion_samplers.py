"""Structure of the samplers, with tiny fake networks (and one tiny MONAI DiffusionModelUNet)."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet

from cfbrain.diffusion.masks import mededit_inpainting_mask
from cfbrain.diffusion.samplers import (
    ConcatConditioning,
    NoiseStreams,
    StepInfo,
    anomaly_map,
    ddim_invert,
    ddim_sample,
    dif_fuse,
    mededit,
    mededit_condition,
    naive_repaint,
    palette,
    palette_condition,
    palette_input,
    repaint,
    sdedit,
)
from cfbrain.diffusion.schedule import NoiseSchedule

torch.set_num_threads(1)

SCHEDULE = NoiseSchedule()


def linear_eps(x_t, t, cond):
    """A fixed pixel-wise linear 'network' that also reads its conditioning, so pixels stay independent."""
    eps = 0.1 * x_t + 0.01 * t.view(-1, 1, 1, 1) / 1000
    return eps if cond is None else eps + 0.05 * cond.sum(dim=1, keepdim=True)


def constant_eps(x_t, t, cond):
    return torch.full_like(x_t, 0.3)


def images(batch: int = 2, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def masks(batch: int = 2, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """A small pathology square and a brain mask covering all but the border, (B, 1, size, size)."""
    pathology = torch.zeros(batch, 1, size, size)
    pathology[:, :, 3:5, 3:5] = 1
    brain = torch.zeros(batch, 1, size, size)
    brain[:, :, 1:-1, 1:-1] = 1
    return pathology, brain


def recorder() -> tuple[list[StepInfo], Callable[[StepInfo], None]]:
    steps: list[StepInfo] = []
    return steps, steps.append


# ---------------------------------------------------------------------------------------------------------
# DDIM inversion round trip
@pytest.mark.parametrize(
    "model, stride, tolerance", [(constant_eps, 25, 1e-5), (linear_eps, 1, 1e-3), (linear_eps, 10, 1e-2)]
)
def test_ddim_inversion_then_sampling_reconstructs_the_input(model, stride, tolerance):
    x0 = images()
    latent = ddim_invert(model, x0, 499, stride=stride)
    assert latent.evaluations == len(SCHEDULE.timesteps(499, stride))
    assert (latent.images - x0).abs().max() > 0.5
    reconstruction = ddim_sample(model, latent.images, 499, stride=stride)
    torch.testing.assert_close(reconstruction.images, x0, rtol=0, atol=tolerance)


# ---------------------------------------------------------------------------------------------------------
# MedEdit / RePaint
@pytest.mark.parametrize("known_level", ["previous", "current"])
def test_repaint_known_region_is_the_noised_prior_at_every_step(known_level):
    """Outside m, each state is q(x_level | x0) of the healthy image, whatever the network says."""
    x0 = images(batch=1, size=64)
    inpaint = torch.zeros(1, 1, 64, 64)
    inpaint[..., :, :32] = 1
    steps, callback = recorder()
    huge_eps = lambda x_t, t, cond: torch.full_like(x_t, 5.0)  # noqa: E731 - makes the unknown half obvious
    repaint(huge_eps, x0, inpaint, resample_steps=2, known_level=known_level, stride=100, callback=callback)
    assert [(s.t, s.prev) for s in steps[:3]] == [(999, 900), (999, 900), (900, 800)]
    for step in steps:
        level = step.prev if known_level == "previous" else step.t
        known = step.x[..., 32:]
        if level < 0:
            torch.testing.assert_close(known, x0[..., 32:])
            continue
        mean, std = SCHEDULE.q_mean_std(x0[..., 32:], level)
        standardised = (known - mean) / std
        assert abs(standardised.mean().item()) < 0.1 and abs(standardised.std().item() - 1) < 0.1, step.t


def test_repaint_renoises_one_step_between_resampling_passes():
    """Algorithm 1 line 12: the next pass starts from x_t ~ q(x_t | x_prev) of the previous pass' result."""
    inputs = []

    def spy(x_t, t, cond):
        inputs.append(x_t.clone())
        return 0.1 * x_t

    steps, callback = recorder()
    repaint(spy, images(batch=1, size=64), torch.ones(1, 1, 64, 64), resample_steps=2, stride=100, callback=callback)
    assert len(inputs) == len(steps)
    for index in range(0, len(steps) - 1, 2):  # pass 0 of each step with prev >= 0, then its pass 1
        first_pass, t, prev = steps[index], steps[index].t, steps[index].prev
        alpha = SCHEDULE.alpha_bar(t) / SCHEDULE.alpha_bar(prev)
        standardised = (inputs[index + 1] - alpha**0.5 * first_pass.x) / (1 - alpha) ** 0.5
        assert abs(standardised.mean().item()) < 0.1 and abs(standardised.std().item() - 1) < 0.1, t


def test_repaint_evaluations_count_resampling_passes():
    x0, (pathology, brain) = images(), masks()
    levels = len(SCHEDULE.timesteps(999, 100))
    for passes in (1, 3):
        result = naive_repaint(linear_eps, x0, pathology, brain, resample_steps=passes, stride=100)
        assert result.evaluations == (levels - 1) * passes + 1  # the last step (no noise) runs once


def test_single_pass_repaint_with_a_full_mask_is_plain_conditional_sampling():
    """U = 1 never re-noises; with m = 1 it is ancestral sampling from the noised prior (SDEdit at ratio 1)."""
    x0, (pathology, brain) = images(), masks()
    inpainted = repaint(
        linear_eps, x0, torch.ones_like(x0), cond=mededit_condition(pathology, brain), resample_steps=1,
        stride=50, seeds=[3, 4],
    )
    sampled = sdedit(linear_eps, x0, pathology, brain, ratio=1.0, stride=50, seeds=[3, 4])
    torch.testing.assert_close(inpainted.images, sampled.images, rtol=0, atol=0)
    assert inpainted.evaluations == sampled.evaluations == len(SCHEDULE.timesteps(999, 50))


def test_mededit_with_an_empty_mask_returns_the_healthy_image():
    x0 = images()
    empty, brain = torch.zeros(2, 1, 8, 8), masks()[1]
    thesis = mededit(linear_eps, x0, empty, brain, stride=100)
    torch.testing.assert_close(thesis.images, x0, rtol=0, atol=0)
    # the authors' off-by-one leaves the last step's noise level sqrt(1 - ᾱ_0) = 0.01
    repo = mededit(linear_eps, x0, empty, brain, known_level="current", stride=100)
    residual = (repo.images - x0).abs()
    assert 0 < residual.max() < 6 * (1 - SCHEDULE.alpha_bar(0)) ** 0.5


def test_mededit_only_changes_the_dilated_mask_and_conditions_on_the_masks():
    x0, (pathology, brain) = images(size=16), masks(size=16)
    seen = []

    def spy(x_t, t, cond):
        seen.append(cond)
        return linear_eps(x_t, t, cond)

    result = mededit(spy, x0, pathology, brain, kernel_size=5, stride=200)
    region = mededit_inpainting_mask(pathology, brain, 5) > 0
    torch.testing.assert_close(result.images[~region], x0[~region], rtol=0, atol=0)
    assert (result.images[region] - x0[region]).abs().min() > 0
    torch.testing.assert_close(seen[0], torch.cat([pathology, brain], dim=1))


# ---------------------------------------------------------------------------------------------------------
# SDEdit and Palette
def test_sdedit_with_ratio_zero_returns_the_input_without_network_calls():
    x0, (pathology, brain) = images(), masks()
    result = sdedit(linear_eps, x0, pathology, brain, ratio=0.0)
    assert result.evaluations == 0
    torch.testing.assert_close(result.images, x0, rtol=0, atol=0)


def test_sdedit_starts_at_ratio_times_t():
    x0, (pathology, brain) = images(), masks()
    steps, callback = recorder()
    result = sdedit(linear_eps, x0, pathology, brain, ratio=0.2, stride=10, callback=callback)
    assert steps[0].t == 199 and steps[1].t == 190 and steps[-1].prev == -1
    assert result.evaluations == len(steps) == 21


def test_palette_condition_puts_noise_inside_the_mask_only():
    x0, (pathology, _) = images(), masks()
    noise = torch.randn_like(x0)
    condition = palette_condition(x0, pathology, noise)
    inside = pathology.bool().expand_as(x0)
    torch.testing.assert_close(condition[inside], noise[inside])
    torch.testing.assert_close(condition[~inside], x0[~inside])


def test_palette_keeps_the_unmasked_region_of_the_input_exactly():
    x0, (pathology, _) = images(batch=3, size=16), masks(batch=3, size=16)
    steps, callback = recorder()
    result = palette(linear_eps, x0, pathology, stride=100, callback=callback)
    outside, inside = ~pathology.bool(), pathology.bool()
    assert torch.equal(result.images[outside], x0[outside])
    assert all(torch.equal(step.x[outside], x0[outside]) for step in steps)  # at every step
    assert (result.images[inside] - x0[inside]).abs().mean() > 0.05
    assert result.evaluations == len(steps) == len(SCHEDULE.timesteps(999, 100))


def test_palette_network_sees_the_clean_image_outside_the_mask():
    x0, (pathology, _) = images(), masks()
    seen = []

    def spy(x_t, t, cond):
        seen.append(x_t.clone())
        return linear_eps(x_t, t, cond)

    palette(spy, x0, pathology, stride=250)
    outside = ~pathology.bool()
    assert all(torch.equal(x[outside], x0[outside]) for x in seen)
    torch.testing.assert_close(palette_input(seen[0], x0, pathology), seen[0])


# ---------------------------------------------------------------------------------------------------------
# Dif-fuse
def test_dif_fuse_without_mask_reconstructs_the_input_with_one_call_per_step():
    x0 = images()
    result = dif_fuse(linear_eps, x0, torch.zeros(2, 1, 8, 8), inversion_depth=500, stride=10)
    steps = len(SCHEDULE.timesteps(499, 10))
    assert result.evaluations == 2 * steps  # inversion + one shared call per backward step
    torch.testing.assert_close(result.images, x0, rtol=0, atol=1e-2)
    assert result.reconstruction is None and result.anomaly_map.shape == (2, 1, 8, 8)


def test_dif_fuse_edits_inside_the_mask_and_follows_ddim_outside():
    x0 = images(size=16)
    edit = torch.zeros(2, 1, 16, 16)
    edit[..., 4:12, 4:12] = 1
    result = dif_fuse(linear_eps, x0, edit, stride=25, anomaly_reference="reconstruction")
    steps = len(SCHEDULE.timesteps(499, 25))
    assert result.evaluations == 3 * steps  # the separate reconstruction chain costs one call per step
    inside = edit.bool()
    # the pixel-wise fake network keeps pixels independent: outside m only the DDIM chain acts
    torch.testing.assert_close(result.images[~inside], result.reconstruction[~inside], rtol=0, atol=1e-6)
    assert (result.images[inside] - result.reconstruction[inside]).abs().mean() > 0.1
    assert result.anomaly_map[inside].mean() > 5 * result.anomaly_map[~inside].mean()


def test_anomaly_map_is_max_normalised_and_cleaned():
    reference = torch.zeros(2, 1, 16, 16)
    counterfactual = torch.zeros(2, 1, 16, 16)
    counterfactual[0, 0, 4:11, 4:11] = 0.5  # a 7 x 7 blob survives a 5 x 5 opening ...
    counterfactual[0, 0, 14, 1] = 1.0  # ... a lone speck does not
    amap = anomaly_map(reference, counterfactual)
    assert amap[0, 0, 14, 1] == 0 and amap[0, 0, 7, 7] == pytest.approx(0.5)
    assert amap[1].abs().sum() == 0  # no difference: zeros, not NaN
    counterfactual[0, 0, 14, 1] = 0
    assert anomaly_map(reference, counterfactual)[0, 0, 7, 7] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------
# batching, seeds and a real network
SAMPLERS = {
    "mededit": lambda x, p, b, seeds: mededit(
        linear_eps, x, p, b, kernel_size=3, resample_steps=2, stride=100, seeds=seeds
    ),
    "naive_repaint": lambda x, p, b, seeds: naive_repaint(linear_eps, x, p, b, stride=100, seeds=seeds),
    "sdedit": lambda x, p, b, seeds: sdedit(linear_eps, x, p, b, ratio=0.6, stride=50, seeds=seeds),
    "palette": lambda x, p, b, seeds: palette(linear_eps, x, p, stride=100, seeds=seeds),
    "dif_fuse": lambda x, p, b, seeds: dif_fuse(linear_eps, x, p, stride=50, seeds=seeds),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_batched_results_equal_per_image_results_with_the_same_seeds(name):
    x0, (pathology, brain) = images(batch=3), masks(batch=3)
    sample = SAMPLERS[name]
    batched = sample(x0, pathology, brain, [11, 12, 13]).images
    for index, seed in enumerate([11, 12, 13]):
        one = slice(index, index + 1)
        alone = sample(x0[one], pathology[one], brain[one], [seed]).images
        torch.testing.assert_close(batched[one], alone, rtol=0, atol=1e-6)
    assert not torch.allclose(batched, sample(x0, pathology, brain, [21, 22, 23]).images)


def test_noise_streams_are_independent_per_purpose_and_image():
    like = torch.zeros(2, 1, 4, 4)
    streams = NoiseStreams(5, 2, torch.device("cpu"))
    first = streams.normal("reverse", like)
    assert not torch.allclose(first[0], first[1])
    again = NoiseStreams([5, 6], 2, torch.device("cpu"))
    again.normal("known", like)  # draws for another purpose do not shift this one
    torch.testing.assert_close(again.normal("reverse", like), first)
    with pytest.raises(ValueError):
        NoiseStreams([1, 2, 3], 2, torch.device("cpu"))


def test_noise_drawn_in_blocks_is_the_same_sequence_per_image_alone_or_batched():
    cpu = torch.device("cpu")
    like = torch.zeros(3, 1, 3, 5)  # 15 values per image (no multiple of 16): 3 draws per block of 45
    batched = NoiseStreams([7, 8, 9], 3, cpu, block_elements=45)
    alone = NoiseStreams([8], 1, cpu, block_elements=45)
    for _ in range(7):  # crosses two block boundaries
        torch.testing.assert_close(batched.normal("reverse", like)[1:2], alone.normal("reverse", like[:1]),
                                   rtol=0, atol=0)
    with pytest.raises(ValueError, match="drawn for shape"):
        batched.normal("reverse", torch.zeros(3, 1, 4, 4))
    square = torch.zeros(1, 1, 4, 4)  # 16 values: a block is the same sequence as single draws
    blocks, singles = NoiseStreams([8], 1, cpu, block_elements=48), NoiseStreams([8], 1, cpu, block_elements=1)
    for _ in range(7):
        torch.testing.assert_close(blocks.normal("known", square), singles.normal("known", square), rtol=0, atol=0)


class TinyTimeConditionedNet(torch.nn.Module):
    """``network(x, timesteps)`` like MONAI's DiffusionModelUNet: a 3 x 3 conv plus a timestep embedding."""

    def __init__(self, in_channels: int, out_channels: int = 1) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = torch.nn.Embedding(1000, out_channels)

    def forward(self, x, timesteps):
        return self.conv(x) + self.time(timesteps)[:, :, None, None]


def test_a_network_of_x_and_timesteps_plugs_in_with_concatenated_conditioning():
    torch.manual_seed(0)
    x0, (pathology, brain) = images(batch=3, size=16), masks(batch=3, size=16)
    conditional = ConcatConditioning(TinyTimeConditionedNet(in_channels=3)).eval()
    # clipped: an untrained network's x̂_0 grows to ~100 and batched-convolution rounding with it
    options = dict(kernel_size=5, resample_steps=2, stride=250, clip_x0=True)
    result = mededit(conditional, x0, pathology, brain, seeds=[1, 2, 3], **options)
    assert result.images.shape == x0.shape and torch.isfinite(result.images).all()
    assert result.evaluations == 4 * 2 + 1
    one = slice(1, 2)
    alone = mededit(conditional, x0[one], pathology[one], brain[one], seeds=[2], **options)
    torch.testing.assert_close(result.images[one], alone.images, rtol=0, atol=1e-5)
    unconditional = ConcatConditioning(TinyTimeConditionedNet(in_channels=1)).eval()
    fused = dif_fuse(unconditional, x0, pathology, inversion_depth=100, stride=50)
    assert torch.isfinite(fused.images).all() and fused.evaluations == 2 * 3


def test_monai_diffusion_unet_plugs_in_with_concatenated_conditioning():
    pytest.importorskip("einops", reason="MONAI's DiffusionModelUNet needs einops for its attention mid-block")
    network = DiffusionModelUNet(
        spatial_dims=2, in_channels=3, out_channels=1, channels=(8, 8), attention_levels=(False, False),
        num_res_blocks=1, norm_num_groups=4,
    ).eval()
    x0, (pathology, brain) = images(size=16), masks(size=16)
    result = mededit(ConcatConditioning(network), x0, pathology, brain, kernel_size=5, resample_steps=2, stride=250)
    assert result.images.shape == x0.shape and torch.isfinite(result.images).all()
