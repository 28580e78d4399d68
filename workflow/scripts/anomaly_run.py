from dataclasses import replace

import pandas as pd
import torch

from cfbrain.anomaly.ddpm import load_healthy_ddpm
from cfbrain.anomaly.methods import DifuseSettings, run_method
from cfbrain.anomaly.pipeline import grid_choice, load_maps, save_run
from cfbrain.models.diffusion_unet import DiffusionUNetConfig
from cfbrain.preprocess.mri import load_volume_slices
from cfbrain.provenance import snakemake_job
from cfbrain.train.runtime import select_device

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    device = select_device(None)
    slices = load_volume_slices(snakemake.input.slices)
    index, maps = load_maps(snakemake.input.saliency)
    settings = DifuseSettings.from_mapping(snakemake.params.difuse)
    if "grid" in snakemake.input.keys():  # MRI: K and the percentile chosen on the BraTS-like validation slices
        depth, percentile = grid_choice(pd.read_csv(snakemake.input.grid, sep="\t"))
        settings = replace(settings, inversion_depth=depth, percentile=percentile)
    picked = slices.select(index)
    model = load_healthy_ddpm(snakemake.input.weights, DiffusionUNetConfig.from_mapping(snakemake.params.unet),
                              slices.image.shape[1], device)
    observed = [picked.contrasts.index(c) for c in picked.observed]
    result = run_method(snakemake.wildcards.approach, model, picked.image, maps, settings, observed, device)
    save_run(snakemake.output[0], index, result, settings.inversion_depth, settings.percentile)
    job.log.info("%s: K %d, percentile %g, %d slices, %d network calls", snakemake.wildcards.approach,
                 settings.inversion_depth, settings.percentile, len(index), result.evaluations)
