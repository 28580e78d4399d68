"""Sampling benchmark: network evaluations and wall time per image of every sampler, and its overhead.

For each sampler of :mod:`cfbrain.diffusion.samplers` (MedEdit, naïve RePaint, SDEdit, Palette, Dif-fuse) on a
batch of synthetic brain-like images with a lesion mask, prints: network evaluations per image (each
evaluation is one batched forward pass), wall time per image, and two overhead ratios

    isolated:  sampler wall time / (evaluations x one forward pass timed alone just before the run)
    in-run:    sampler wall time / time spent inside the network's forward passes during the run

The isolated forward pass is the median of ``--forwards`` passes on the same batch. On a shared machine it
and a long sampler run see different loads, so the isolated ratio moves by +-20 % between runs; the in-run
ratio compares the sampler with its own forward passes and measures only what the sampler adds (noise
draws, masks, schedule maths). A ratio near 1 means that costs nothing next to the network. Each cell is the
median over ``--repeats`` runs. Untrained networks of the configured size (timing does not depend on the
weights). Ratios, not pass/fail.

    python bench/sampling.py [--size 64] [--batch 8] [--stride 20] [--channels 16 32 64] [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from cfbrain.diffusion import samplers
from cfbrain.diffusion.masks import difuse_mask
from cfbrain.models.diffusion_unet import DiffusionUNetConfig, diffusion_unet


def test_batch(batch: int, size: int) -> dict[str, torch.Tensor]:
    """(B, 1, S, S) image in [-1, 1] (an ellipse of 'tissue' on background), a disc lesion and the brain mask."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    brain = ((x / 0.8) ** 2 + (y / 0.9) ** 2 < 1).float()
    generator = torch.Generator().manual_seed(0)
    images, lesions = [], []
    for _ in range(batch):
        cx, cy = (torch.rand(2, generator=generator) - 0.5) * 0.8
        lesions.append(((x - cx) ** 2 + (y - cy) ** 2 < 0.15 ** 2).float() * brain)
        images.append(brain * (0.6 + 0.1 * torch.randn(size, size, generator=generator)) * 2 - 1)
    stack = lambda planes: torch.stack(planes)[:, None]  # noqa: E731
    return {"image": stack(images), "lesion": stack(lesions), "brain": brain.expand(batch, 1, size, size).clone()}


@torch.no_grad()
def forward_seconds(model: torch.nn.Module, x: torch.Tensor, cond: torch.Tensor | None, repeats: int) -> float:
    """Median wall time of one forward pass on the batch ``x`` (after a warm-up pass)."""
    t = torch.full((x.shape[0],), 500, dtype=torch.long)
    model(x, t, cond)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x, t, cond)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class TimedModel:
    """Wraps an ``eps_model`` and adds up the wall time spent inside its calls."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.seconds = model, 0.0

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        start = time.perf_counter()
        eps = self.model(x_t, t, cond)
        self.seconds += time.perf_counter() - start
        return eps


def measure(model: torch.nn.Module, cond: torch.Tensor | None, run, image: torch.Tensor, forwards: int
            ) -> tuple[int, float, float, float]:
    """(evaluations, sampler seconds, isolated forward seconds, seconds inside the network) of one run."""
    one_forward = forward_seconds(model, image, cond, forwards)
    timed = TimedModel(model)
    start = time.perf_counter()
    result = run(timed)
    return result.evaluations, time.perf_counter() - start, one_forward, timed.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--stride", type=int, default=20, help="subsample the T = 1000 levels (1 = all)")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--forwards", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="runs per sampler; cells are medians")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    attention = (False,) * (len(args.channels) - 1) + (True,)
    config = DiffusionUNetConfig(channels=tuple(args.channels), attention_levels=attention,
                                 num_head_channels=args.channels[-1] // 2, norm_num_groups=8)
    models = {variant: diffusion_unet(variant, config).eval() for variant in ("mededit", "palette", "unconditional")}
    data = test_batch(args.batch, args.size)
    image, lesion, brain = data["image"], data["lesion"], data["brain"]
    common = {"stride": args.stride, "seeds": 0}
    runs = {
        "mededit (k 25, U 4)": ("mededit", samplers.mededit_condition(lesion, brain),
                                lambda m: samplers.mededit(m, image, lesion, brain, kernel_size=25, resample_steps=4,
                                                           **common)),
        "naive_repaint (U 3)": ("mededit", samplers.mededit_condition(lesion, brain),
                                lambda m: samplers.naive_repaint(m, image, lesion, brain, resample_steps=3, **common)),
        "sdedit (ratio 0.2)": ("mededit", samplers.mededit_condition(lesion, brain),
                               lambda m: samplers.sdedit(m, image, lesion, brain, ratio=0.2, **common)),
        "palette": ("palette", samplers.palette_condition(image, lesion, torch.randn_like(image)),
                    lambda m: samplers.palette(m, image, lesion, **common)),
        "dif_fuse (K 500)": ("unconditional", None,
                             lambda m: samplers.dif_fuse(m, image, difuse_mask(lesion), inversion_depth=500, **common)),
    }
    print(f"{args.batch} images of {args.size}x{args.size}, UNet channels {tuple(args.channels)}, stride {args.stride} "
          f"({1000 // args.stride} levels), {torch.get_num_threads()} torch threads, CPU, median of {args.repeats} runs")
    print(f"  {'sampler':22s} {'evals/image':>11s} {'s/image':>8s} {'forward s':>9s} {'isolated':>8s} {'in-run':>7s}")
    for name, (variant, cond, run) in runs.items():
        samples = [measure(models[variant], cond, run, image, args.forwards) for _ in range(args.repeats)]
        evaluations = samples[0][0]
        elapsed = statistics.median(s[1] for s in samples)
        one_forward = statistics.median(s[2] for s in samples)
        isolated = statistics.median(s[1] / (s[0] * s[2]) for s in samples)
        in_run = statistics.median(s[1] / s[3] for s in samples)
        print(f"  {name:22s} {evaluations:11d} {elapsed / args.batch:8.3f} {one_forward:9.4f} {isolated:8.2f} "
              f"{in_run:7.3f}")


if __name__ == "__main__":
    main()
