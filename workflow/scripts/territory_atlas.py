from cfbrain.provenance import snakemake_job
from cfbrain.saliency import write_synthetic_territory_atlas

with snakemake_job(snakemake) as job:
    write_synthetic_territory_atlas(snakemake.output[0])
