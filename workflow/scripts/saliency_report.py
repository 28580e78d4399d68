from pathlib import Path

import pandas as pd

from cfbrain.provenance import snakemake_job
from cfbrain.report import markdown_html
from cfbrain.saliency.report import saliency_report
from cfbrain.train.stroke import scan_table

with snakemake_job(snakemake) as job:
    inputs, params, out = snakemake.input, snakemake.params, snakemake.output
    labels = pd.read_csv(inputs.labels, sep="\t")
    seeds = [int(s) for s in params.seeds]
    scans = {seed: scan_table(pd.read_csv(path, sep="\t"), labels) for seed, path in zip(seeds, inputs.splits)}
    maps_dirs = {(method, seed): Path(inputs.maps[i * len(seeds) + k])
                 for i, method in enumerate(params.methods) for k, seed in enumerate(seeds)}
    territories = ({Path(p).stem: Path(p) for p in inputs.territories} if "territories" in inputs.keys() else None)
    markdown, per_seed, rows = saliency_report(params.methods, seeds, scans, maps_dirs,
                                               {Path(p).name: Path(p) / "tensor.npz" for p in inputs.tensors},
                                               territories, snakemake.wildcards.dataset, Path(out.examples),
                                               Path(out.search))
    Path(out.table).write_text(markdown)
    Path(out.html).write_text(markdown_html(markdown))
    per_seed.to_csv(out.metrics, sep="\t", index=False)
    rows.to_csv(out.hits, sep="\t", index=False)
