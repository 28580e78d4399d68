"""Batched inference over a dataset, in dataset order."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cfbrain.train.runtime import select_device, to_device

OutputFn = Callable[[nn.Module, Any], dict[str, torch.Tensor]]
"""(model, batch on the device) -> per-sample tensors, first dimension the batch."""


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, output_fn: OutputFn, *, batch_size: int = 8,
            device: str | torch.device | None = None, num_workers: int = 0,
            collate_fn: Callable | None = None, mixed_precision: bool = True) -> dict[str, np.ndarray]:
    """Run ``output_fn`` in eval mode over ``dataset``; each output concatenated to a numpy array (N, ...).

    Mixed precision (float16 autocast) applies on CUDA only.
    """
    device = select_device(device)
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_fn, pin_memory=device.type == "cuda")
    collected: dict[str, list[np.ndarray]] = {}
    for batch in loader:
        with torch.autocast(device.type, dtype=torch.float16, enabled=mixed_precision and device.type == "cuda"):
            outputs = output_fn(model, to_device(batch, device))
        for key, value in outputs.items():
            collected.setdefault(key, []).append(value.detach().float().cpu().numpy()
                                                 if value.is_floating_point() else value.cpu().numpy())
    return {key: np.concatenate(parts) for key, parts in collected.items()}
