from pathlib import Path

import nibabel as nib
import numpy as np

from cfbrain.dicom.labels import import_truth_mask
from cfbrain.dicom.pseudonymise import PseudonymKey
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    source = Path(snakemake.input.source) / "truth"
    found = import_truth_mask(source / "series.tsv", source / "masks", snakemake.wildcards.scan,
                              PseudonymKey.load(snakemake.params.key), snakemake.output[0])
    if not found:
        raise FileNotFoundError(f"the synthetic cohort has no lesion mask for {snakemake.wildcards.scan}")
