from pathlib import Path

import pandas as pd

from cfbrain.provenance import snakemake_job
from cfbrain.report import markdown_html
from cfbrain.train.acat_report import acat_report

with snakemake_job(snakemake) as job:
    predictions = pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.predictions], ignore_index=True)
    variances = (pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.variances], ignore_index=True)
                 if snakemake.input.variances else None)
    markdown, per_seed = acat_report(predictions, variances, snakemake.wildcards.dataset, snakemake.params.saliency)
    Path(snakemake.output.table).write_text(markdown)
    Path(snakemake.output.html).write_text(markdown_html(markdown))
    per_seed.to_csv(snakemake.output.metrics, sep="\t", index=False)
