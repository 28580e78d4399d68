"""Counterfactual samplers: MedEdit, naïve RePaint, SDEdit and Palette (thesis 000), Dif-fuse (thesis 003).

The network is any callable ``eps_model(x_t, t, cond) -> ε`` with ``x_t`` (B, C, H, W) in [-1, 1]
(ARCHITECTURE.md contract 7), ``t`` (B,) long step indices in ``[0, T-1]`` (the MONAI/diffusers convention,
see :mod:`cfbrain.diffusion.schedule`), ``cond`` (B, Cc, H, W) or None, and ``ε`` shaped like ``x_t``.
:class:`ConcatConditioning` turns a MONAI ``DiffusionModelUNet`` (or any ``network(x, timesteps)``) into
one. Samplers run under ``torch.no_grad`` on the device of the input tensors; put the network in eval mode.

Every sampler processes the whole batch in one forward pass per step and returns the final images with the
number of network calls it made (each call is one forward pass over the batch). Randomness comes from
per-image, per-purpose generators (:class:`NoiseStreams`), so an image gets the same result alone or in a
batch with the same seed. ``stride`` subsamples the T-step schedule (levels ``t_start, ..., 2·stride,
stride, 0``, see :meth:`NoiseSchedule.timesteps`) for quick demos without changing the algorithms.
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from cfbrain.diffusion.masks import grey_closing, grey_opening, mededit_inpainting_mask
from cfbrain.diffusion.schedule import NoiseSchedule, ReverseVariance, reverse_pairs

log = logging.getLogger(__name__)

EpsModel = Callable[[Tensor, Tensor, Tensor | None], Tensor]
Seeds = int | Sequence[int]


@dataclass(frozen=True)
class StepInfo:
    """Passed to a sampler's ``callback`` after every reverse step (and every RePaint resampling pass).

    ``x`` is the state at level ``prev`` (clean data when ``prev == -1``) after the step, (B, C, H, W).
    """

    t: int
    prev: int
    resample: int
    x: Tensor


Callback = Callable[[StepInfo], None]


@dataclass(frozen=True)
class SamplerResult:
    """Final images (B, C, H, W) in [-1, 1] and the number of network calls that produced them."""

    images: Tensor
    evaluations: int


@dataclass(frozen=True)
class DifFuseResult(SamplerResult):
    """Dif-fuse output: counterfactuals, anomaly maps (B, 1, H, W) in [0, 1], the DDIM latent at level K-1,
    and the pure DDIM reconstruction (only computed for ``anomaly_reference="reconstruction"``)."""

    anomaly_map: Tensor
    latent: Tensor
    reconstruction: Tensor | None


class NoiseStreams:
    """Independent Gaussian noise per image and per purpose, drawn in blocks.

    Image ``i`` draws from generators seeded by ``(seeds[i], purpose)``, so its noise does not depend on
    the other images of the batch nor on how many draws other purposes made. ``seeds`` may be an int
    ``s``, meaning ``s, s + 1, ..., s + B - 1``.

    Each image's generator fills a block of ``max(1, block_elements // n)`` draws of ``n`` elements at once
    (``n`` = elements per image; the block size does not depend on the batch), and :meth:`normal` hands
    out one draw per call: B generator calls per block instead of per draw. A block of draws is the same
    sequence as that many single draws when ``n`` is a multiple of 16 (torch's CPU normal sampler fills
    16 values at a time). A purpose keeps the image shape of its first draw.
    """

    def __init__(self, seeds: Seeds, batch_size: int, device: torch.device, block_elements: int = 2**18) -> None:
        seeds = list(range(seeds, seeds + batch_size)) if isinstance(seeds, int) else list(seeds)
        if len(seeds) != batch_size:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {batch_size} images")
        self._seeds = seeds
        self._device = torch.device(device)
        self._block_elements = block_elements
        self._generators: dict[str, list[torch.Generator]] = {}
        self._blocks: dict[str, Tensor] = {}
        self._next: dict[str, int] = {}

    def _generators_for(self, purpose: str) -> list[torch.Generator]:
        if purpose not in self._generators:
            purpose_key = zlib.crc32(purpose.encode())
            generators = []
            for seed in self._seeds:
                state = np.random.SeedSequence([seed, purpose_key]).generate_state(1, np.uint64)[0]
                generators.append(torch.Generator(device=self._device).manual_seed(int(state)))
            self._generators[purpose] = generators
        return self._generators[purpose]

    def _refill(self, purpose: str, like: Tensor) -> None:
        """A new block (draws, B, *image shape) of ``purpose``: one call per image's generator."""
        draws = max(1, self._block_elements // like[0].numel())
        shape = (draws, *like.shape[1:])
        self._blocks[purpose] = torch.stack(
            [torch.randn(shape, generator=g, device=like.device, dtype=like.dtype)
             for g in self._generators_for(purpose)], dim=1)
        self._next[purpose] = 0

    def normal(self, purpose: str, like: Tensor) -> Tensor:
        """Standard normal noise shaped, typed and placed like ``like`` (B, ...)."""
        block = self._blocks.get(purpose)
        if block is not None and block.shape[1:] != like.shape:
            raise ValueError(f"{purpose!r} noise was drawn for shape {tuple(block.shape[1:])}, not {tuple(like.shape)}")
        if block is None or self._next[purpose] == block.shape[0]:
            self._refill(purpose, like)
        draw = self._blocks[purpose][self._next[purpose]]
        self._next[purpose] += 1
        return draw.to(dtype=like.dtype)


class ConcatConditioning(torch.nn.Module):
    """Adapt ``network(x, timesteps)`` to ``eps_model(x_t, t, cond)`` by concatenating channels.

    The network input is ``[x_t, cond]`` along dim 1, so a MONAI ``DiffusionModelUNet`` for MedEdit has
    ``in_channels = C + 2`` (``[x_t, pathology mask, brain mask]``, see :func:`mededit_condition`) and
    ``out_channels = C``; an unconditional network (Dif-fuse) gets ``cond=None`` and sees ``x_t`` only.
    MONAI's ``DiffusionModelUNet`` always builds an attention mid-block, which imports ``einops``.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        inputs = x_t if cond is None else torch.cat([x_t, cond.to(x_t.dtype)], dim=1)
        return self.network(inputs, t)


class _CountedModel:
    """Binds the conditioning, expands the step index to (B,), checks shapes and counts calls."""

    def __init__(self, eps_model: EpsModel, cond: Tensor | None) -> None:
        self._eps_model = eps_model
        self._cond = cond
        self.calls = 0

    def __call__(self, x_t: Tensor, t: int) -> Tensor:
        self.calls += 1
        timesteps = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        eps = self._eps_model(x_t, timesteps, self._cond)
        if eps.shape != x_t.shape:
            raise ValueError(f"eps_model returned shape {tuple(eps.shape)} for input {tuple(x_t.shape)}")
        return eps


def _steps(pairs: list[tuple[int, int]], progress: bool, description: str) -> Iterable[tuple[int, int]]:
    return tqdm(pairs, desc=description, disable=not progress, leave=False)


def _notify(callback: Callback | None, t: int, prev: int, resample: int, x: Tensor) -> None:
    if callback is not None:
        callback(StepInfo(t=t, prev=prev, resample=resample, x=x))


def _as_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A (B, 1, H, W) or (B, H, W) mask as a float (B, 1, H, W) tensor broadcasting over ``like``'s channels."""
    if mask.ndim == like.ndim - 1:
        mask = mask.unsqueeze(1)
    if mask.shape[0] != like.shape[0] or mask.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match images {tuple(like.shape)}")
    return mask.to(device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------------------------------------
# plain chains
def _ddpm_chain(
    model: _CountedModel,
    schedule: NoiseSchedule,
    x: Tensor,
    pairs: list[tuple[int, int]],
    streams: NoiseStreams,
    variance: ReverseVariance,
    clip_x0: bool,
    callback: Callback | None,
    progress: bool,
    description: str,
) -> Tensor:
    for t, prev in _steps(pairs, progress, description):
        noise = streams.normal("reverse", x) if prev >= 0 else None
        x = schedule.ddpm_step(x, t, prev, model(x, t), noise, variance, clip_x0)
        _notify(callback, t, prev, 0, x)
    return x


def _ddim_chain(
    model: _CountedModel,
    schedule: NoiseSchedule,
    x: Tensor,
    pairs: list[tuple[int, int]],
    streams: NoiseStreams,
    eta: float,
    clip_x0: bool,
    callback: Callback | None,
    progress: bool,
    description: str,
) -> Tensor:
    for t, prev in _steps(pairs, progress, description):
        noise = streams.normal("reverse", x) if eta > 0 and prev >= 0 else None
        x = schedule.ddim_step(x, t, prev, model(x, t), eta, noise, clip_x0)
        _notify(callback, t, prev, 0, x)
    return x


def _ddim_inversion_chain(
    model: _CountedModel, schedule: NoiseSchedule, x0: Tensor, levels: list[int], progress: bool
) -> Tensor:
    """Encode clean ``x0`` through the ascending ``levels`` (thesis 003 Algorithm 2, forward loop).

    Each step uses ``ε_θ`` at the current state, so the latent is reached with ``len(levels)`` calls. The
    first step starts from clean data (level -1), where the network is evaluated at step index 0.
    """
    x, level = x0, -1
    for target in tqdm(levels, desc="DDIM inversion", disable=not progress, leave=False):
        x = schedule.ddim_inversion_step(x, level, target, model(x, max(level, 0)))
        level = target
    return x


@torch.no_grad()
def ddpm_sample(
    eps_model: EpsModel,
    x_t: Tensor,
    t_start: int,
    *,
    cond: Tensor | None = None,
    schedule: NoiseSchedule | None = None,
    stride: int = 1,
    seeds: Seeds = 0,
    variance: ReverseVariance = "small",
    clip_x0: bool = True,
    callback: Callback | None = None,
    progress: bool = False,
) -> SamplerResult:
    """Ancestral DDPM sampling from ``x_t`` (B, C, H, W) at level ``t_start`` down to clean data."""
    schedule = schedule or NoiseSchedule()
    model = _CountedModel(eps_model, cond)
    streams = NoiseStreams(seeds, x_t.shape[0], x_t.device)
    pairs = reverse_pairs(schedule.timesteps(t_start, stride))
    images = _ddpm_chain(model, schedule, x_t, pairs, streams, variance, clip_x0, callback, progress, "DDPM")
    return SamplerResult(images, model.calls)


@torch.no_grad()
def ddim_sample(
    eps_model: EpsModel,
    x_t: Tensor,
    t_start: int,
    *,
    cond: Tensor | None = None,
    schedule: NoiseSchedule | None = None,
    stride: int = 1,
    eta: float = 0.0,
    seeds: Seeds = 0,
    clip_x0: bool = False,
    callback: Callback | None = None,
    progress: bool = False,
) -> SamplerResult:
    """DDIM sampling (thesis 003 eq. 6.8) from ``x_t`` at level ``t_start`` down to clean data."""
    schedule = schedule or NoiseSchedule()
    model = _CountedModel(eps_model, cond)
    streams = NoiseStreams(seeds, x_t.shape[0], x_t.device)
    pairs = reverse_pairs(schedule.timesteps(t_start, stride))
    images = _ddim_chain(model, schedule, x_t, pairs, streams, eta, clip_x0, callback, progress, "DDIM")
    return SamplerResult(images, model.calls)


@torch.no_grad()
def ddim_invert(
    eps_model: EpsModel,
    x0: Tensor,
    t_end: int,
    *,
    cond: Tensor | None = None,
    schedule: NoiseSchedule | None = None,
    stride: int = 1,
    progress: bool = False,
) -> SamplerResult:
    """Deterministic DDIM encoding (η = 0, thesis 003 eq. 6.9) of clean ``x0`` to level ``t_end``.

    Visits the levels of ``schedule.timesteps(t_end, stride)`` in ascending order, so ``ddim_sample`` with
    the same ``t_end`` and ``stride`` retraces them; ``images`` of the result is the latent.
    """
    schedule = schedule or NoiseSchedule()
    model = _CountedModel(eps_model, cond)
    latent = _ddim_inversion_chain(model, schedule, x0, schedule.timesteps(t_end, stride)[::-1], progress)
    return SamplerResult(latent, model.calls)


# --------------------------------------------------------------------------------------------------------
# thesis 000: MedEdit and its baselines
def mededit_condition(pathology_mask: Tensor, brain_mask: Tensor) -> Tensor:
    """Conditioning channels ``[pathology mask, brain mask]`` as float {0, 1}, (B, 2, H, W).

    The order of the MedEdit network input ``[x_t, p, b]`` (method notes); masks (B, 1, H, W) or (B, H, W).
    Training must build its conditioning with this function too.
    """
    masks = []
    for mask in (pathology_mask, brain_mask):
        masks.append((mask.unsqueeze(1) if mask.ndim == 3 else mask) > 0)
    return torch.cat(masks, dim=1).float()


@torch.no_grad()
def repaint(
    eps_model: EpsModel,
    known_image: Tensor,
    inpaint_mask: Tensor,
    *,
    cond: Tensor | None = None,
    schedule: NoiseSchedule | None = None,
    resample_steps: int = 4,
    known_level: Literal["previous", "current"] = "previous",
    stride: int = 1,
    seeds: Seeds = 0,
    variance: ReverseVariance = "small",
    clip_x0: bool = False,
    callback: Callback | None = None,
    progress: bool = False,
) -> SamplerResult:
    """Conditional RePaint inpainting, thesis 000 Algorithm 1 lines 4-15 for a given mask ``m``.

    Args:
        known_image: ``x_0``, (B, C, H, W) in [-1, 1]; kept outside the mask.
        inpaint_mask: ``m``, (B, 1, H, W) or (B, H, W), 1 = regenerate.
        cond: the network's conditioning (e.g. :func:`mededit_condition`).
        resample_steps: ``U``.
        known_level: ``"previous"``: known ``~ q(x_{t-1} | x_0)``, the ``x_{t-1}^known`` that line 7 defines
            (its printed right-hand side writes ``ᾱ_t`` and drops the square root of ``1 - ᾱ_t``; eq. 2.3 is
            used); ``"current"``: ``~ q(x_t | x_0)``, the authors' code (one step noisier, off by one).
        variance: the reverse step's fixed variance (:meth:`NoiseSchedule.ddpm_step`; ``"small"`` is the
            ``σ_t`` of eq. 3.1 and MONAI's default).
        clip_x0: clamp ``x̂_0`` to [-1, 1] in the reverse step. Off by default: eq. 3.1 has no clipping
            (MONAI's DDPMScheduler, which the authors' code uses, clips by default).

    The chain starts from ``x_0`` noised to the top level (``q(x_{T} | x_0)``, practically pure noise).
    For every step ``t -> prev`` and pass ``u = 1..U``: ``known ~ q(x_prev | x_0)`` (line 7),
    ``unknown ~ p_θ(x_prev | x_t, cond)`` (line 9, eq. 3.1), ``x_prev = m ⊙ unknown + (1 - m) ⊙ known``
    (line 10 with ``m`` the region to inpaint, as the text defines it), and for ``u < U`` re-noising
    ``x_t ~ q(x_t | x_prev)`` (lines 11-12, eq. 2.10). The last step (to clean data) runs once: there the
    algorithm uses no noise and does not re-noise, so its ``U`` passes would repeat the same computation.
    """
    schedule = schedule or NoiseSchedule()
    if resample_steps < 1:
        raise ValueError(f"resample_steps must be >= 1, got {resample_steps}")
    if known_level not in ("previous", "current"):
        raise ValueError(f"known_level must be 'previous' or 'current', got {known_level!r}")
    mask = _as_mask(inpaint_mask, known_image)
    model = _CountedModel(eps_model, cond)
    streams = NoiseStreams(seeds, known_image.shape[0], known_image.device)
    top = schedule.num_train_steps - 1
    x = schedule.q_sample(known_image, top, streams.normal("start", known_image))
    for t, prev in _steps(reverse_pairs(schedule.timesteps(top, stride)), progress, "RePaint"):
        passes = resample_steps if prev >= 0 else 1
        for resample in range(passes):
            known_at = prev if known_level == "previous" else t
            if known_at < 0:
                known = known_image
            else:
                known = schedule.q_sample(known_image, known_at, streams.normal("known", known_image))
            noise = streams.normal("reverse", x) if prev >= 0 else None
            unknown = schedule.ddpm_step(x, t, prev, model(x, t), noise, variance, clip_x0)
            x_prev = mask * unknown + (1 - mask) * known
            _notify(callback, t, prev, resample, x_prev)
            if resample < passes - 1:
                x = schedule.q_sample_from(x_prev, prev, t, streams.normal("renoise", x_prev))
        x = x_prev
    return SamplerResult(x, model.calls)


@torch.no_grad()
def mededit(
    eps_model: EpsModel,
    healthy: Tensor,
    pathology_mask: Tensor,
    brain_mask: Tensor,
    *,
    kernel_size: int = 25,
    resample_steps: int = 4,
    known_level: Literal["previous", "current"] = "previous",
    schedule: NoiseSchedule | None = None,
    stride: int = 1,
    seeds: Seeds = 0,
    variance: ReverseVariance = "small",
    clip_x0: bool = False,
    callback: Callback | None = None,
    progress: bool = False,
) -> SamplerResult:
    """MedEdit (thesis 000 Algorithm 1): add the pathology ``p`` to the healthy scan.

    ``healthy`` (B, C, H, W) in [-1, 1]; ``pathology_mask``, ``brain_mask`` (B, 1, H, W) or (B, H, W),
    nonzero = inside. Inpaints ``m = dilate(p, k) ∩ brain`` (:func:`mededit_inpainting_mask`; k = 25 for
    lesion masks, 20 for boxes; U = 4, §4.1) with the network conditioned on ``[p, b]``. Other arguments as
    :func:`repaint`.
    """
    log.info("MedEdit: %d images, k=%d, U=%d, stride=%d", healthy.shape[0], kernel_size, resample_steps, stride)
    return repaint(
        eps_model,
        healthy,
        mededit_inpainting_mask(_as_mask(pathology_mask, healthy), _as_mask(brain_mask, healthy), kernel_size),
        cond=mededit_condition(pathology_mask, brain_mask).to(healthy.device),
        schedule=schedule,
        resample_steps=resample_steps,
        known_level=known_level,
        stride=stride,
        seeds=seeds,
        variance=variance,
        clip_x0=clip_x0,
        callback=callback,
        progress=progress,
    )


@torch.no_grad()
def naive_repaint(
    eps_model: EpsModel,
    healthy: Tensor,
    pathology_mask: Tensor,
    brain_mask: Tensor,
    *,
    resample_steps: int = 3,
    known_level: Literal["previous", "current"] = "previous",
    schedule: NoiseSchedule | None = None,
    stride: int = 1,
    seeds: Seeds = 0,
    variance: ReverseVariance = "small",
    clip_x0: bool = False,
    callback: Callback | None = None,
    progress: bool = False,
) -> SamplerResult:
    """Naïve RePaint baseline (thesis 000 §3): MedEdit's loop with ``m = p`` (no dilation), U = 3."""
    log.info("naive RePaint: %d images, U=%d, stride=%d", healthy.shape[0], resample_steps, stride)
    return repaint(
        eps_model,
        healthy,
        (_as_mask(pathology_mask, healthy) > 0).to(healthy.dtype),
        cond=mededit_condition(pathology_mask, brain_mask).to(healthy.device),
        schedule=schedule,
        resample_steps=resample_steps,
        known_level=known_level,
        stride=stride,
        seeds=seeds,
        variance=variance,
        clip_x0=clip_x0,
        callback=callback,
        progress=progress,
    )


@torch.no_grad()
def sdedit(
    eps_model: EpsModel,
    healthy: Tensor,
    pathology_mask: Tensor,
    brain_mask: Tensor,
    *,
    ratio: float,
    schedule: NoiseSchedule | None = None,
    stride: int = 1,
    seeds: Seeds = 0,
    variance: ReverseVariance = "small",
    clip_x0: bool = False,
    callback: Callback | None = None,
    progress: bool = False,
) -> SamplerResult:
    """SDEdit baseline with mask conditioning (thesis 000 §4): noise the healthy scan, denoise conditionally.

    The scan is diffused for ``ratio · T`` steps (thesis: 0.2 for strokes, 0.6 for tumours), i.e. to level
    ``round(ratio · T) - 1``, then denoised by the ``[p, b]``-conditioned network. ``ratio = 0`` returns the
    input unchanged with no network call.
    """
    schedule = schedule or NoiseSchedule()
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
    t_start = round(ratio * schedule.num_train_steps) - 1
    log.info("SDEdit: %d images, ratio=%.2f (level %d), stride=%d", healthy.shape[0], ratio, t_start, stride)
    if t_start < 0:
        return SamplerResult(healthy.clone(), 0)
    streams = NoiseStreams(seeds, healthy.shape[0], healthy.device)
    model = _CountedModel(eps_model, mededit_condition(pathology_mask, brain_mask).to(healthy.device))
    x = schedule.q_sample(healthy, t_start, streams.normal("start", healthy))
    pairs = reverse_pairs(schedule.timesteps(t_start, stride))
    images = _ddpm_chain(model, schedule, x, pairs, streams, variance, clip_x0, callback, progress, "SDEdit")
    return SamplerResult(images, model.calls)


def palette_condition(image: Tensor, mask: Tensor, noise: Tensor) -> Tensor:
    """Palette's conditioning input: the image with Gaussian noise inside the mask, (B, C, H, W).

    ``(1 - m) ⊙ image + m ⊙ noise`` with ``m`` (B, 1, H, W) or (B, H, W) in {0, 1}; training must use it too.
    """
    mask = _as_mask(mask, image)
    return (1 - mask) * image + mask * noise


def palette_input(x_t: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """The state Palette's network denoises: ``x_t`` inside the mask, the clean image outside, (B, C, H, W).

    ``m ⊙ x_t + (1 - m) ⊙ image``, the ``y_noisy * mask + (1 - mask) * y_0`` of the public Palette
    re-implementation's inpainting training; :func:`palette` keeps its state in this form at every step.
    """
    mask = _as_mask(mask, image)
    return mask * x_t + (1 - mask) * image


@torch.no_grad()
def palette(
    eps_model: EpsModel,
    image: Tensor,
    mask: Tensor,
    *,
    schedule: NoiseSchedule | None = None,
    stride: int = 1,
    seeds: Seeds = 0,
    variance: ReverseVariance = "small",
    clip_x0: bool = False,
    callback: Callback | None = None,
    progress: bool = False,
) -> SamplerResult:
    """Palette inpainting baseline (Saharia et al. 2022, as its widely used public re-implementation does it).

    A separately trained network conditioned on :func:`palette_condition` of the image and the (pathology)
    mask denoises from pure noise inside the mask; outside the mask the state is the clean input at every
    step (:func:`palette_input`; the re-implementation's ``y_t = y_0 * (1 - mask) + mask * y_t`` after each
    step, and the network input its training uses), so healthy tissue is kept exactly. The clean input, not
    the input noised to the current level (RePaint's choice), because that is what the network saw outside
    the mask in training (:class:`cfbrain.models.diffusion_unet.DenoisingLoss`).
    """
    schedule = schedule or NoiseSchedule()
    log.info("Palette: %d images, stride=%d", image.shape[0], stride)
    streams = NoiseStreams(seeds, image.shape[0], image.device)
    model = _CountedModel(eps_model, palette_condition(image, mask, streams.normal("condition", image)))
    x = palette_input(streams.normal("start", image), image, mask)
    for t, prev in _steps(reverse_pairs(schedule.timesteps(schedule.num_train_steps - 1, stride)), progress,
                          "Palette"):
        noise = streams.normal("reverse", x) if prev >= 0 else None
        x = palette_input(schedule.ddpm_step(x, t, prev, model(x, t), noise, variance, clip_x0), image, mask)
        _notify(callback, t, prev, 0, x)
    return SamplerResult(x, model.calls)


# --------------------------------------------------------------------------------------------------------
# thesis 003: Dif-fuse
def anomaly_map(reference: Tensor, counterfactual: Tensor, kernel_size: int = 5) -> Tensor:
    """Dif-fuse anomaly map (thesis 003 Algorithm 2, last lines), (B, 1, H, W) in [0, 1].

    ``|reference - counterfactual|`` (mean over channels), divided by its per-image maximum (all-zero
    differences stay zero), then a grey opening (erosion, dilation) to remove specks and a grey closing
    (dilation, erosion) to fill holes, both with a ``k × k`` square (torch max-pooling,
    :mod:`cfbrain.diffusion.masks`).
    """
    difference = (reference - counterfactual).abs().mean(dim=1, keepdim=True)
    peak = difference.amax(dim=(1, 2, 3), keepdim=True)
    normalised = difference / torch.where(peak > 0, peak, torch.ones_like(peak))
    return grey_closing(grey_opening(normalised, kernel_size), kernel_size)


@torch.no_grad()
def dif_fuse(
    eps_model: EpsModel,
    images: Tensor,
    edit_mask: Tensor,
    *,
    inversion_depth: int = 500,
    schedule: NoiseSchedule | None = None,
    stride: int = 1,
    seeds: Seeds = 0,
    variance: ReverseVariance = "small",
    clip_x0: bool = False,
    anomaly_reference: Literal["input", "reconstruction"] = "input",
    morphology_kernel_size: int = 5,
    callback: Callback | None = None,
    progress: bool = False,
) -> DifFuseResult:
    """Dif-fuse (thesis 003 Algorithm 2): healthy counterfactual and anomaly map of each image.

    Args:
        eps_model: unconditional network trained on healthy images (called with ``cond=None``).
        images: ``x_0``, (B, C, H, W) in [-1, 1].
        edit_mask: ``m``, (B, 1, H, W) or (B, H, W), 1 = edit (e.g. :func:`~cfbrain.diffusion.masks.difuse_mask`).
        inversion_depth: ``K`` in thesis units (``0..T``; the thesis uses 500): the latent is at level ``K - 1``.
        variance: the DDPM chain's fixed variance (thesis: the DDPM ``σ_t``, ``"small"``).
        clip_x0: clamp ``x̂_0`` in both reverse steps; off by default so the DDIM part retraces the
            inversion (eqs. 6.8-6.9 have no clipping).
        anomaly_reference: ``"input"``: ``|x_0 - x̂_0|`` (Algorithm 2); ``"reconstruction"``: against a pure
            DDIM reconstruction from the same latent (the authors' code; one extra call per step).

    Forward loop: DDIM inversion of ``x_0`` (η = 0, eq. 6.9). Backward loop, for each step ``t -> prev``:
    ``x_DDPM = μ_θ(x_t) + σ_t ε_t`` (fresh noise), ``x_DDIM`` = eq. 6.8 with ``σ = 0``, and
    ``x_prev = m ⊙ x_DDPM + (1 - m) ⊙ x_DDIM`` (eq. 6.10). Algorithm 2 continues from the mixed state
    (``x_t ← x̂_{t-1}``), so both steps start from the same ``x_t`` and share one ``ε_θ(x_t, t)``: the
    backward loop costs one network call per step. ``evaluations`` counts inversion + backward calls.
    """
    schedule = schedule or NoiseSchedule()
    if not 0 <= inversion_depth <= schedule.num_train_steps:
        raise ValueError(f"inversion_depth must lie in [0, {schedule.num_train_steps}], got {inversion_depth}")
    if anomaly_reference not in ("input", "reconstruction"):
        raise ValueError(f"anomaly_reference must be 'input' or 'reconstruction', got {anomaly_reference!r}")
    log.info("Dif-fuse: %d images, K=%d, stride=%d", images.shape[0], inversion_depth, stride)
    mask = _as_mask(edit_mask, images)
    model = _CountedModel(eps_model, None)
    streams = NoiseStreams(seeds, images.shape[0], images.device)
    levels = schedule.timesteps(inversion_depth - 1, stride)
    latent = _ddim_inversion_chain(model, schedule, images, levels[::-1], progress)
    pairs = reverse_pairs(levels)
    x = latent
    for t, prev in _steps(pairs, progress, "Dif-fuse"):
        eps = model(x, t)
        noise = streams.normal("reverse", x) if prev >= 0 else None
        x_ddpm = schedule.ddpm_step(x, t, prev, eps, noise, variance, clip_x0)
        x_ddim = schedule.ddim_step(x, t, prev, eps, clip_x0=clip_x0)
        x = mask * x_ddpm + (1 - mask) * x_ddim
        _notify(callback, t, prev, 0, x)
    reconstruction = None
    reference = images
    if anomaly_reference == "reconstruction":
        reconstruction = _ddim_chain(
            model, schedule, latent, pairs, streams, 0.0, clip_x0, None, progress, "DDIM reconstruction"
        )
        reference = reconstruction
    return DifFuseResult(
        images=x,
        evaluations=model.calls,
        anomaly_map=anomaly_map(reference, x, morphology_kernel_size),
        latent=latent,
        reconstruction=reconstruction,
    )
