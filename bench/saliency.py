"""Saliency benchmark: seconds per scan of each saliency method, as a ratio to one classifier forward pass.

    python bench/saliency.py [--shape 11 160 128] [--repeats 3] [--threads 1] [--device cpu]
                             [--stem-channels 128] [--steps 20] [--ig-steps 50]

Untrained networks (the thesis's hemisphere CNN and the authors' autoencoder, sizes from the options) on
a random scan of the given tensor shape, written as a preprocessed-tensor file and run through
:func:`cfbrain.saliency.compute_saliency` exactly as the workflow rule runs it (file read included).
The cost of a method does not depend on the weights, except the latent-shift search, whose number of
decoder passes depends on when P(lesion) falls below 0.01: with untrained networks it never does, so
the latent-shift time is the worst case (all ``shift_max_doublings`` + 1 attempts).

Output: per method the median seconds over ``--repeats`` runs and the ratio to the median of one
forward pass of the classifier (no gradient) on the same scan. Numbers, never pass/fail.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cfbrain.models import MultiTaskHemisphereCNN, SpatialAutoencoder, SpatialAutoencoderConfig
from cfbrain.preprocess.ct import CTTensor, save_tensor
from cfbrain.preprocess.geometry import CropBox
from cfbrain.saliency import METHODS, LesionClassifier, SaliencySettings, compute_saliency


def random_scan(path: Path, shape: tuple[int, int, int]) -> Path:
    """A preprocessed-tensor file of random [0, 1] slices of ``shape`` (S, H, W)."""
    n, height, width = shape
    zeros = np.zeros(shape, np.uint8)
    save_tensor(path, CTTensor(
        image=np.random.default_rng(0).random(shape, dtype=np.float32), head_mask=zeros, brain_mask=zeros,
        lesion_mask=None, midline_col=np.full(n, (width - 1) / 2, np.float32), midline_source="centre",
        slice_index=np.arange(n), crop_box=CropBox(0, height, 0, width), resized_hw=(height, width),
        pad=((0, 0), (0, 0)), pixel_mm=(1.0, 1.0), voxel_mm=(5.0, 1.0, 1.0), source_shape=shape,
        source_affine=np.eye(4), hu_window=(0.0, 100.0)))
    return path


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(11, 160, 128), metavar=("S", "H", "W"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stem-channels", type=int, default=SpatialAutoencoderConfig.stem_channels)
    parser.add_argument("--steps", type=int, default=SaliencySettings.steps)
    parser.add_argument("--ig-steps", type=int, default=SaliencySettings.ig_steps)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    classifier = MultiTaskHemisphereCNN().to(device).eval()
    autoencoder = SpatialAutoencoder(SpatialAutoencoderConfig(stem_channels=args.stem_channels)).to(device).eval()
    settings = SaliencySettings(steps=args.steps, ig_steps=args.ig_steps)
    with tempfile.TemporaryDirectory() as folder:
        scan = random_scan(Path(folder) / "tensor.npz", tuple(args.shape))
        slices = torch.rand(*args.shape, device=device)
        f = LesionClassifier(classifier, np.full(args.shape[0], (args.shape[2] - 1) / 2, np.float32), args.shape[2])

        def forward() -> None:
            with torch.no_grad():
                f(slices)

        forward()  # warm-up
        reference = median_seconds(forward, args.repeats)
        print(f"tensor {tuple(args.shape)}, device {device}, {args.threads} thread(s), autoencoder stem "
              f"{args.stem_channels}, {args.steps} steps, IG {args.ig_steps} steps, {args.repeats} repeats")
        print(f"{'method':<26}{'s / scan':>10}{'x forward':>11}")
        print(f"{'classifier forward':<26}{reference:>10.3f}{1.0:>11.1f}")
        for method in METHODS:
            seconds = median_seconds(lambda: compute_saliency(method, scan, classifier, autoencoder, settings),
                                     args.repeats)
            print(f"{method:<26}{seconds:>10.3f}{seconds / reference:>11.1f}")


if __name__ == "__main__":
    main()
