"""ACAT's peers of Table 5.1 (thesis 003, section 5.6.3) on the hemisphere CNN, and the saliency-model registry.

Every model takes ``(hemispheres, saliency)``, both (B, 2, S, H, W/2), and returns the baseline's output
dict (see ``acat``); a peer that does not read the saliency map ignores it. Where the thesis leaves a
detail open, the authors' code (ResNet-50 variants) decides: SMIC's and HSM's modulation is residual like
ACAT's (G = F + F ⊙ a(B)), with a sigmoid (SMIC) or a ReLU (HSM) on the branch output; SpAtt keeps ACAT's
slice attention but has no fusion layer; SMIC, HSM and SalClassNet average the slices like the baseline.

* ``smic`` (Flores et al. 2019): a saliency branch of two conv blocks (the trunk's first two, 1 -> 16 -> 32)
  whose sigmoid output modulates image conv 2 element-wise. Adds 192 + 4,704 = 4,896 parameters.
* ``salclassnet`` (Murabito et al. 2018, as modified in the thesis): the saliency map is a second input
  channel of conv 1. Adds 16 x 9 = 144. From the baseline, the saliency channel's weights start at zero,
  so the fine-tune starts from the baseline's function.
* ``hsm`` (Figueroa-Flores et al. 2020): a branch of four conv blocks (the trunk's first four, 1 -> 64)
  that hallucinates a saliency from the image, trained end-to-end by the classification loss only (no
  saliency target, as in the thesis); its ReLU output modulates image conv 4. Adds 192 + 4,704 + 13,968 +
  27,840 = 46,704. ``hsm_saliency`` is the same network with the pre-computed map fed to the branch
  instead, as the authors' code does (and as Table 5.3's HSM rows with other saliency methods need).
* ``spatt``: ACAT's attention blocks computed from the image features themselves after conv 1, 3, 5, and
  ACAT's slice attention. Adds 3 x 11 + slice attention (45,835 at S = 11, 12,547 at S = 3) = 45,868.
* ``seatt``: SAGAN self-attention (Zhang et al. 2019) after conv 3 and 5: query and key 1x1 conv C -> C/8,
  value 1x1 conv C -> C, output x + gamma * attention (gamma starts at 0). Adds (2 x (48 x 6 + 6) +
  48 x 48 + 48 + 1) + (2 x (64 x 8 + 8) + 64 x 64 + 64 + 1) = 2,941 + 5,201 = 8,142. Attention over the
  h x w positions costs (h w)^2 memory per slice: 125 x 50 positions after conv 3 at the thesis's
  500 x 400 scans; ``scaled_dot_product_attention`` uses memory-efficient kernels where it can.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from cfbrain.models.acat import (ACAT, ATTENTION_LAYERS, SaliencyHemisphereCNN, SpatialAttention, load_baseline,
                                 modulate, run_trunk)
from cfbrain.models.mtl_cnn import FILTERS, HEAD_HIDDEN, SliceCNN

SALIENCY_MODELS = ("acat", "smic", "salclassnet", "hsm", "spatt", "seatt", "hsm_saliency")
"""Table 5.1's networks that take a saliency map, and HSM with the authors'-code branch input."""
BRANCH_INPUTS = ("image", "saliency")
SELF_ATTENTION_LAYERS = (2, 4)
"""Zero-based conv blocks followed by SeAtt's self-attention: conv 3 and 5."""
QUERY_REDUCTION = 8


class ModulatingBranchCNN(SaliencyHemisphereCNN):
    """A branch of the trunk's first ``depth`` conv blocks; ``activation`` of its output modulates the
    image features after conv ``depth`` element-wise, G = F + F ⊙ a(branch(x)) (SMIC, HSM).

    Args:
        branch_input: ``saliency`` (the branch reads the saliency map) or ``image``.
    """

    def __init__(self, depth: int, activation: nn.Module, branch_input: str,
                 filters: tuple[int, ...] = FILTERS, hidden: int = HEAD_HIDDEN) -> None:
        super().__init__(filters, hidden)
        if branch_input not in BRANCH_INPUTS:
            raise ValueError(f"branch_input must be one of {BRANCH_INPUTS}, got {branch_input!r}")
        self.branch = SliceCNN(filters[:depth])
        self.mask_activation = activation
        self.branch_input = branch_input

    def slice_features(self, images: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        mask = self.mask_activation(self.branch.feature_maps(saliency if self.branch_input == "saliency" else images))
        at = len(self.branch.blocks) - 1
        return run_trunk(self.trunk, images, lambda i, f: modulate(f, mask) if i == at else f).mean(dim=(-2, -1))


class SalClassNet(SaliencyHemisphereCNN):
    """The baseline with the saliency map as a second input channel of its first convolution."""

    FIRST_CONV = "trunk.blocks.0.0.weight"

    def __init__(self, filters: tuple[int, ...] = FILTERS, hidden: int = HEAD_HIDDEN) -> None:
        super().__init__(filters, hidden)
        self.trunk.blocks[0][0] = nn.Conv2d(2, filters[0], kernel_size=3, padding=1)

    def slice_features(self, images: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        return self.trunk(torch.cat([images, saliency], dim=1))

    def adapt_baseline(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The baseline's (16, 1, 3, 3) first kernels with zero kernels for the saliency channel."""
        weight = state[self.FIRST_CONV]
        return {**state, self.FIRST_CONV: torch.cat([weight, torch.zeros_like(weight)], dim=1)}


class SpAtt(SaliencyHemisphereCNN):
    """ACAT's spatial attention computed from the image features, and ACAT's slice attention."""

    def __init__(self, n_slices: int, filters: tuple[int, ...] = FILTERS, hidden: int = HEAD_HIDDEN) -> None:
        super().__init__(filters, hidden, n_slices)
        self.attention = nn.ModuleList(SpatialAttention() for _ in ATTENTION_LAYERS)

    def slice_features(self, images: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        def attend(index: int, features: torch.Tensor) -> torch.Tensor:
            if index not in ATTENTION_LAYERS:
                return features
            return modulate(features, self.attention[ATTENTION_LAYERS.index(index)](features))

        return run_trunk(self.trunk, images, attend).mean(dim=(-2, -1))


class SelfAttention2d(nn.Module):
    """SAGAN self-attention on (N, C, h, w): x + gamma * sum_i softmax_i(q_j . k_i) v_i (no 1/sqrt(d))."""

    def __init__(self, channels: int, reduction: int = QUERY_REDUCTION) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, channels // reduction, kernel_size=1)
        self.key = nn.Conv2d(channels, channels // reduction, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = lambda conv: conv(x).flatten(2).transpose(1, 2)  # noqa: E731  (N, h w, channels)
        attended = F.scaled_dot_product_attention(tokens(self.query), tokens(self.key), tokens(self.value), scale=1.0)
        return x + self.gamma * attended.transpose(1, 2).reshape(x.shape)


class SeAtt(SaliencyHemisphereCNN):
    """The baseline with self-attention after conv 3 and 5."""

    def __init__(self, filters: tuple[int, ...] = FILTERS, hidden: int = HEAD_HIDDEN) -> None:
        super().__init__(filters, hidden)
        self.self_attention = nn.ModuleList(SelfAttention2d(filters[i]) for i in SELF_ATTENTION_LAYERS)

    def slice_features(self, images: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        def attend(index: int, features: torch.Tensor) -> torch.Tensor:
            if index not in SELF_ATTENTION_LAYERS:
                return features
            return self.self_attention[SELF_ATTENTION_LAYERS.index(index)](features)

        return run_trunk(self.trunk, images, attend).mean(dim=(-2, -1))


def build_saliency_model(name: str, n_slices: int, baseline_state: Mapping[str, torch.Tensor] | None = None, *,
                         filters: tuple[int, ...] = FILTERS, hidden: int = HEAD_HIDDEN) -> SaliencyHemisphereCNN:
    """Model ``name`` (one of ``SALIENCY_MODELS``) for scans of ``n_slices`` slices, initialised from a
    trained ``MultiTaskHemisphereCNN`` state dict when given (trunk and heads; see ``load_baseline``)."""
    builders = {
        "acat": lambda: ACAT(n_slices, filters, hidden),
        "smic": lambda: ModulatingBranchCNN(2, nn.Sigmoid(), "saliency", filters, hidden),
        "salclassnet": lambda: SalClassNet(filters, hidden),
        "hsm": lambda: ModulatingBranchCNN(4, nn.ReLU(), "image", filters, hidden),
        "spatt": lambda: SpAtt(n_slices, filters, hidden),
        "seatt": lambda: SeAtt(filters, hidden),
        "hsm_saliency": lambda: ModulatingBranchCNN(4, nn.ReLU(), "saliency", filters, hidden),
    }
    if name not in builders:
        raise ValueError(f"unknown saliency model {name!r}; expected one of {SALIENCY_MODELS}")
    model = builders[name]()
    return model if baseline_state is None else load_baseline(model, baseline_state)
