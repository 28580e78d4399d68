"""Dif-fuse and its §6.6.2 ablations over a set of slices: healthy counterfactuals and anomaly maps.

Methods (:data:`METHODS`), each with the healthy network ``eps_model`` and noise amount K (thesis 500):

* ``difuse``: :func:`cfbrain.diffusion.samplers.dif_fuse` with the mask
  :func:`cfbrain.diffusion.masks.difuse_mask` of the slice's saliency map (Algorithm 2);
* ``saliency``: the saliency map thresholded as Dif-fuse thresholds it (its mask) used as the anomaly map
  (the "ACAT" ablation row); the counterfactual is the input;
* ``ddpm``: DDPM sampling from the image noised with the forward process q(x_K | x_0);
* ``ddim_ddpm``: DDPM sampling from the DDIM-inverted image;
* ``ddim``: DDIM sampling from the DDIM-inverted image;
* ``ddpm_ddim``: DDIM sampling from the image noised with the forward process.

The unmasked ablations use the same K, stride, seeds and no x̂0 clipping as Dif-fuse, and the same anomaly
map (|x_0 - x̂_0| averaged over the measured channels, max-normalised, opened then closed, 5 x 5). Images
(N, C, H, W) are in [0, 1] in and out; maps (N, H, W) in [0, 1].
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from cfbrain.diffusion.masks import MaskOrder, difuse_mask
from cfbrain.diffusion.samplers import NoiseStreams, anomaly_map, ddim_invert, ddim_sample, ddpm_sample, dif_fuse
from cfbrain.diffusion.schedule import NoiseSchedule
from cfbrain.preprocess.intensity import diffusion_to_unit, unit_to_diffusion
from cfbrain.settings import from_mapping

log = logging.getLogger(__name__)

METHODS = ("difuse", "saliency", "ddpm", "ddim_ddpm", "ddim", "ddpm_ddim")
METHOD_LABELS = {"difuse": "Dif-fuse", "saliency": "Saliency (ACAT) thresholded", "ddpm": "DDPM",
                 "ddim_ddpm": "DDIM-DDPM", "ddim": "DDIM", "ddpm_ddim": "DDPM-DDIM"}
_UNMASKED = {"ddpm": ("forward", "ddpm"), "ddim_ddpm": ("inversion", "ddpm"), "ddim": ("inversion", "ddim"),
             "ddpm_ddim": ("forward", "ddim")}


@dataclass(frozen=True)
class DifuseSettings:
    """The ``difuse`` config section. ``inversion_depth``: K (thesis 500); ``percentile``: τ (90);
    ``mask_order``: Algorithm 2's (default) or the authors'; ``stride``: 1 = all K steps (the thesis);
    ``batch_size`` slices per sampler call; ``seed`` of slice 0 (slice i uses seed + i);
    ``anomaly_reference``: ``input`` (Algorithm 2) or ``reconstruction`` (the authors' code)."""

    inversion_depth: int = 500
    percentile: float = 90.0
    mask_order: MaskOrder = "blur_threshold"
    stride: int = 1
    batch_size: int = 8
    seed: int = 0
    morphology_kernel_size: int = 5
    anomaly_reference: Literal["input", "reconstruction"] = "input"

    @classmethod
    def from_mapping(cls, values: Mapping) -> DifuseSettings:
        return from_mapping(cls, values, "difuse")


@dataclass(frozen=True)
class AnomalyResult:
    """Counterfactuals (N, C, H, W) in [0, 1], anomaly maps (N, H, W) in [0, 1], network calls."""

    counterfactual: np.ndarray
    anomaly_map: np.ndarray
    evaluations: int


def _unmasked(method: str, eps_model: nn.Module, x0: torch.Tensor, settings: DifuseSettings,
              seeds: list[int]) -> tuple[torch.Tensor, int]:
    """One unmasked ablation (module docstring) on a batch in [-1, 1]: (counterfactual, network calls)."""
    start, chain = _UNMASKED[method]
    level = settings.inversion_depth - 1
    schedule = NoiseSchedule()
    if start == "forward":
        x_t, calls = schedule.q_sample(x0, level, NoiseStreams(seeds, len(seeds), x0.device).normal("start", x0)), 0
    else:
        inverted = ddim_invert(eps_model, x0, level, stride=settings.stride)
        x_t, calls = inverted.images, inverted.evaluations
    sampler = ddpm_sample if chain == "ddpm" else ddim_sample
    result = sampler(eps_model, x_t, level, stride=settings.stride, seeds=seeds, clip_x0=False)
    return result.images, calls + result.evaluations


@torch.no_grad()
def run_method(method: str, eps_model: nn.Module | None, images: np.ndarray, saliency: np.ndarray,
               settings: DifuseSettings, observed_channels: Sequence[int] | None = None,
               device: str | torch.device = "cpu") -> AnomalyResult:
    """Counterfactuals and anomaly maps of ``images`` (N, C, H, W) in [0, 1] with ``method``.

    saliency: (N, H, W) >= 0, the slices' saliency maps (used by ``difuse`` and ``saliency``);
    observed_channels: the measured channels the anomaly map averages (None: all; e.g. FLAIR and T1 of a
    WMH slice whose other channels were filled, :func:`cfbrain.preprocess.mri.reconcile_contrasts`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    channels = list(range(images.shape[1])) if observed_channels is None else list(observed_channels)
    masks = difuse_mask(np.asarray(saliency, np.float32), settings.percentile, order=settings.mask_order)
    if method == "saliency":
        return AnomalyResult(np.asarray(images, np.float32).copy(), masks.astype(np.float32), 0)
    counterfactuals, maps, calls = [], [], 0
    for start in range(0, len(images), settings.batch_size):
        x0 = unit_to_diffusion(torch.from_numpy(np.ascontiguousarray(images[start:start + settings.batch_size],
                                                                   dtype=np.float32)).to(device))
        seeds = list(range(settings.seed + start, settings.seed + start + len(x0)))
        if method == "difuse":
            mask = torch.from_numpy(masks[start:start + len(x0)]).to(device)
            result = dif_fuse(eps_model, x0, mask, inversion_depth=settings.inversion_depth, stride=settings.stride,
                              seeds=seeds, anomaly_reference=settings.anomaly_reference,
                              morphology_kernel_size=settings.morphology_kernel_size)
            x_hat, evaluations = result.images, result.evaluations
            reference = x0 if result.reconstruction is None else result.reconstruction
        else:
            x_hat, evaluations = _unmasked(method, eps_model, x0, settings, seeds)
            reference = x0
        amap = anomaly_map(reference[:, channels], x_hat[:, channels], settings.morphology_kernel_size)
        counterfactuals.append(diffusion_to_unit(x_hat).cpu().numpy())
        maps.append(amap[:, 0].cpu().numpy())
        calls += evaluations
    log.info("%s: %d slices, %d network calls", method, len(images), calls)
    return AnomalyResult(np.concatenate(counterfactuals).astype(np.float32), np.concatenate(maps).astype(np.float32),
                         calls)
