from pathlib import Path

from cfbrain.provenance import snakemake_job
from cfbrain.register.stage import register_scan

with snakemake_job(snakemake) as job:
    register_scan(snakemake.wildcards.scan, Path(snakemake.input.nifti) / "image.nii.gz", snakemake.input.dicom,
                  snakemake.params.templates, snakemake.output.registration, snakemake.output.status,
                  backend=snakemake.params.backend, threads=snakemake.threads)
