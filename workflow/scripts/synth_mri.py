from pathlib import Path

from cfbrain.provenance import snakemake_job
from cfbrain.synth.mri import SynthMRIConfig, make_mri_cohort

with snakemake_job(snakemake) as job:
    source = snakemake.params.source
    lesioned = {"n_stroke": 0, "n_tumour": 0, f"n_{source['lesion']}": source["n_lesioned"]}
    make_mri_cohort(Path(snakemake.output[0]), SynthMRIConfig(n_healthy=source["n_healthy"], seed=source["seed"],
                                                              workers=snakemake.threads, **lesioned,
                                                              contrasts=tuple(source.get("contrasts", ())),
                                                              n_wmh=source.get("n_wmh", 0)))
