from pathlib import Path

from cfbrain.provenance import snakemake_job
from cfbrain.saliency import scan_territory_map

with snakemake_job(snakemake) as job:
    inputs = snakemake.input
    scan_territory_map(Path(inputs.atlas), Path(inputs.registration), Path(inputs.nifti) / "image.nii.gz",
                       Path(inputs.tensor) / "tensor.npz", Path(snakemake.output[0]))
