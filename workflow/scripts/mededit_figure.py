from cfbrain.mededit.evaluate import figure_grid
from cfbrain.mededit.methods import load_counterfactuals
from cfbrain.mededit.triplets import load_triplets
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    figure_grid([load_counterfactuals(p) for p in snakemake.input.counterfactuals],
                load_triplets(snakemake.input.triplets), snakemake.output[0], n_examples=snakemake.params.n_examples)
