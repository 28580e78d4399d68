"""ACAT on the multi-task hemisphere CNN (thesis 003, section 5.5; Figure 5.1) and what its peers share.

Inputs of every saliency model: ``hemispheres`` and ``saliency``, both (B, 2, S, H, W/2) in the
hemisphere convention of ``mtl_cnn`` (the saliency map split at the image's midline and mirrored like
the image). Output: the baseline's ``{"presence": (B,) logit, "side": (B, 3) logits}``, so the baseline's
losses, prediction rule and metrics apply unchanged.

ACAT = the baseline trunk (the image branch) + a saliency branch with the trunk's first five conv blocks
(the last mask is taken after conv 5, so blocks 6-7 of a saliency branch would have no use) + a spatial
attention block after image conv layers 1, 3 and 5 (eq. 5.1 and the skip connection G = F + F ⊙ S) + the
attention fusion layer (the three masks average-pooled to the last feature map's size, concatenated,
1x1 conv 3 -> 1, applied residually after conv 7) + slice attention in place of the slice average.
Following the authors' code, the attention and fusion convolutions have no bias (a batch norm follows the
attention conv; the fused mask has no non-linearity), the slice attention reads the features of all S
slices of a hemisphere at once (one MLP shared by both hemispheres) and its sigmoid weights are not
normalised: the output is the weighted sum over slices.

Parameters (``FILTERS``, S = 11; ``count_parameters``): the deployed baseline has 191,412. ACAT adds
    saliency branch      192 + 4,704 + 13,968 + 27,840 + 37,056          =  83,760
    3 attention blocks   3 x (3x3 conv 9 + batch norm 2)                 =      33
    fusion               1x1 conv 3 -> 1                                  =       3
    slice attention      (S*64)*64 + 64 + 64*S + S = 45,120 + 715         =  45,835
                                                                           -------
                                                                           129,631  -> 321,043 in all
(S = 3: slice attention 12,547, ACAT added 96,343.)

Fine-tuning (section 5.6.2): ACAT and its peers start from the trained baseline's weights
(:func:`load_baseline`: trunk and both heads); what the baseline lacks (saliency branch, attention,
fusion, slice attention) keeps its seeded random initialisation, as the authors' code does when it
restores the baseline checkpoint into ACAT.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from cfbrain.models.mtl_cnn import FILTERS, HEAD_HIDDEN, HEMISPHERES, SIDE_CLASSES, SliceCNN, mlp_head

ATTENTION_LAYERS = (0, 2, 4)
"""Zero-based conv blocks after which ACAT (and SpAtt) modulate the image features: conv 1, 3, 5."""
SLICE_HIDDEN = 64
SLICE_DROPOUT = 0.1
BASELINE_PREFIXES = ("trunk.", "presence_head.", "side_head.")
"""State-dict keys a saliency model takes over from the trained ``MultiTaskHemisphereCNN``."""


def modulate(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """G = F + F ⊙ S (eq. 5.1 with its skip connection); ``mask`` broadcasts over ``features``' channels."""
    return features + features * mask


class SpatialAttention(nn.Module):
    """(N, C, h, w) features -> (N, 1, h, w) soft mask: channel-wise max, 3x3 conv (1 -> 1), BN, sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.norm(self.conv(features.amax(dim=1, keepdim=True))))


class SliceAttention(nn.Module):
    """(B, S, C) slice features -> (B, C) = sum_s w_s f_s with w = sigmoid(MLP(all S x C features)).

    MLP: FC ``hidden`` + LeakyReLU + dropout, FC to S weights (section 5.6.2). Built for ``n_slices``.
    """

    def __init__(self, n_slices: int, features: int, hidden: int = SLICE_HIDDEN,
                 dropout: float = SLICE_DROPOUT) -> None:
        super().__init__()
        self.mlp = mlp_head(n_slices * features, n_slices, hidden)
        self.mlp.insert(2, nn.Dropout(dropout))

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """(B, S, C) -> (B, S) weights in (0, 1), each slice's independent of the others' (no softmax)."""
        return torch.sigmoid(self.mlp(features.flatten(1)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (self.weights(features).unsqueeze(-1) * features).sum(dim=1)


class SaliencyHemisphereCNN(nn.Module):
    """The baseline's trunk and heads with a per-slice feature extractor that may read a saliency map.

    Subclasses define ``slice_features`` ((N, 1, H, W) image and saliency slices -> (N, C)) and may
    override ``adapt_baseline``. With ``n_slices`` the slices of a hemisphere are pooled by a
    ``SliceAttention`` built for that many slices, else averaged as in the baseline.
    """

    def __init__(self, filters: tuple[int, ...] = FILTERS, hidden: int = HEAD_HIDDEN,
                 n_slices: int | None = None) -> None:
        super().__init__()
        self.trunk = SliceCNN(filters)
        features = self.trunk.out_features
        self.presence_head = mlp_head(len(HEMISPHERES) * features, 1, hidden)
        self.side_head = mlp_head(len(HEMISPHERES) * features, len(SIDE_CLASSES), hidden)
        self.slice_attention = SliceAttention(n_slices, features) if n_slices is not None else None

    def slice_features(self, images: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool_slices(self, features: torch.Tensor) -> torch.Tensor:
        """(B * 2, S, C) -> (B * 2, C): slice attention, or the baseline's mean over slices."""
        return features.mean(dim=1) if self.slice_attention is None else self.slice_attention(features)

    def adapt_baseline(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The baseline's trunk and head weights reshaped to this model where it differs (default: as is)."""
        return state

    def hemisphere_features(self, hemispheres: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        """(B, 2, S, H, W/2) image and saliency -> (B, 2, C) pooled features of each hemisphere."""
        if hemispheres.ndim != 5 or hemispheres.shape[1] != len(HEMISPHERES):
            raise ValueError(f"expected (B, 2, S, H, W/2) hemispheres, got {tuple(hemispheres.shape)}")
        if saliency.shape != hemispheres.shape:
            raise ValueError(f"saliency {tuple(saliency.shape)} does not match the image {tuple(hemispheres.shape)}")
        if min(hemispheres.shape[-2:]) < self.trunk.min_size:
            raise ValueError(f"hemispheres of {tuple(hemispheres.shape[-2:])} pixels are smaller than "
                             f"{self.trunk.min_size} x {self.trunk.min_size}")
        b, h, s, height, width = hemispheres.shape
        features = self.slice_features(hemispheres.reshape(-1, 1, height, width),
                                       saliency.reshape(-1, 1, height, width))
        return self.pool_slices(features.reshape(b * h, s, -1)).reshape(b, h, -1)

    def forward(self, hemispheres: torch.Tensor, saliency: torch.Tensor) -> dict[str, torch.Tensor]:
        brain = self.hemisphere_features(hemispheres, saliency).flatten(1)
        return {"presence": self.presence_head(brain).squeeze(-1), "side": self.side_head(brain)}


def run_trunk(trunk: SliceCNN, images: torch.Tensor, after_block) -> torch.Tensor:
    """The trunk's conv blocks (2x2 average pooling between) on (N, c, H, W), each block's output passed
    through ``after_block(index, features)``; returns the last block's (N, C, h, w) maps."""
    x = images
    for index, block in enumerate(trunk.blocks):
        x = after_block(index, block(x if index == 0 else trunk.pool(x)))
    return x


class ACAT(SaliencyHemisphereCNN):
    """Saliency-based attention, attention fusion and slice attention (module docstring)."""

    def __init__(self, n_slices: int, filters: tuple[int, ...] = FILTERS, hidden: int = HEAD_HIDDEN) -> None:
        super().__init__(filters, hidden, n_slices)
        self.saliency_branch = SliceCNN(filters[:ATTENTION_LAYERS[-1] + 1])
        self.attention = nn.ModuleList(SpatialAttention() for _ in ATTENTION_LAYERS)
        self.fusion = nn.Conv2d(len(ATTENTION_LAYERS), 1, kernel_size=1, bias=False)

    def saliency_masks(self, saliency: torch.Tensor) -> list[torch.Tensor]:
        """(N, 1, H, W) saliency slices -> the (N, 1, h_i, w_i) masks after conv layers 1, 3, 5."""
        masks = []

        def keep(index: int, features: torch.Tensor) -> torch.Tensor:
            if index in ATTENTION_LAYERS:
                masks.append(self.attention[ATTENTION_LAYERS.index(index)](features))
            return features

        run_trunk(self.saliency_branch, saliency, keep)
        return masks

    def slice_features(self, images: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        masks = self.saliency_masks(saliency)

        def attend(index: int, features: torch.Tensor) -> torch.Tensor:
            return modulate(features, masks[ATTENTION_LAYERS.index(index)]) if index in ATTENTION_LAYERS else features

        maps = run_trunk(self.trunk, images, attend)
        pooled = torch.cat([F.adaptive_avg_pool2d(mask, maps.shape[-2:]) for mask in masks], dim=1)
        return modulate(maps, self.fusion(pooled)).mean(dim=(-2, -1))


def load_baseline(model: SaliencyHemisphereCNN, baseline_state: Mapping[str, torch.Tensor]) -> SaliencyHemisphereCNN:
    """Copy the trunk and both heads of a trained ``MultiTaskHemisphereCNN`` state dict into ``model``.

    Raises:
        KeyError: if the state dict lacks a trunk or head weight the model has, or has one it lacks.
    """
    taken = model.adapt_baseline({k: v for k, v in baseline_state.items() if k.startswith(BASELINE_PREFIXES)})
    missing = [k for k in model.state_dict() if k.startswith(BASELINE_PREFIXES) and k not in taken]
    unexpected = model.load_state_dict(taken, strict=False).unexpected_keys
    if missing or unexpected:
        raise KeyError(f"baseline state and model differ: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


@torch.no_grad()
def preactivation_variances(model: nn.Module, *inputs: torch.Tensor, noise_std: float = 0.0,
                            generator: torch.Generator | None = None) -> list[float]:
    """Table 5.6: the mean variance of each trunk conv layer's pre-activations (the input of its
    LeakyReLU, i.e. conv + batch norm) over one batch, in eval mode.

    ``model(*inputs)`` is the baseline (``inputs`` = hemispheres) or a saliency model (hemispheres,
    saliency); every slice of every hemisphere is one sample, each unit's (channel, row, column) variance
    is taken over the samples and averaged over the layer's units. ``noise_std`` > 0 adds Gaussian noise
    of that standard deviation to the image (the thesis: standard normal noise, ``noise_std`` = 1).
    Returns one value per conv layer (seven for ``FILTERS``).
    """
    image, *rest = inputs
    if noise_std > 0:
        image = image + noise_std * torch.randn(image.shape, generator=generator).to(image.device, image.dtype)
    variances: list[float] = []

    def record(module: nn.Module, args: tuple[torch.Tensor]) -> None:
        variances.append(float(args[0].float().var(dim=0, unbiased=False).mean()))

    handles = [block[-1].register_forward_pre_hook(record) for block in model.trunk.blocks]
    training = model.training
    try:
        model.eval()
        model(image, *rest)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return variances
