from pathlib import Path

import pandas as pd

from cfbrain.anomaly.methods import METHOD_LABELS
from cfbrain.metrics.anomaly import anomaly_table, table_frame
from cfbrain.provenance import snakemake_job
from cfbrain.report import markdown_html

with snakemake_job(snakemake) as job:
    scores = {role: pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input[role]])
              for role in snakemake.params.roles}
    per_seed = table_frame(scores)
    per_seed.to_csv(snakemake.output.metrics, sep="\t", index=False)
    order = {m: i for i, m in enumerate(snakemake.params.methods)}
    per_seed = per_seed.sort_values("method", key=lambda s: s.map(order), kind="stable")
    notes = [f"- {role}: {name}" for role, name in snakemake.params.datasets.items()]
    if "ct" in scores:
        notes.append(f"- CT KID features: {scores['ct']['kid_features'].iloc[0]}")
    text = ("# Table 6.1: Dif-fuse and its ablations (mean ± standard error over seeds)\n\n"
            "Dice/IoU at the binarisation threshold chosen on the validation slices; the best-on-test columns "
            "use the test slices' own best threshold (what several peers report).\n\n"
            + anomaly_table(per_seed, METHOD_LABELS) + "\n\nDatasets:\n" + "\n".join(notes) + "\n")
    Path(snakemake.output.table).write_text(text)
    Path(snakemake.output.html).write_text(markdown_html(text))
