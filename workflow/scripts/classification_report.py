from pathlib import Path

import pandas as pd

from cfbrain.provenance import snakemake_job
from cfbrain.report import markdown_html
from cfbrain.train.stroke import classification_report, examples_figure

with snakemake_job(snakemake) as job:
    predictions = pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.predictions], ignore_index=True)
    markdown, per_seed = classification_report(predictions, snakemake.wildcards.dataset)
    Path(snakemake.output.table).write_text(markdown)
    Path(snakemake.output.html).write_text(markdown_html(markdown))
    per_seed.to_csv(snakemake.output.metrics, sep="\t", index=False)
    examples_figure(predictions, {Path(p).name: Path(p) for p in snakemake.input.tensors}, snakemake.output.examples)
