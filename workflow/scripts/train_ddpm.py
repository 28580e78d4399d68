from pathlib import Path

import pandas as pd
import torch

from cfbrain.mededit.pipeline import denoiser_variant, train_on_slices, train_settings
from cfbrain.models.diffusion_unet import DiffusionUNetConfig, diffusion_phase, diffusion_unet
from cfbrain.preprocess.mri import load_mri_slices
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    variant, box = denoiser_variant(snakemake.wildcards.network)
    unet = DiffusionUNetConfig.from_mapping(snakemake.params.unet)
    train_on_slices(lambda: diffusion_unet(variant, unet), diffusion_phase(variant, box_masks=box),
                    load_mri_slices(snakemake.input.slices), pd.read_csv(snakemake.input.splits, sep="\t"),
                    train_settings(snakemake.params.training), Path(snakemake.output.weights).parent,
                    job.resume_dir(snakemake.params.checkpoints))
