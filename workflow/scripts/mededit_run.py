from pathlib import Path

import torch

from cfbrain.mededit.methods import parse_method, save_counterfactuals
from cfbrain.mededit.pipeline import SamplingSettings, edit
from cfbrain.mededit.triplets import load_triplets
from cfbrain.models.diffusion_unet import DiffusionUNetConfig
from cfbrain.provenance import snakemake_job
from cfbrain.train import select_device

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    method = snakemake.wildcards.method
    result = edit(method, load_triplets(snakemake.input.triplets),
                  {parse_method(method).network: Path(snakemake.input.weights)},
                  DiffusionUNetConfig.from_mapping(snakemake.params.unet),
                  SamplingSettings.from_mapping(snakemake.params.sampling), snakemake.params.seed, select_device())
    save_counterfactuals(snakemake.output[0], result)
    job.log.info("%s: %d counterfactuals, %d network calls", method, len(result.prior_scan), result.evaluations)
