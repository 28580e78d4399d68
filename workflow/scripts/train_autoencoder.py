from pathlib import Path

import pandas as pd
import torch

from cfbrain.errors import require_rows
from cfbrain.models import SpatialAutoencoderConfig
from cfbrain.provenance import snakemake_job
from cfbrain.saliency import load_autoencoder
from cfbrain.train.autoencoder import AutoencoderTraining, reconstruction_figure, train_autoencoder

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    split = pd.read_csv(snakemake.input.split, sep="\t")
    require_rows(int((split.split == "train").sum()), 1, snakemake.wildcards.dataset,
                 f"scans in the training split of seed {snakemake.wildcards.seed}")
    tensors = {Path(p).name: Path(p) / "tensor.npz" for p in snakemake.input.tensors}
    architecture = SpatialAutoencoderConfig.from_mapping(snakemake.params.architecture)
    weights = train_autoencoder(split, tensors, architecture, AutoencoderTraining.from_mapping(snakemake.params.training),
                                snakemake.params.seed, Path(snakemake.output.weights).parent,
                                job.resume_dir(snakemake.params.checkpoints))
    shown = split.scan[split.split == ("val" if (split.split == "val").any() else "train")].head(6).tolist()
    reconstruction_figure(load_autoencoder(weights, architecture), [tensors[s] for s in shown],
                          Path(snakemake.output.reconstructions), titles=shown)
