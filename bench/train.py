"""Training benchmark: throughput (samples/s) and the fraction of step time spent waiting on data, on CPU.

Runs optimizer steps of the thesis's hemisphere CNN (multi-task loss) and of a full-brain peer on the
preprocessed demo tensors, loading them through the same dataset class the workflow uses, and prints
for each: samples/s, seconds per step, and data wait / step time (the share the model sits idle while
the loader reads .npz files). Ratios, not pass/fail.

    make demo                      # once, to have results/demo-ct/preproc/
    python bench/train.py [--tensors results/demo-ct/preproc] [--steps 20] [--batch 8] [--workers 0]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cfbrain.models import MultiTaskHemisphereCNN, build_peer
from cfbrain.train.classification import FourClassLoss, MultiTaskLoss
from cfbrain.train.stroke import TENSOR, ScanTensors


def measure(model: torch.nn.Module, loss_fn, dataset: ScanTensors, steps: int, batch: int, workers: int) -> dict:
    """Mean seconds per step, data wait and compute over ``steps`` optimizer steps (after one warm-up step)."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    wait = compute = 0.0
    done = 0
    iterator = iter(loader)
    for step in range(steps + 1):
        start = time.perf_counter()
        try:
            batch_data = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch_data = next(iterator)
        loaded = time.perf_counter()
        loss, _ = loss_fn(model, batch_data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        finished = time.perf_counter()
        if step:  # the first step pays for lazy initialisation
            wait += loaded - start
            compute += finished - loaded
            done += len(batch_data["label"])
    total = wait + compute
    return {"samples_per_s": done / total, "s_per_step": total / steps, "data_wait_fraction": wait / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tensors", type=Path, default=Path("results/demo-ct/preproc"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--peer", default="resnet18")
    args = parser.parse_args()
    files = sorted(args.tensors.glob(f"*/{TENSOR}"))
    if not files:
        raise SystemExit(f"no tensors under {args.tensors}: run `make demo` first or pass --tensors")
    torch.manual_seed(0)
    labels = [i % 4 for i in range(len(files))]  # throughput does not depend on the labels
    n_slices, *image_hw = ScanTensors(files[:1], [0], "full")[0]["image"].shape
    rows = {
        "hemisphere CNN (MTL)": measure(MultiTaskHemisphereCNN(), MultiTaskLoss(), ScanTensors(files, labels, "hemispheres"),
                                        args.steps, args.batch, args.workers),
        f"{args.peer} (full brain)": measure(build_peer(args.peer, tuple(image_hw)), FourClassLoss(), ScanTensors(files, labels, "full"),
                                             args.steps, args.batch, args.workers),
    }
    print(f"{len(files)} tensors of {n_slices} slices of {tuple(image_hw)}, batch {args.batch}, {args.workers} loader workers, "
          f"{torch.get_num_threads()} torch threads, CPU")
    for name, row in rows.items():
        print(f"  {name:26s} {row['samples_per_s']:7.2f} samples/s  {row['s_per_step']:6.2f} s/step  "
              f"data wait {100 * row['data_wait_fraction']:5.1f} % of step time")
    (mtl, mtl_row), (peer, peer_row) = rows.items()
    print(f"  ratio {mtl} / {peer} throughput: {mtl_row['samples_per_s'] / peer_row['samples_per_s']:.2f}")


if __name__ == "__main__":
    main()
