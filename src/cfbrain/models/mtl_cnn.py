"""Multi-task hemisphere CNN of thesis 003, chapter 4 (Table 4.1, Figure 4.1).

Input convention: (B, 2, S, H, W/2) float32 in [0, 1], hemisphere 0 = right, 1 = left, the left one
already mirrored so both hemispheres look alike. One 2-D CNN (``SliceCNN``) is shared by every slice of
both hemispheres; its spatially pooled features are averaged over the slices, the two hemisphere vectors
are concatenated ([right, left]) and fed to two heads: lesion presence (one logit) and affected side
(left, right, both). A third head, per-hemisphere lesion presence, serves training phase 1.

Parameters: 191,412 in the deployed model (trunk 157,872 + two heads of 16,512 + 129 and 16,512 + 387),
plus 8,449 in the phase-1 head; the count does not depend on the input size (global pooling). The
thesis states 163,285. Table 4.1's trunk alone (convolutions with bias, batch norm) has 157,872, which
leaves 5,413 for both heads: less than one FC-128 layer on the 128 concatenated features (16,512), and
no plausible variant (no conv bias, no batch-norm affine, 64-d inputs, two-logit presence) lands on
163,285, so the table is followed and the difference (+28,127) stands.
"""
from __future__ import annotations

import torch
from torch import nn

from cfbrain.metrics.classification import FOUR_CLASSES

FILTERS = (16, 32, 48, 64, 64, 64, 64)
HEAD_HIDDEN = 128
HEMISPHERES = ("right", "left")
SIDE_CLASSES = FOUR_CLASSES[1:]  # left, right, both: side index + 1 = four-class index
THESIS_PARAMETER_COUNT = 163_285


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (padding 1, stride 1) + BatchNorm + LeakyReLU, as in Table 4.1."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(),
    )


def mlp_head(in_features: int, out_features: int, hidden: int = HEAD_HIDDEN) -> nn.Sequential:
    """One fully connected layer of ``hidden`` nodes + LeakyReLU, then the output layer."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(), nn.Linear(hidden, out_features))


class SliceCNN(nn.Module):
    """Seven conv blocks with 2x2 average pooling (stride 2) between consecutive blocks.

    (N, 1, H, W) -> (N, C) features, C = ``filters[-1]``, by a global spatial mean of the last block's
    maps. H and W must be at least 2**(len(filters) - 1) (64 for seven blocks).
    """

    def __init__(self, filters: tuple[int, ...] = FILTERS) -> None:
        super().__init__()
        channels = (1, *filters)
        self.blocks = nn.ModuleList(conv_block(i, o) for i, o in zip(channels[:-1], channels[1:]))
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.out_features = filters[-1]
        self.min_size = 2 ** (len(filters) - 1)

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, C, H / 64, W / 64) maps of the last block (seven blocks)."""
        if min(images.shape[-2:]) < self.min_size:
            raise ValueError(f"slices of {tuple(images.shape[-2:])} pixels are smaller than "
                             f"{self.min_size} x {self.min_size}, the least {len(self.blocks)} blocks need")
        x = images
        for index, block in enumerate(self.blocks):
            x = block(x if index == 0 else self.pool(x))
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_maps(images).mean(dim=(-2, -1))


class MultiTaskHemisphereCNN(nn.Module):
    """The thesis model: shared hemisphere CNN, slice averaging, concatenation, presence and side heads.

    ``forward`` maps (B, 2, S, H, W/2) to ``{"presence": (B,) logit, "side": (B, 3) logits}``;
    ``half_brain_logits`` maps it to (B, 2) per-hemisphere presence logits ([right, left]).
    """

    def __init__(self, filters: tuple[int, ...] = FILTERS, hidden: int = HEAD_HIDDEN) -> None:
        super().__init__()
        self.trunk = SliceCNN(filters)
        features = self.trunk.out_features
        self.half_brain_head = mlp_head(features, 1, hidden)
        self.presence_head = mlp_head(len(HEMISPHERES) * features, 1, hidden)
        self.side_head = mlp_head(len(HEMISPHERES) * features, len(SIDE_CLASSES), hidden)

    def hemisphere_features(self, hemispheres: torch.Tensor) -> torch.Tensor:
        """(B, 2, S, H, W/2) -> (B, 2, C): trunk features of every slice, averaged over the slices."""
        if hemispheres.ndim != 5 or hemispheres.shape[1] != len(HEMISPHERES):
            raise ValueError(f"expected (B, 2, S, H, W/2) hemispheres, got {tuple(hemispheres.shape)}")
        b, h, s, height, width = hemispheres.shape
        features = self.trunk(hemispheres.reshape(b * h * s, 1, height, width))
        return features.reshape(b, h, s, -1).mean(dim=2)

    def half_brain_logits(self, hemispheres: torch.Tensor) -> torch.Tensor:
        """(B, 2, S, H, W/2) -> (B, 2) lesion-presence logit of each hemisphere."""
        return self.half_brain_head(self.hemisphere_features(hemispheres)).squeeze(-1)

    def forward(self, hemispheres: torch.Tensor) -> dict[str, torch.Tensor]:
        brain = self.hemisphere_features(hemispheres).flatten(1)
        return {"presence": self.presence_head(brain).squeeze(-1), "side": self.side_head(brain)}

    def deployed_modules(self) -> tuple[nn.Module, ...]:
        """The modules of the final (two-head) architecture: the half-brain head only serves phase 1."""
        return self.trunk, self.presence_head, self.side_head


def predict_four_class(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) int64 classes in ``FOUR_CLASSES`` order: none when P(lesion) < 0.5, else the side argmax."""
    side = outputs["side"].argmax(dim=-1) + 1
    return torch.where(torch.sigmoid(outputs["presence"]) < 0.5, torch.zeros_like(side), side)
