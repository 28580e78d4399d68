from pathlib import Path

import pandas as pd
import torch

from cfbrain.models import SpatialAutoencoderConfig
from cfbrain.provenance import snakemake_job
from cfbrain.saliency import SaliencySettings, compute_saliency, load_autoencoder, load_classifier, write_saliency
from cfbrain.train.runtime import select_device

with snakemake_job(snakemake) as job:
    torch.set_num_threads(snakemake.threads)
    device = select_device(None)
    classifier = load_classifier(Path(snakemake.input.classifier), device)
    autoencoder = (load_autoencoder(Path(snakemake.input.autoencoder),
                                    SpatialAutoencoderConfig.from_mapping(snakemake.params.architecture), device)
                   if "autoencoder" in snakemake.input.keys() else None)
    settings = SaliencySettings.from_mapping(snakemake.params.settings)
    tensors = {Path(p).name: Path(p) / "tensor.npz" for p in snakemake.input.tensors}
    scans = pd.read_csv(snakemake.input.split, sep="\t").scan.tolist()
    out = Path(snakemake.output[0])
    out.mkdir(parents=True, exist_ok=True)
    method = snakemake.wildcards.method
    for number, scan in enumerate(scans, 1):
        saliency = compute_saliency(method, tensors[scan], classifier, autoencoder, settings)
        write_saliency(out / f"{scan}.npz", saliency)
        job.log.info("%s %d/%d %s: P(lesion) %.3f", method, number, len(scans), scan, saliency.probability)
