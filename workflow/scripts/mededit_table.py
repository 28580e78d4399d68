from pathlib import Path

import pandas as pd

from cfbrain.mededit.pipeline import mededit_report
from cfbrain.provenance import snakemake_job
from cfbrain.report import markdown_html

with snakemake_job(snakemake) as job:
    summary = pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.summaries], ignore_index=True)
    summary.to_csv(snakemake.output.metrics, sep="\t", index=False)
    markdown = mededit_report(summary, snakemake.wildcards.dataset)
    Path(snakemake.output.table).write_text(markdown)
    Path(snakemake.output.html).write_text(markdown_html(markdown))
