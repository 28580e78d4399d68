from pathlib import Path

from cfbrain.preprocess.figures import preprocessing_montage
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    rows = [(scan, Path(nifti) / "image.nii.gz", Path(tensor) / "tensor.npz")
            for scan, nifti, tensor in zip(snakemake.params.scans, snakemake.input.niftis, snakemake.input.tensors)]
    preprocessing_montage(snakemake.output[0], rows)
