"""Slice autoencoder with a spatial latent and no bottleneck (thesis 003 §5.5.3, §5.6.2).

The encoder E and decoder D of the adversarial latent counterfactuals (eq. 5.3-5.4,
:mod:`cfbrain.saliency`). Architecture of the authors' code (method notes, "ACAT"): a 3x3 stem
convolution (1 -> ``stem_channels``), then residual stages of ``channels`` = (6, 12, 16) with strides
(1, 2, 2), giving a latent of shape (16, H/4, W/4); the decoder mirrors it with residual stages of
``decoder_channels`` = (16, 12, 12), the first two preceded by a nearest x2 upsampling, and a 3x3
convolution to one channel. There is no fully connected bottleneck: the latent keeps the slice's
layout, so a change of latent position (y, x) changes the image near (4y, 4x).

Images: (N, 1, H, W) float32 CT slices in [0, 1] (HU-windowed, contract 7); H and W divisible by the
product of the strides (4). The output is not squashed (no sigmoid): the loss is pixel MSE
(:class:`cfbrain.models.features.ReconstructionLoss`, shared with the FID feature autoencoder, whose
network is a different, bottlenecked one).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from cfbrain.settings import from_mapping


@dataclass(frozen=True)
class SpatialAutoencoderConfig:
    """Architecture (module docstring); the defaults are the authors' network."""

    stem_channels: int = 128
    channels: tuple[int, ...] = (6, 12, 16)
    strides: tuple[int, ...] = (1, 2, 2)
    decoder_channels: tuple[int, ...] = (16, 12, 12)

    def __post_init__(self) -> None:
        if not (len(self.channels) == len(self.strides) == len(self.decoder_channels)):
            raise ValueError("channels, strides and decoder_channels need one entry per stage")

    @property
    def downsampling(self) -> int:
        """H / latent height (and W / latent width)."""
        return math.prod(self.strides)

    @classmethod
    def from_mapping(cls, values: Mapping) -> SpatialAutoencoderConfig:
        """From a config section (YAML lists become tuples); unknown keys are an error."""
        return from_mapping(cls, values, "autoencoder")


class ResidualBlock(nn.Module):
    """conv 3x3 (stride) + BN + ReLU, conv 3x3 + BN, plus the input (1x1 conv + BN projection when
    the shape changes), then ReLU: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Identity() if stride == 1 and in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class SpatialAutoencoder(nn.Module):
    """E: (N, 1, H, W) -> (N, channels[-1], H/4, W/4); D: the inverse shape (module docstring)."""

    def __init__(self, config: SpatialAutoencoderConfig = SpatialAutoencoderConfig()) -> None:
        super().__init__()
        self.config = config
        encoder: list[nn.Module] = [nn.Conv2d(1, config.stem_channels, 3, padding=1)]
        in_channels = config.stem_channels
        for out_channels, stride in zip(config.channels, config.strides):
            encoder.append(ResidualBlock(in_channels, out_channels, stride))
            in_channels = out_channels
        decoder: list[nn.Module] = []
        for out_channels, scale in zip(config.decoder_channels, reversed(config.strides)):
            if scale > 1:
                decoder.append(nn.Upsample(scale_factor=scale, mode="nearest"))
            decoder.append(ResidualBlock(in_channels, out_channels))
            in_channels = out_channels
        decoder.append(nn.Conv2d(in_channels, 1, 3, padding=1))
        self.encoder, self.decoder = nn.Sequential(*encoder), nn.Sequential(*decoder)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> latent (N, channels[-1], H/4, W/4); H, W divisible by 4."""
        factor = self.config.downsampling
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[-2] % factor or images.shape[-1] % factor:
            raise ValueError(f"expected (N, 1, H, W) slices with H, W divisible by {factor}, "
                             f"got {tuple(images.shape)}")
        return self.encoder(images)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (N, channels[-1], h, w) -> (N, 1, 4h, 4w) reconstruction."""
        return self.decoder(latent)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))
