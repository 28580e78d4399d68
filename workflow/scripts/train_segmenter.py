from pathlib import Path

import pandas as pd
import torch

from cfbrain.mededit.pipeline import train_on_slices, train_settings
from cfbrain.models.segmenter import SegmenterConfig, lesion_segmenter, segmenter_phase
from cfbrain.preprocess.mri import load_mri_slices
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    network = SegmenterConfig.from_mapping(snakemake.params.network)
    train_on_slices(lambda: lesion_segmenter(network), segmenter_phase(), load_mri_slices(snakemake.input.slices),
                    pd.read_csv(snakemake.input.splits, sep="\t"), train_settings(snakemake.params.training),
                    Path(snakemake.output.weights).parent, job.resume_dir(snakemake.params.checkpoints))
