from pathlib import Path

from cfbrain.preprocess.ct import CTPreprocessConfig
from cfbrain.preprocess.stage import preprocess_scan
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    preprocess_scan(snakemake.wildcards.scan, Path(snakemake.input.nifti) / "image.nii.gz",
                    Path(snakemake.input.registration), snakemake.input.get("truth"),
                    CTPreprocessConfig.from_mapping(snakemake.params.config), snakemake.output.tensor,
                    snakemake.output.status)
