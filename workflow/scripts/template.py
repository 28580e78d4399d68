from cfbrain.provenance import snakemake_job
from cfbrain.register.templates import write_template

with snakemake_job(snakemake) as job:
    write_template(snakemake.params.source, snakemake.output[0])
