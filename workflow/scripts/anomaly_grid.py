from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from cfbrain.anomaly.ddpm import load_healthy_ddpm
from cfbrain.anomaly.figures import counterfactual_figure, grid_heatmap
from cfbrain.anomaly.methods import DifuseSettings, run_method
from cfbrain.anomaly.pipeline import evaluation_slices, grid_choice, group_rows, load_maps
from cfbrain.errors import require_rows
from cfbrain.metrics.anomaly import best_threshold, threshold_curve
from cfbrain.models.diffusion_unet import DiffusionUNetConfig
from cfbrain.preprocess.mri import load_volume_slices
from cfbrain.provenance import snakemake_job
from cfbrain.train.runtime import select_device

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    device = select_device(None)
    slices, splits = load_volume_slices(snakemake.input.slices), pd.read_csv(snakemake.input.splits, sep="\t")
    index, maps = load_maps(snakemake.input.saliency)
    val = group_rows(index, evaluation_slices(slices, splits, snakemake.params.max_slices), "val_lesion")
    require_rows(len(val), 1, snakemake.wildcards.dataset, "lesion slices in the validation split")
    picked = slices.select(index[val])
    model = load_healthy_ddpm(snakemake.input.weights, DiffusionUNetConfig.from_mapping(snakemake.params.unet),
                              slices.image.shape[1], device)
    base = DifuseSettings.from_mapping(snakemake.params.difuse)
    rows, results = [], {}
    for depth in snakemake.params.inversion_depths:
        for percentile in snakemake.params.percentiles:
            settings = replace(base, inversion_depth=depth, percentile=percentile)
            result = run_method("difuse", model, picked.image, maps[val], settings, device=device)
            curve = threshold_curve(result.anomaly_map, picked.lesion_mask, picked.ignore_mask)
            best = curve.set_index("threshold").loc[best_threshold(curve)]
            rows.append({"inversion_depth": depth, "percentile": percentile, "threshold": best_threshold(curve),
                         "dice": best["dice"], "iou": best["iou"]})
            results[depth, percentile] = result
            job.log.info("K %d, percentile %g: validation Dice %.3f", depth, percentile, best["dice"])
    grid = pd.DataFrame(rows)
    depth, percentile = grid_choice(grid)
    grid.assign(chosen=(grid.inversion_depth == depth) & (grid.percentile == percentile)).to_csv(
        snakemake.output.grid, sep="\t", index=False)
    grid_heatmap(grid, Path(snakemake.output.heatmap))
    shown = slice(0, snakemake.params.n_examples)
    by_depth = {f"K = {k}": replace(results[k, percentile], counterfactual=results[k, percentile].counterfactual[shown],
                                    anomaly_map=results[k, percentile].anomaly_map[shown])
                for k in snakemake.params.inversion_depths}
    counterfactual_figure(picked.image[shown], by_depth, Path(snakemake.output.depths), picked.lesion_mask[shown],
                          title=f"Dif-fuse per K at percentile {percentile:g} (validation slices)")
