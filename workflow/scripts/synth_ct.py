from pathlib import Path

from cfbrain.provenance import snakemake_job
from cfbrain.synth.ct import SynthCTConfig, make_ct_cohort

with snakemake_job(snakemake) as job:
    contrast = snakemake.params.lesion_contrast_hu
    make_ct_cohort(Path(snakemake.output[0]), SynthCTConfig(
        n_patients=snakemake.params.n_patients, seed=snakemake.params.seed, workers=snakemake.threads,
        **({"lesion_contrast_hu": tuple(contrast)} if contrast else {})))
