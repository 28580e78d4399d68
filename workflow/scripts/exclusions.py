from pathlib import Path

import pandas as pd

from cfbrain.convert.exclusions import exclusion_counts_markdown
from cfbrain.provenance import snakemake_job

with snakemake_job(snakemake) as job:
    table = pd.read_csv(snakemake.input.ingest, sep="\t", keep_default_na=False)
    table.to_csv(snakemake.output.table, sep="\t", index=False)
    Path(snakemake.output.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(snakemake.output.markdown).write_text(exclusion_counts_markdown(table, snakemake.wildcards.dataset))
