"""The denoising networks of thesis 000 (MedEdit and its baselines) and their ε-prediction training loss.

Three variants of one MONAI ``DiffusionModelUNet`` (2-D), wrapped in
:class:`~cfbrain.diffusion.samplers.ConcatConditioning` so the module itself is the ``eps_model(x_t, t, cond)``
the samplers call and the module the training loop trains (its state dict keys start with ``network.``):

* ``"mededit"``: input ``[x_t, pathology mask, brain mask]`` (3 channels,
  :func:`~cfbrain.diffusion.samplers.mededit_condition`); used by MedEdit, naive RePaint and SDEdit;
* ``"palette"``: input ``[x_t inside the mask and the image outside, image with noise inside the mask]``
  (2 channels, :func:`~cfbrain.diffusion.samplers.palette_input`,
  :func:`~cfbrain.diffusion.samplers.palette_condition`);
* ``"unconditional"``: input ``x_t`` (1 channel), the Dif-fuse network of thesis 003.

Defaults follow the method notes: channels (128, 256, 256), attention at levels 2 and 3 and in the
mid-block (MONAI always builds it), one residual block per level, 256 channels per attention head,
linear β 1e-4..0.02 with T = 1000. Demo configs shrink channels and image size, never the algorithm.

Dif-fuse's healthy network (thesis 003 §6.5.3, :data:`DIFFUSE_UNET`) is the ``"unconditional"`` variant
with guided-diffusion's options: ``resblock_updown`` (MONAI's own: average-pool / nearest up-sampling
residual blocks) and ``scale_shift_norm``, which MONAI does not expose: its residual blocks add the
projected time embedding to the features; :class:`ScaleShiftResnetBlock` projects it to twice the
channels and modulates the second group norm, ``norm(h) (1 + scale) + shift`` (Dhariwal & Nichol 2021).
At 256², 4 contrasts in and out, that network has exactly the thesis's 138,288,772 parameters.

Batches (dicts, as the training loop hands them to the loss): ``image`` float32 (B, 1, H, W) in [0, 1],
``lesion_mask`` and ``brain_mask`` (B, 1, H, W) in {0, 1}. Images enter the [-1, 1] diffusion range
through :func:`cfbrain.preprocess.intensity.unit_to_diffusion` (architecture contract 7).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from torch import nn

from cfbrain.diffusion.masks import bounding_box_mask
from cfbrain.diffusion.samplers import ConcatConditioning, mededit_condition, palette_condition, palette_input
from cfbrain.diffusion.schedule import NoiseSchedule
from cfbrain.preprocess.intensity import unit_to_diffusion
from cfbrain.train.checkpoint import load_weights
from cfbrain.train.config import Phase
from cfbrain.settings import from_mapping

log = logging.getLogger(__name__)

Variant = Literal["mededit", "palette", "unconditional"]
CONDITIONING_CHANNELS = {"mededit": 2, "palette": 1, "unconditional": 0}
"""Channels the variant concatenates to ``x_t`` (for one image channel)."""


@dataclass(frozen=True)
class DiffusionUNetConfig:
    """Architecture of the denoiser (MONAI ``DiffusionModelUNet`` arguments of the same names).

    ``num_head_channels`` (one value, or one per level) must divide the channels of every attention level,
    ``norm_num_groups`` every entry of ``channels``; ``scale_shift_norm``: module docstring.
    """

    channels: tuple[int, ...] = (128, 256, 256)
    attention_levels: tuple[bool, ...] = (False, True, True)
    num_res_blocks: int = 1
    num_head_channels: int | tuple[int, ...] = 256
    norm_num_groups: int = 32
    resblock_updown: bool = False
    scale_shift_norm: bool = False

    @classmethod
    def from_mapping(cls, values: Mapping) -> DiffusionUNetConfig:
        """From a config section (YAML lists become tuples); unknown keys are an error."""
        return from_mapping(cls, values, "diffusion UNet")


DIFFUSE_UNET = DiffusionUNetConfig(
    channels=(128, 128, 256, 256, 512, 512), attention_levels=(False, False, False, True, True, True),
    num_res_blocks=2, num_head_channels=(128, 128, 256, 256, 512, 512), resblock_updown=True,
    scale_shift_norm=True)
"""Thesis 003 §6.5.3 at 256²: channels 128·(1, 1, 2, 2, 4, 4), two residual blocks per level, attention with
one head of all channels at 32, 16 and 8 px, up/down-sampling residual blocks, scale-shift conditioning."""
DIFFUSE_PARAMETERS = 138_288_772
"""The thesis's parameter count of that network (four contrasts)."""


class ScaleShiftResnetBlock(DiffusionUNetResnetBlock):
    """MONAI's residual block with scale-shift time conditioning (module docstring); built from a MONAI
    block by :func:`use_scale_shift_norm` (same parameter names; ``time_emb_proj`` has 2x the outputs)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.nonlinearity(self.norm1(x))
        if self.upsample is not None:
            x, h = self.upsample(x), self.upsample(h)
        elif self.downsample is not None:
            x, h = self.downsample(x), self.downsample(h)
        h = self.conv1(h)
        projected = self.time_emb_proj(self.nonlinearity(emb))
        scale, shift = projected[(..., *([None] * (h.ndim - 2)))].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip_connection(x) + self.conv2(self.nonlinearity(h))


def use_scale_shift_norm(network: nn.Module) -> nn.Module:
    """Turn every MONAI residual block of ``network`` into a :class:`ScaleShiftResnetBlock` (in place)."""
    for block in network.modules():
        if isinstance(block, DiffusionUNetResnetBlock):
            projection = block.time_emb_proj
            block.time_emb_proj = nn.Linear(projection.in_features, 2 * block.out_channels).to(
                device=projection.weight.device, dtype=projection.weight.dtype)
            block.__class__ = ScaleShiftResnetBlock
    return network


def diffusion_unet(variant: Variant, config: DiffusionUNetConfig = DiffusionUNetConfig(),
                   image_channels: int = 1) -> ConcatConditioning:
    """The ``variant``'s denoiser as an ``eps_model(x_t, t, cond) -> ε`` module (module docstring).

    ``x_t`` (B, image_channels, H, W) in [-1, 1]; H and W must be divisible by 2 ** (len(channels) - 1).
    """
    if variant not in CONDITIONING_CHANNELS:
        raise ValueError(f"unknown diffusion UNet variant {variant!r}; expected one of {sorted(CONDITIONING_CHANNELS)}")
    extra = CONDITIONING_CHANNELS[variant] * (image_channels if variant == "palette" else 1)
    network = DiffusionModelUNet(
        spatial_dims=2, in_channels=image_channels + extra, out_channels=image_channels,
        channels=config.channels, attention_levels=config.attention_levels,
        num_res_blocks=config.num_res_blocks, num_head_channels=config.num_head_channels,
        norm_num_groups=config.norm_num_groups, resblock_updown=config.resblock_updown,
    )
    return ConcatConditioning(use_scale_shift_norm(network) if config.scale_shift_norm else network)


def load_eps_model(path: str | Path, variant: Variant, config: DiffusionUNetConfig = DiffusionUNetConfig(),
                   *, use_ema: bool = True, device: str | torch.device = "cpu") -> ConcatConditioning:
    """A trained denoiser from ``final.pt``/``best.pt`` of :func:`cfbrain.train.fit`, in eval mode on ``device``
    (EMA weights by default: the training config must have set ``ema_decay``)."""
    model = load_weights(diffusion_unet(variant, config), Path(path), use_ema=use_ema)
    return model.to(device).eval()


def conditioning_mask(lesion_mask: torch.Tensor, box: bool) -> torch.Tensor:
    """The pathology mask a model is conditioned on: the lesion mask, or its bounding box (thesis 000
    §4.1: one box enclosing all lesion pixels of the image), {0, 1} float, same shape."""
    mask = (lesion_mask > 0).float()
    return bounding_box_mask(mask) if box else mask


class DenoisingLoss:
    """ε-prediction MSE for :func:`cfbrain.train.fit` (Ho et al. 2020; thesis 000 §4.1).

    Per batch: ``t ~ U{0, ..., T-1}``, ``ε ~ N(0, I)``, ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`` and
    ``loss = mean (ε_θ(x_t, t, cond) - ε)^2`` with the variant's conditioning built by the samplers' own
    functions (so training and sampling cannot disagree). Palette trains as an inpainter (Saharia et al.
    2022, as the public re-implementation): the network sees ``x_t`` inside the mask ``m`` and the clean
    image outside (:func:`~cfbrain.diffusion.samplers.palette_input`), its conditioning draws fresh in-mask
    noise, and the loss is ``mean (m ⊙ ε_θ - m ⊙ ε)^2`` (the noise loss on the masked region only, averaged
    over all pixels as the re-implementation's ``mse_loss(mask * noise, mask * noise_hat)``).
    Random draws use the global torch RNG, which the training loop seeds and checkpoints.

    Args:
        variant: which conditioning (module docstring).
        schedule: the forward process (default linear, T = 1000).
        box_masks: condition on the bounding box of the lesion mask (the box experiments).
    """

    def __init__(self, variant: Variant, schedule: NoiseSchedule | None = None, box_masks: bool = False) -> None:
        if variant not in CONDITIONING_CHANNELS:
            raise ValueError(f"unknown variant {variant!r}")
        self.variant, self.schedule, self.box_masks = variant, schedule or NoiseSchedule(), box_masks

    def condition(self, x0: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """The conditioning channels of a batch (None for the unconditional variant)."""
        if self.variant == "unconditional":
            return None
        pathology = conditioning_mask(batch["lesion_mask"], self.box_masks)
        if self.variant == "mededit":
            return mededit_condition(pathology, batch["brain_mask"])
        return palette_condition(x0, pathology, torch.randn_like(x0))

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x0 = unit_to_diffusion(batch["image"])
        t = torch.randint(0, self.schedule.num_train_steps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.schedule.q_sample(x0, t, noise)
        if self.variant != "palette":
            eps = model(x_t, t, self.condition(x0, batch))
            return F.mse_loss(eps.float(), noise), {}
        mask = conditioning_mask(batch["lesion_mask"], self.box_masks)
        eps = model(palette_input(x_t, x0, mask), t, self.condition(x0, batch))
        return F.mse_loss(mask * eps.float(), mask * noise), {}


def diffusion_phase(variant: Variant, *, epochs: int | None = None, lr: float | None = None,
                    box_masks: bool = False, schedule: NoiseSchedule | None = None) -> Phase:
    """The single training phase of a denoiser (thesis: Adam 1e-4; set ``TrainConfig.ema_decay``)."""
    name = f"ddpm_{variant}{'_box' if box_masks else ''}"
    return Phase(name, DenoisingLoss(variant, schedule, box_masks), epochs=epochs, lr=lr)
