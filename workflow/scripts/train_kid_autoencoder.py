from pathlib import Path

import pandas as pd
import torch

from cfbrain.anomaly.ct import train_kid_autoencoder
from cfbrain.anomaly.pipeline import seeded_train_config, training_slices
from cfbrain.preprocess.mri import load_volume_slices
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    slices, splits = load_volume_slices(snakemake.input.slices), pd.read_csv(snakemake.input.splits, sep="\t")
    train_kid_autoencoder(training_slices(slices, splits, snakemake.wildcards.dataset, snakemake.params.seed),
                          seeded_train_config(snakemake.params.training, snakemake.params.seed, "KID autoencoder"),
                          Path(snakemake.output.weights).parent, job.resume_dir(snakemake.params.checkpoints))
