from pathlib import Path

import pandas as pd
import torch

from cfbrain.mededit.pipeline import DenoiserTraining, train_denoiser
from cfbrain.models.diffusion_unet import DiffusionUNetConfig
from cfbrain.preprocess.mri import load_mri_slices
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    train_denoiser(snakemake.wildcards.network, DiffusionUNetConfig.from_mapping(snakemake.params.unet),
                   DenoiserTraining.from_mapping(snakemake.params.training, snakemake.params.seed),
                   load_mri_slices(snakemake.input.slices), pd.read_csv(snakemake.input.splits, sep="\t"),
                   Path(snakemake.output.weights).parent, job.resume_dir(snakemake.params.checkpoints))
