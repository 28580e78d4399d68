from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import default_collate

from cfbrain.models import MultiTaskHemisphereCNN, build_saliency_model
from cfbrain.models.acat import preactivation_variances
from cfbrain.provenance import snakemake_job
from cfbrain.train.checkpoint import load_weights
from cfbrain.train.stroke import TENSOR, ScanTensors, scan_table

with snakemake_job(snakemake) as job:
    scans = scan_table(pd.read_csv(snakemake.input.split, sep="\t"), pd.read_csv(snakemake.input.labels, sep="\t"))
    test = scans[scans.split == "test"]
    tensor_dir = {Path(p).name: Path(p) for p in snakemake.input.tensors}
    dataset = ScanTensors([tensor_dir[s] / TENSOR for s in test.scan], test.label.tolist(), "hemispheres",
                          [Path(snakemake.input.saliency) / f"{s}.npz" for s in test.scan])
    batch = default_collate([dataset[i] for i in range(len(dataset))])
    baseline = load_weights(MultiTaskHemisphereCNN(), Path(snakemake.input.baseline))
    acat = load_weights(build_saliency_model("acat", batch["image"].shape[2]), Path(snakemake.input.acat))
    rows = {}
    with torch.no_grad():
        for noise in (0.0, snakemake.params.noise_std):
            generator = torch.Generator().manual_seed(snakemake.params.seed)
            rows[f"baseline_noise{noise:g}"] = preactivation_variances(baseline, batch["image"], noise_std=noise,
                                                                       generator=generator)
            generator = torch.Generator().manual_seed(snakemake.params.seed)
            rows[f"acat_noise{noise:g}"] = preactivation_variances(acat, batch["image"], batch["saliency"],
                                                                   noise_std=noise, generator=generator)
    table = pd.DataFrame(rows).rename_axis("layer").reset_index()
    table["layer"] += 1
    table.assign(seed=snakemake.params.seed, n_test=len(test)).to_csv(snakemake.output[0], sep="\t", index=False)
