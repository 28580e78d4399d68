"""Class weights under flip augmentation: a side seen only after a flip must not get weight 0."""
from __future__ import annotations

import torch

from cfbrain.train.classification import ClassWeights, MultiTaskLoss


def test_flip_augmented_weights_cover_both_sides():
    right_only = [2, 2, 0, 2]
    plain = ClassWeights.from_labels(right_only, flip_augmented=False)
    assert plain.side[0] == 0  # left never seen: a flipped batch would divide by zero
    weights = ClassWeights.from_labels(right_only)
    assert weights.side[0] == weights.side[1] > 0
    loss_fn = MultiTaskLoss(weights.presence, weights.side)

    class Fixed(torch.nn.Module):
        def forward(self, image):
            return {"presence": torch.zeros(2), "side": torch.zeros(2, 3)}

    loss, _ = loss_fn(Fixed(), {"image": torch.zeros(2), "label": torch.tensor([1, 1])})  # flipped: left only
    assert torch.isfinite(loss)
