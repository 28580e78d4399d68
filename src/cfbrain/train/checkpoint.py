"""Atomic checkpoint files: a kill during a write leaves the previous checkpoint intact."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_FORMAT = 1


def atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load(path: Path) -> dict[str, Any]:
    """A checkpoint or weights file on the CPU (tensors, numbers, strings and containers only)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def load_weights(model: nn.Module, path: Path, use_ema: bool = False) -> nn.Module:
    """Load ``final.pt`` / ``best.pt`` (``{"model": ..., "ema": ... or None}``) into ``model``.

    Raises:
        ValueError: if ``use_ema`` but the file holds no EMA weights.
    """
    weights = load(path)
    if use_ema and weights.get("ema") is None:
        raise ValueError(f"{path} holds no EMA weights (train with ema_decay set)")
    model.load_state_dict(weights["ema"] if use_ema else weights["model"])
    return model
