from pathlib import Path

import pandas as pd
import torch

from cfbrain.anomaly.ddpm import HealthyDDPMSettings, train_healthy_ddpm
from cfbrain.anomaly.pipeline import healthy_slices, training_slices
from cfbrain.models.diffusion_unet import DiffusionUNetConfig
from cfbrain.preprocess.mri import load_volume_slices
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    slices, splits = load_volume_slices(snakemake.input.slices), pd.read_csv(snakemake.input.splits, sep="\t")
    healthy = training_slices(slices, splits, snakemake.wildcards.dataset, snakemake.params.seed, healthy=True)
    settings = HealthyDDPMSettings.from_mapping({**snakemake.params.training, "seed": snakemake.params.seed})
    train_healthy_ddpm(healthy, healthy_slices(slices, splits, "val"), DiffusionUNetConfig.from_mapping(snakemake.params.unet),
                       settings, Path(snakemake.output.weights).parent, job.resume_dir(snakemake.params.checkpoints))
