"""Training infrastructure shared by every model: loop, phases, checkpoint/resume, EMA, seeding."""
from __future__ import annotations

from cfbrain.train.checkpoint import load_weights
from cfbrain.train.config import Phase, TrainConfig
from cfbrain.train.data import SeededTransformDataset
from cfbrain.train.inference import predict
from cfbrain.train.loop import FitResult, adam, cosine_annealing, fit
from cfbrain.train.runtime import seed_everything, select_device

__all__ = [
    "FitResult", "Phase", "SeededTransformDataset", "TrainConfig", "adam", "cosine_annealing", "fit",
    "load_weights", "predict", "seed_everything", "select_device",
]
