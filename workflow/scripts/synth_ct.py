from pathlib import Path

from cfbrain.provenance import snakemake_job
from cfbrain.synth.ct import cohort_config, make_ct_cohort

with snakemake_job(snakemake) as job:
    params = snakemake.params
    make_ct_cohort(Path(snakemake.output[0]), cohort_config(params.n_patients, params.seed, snakemake.threads,
                                                            params.lesion_contrast_hu))
