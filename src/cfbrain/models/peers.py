"""Full-brain peers of thesis 003 Table 4.2 (and the full-brain ablation of section 4.4.2).

Input convention: (B, S, H, W) float32 in [0, 1], the whole (unsplit) brain. Every slice goes through a
2-D backbone; the features are averaged over the slices and one linear layer gives the four-class logits
(the thesis's "mean pooling across the slices, followed by a linear projection").

Parameters with four classes at the thesis's 500x400 slices:

* ResNet-18 / -50 (MONAI): 11,172,292 / 23,509,956, as the thesis.
* Swin (MONAI ``SwinTransformer``, 4x4 patches, stages of 96/192/384/768 channels and 2/2/6/2 blocks,
  7x7 windows, 32-d heads, stochastic depth 0 -> 0.2): 27,519,358, as the thesis. The count needs a
  layer norm after the patch embedding, no patch merging after the last stage and a layer norm (with
  weights) on its output, as in Liu et al.; MONAI's SwinUNETR encoder instead merges once more (to 1536
  channels, +4,724,736), so that merging is removed. MONAI pads the input to whole patches and windows
  itself; slices need at least 32 pixels a side (4-pixel patches halved three times).
* ViT (MONAI ``ViT``, 25x25 patches, 6 layers, 16 heads of 64, MLP 2048, 1024-d embeddings, learnable
  positions, a classification token, dropout 0.1): 51,368,964 against the thesis's 51,439,620
  (-70,656). MONAI fixes the patch grid when the model is built, so the ViT is built for the tensor's
  (H, W), each slice zero-padded (bottom, right; zero is the background of [0, 1] tensors) to whole
  patches: 500x400 is a 20x16 grid with 320 positions. The thesis's count is that of lucidrains'
  ``vit-pytorch`` (its README example: dim 1024, depth 6, heads 16, mlp_dim 2048, dropout and
  emb_dropout 0.1) built with ``image_size=500``, a square 20x20 grid, plus one position for the
  classification token: 401 positions, 81 x 1024 = 82,944 more. MONAI's transformer blocks carry a
  cross-attention layer norm that is unused without cross-attention (6 x 2,048 = 12,288 more here).
"""
from __future__ import annotations

import math

import torch
from monai.networks.nets import ViT, resnet18, resnet50
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn
from torch.nn import functional as F

from cfbrain.metrics.classification import FOUR_CLASSES
from cfbrain.models.mtl_cnn import FILTERS, SliceCNN

RESNET_FEATURES = {18: 512, 50: 2048}
THESIS_PARAMETER_COUNTS = {"resnet18": 11_172_292, "resnet50": 23_509_956, "vit": 51_439_620,
                           "swin": 27_519_358}
VIT_PATCH = 25
VIT_FEATURES = 1024
SWIN_PATCH = 4
SWIN_DIMS = (96, 192, 384, 768)
SWIN_MIN_SIDE = SWIN_PATCH * 2 ** (len(SWIN_DIMS) - 1)


class SliceAveragedClassifier(nn.Module):
    """(B, S, H, W) -> (B, n_classes) logits: ``backbone`` per slice, mean over slices, linear layer.

    Args:
        backbone: maps (N, 1, H, W) to (N, n_features).
    """

    def __init__(self, backbone: nn.Module, n_features: int, n_classes: int = len(FOUR_CLASSES)) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(n_features, n_classes)

    def slice_features(self, brain: torch.Tensor) -> torch.Tensor:
        """(B, S, H, W) -> (B, S, n_features)."""
        if brain.ndim != 4:
            raise ValueError(f"expected (B, S, H, W) brains, got {tuple(brain.shape)}")
        b, s, height, width = brain.shape
        return self.backbone(brain.reshape(b * s, 1, height, width)).reshape(b, s, -1)

    def forward(self, brain: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.slice_features(brain).mean(dim=1))


def resnet_peer(depth: int, n_classes: int = len(FOUR_CLASSES)) -> SliceAveragedClassifier:
    """MONAI ResNet-18 or -50 (2-D, one input channel, 7x7 stride-2 stem, max pooling, no bias in the
    downsampling shortcuts): exactly the thesis's 11,172,292 / 23,509,956 parameters with four classes."""
    if depth not in RESNET_FEATURES:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_FEATURES)}, got {depth}")
    factory = {18: resnet18, 50: resnet50}[depth]
    backbone = factory(spatial_dims=2, n_input_channels=1, conv1_t_stride=2, bias_downsample=False,
                       feed_forward=False)
    return SliceAveragedClassifier(backbone, RESNET_FEATURES[depth], n_classes)


def full_brain_cnn(filters: tuple[int, ...] = FILTERS, n_classes: int = len(FOUR_CLASSES)) -> SliceAveragedClassifier:
    """The thesis's own seven-layer CNN trained end-to-end on full brains for the four classes (section
    4.4.2 ablation, 71 % validation accuracy against 76 % for the hemisphere model)."""
    trunk = SliceCNN(filters)
    return SliceAveragedClassifier(trunk, trunk.out_features, n_classes)


class ViTBackbone(nn.Module):
    """(N, 1, H, W) -> (N, 1024): zero-pad to whole 25x25 patches, MONAI ViT, the normalised
    classification token. Built for one slice size ``image_hw``; other sizes are refused."""

    def __init__(self, image_hw: tuple[int, int]) -> None:
        super().__init__()
        if min(image_hw) < VIT_PATCH:
            raise ValueError(f"ViT needs slices of at least {VIT_PATCH}x{VIT_PATCH} pixels, got {tuple(image_hw)}")
        self.image_hw = tuple(image_hw)
        self.padded_hw = tuple(math.ceil(side / VIT_PATCH) * VIT_PATCH for side in image_hw)
        self.vit = ViT(in_channels=1, img_size=self.padded_hw, patch_size=VIT_PATCH, hidden_size=VIT_FEATURES,
                       mlp_dim=2048, num_layers=6, num_heads=16, pos_embed_type="learnable", classification=True,
                       dropout_rate=0.1, spatial_dims=2, post_activation=None)
        # MONAI's head maps the token to classes; the slice-averaging classifier has its own linear layer
        self.vit.classification_head = nn.Identity()

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        if tuple(slices.shape[-2:]) != self.image_hw:
            raise ValueError(f"this ViT was built for {self.image_hw} slices, got {tuple(slices.shape[-2:])}")
        (height, width), (padded_h, padded_w) = self.image_hw, self.padded_hw
        return self.vit(F.pad(slices, (0, padded_w - width, 0, padded_h - height)))[0]


class SwinBackbone(nn.Module):
    """(N, 1, H, W) -> (N, 768): MONAI Swin transformer, last stage layer-normalised and averaged over
    positions. H and W must be at least 32 (one token per side after the last stage)."""

    def __init__(self) -> None:
        super().__init__()
        self.swin = SwinTransformer(in_chans=1, embed_dim=SWIN_DIMS[0], window_size=(7, 7),
                                    patch_size=(SWIN_PATCH, SWIN_PATCH), depths=(2, 2, 6, 2),
                                    num_heads=tuple(dim // 32 for dim in SWIN_DIMS), drop_path_rate=0.2,
                                    patch_norm=True, spatial_dims=2)
        # Liu et al.'s last stage ends without patch merging; SwinUNETR's encoder merges to 1536 channels
        self.swin.layers4[0].downsample = None
        self.norm = nn.LayerNorm(SWIN_DIMS[-1])

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        if min(slices.shape[-2:]) < SWIN_MIN_SIDE:
            raise ValueError(f"Swin needs slices of at least {SWIN_MIN_SIDE}x{SWIN_MIN_SIDE} pixels, "
                             f"got {tuple(slices.shape[-2:])}")
        last_stage = self.swin(slices, normalize=False)[-1]  # (N, 768, H/32, W/32)
        return self.norm(last_stage.permute(0, 2, 3, 1)).mean(dim=(1, 2))


def vit_peer(image_hw: tuple[int, int], n_classes: int = len(FOUR_CLASSES)) -> SliceAveragedClassifier:
    """Thesis ViT per slice for (B, S, *image_hw) brains: 51,368,964 parameters at 500x400 (module docstring)."""
    return SliceAveragedClassifier(ViTBackbone(image_hw), VIT_FEATURES, n_classes)


def swin_peer(n_classes: int = len(FOUR_CLASSES)) -> SliceAveragedClassifier:
    """Thesis Swin per slice: exactly the thesis's 27,519,358 parameters with four classes (any input size)."""
    return SliceAveragedClassifier(SwinBackbone(), SWIN_DIMS[-1], n_classes)


def build_peer(name: str, image_hw: tuple[int, int] | None = None) -> SliceAveragedClassifier:
    """A peer by name: ``resnet18``, ``resnet50``, ``full_brain_cnn``, ``swin`` or ``vit``; ``vit`` needs the
    slice size ``image_hw`` (H, W) of the tensors it will see, the others ignore it."""
    if name == "vit":
        if image_hw is None:
            raise ValueError("the ViT peer needs the tensors' slice size image_hw=(H, W)")
        return vit_peer(image_hw)
    builders = {"resnet18": lambda: resnet_peer(18), "resnet50": lambda: resnet_peer(50),
                "full_brain_cnn": full_brain_cnn, "swin": swin_peer}
    if name not in builders:
        raise ValueError(f"unknown peer {name!r}; choose from {sorted([*builders, 'vit'])}")
    return builders[name]()
