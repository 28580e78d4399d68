from pathlib import Path

import pandas as pd
import torch

from cfbrain.mededit.pipeline import train_on_slices, train_settings
from cfbrain.models.features import AutoencoderConfig, SliceAutoencoder, autoencoder_phase
from cfbrain.preprocess.mri import load_mri_slices
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    autoencoder = AutoencoderConfig.from_mapping(snakemake.params.autoencoder)
    train_on_slices(lambda: SliceAutoencoder(autoencoder), autoencoder_phase(),
                    load_mri_slices(snakemake.input.slices), pd.read_csv(snakemake.input.splits, sep="\t"),
                    train_settings(snakemake.params.training), Path(snakemake.output.weights).parent,
                    job.resume_dir(snakemake.params.checkpoints))
