"""Losses, phases and prediction outputs of the four-class stroke classifiers (thesis 003, chapter 4).

Batches are dicts: ``image`` float32 in [0, 1], (B, 2, S, H, W/2) for the hemisphere model or
(B, S, H, W) for the full-brain peers; ``label`` (B,) int64 in ``FOUR_CLASSES`` order
(none, left, right, both); for ACAT and its peers (``cfbrain.models.saliency_peers``) also ``saliency``,
laid out like ``image``. Hemisphere targets follow the model's [right, left] input order.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfbrain.metrics.classification import FOUR_CLASSES, class_indices
from cfbrain.models.mtl_cnn import HEMISPHERES, SIDE_CLASSES, MultiTaskHemisphereCNN, predict_four_class
from cfbrain.train.augment import SIDE_SWAP
from cfbrain.train.config import Phase

PHASE_LRS = (1e-3, 1e-4, 1e-5)
"""Table 4.1: half-brain model, heads, whole-model fine-tune."""
_LEFT, _RIGHT, _BOTH = (FOUR_CLASSES.index(name) for name in ("left", "right", "both"))
_HEMISPHERE_CLASSES = {"right": (_RIGHT, _BOTH), "left": (_LEFT, _BOTH)}


def presence_targets(labels: torch.Tensor) -> torch.Tensor:
    """(B,) float: 1 where the scan has a lesion."""
    return (labels != FOUR_CLASSES.index("none")).float()


def side_targets(labels: torch.Tensor) -> torch.Tensor:
    """(B,) int64 index into ``SIDE_CLASSES``; meaningful only where the scan has a lesion."""
    return labels - 1


def hemisphere_targets(labels: torch.Tensor) -> torch.Tensor:
    """(B, 2) float: lesion presence in each hemisphere, in the model's [right, left] order."""
    columns = [torch.isin(labels, torch.tensor(_HEMISPHERE_CLASSES[h], device=labels.device))
               for h in HEMISPHERES]
    return torch.stack(columns, dim=-1).float()


def inverse_frequency_weights(labels: Iterable[int], n_classes: int) -> torch.Tensor:
    """(n_classes,) float32 weights n / (k * count) over the k classes present; 0 for absent classes."""
    counts = np.bincount(np.asarray(list(labels), dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


@dataclass(frozen=True)
class ClassWeights:
    """Inverse-frequency weights of each task: ``presence`` and ``hemisphere`` over (absent, present),
    ``side`` over ``SIDE_CLASSES`` (lesion-positive scans only), ``four_class`` over ``FOUR_CLASSES``."""

    presence: torch.Tensor
    side: torch.Tensor
    hemisphere: torch.Tensor
    four_class: torch.Tensor

    @classmethod
    def from_labels(cls, labels: Iterable, flip_augmented: bool = True) -> ClassWeights:
        """From the training labels (class indices or names).

        With ``flip_augmented`` the labels are counted together with their left-right flips: random
        flips make left and right equally frequent in training, and a side seen only after a flip
        would otherwise have weight 0 and turn a batch's weighted loss into 0/0.
        """
        labels = class_indices(labels)
        if flip_augmented:
            labels = np.concatenate([labels, np.asarray(SIDE_SWAP)[labels]])
        labels = torch.from_numpy(labels)
        positive = labels[labels != FOUR_CLASSES.index("none")]
        return cls(presence=inverse_frequency_weights(presence_targets(labels).long().tolist(), 2),
                   side=inverse_frequency_weights(side_targets(positive).tolist(), len(SIDE_CLASSES)),
                   hemisphere=inverse_frequency_weights(hemisphere_targets(labels).long().flatten().tolist(), 2),
                   four_class=inverse_frequency_weights(labels.tolist(), len(FOUR_CLASSES)))


def weighted_binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                                  class_weights: torch.Tensor | None) -> torch.Tensor:
    """BCE with logits; with (2,) ``class_weights`` the weighted mean sum(w l) / sum(w), like weighted CE."""
    losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if class_weights is None:
        return losses.mean()
    weights = class_weights.to(logits.device, logits.dtype)[targets.long()]
    return (weights * losses).sum() / weights.sum()


def _to_device(weights: torch.Tensor | None, reference: torch.Tensor) -> torch.Tensor | None:
    return None if weights is None else weights.to(reference.device, reference.dtype)


def model_outputs(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """A hemisphere model's float32 output dict: ``model(image, saliency)`` when the batch carries a
    saliency map (ACAT and its peers), else ``model(image)``."""
    outputs = model(batch["image"], batch["saliency"]) if "saliency" in batch else model(batch["image"])
    return {k: v.float() for k, v in outputs.items()}


class HalfBrainLoss:
    """Phase 1: per-hemisphere lesion presence. Metric ``hemisphere_acc``."""

    def __init__(self, class_weights: torch.Tensor | None = None) -> None:
        self.class_weights = class_weights

    def __call__(self, model: MultiTaskHemisphereCNN, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = model.half_brain_logits(batch["image"]).float()
        targets = hemisphere_targets(batch["label"])
        loss = weighted_binary_cross_entropy(logits, targets, self.class_weights)
        return loss, {"hemisphere_acc": ((logits > 0).float() == targets).float().mean().detach()}


class MultiTaskLoss:
    """Phases 2-3: presence BCE on every scan + side CE on lesion-positive scans.

    Metrics: ``acc4`` (four-class accuracy) and ``presence_acc`` (Task 1).
    """

    def __init__(self, presence_weights: torch.Tensor | None = None,
                 side_weights: torch.Tensor | None = None) -> None:
        self.presence_weights, self.side_weights = presence_weights, side_weights

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        labels = batch["label"]
        outputs = model_outputs(model, batch)
        presence = presence_targets(labels)
        loss = weighted_binary_cross_entropy(outputs["presence"], presence, self.presence_weights)
        positive = presence.bool()
        if positive.any():
            loss = loss + F.cross_entropy(outputs["side"][positive], side_targets(labels[positive]),
                                          weight=_to_device(self.side_weights, outputs["side"]))
        predicted = predict_four_class(outputs)
        return loss, {"acc4": (predicted == labels).float().mean().detach(),
                      "presence_acc": ((predicted != 0) == positive).float().mean().detach()}


class FourClassLoss:
    """Full-brain peers: (optionally class-weighted) cross-entropy over the four classes. Metric ``acc4``."""

    def __init__(self, class_weights: torch.Tensor | None = None) -> None:
        self.class_weights = class_weights

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = model(batch["image"]).float()
        loss = F.cross_entropy(logits, batch["label"], weight=_to_device(self.class_weights, logits))
        return loss, {"acc4": (logits.argmax(-1) == batch["label"]).float().mean().detach()}


def _half_brain_parameters(model: MultiTaskHemisphereCNN) -> list[nn.Parameter]:
    return [*model.trunk.parameters(), *model.half_brain_head.parameters()]


def _head_parameters(model: MultiTaskHemisphereCNN) -> list[nn.Parameter]:
    return [*model.presence_head.parameters(), *model.side_head.parameters()]


def _deployed_parameters(model: MultiTaskHemisphereCNN) -> list[nn.Parameter]:
    return [p for module in model.deployed_modules() for p in module.parameters()]


def mtl_phases(train_labels: Iterable, epochs: tuple[int, int, int], lrs: tuple[float, float, float] = PHASE_LRS,
               class_weighted: bool = True) -> list[Phase]:
    """The three phases of Table 4.1 for ``MultiTaskHemisphereCNN``:

    1. ``half_brain``: trunk + half-brain head on per-hemisphere lesion presence;
    2. ``heads``: presence and side heads only, trunk frozen (its batch norms keep their statistics);
    3. ``finetune``: trunk and both heads.

    Args:
        train_labels: training-set labels (for the inverse-frequency class weights).
        epochs, lrs: per phase.
        class_weighted: weight every loss by inverse class frequency (the ACAT training notes).
    """
    weights = ClassWeights.from_labels(train_labels) if class_weighted else None
    multi_task = _multi_task_loss(weights)
    return [
        Phase("half_brain", HalfBrainLoss(weights.hemisphere if weights else None), epochs[0], lrs[0],
              _half_brain_parameters),
        Phase("heads", multi_task, epochs[1], lrs[1], _head_parameters),
        Phase("finetune", multi_task, epochs[2], lrs[2], _deployed_parameters),
    ]


def _multi_task_loss(weights: ClassWeights | None) -> MultiTaskLoss:
    return MultiTaskLoss(weights.presence if weights else None, weights.side if weights else None)


def finetune_phase(train_labels: Iterable, epochs: int, lr: float, class_weighted: bool = True) -> Phase:
    """The single phase of ACAT and its peers (thesis 003 section 5.6.2): every parameter, from the
    baseline's weights, on the class-weighted multi-task loss of the baseline's phases 2-3."""
    weights = ClassWeights.from_labels(train_labels) if class_weighted else None
    return Phase("finetune", _multi_task_loss(weights), epochs, lr)


def peer_phase(train_labels: Iterable, epochs: int, lr: float, class_weighted: bool = True) -> Phase:
    """The single training phase of a full-brain peer (all parameters, four-class CE)."""
    weights = ClassWeights.from_labels(train_labels).four_class if class_weighted else None
    return Phase("full_brain", FourClassLoss(weights), epochs, lr)


def mtl_outputs(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """Per-scan ``label``, ``pred`` (four-class), ``presence_prob`` (B,) and ``side_prob`` (B, 3) of a
    hemisphere model (the baseline, or ACAT and its peers when the batch carries ``saliency``)."""
    outputs = model_outputs(model, batch)
    return {"label": batch["label"], "pred": predict_four_class(outputs),
            "presence_prob": torch.sigmoid(outputs["presence"]), "side_prob": outputs["side"].softmax(-1)}


def peer_outputs(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """Per-scan ``label``, ``pred`` and ``prob`` (B, 4) of a full-brain peer."""
    logits = model(batch["image"]).float()
    return {"label": batch["label"], "pred": logits.argmax(-1), "prob": logits.softmax(-1)}
