import pandas as pd
import torch

from cfbrain.mededit.data import select_scans
from cfbrain.mededit.methods import load_counterfactuals
from cfbrain.mededit.pipeline import feature_extractor_name, lesion_segmentation, score, split_scans
from cfbrain.mededit.triplets import load_triplets
from cfbrain.models.features import AutoencoderConfig, feature_extractor
from cfbrain.preprocess.mri import load_mri_slices
from cfbrain.provenance import snakemake_job
from cfbrain.train import select_device

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    params, device = snakemake.params, select_device()
    splits = pd.read_csv(snakemake.input.splits, sep="\t")
    real = select_scans(load_mri_slices(snakemake.input.slices), split_scans(splits, "test", pathological=True))
    extractor = feature_extractor(radimagenet_weights=params.radimagenet_weights,
                                  autoencoder_weights=snakemake.input.get("features"),
                                  autoencoder_config=AutoencoderConfig.from_mapping(params.autoencoder), device=device)
    segment_images = lesion_segmentation(params.segmenter_backend, device,
                                         weights=snakemake.input.get("segmenter"),
                                         network=params.segmenter.get("network"), nnunet=params.segmenter.get("nnunet"))
    summary, images = score([load_counterfactuals(p) for p in snakemake.input.counterfactuals],
                            load_triplets(snakemake.input.triplets), real.image, segment_images, extractor,
                            n_bootstrap=params.evaluation["n_bootstrap"], kid_subsets=params.evaluation["kid_subsets"],
                            seed=params.seed)
    summary.insert(0, "pairing", snakemake.wildcards.pairing)
    summary.insert(1, "seed", params.seed)
    summary["feature_extractor"] = feature_extractor_name(params.radimagenet_weights)
    summary.to_csv(snakemake.output.summary, sep="\t", index=False)
    images.to_csv(snakemake.output.images, sep="\t", index=False)
