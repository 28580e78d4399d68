from pathlib import Path

import pandas as pd
import torch

from cfbrain.anomaly.classifier import slice_classifier, slice_saliency
from cfbrain.anomaly.ct import ct_saliency
from cfbrain.anomaly.pipeline import evaluation_slices, save_maps
from cfbrain.models import SpatialAutoencoderConfig
from cfbrain.preprocess.mri import load_volume_slices
from cfbrain.provenance import snakemake_job
from cfbrain.saliency import SaliencySettings, load_autoencoder
from cfbrain.train.checkpoint import load_weights
from cfbrain.train.runtime import select_device

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    slices, splits = load_volume_slices(snakemake.input.slices), pd.read_csv(snakemake.input.splits, sep="\t")
    index = evaluation_slices(slices, splits, snakemake.params.max_slices)["index"].to_numpy()
    picked = slices.select(index)
    if "ct_maps" in snakemake.input.keys():
        paths = {p.stem: p for p in Path(snakemake.input.ct_maps).glob("*.npz")}
        maps = ct_saliency(paths, picked.scan, picked.slice_index, slices.image.shape[-1])
    else:
        device = select_device(None)
        classifier = load_weights(slice_classifier(slices.image.shape[1]), Path(snakemake.input.classifier)).to(device)
        autoencoder = load_autoencoder(Path(snakemake.input.autoencoder),
                                       SpatialAutoencoderConfig.from_mapping(snakemake.params.architecture), device)
        maps = slice_saliency(classifier, autoencoder, picked.image, SaliencySettings.from_mapping(snakemake.params.settings))
    save_maps(snakemake.output[0], index, maps)
    job.log.info("%d saliency maps", len(index))
