# Config validation, paths, and the functions that turn config + checkpoints into targets.
import functools
import re
from pathlib import Path

import pandas as pd
from snakemake.exceptions import IncompleteCheckpointException, WorkflowError
from snakemake.io import checkpoint_target
from snakemake.utils import validate

from cfbrain.dicom.index import files_state
from cfbrain.provenance import script_fingerprint

validate(config, workflow.source_path("../../config/schema.yaml"))

for _name, _dataset in config["datasets"].items():
    for _what, _path in (("source path", _dataset["source"].get("path")), ("labels", _dataset.get("labels")),
                         ("review", _dataset.get("review")), ("registration_review", _dataset.get("registration_review"))):
        if _path and not Path(_path).exists():
            raise WorkflowError(f"dataset {_name}: {_what} {_path} does not exist (check the config file)")

MRI_SOURCE_KINDS = ("synthetic_mri", "atlas", "brats", "brats2021", "wmh", "synthetic_wmh")
for _name, _dataset in config["datasets"].items():
    if (_dataset["modality"] == "mri") != (_dataset["source"]["kind"] in MRI_SOURCE_KINDS):
        raise WorkflowError(f"dataset {_name}: source kind {_dataset['source']['kind']} does not go with modality "
                            f"{_dataset['modality']} (MRI sources: {', '.join(MRI_SOURCE_KINDS)})")

RESULTS = config["results"]
PRIVATE = config["private"]
SOURCES = config["sources"]
RESUME = config["resume"]
DATASETS = config["datasets"]


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9-]*",
    scan=r"P[0-9a-f]{10}_S[0-9a-f]{6}_E[0-9a-f]{6}",


def script_code(name):
    """Fingerprint of the cfbrain code a workflow script can run (ARCHITECTURE.md contract 3)."""
    return script_fingerprint(Path(workflow.basedir) / "workflow" / "scripts" / name)


def res(path):
    """A path under results/{dataset}/ as a Snakemake pattern."""
    return f"{RESULTS}/{{dataset}}/{path}"


def log_path(name):
    return f"{RESULTS}/{{dataset}}/logs/{name}.log"


def resume_state(name):
    """Params function: the folder under which a training job keeps its resume checkpoints (``Job.resume_dir``
    adds a digest of the job's rule, params and inputs). Outside results/: resume state is scratch for a killed
    job, not a result, so no provenance record needs to describe it and ``provenance verify`` stays clean."""
    return lambda wc: f"{RESUME}/{wc.dataset}/{name.format(**wc)}"


def source_config(dataset):
    return DATASETS[dataset]["source"]


def datasets_regex(predicate):
    """Wildcard regex matching exactly the dataset names for which ``predicate(name)`` holds."""
    names = [re.escape(name) for name in DATASETS if predicate(name)]
    return "|".join(names) if names else "(?!)"


def is_mri(dataset):
    return DATASETS[dataset]["modality"] == "mri"


def is_synthetic(dataset):
    return source_config(dataset)["kind"] == "synthetic"


def source_dicom_dir(dataset):
    """Root of the DICOM tree the index reads."""
    if is_synthetic(dataset):
        return f"{SOURCES}/{dataset}/dicom"
    return source_config(dataset)["path"]


def key_path(dataset):
    """The pseudonym key: created once, never a Snakemake output (a rerun must not replace it)."""
    return f"{PRIVATE}/{dataset}/pseudonym.key"


def ingest_params(*names):
    return {name: config["ingest"][name] for name in names}


def index_input(wildcards):
    """A synthetic cohort is a rule output; a user's DICOM tree is tracked by ``index_source_state``."""
    return {"source": f"{SOURCES}/{wildcards.dataset}"} if is_synthetic(wildcards.dataset) else {}


def index_source_state(wildcards):
    """Hash of (path, size, mtime) of every file of a user's DICOM tree: a changed file reruns the index.
    Synthetic sources are tracked through their directory output instead."""
    if is_synthetic(wildcards.dataset):
        return "synthetic"
    return tree_state(source_dicom_dir(wildcards.dataset))


def tree_state(root):
    """Hash of (path, size, mtime) of every file under ``root``: a changed, added or removed file changes it."""
    return files_state(sorted(p for p in Path(root).rglob("*") if p.is_file()))


@functools.lru_cache(maxsize=None)
def _manifest(path, mtime_ns):
    return pd.read_csv(path, sep="\t", dtype={"scan": str, "path": str}).groupby("scan").path.apply(list).to_dict()


def scan_source_files(dataset, scan):
    path = Path(f"{PRIVATE}/{dataset}/source_manifest.tsv")
    return _manifest(str(path), path.stat().st_mtime_ns)[scan]


def export_source_state(wildcards):
    """State of one series' source files: editing one file reruns only that series' chain."""
    return files_state([Path(p) for p in scan_source_files(wildcards.dataset, wildcards.scan)])


def checkpoint_table(checkpoint, dataset, name):
    """The TSV output ``name`` of ``checkpoint`` for ``dataset``, once the checkpoint has run.

    Snakemake 9.27.1 counts a checkpoint's output as created when it existed at DAG build, even while the
    checkpoint reruns (its output deleted); a DAG update after another checkpoint finishes then reads a missing
    file. A missing output is therefore reported as an incomplete checkpoint, which makes Snakemake wait for it."""
    path = getattr(checkpoint.get(dataset=dataset).output, name)
    if not Path(path).exists():
        raise IncompleteCheckpointException(checkpoint.rule, checkpoint_target(path))
    return pd.read_csv(path, sep="\t")


def candidate_scans(dataset):
    """Series the index sends to conversion (after the index checkpoint)."""
    series = checkpoint_table(checkpoints.index, dataset, "series")
    return sorted(series.loc[series.verdict == "candidate", "scan"])


def kept_scans(dataset):
    """Series kept after ingest (after the ingest_qc checkpoint)."""
    table = checkpoint_table(checkpoints.ingest_qc, dataset, "table")
    return sorted(table.loc[(table.unit == "series") & (table.status == "kept"), "id"])


def labels_input(wildcards):
    dataset = wildcards.dataset
    if is_synthetic(dataset):
        return {"source": f"{SOURCES}/{dataset}"}
    return {"labels": DATASETS[dataset]["labels"]}


def raw_labels_path(wildcards):
    dataset = wildcards.dataset
    return f"{SOURCES}/{dataset}/labels.tsv" if is_synthetic(dataset) else DATASETS[dataset]["labels"]


def has_labels(dataset):
    return is_synthetic(dataset) or bool(DATASETS[dataset].get("labels"))


def review_input(wildcards):
    review = DATASETS[wildcards.dataset].get("review")
    return {"review": review} if review else {}


def all_targets():
    targets = []
    for dataset in DATASETS:
        root = f"{RESULTS}/{dataset}"
        if is_difuse(dataset):
            targets += anomaly_targets(dataset)
        if is_mri(dataset):
            targets += mri_targets(dataset) if "mededit" in dataset_tracks(dataset) else []
            continue
        targets += [f"{root}/tables/exclusions.md", f"{root}/qc/exclusions.tsv", f"{root}/figures/registration_qc.png",
                    f"{root}/figures/preprocessing_montage.png"]
        targets += [f"{root}/splits/seed{seed}.tsv" for seed in config["splits"]["seeds"]]
        if has_labels(dataset):
            targets += [f"{root}/labels.tsv", f"{root}/tables/classification.md", *chapter5_targets(dataset)]
    return targets
