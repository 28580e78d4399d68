from pathlib import Path

import pandas as pd

from cfbrain.convert.exclusions import exclusion_counts_markdown, with_later_stages
from cfbrain.convert.figures import exclusions_figure
from cfbrain.provenance import snakemake_job
from cfbrain.register.stage import registration_exclusions
from cfbrain.report import markdown_html

with snakemake_job(snakemake) as job:
    read = lambda path: pd.read_csv(path, sep="\t", keep_default_na=False)
    preprocess = read(snakemake.input.preprocess)
    table = with_later_stages(read(snakemake.input.ingest), [
        registration_exclusions(read(snakemake.input.registration)),
        preprocess[preprocess.status != "kept"],
    ])
    table.to_csv(snakemake.output.table, sep="\t", index=False)
    Path(snakemake.output.markdown).parent.mkdir(parents=True, exist_ok=True)
    markdown = exclusion_counts_markdown(table, snakemake.wildcards.dataset)
    Path(snakemake.output.markdown).write_text(markdown)
    Path(snakemake.output.html).write_text(markdown_html(markdown))
    Path(snakemake.output.figure).parent.mkdir(parents=True, exist_ok=True)
    exclusions_figure(table, snakemake.wildcards.dataset, snakemake.output.figure)
