import pandas as pd

from cfbrain.mededit.pipeline import experiment_triplets
from cfbrain.mededit.triplets import save_triplets
from cfbrain.preprocess.mri import load_mri_slices
from cfbrain.provenance import snakemake_job
from cfbrain.synth.mri import load_truth_slices

with snakemake_job(snakemake) as job:
    truth = load_truth_slices(snakemake.input.truth) if snakemake.input.get("truth") else None
    triplets = experiment_triplets(snakemake.wildcards.pairing, load_mri_slices(snakemake.input.slices),
                                   pd.read_csv(snakemake.input.splits, sep="\t"), snakemake.params.seed, truth)
    save_triplets(snakemake.output[0], triplets)
    job.log.info("%d %s triplets from %d priors", len(triplets), triplets.mode, len(set(triplets.prior_scan)))
