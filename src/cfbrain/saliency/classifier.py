"""The classifier f every saliency method explains: P(lesion) of the hemisphere CNN on full slices.

The saliency methods work on one scan's full slices x, (S, H, W) float32 in [0, 1] and in the tensor's
display convention (column 0 = patient right), because the autoencoder reconstructs full slices and
the maps must be aligned with the tensor. :class:`LesionClassifier` splits x into hemispheres exactly
as :func:`cfbrain.preprocess.hemispheres.split_hemispheres` does (whole-column midline shift with zero
fill, [right, left] halves, the left one mirrored), but with torch operations, so gradients flow from
f back to x (or to the decoder's output and the latent).

Binary target from the four-class model (none, left, right, both): f(x) is the presence head's logit,
P(lesion) = sigmoid(f(x)) = P(left) + P(right) + P(both) of the model's decision rule
(:func:`cfbrain.models.mtl_cnn.predict_four_class`); the side head is not used. Eq. 5.3 with K = 2
classes (no lesion, lesion) is then ``binary_cross_entropy_with_logits(f(x), t)`` = -log P(t).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfbrain.preprocess.hemispheres import midline_shifts


def shift_columns(volume: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """out[s, :, c] = volume[s, :, c - shifts[s]], 0 where that column is outside: (S, H, W), differentiable
    in ``volume`` (torch twin of :func:`cfbrain.preprocess.hemispheres.shift_columns`)."""
    n_slices, height, width = volume.shape
    source = torch.arange(width, device=volume.device)[None, :] - shifts[:, None]
    inside = ((source >= 0) & (source < width)).to(volume.dtype)
    index = source.clamp(0, width - 1)[:, None, :].expand(n_slices, height, width)
    return torch.gather(volume, 2, index) * inside[:, None, :]


def split_hemispheres(volume: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """(S, H, W) -> (2, S, H, W/2) [right, left-mirrored] halves after shifting slice s by shifts[s] columns."""
    centred = shift_columns(volume, shifts)
    half = volume.shape[-1] // 2
    return torch.stack([centred[..., :half], centred[..., half:].flip(-1)])


def join_hemispheres(halves: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_hemispheres`: (2, S, H, W/2) -> (S, H, W), the mirror and the shift undone
    (columns shifted in from outside the image are 0)."""
    return shift_columns(torch.cat([halves[0], halves[1].flip(-1)], dim=-1), -shifts)


class LesionClassifier(nn.Module):
    """f: one scan's slices (S, H, W) -> presence logit (0-d tensor) of a hemisphere model.

    Args:
        model: a network mapping (B, 2, S, H, W/2) hemispheres to ``{"presence": (B,) logits, ...}``
            whose 2-D trunk is ``model.trunk`` with a ``blocks`` list (:class:`MultiTaskHemisphereCNN`).
        midline_col: (S,) the tensor's ``midline_col`` (fractional midline column per slice).
        width: W, the slices' width.

    The model is put in eval mode; its parameters are not trained here.
    """

    def __init__(self, model: nn.Module, midline_col: np.ndarray, width: int) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("shifts", torch.from_numpy(midline_shifts(midline_col, width)), persistent=False)

    @property
    def cam_layer(self) -> nn.Module:
        """The trunk's last convolutional block: Grad-CAM's layer (§5.6.5)."""
        return self.model.trunk.blocks[-1]

    def hemispheres(self, slices: torch.Tensor) -> torch.Tensor:
        """(S, H, W) -> (1, 2, S, H, W/2), the model's input."""
        return split_hemispheres(slices, self.shifts)[None]

    def to_slices(self, maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Per-hemisphere-slice maps (2, S, h, w) on the trunk's grid -> (S, H, W) on the slice grid:
        bilinear upsampling to (H, W/2), then the mirror and midline shift undone."""
        up = F.interpolate(maps, size=(height, width // 2), mode="bilinear", align_corners=False)
        return join_hemispheres(up, self.shifts)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        if slices.ndim != 3:
            raise ValueError(f"expected one scan's slices (S, H, W), got {tuple(slices.shape)}")
        return self.model(self.hemispheres(slices))["presence"][0]

