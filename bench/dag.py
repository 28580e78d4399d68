"""Workflow scale benchmark: DAG build and no-op rerun time against cohort size, and per-job overhead.

    python bench/dag.py [--scans 100 1000 5000] [--files-per-scan 10] [--jobs 200] [--script-jobs 20]
                        [--profile SCANS] [--out bench/out/dag]

What it does (numbers, never pass/fail):

1. For each cohort size, fabricates a *finished* run of the real Snakefile on a DICOM-folder dataset
   (source kind ``dicom_dir``, with labels, config/tiny.yaml otherwise): a source tree of empty
   files (``--files-per-scan`` per series), the four checkpoint tables (index, ingest, registration,
   preprocessing QC) naming every scan as kept, and one tiny file or directory per output of every
   job, with modification times in DAG order. Scan ids have the pseudonym format the wildcard
   constraint demands. Nothing is computed; Snakemake only sees files.
2. Writes the metadata record a real job leaves for each output (a rerun compares params: code
   fingerprints, source-file states, scan lists; and the set of inputs), with dry runs patched in
   that process only to record each job they list: one run per checkpoint rule forced (so its
   params are resolved), then one with every other rule forced. Then times ``snakemake --dry-run`` (DAG build: parse, checkpoints,
   input functions, rerun checks) and ``snakemake --cores 1`` (a no-op rerun: the same plus the
   executor start). Both must say "Nothing to be done"; the script stops if a fabricated file is
   missing or stale.
3. Per-job overhead of local execution: a throwaway Snakefile with ``--jobs`` shell jobs that each
   touch one file (Snakemake's own cost per job) and ``--script-jobs`` jobs of a two-line script
   that writes its output inside ``cfbrain.provenance.snakemake_job`` (the cost every cfbrain rule
   pays on top: interpreter start, imports, provenance record), minus a run of one such job.
4. ``--profile SCANS``: the dry run at that size under cProfile; prints the top functions by
   cumulative time (where the time goes).

How to read the output: the table gives seconds per cohort size and milliseconds per scan; the
ratios say how time grows when the cohort grows (10x scans -> 10x time is linear).
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
DATASET = "bench-ct"
SEED = 0
MODEL = "mtl"
# Layers of a finished run, oldest first: (path pattern, "file" or "dir"); {scan} is repeated per scan.
PER_SCAN_LAYERS = [
    [("dicom/{scan}", "dir")],
    [("nifti/{scan}", "dir"), ("qc/convert/{scan}.tsv", "file")],
    [("registration/{scan}", "dir"), ("qc/register/{scan}.tsv", "file")],
    [("preproc/{scan}", "dir"), ("qc/preprocess/{scan}.tsv", "file")],
]


def scan_ids(n: int) -> list[str]:
    """``n`` ids in the pseudonym format (P + 10 hex, S + 6 hex, E + 6 hex), two series per patient."""
    def hexdigits(text: str, k: int) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:k]
    return sorted(f"P{hexdigits(f'p{i // 2}', 10)}_S{hexdigits(f's{i}', 6)}_E{hexdigits(f'e{i}', 6)}" for i in range(n))


def write_table(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep="\t", index=False)


def make(path: Path, kind: str) -> None:
    if kind == "dir":
        path.mkdir(parents=True, exist_ok=True)
        (path / "x").write_bytes(b"x")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def write_config(workdir: Path, source: Path, labels: Path) -> Path:
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    config["datasets"] = {DATASET: {"modality": "ct", "source": {"kind": "dicom_dir", "path": str(source)},
                                    "labels": str(labels)}}
    config["splits"]["seeds"] = [SEED]
    config["classification"]["models"] = [MODEL]
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fabricate(workdir: Path, n_scans: int, files_per_scan: int) -> Path:
    """A finished run's files for ``n_scans`` scans under ``workdir``; returns the config file."""
    scans = scan_ids(n_scans)
    source, results, private = workdir / "source", workdir / "results" / DATASET, workdir / "private" / DATASET
    manifest = []
    for scan in scans:
        folder = source / scan
        folder.mkdir(parents=True)
        for k in range(files_per_scan):
            (folder / f"IM{k:04d}.dcm").write_bytes(b"")
            manifest.append({"scan": scan, "path": str(folder / f"IM{k:04d}.dcm")})
    patients = sorted({scan.split("_")[0] for scan in scans})
    write_table(workdir / "labels_raw.tsv", pd.DataFrame({"patient": patients}))
    config = write_config(workdir, source, workdir / "labels_raw.tsv")

    write_table(results / "index/series.tsv", pd.DataFrame({"scan": scans, "verdict": "candidate"}))
    write_table(results / "index/files.tsv", pd.DataFrame({"scan": scans}))
    write_table(private / "source_manifest.tsv", pd.DataFrame(manifest))
    make(private / "pseudonym_map.json", "file")
    for layer in PER_SCAN_LAYERS[:2]:
        for pattern, kind in layer:
            for scan in scans:
                make(results / pattern.format(scan=scan), kind)
    write_table(results / "qc/ingest.tsv", pd.DataFrame({"unit": "series", "id": scans, "status": "kept"}))
    for name in ("labels.tsv", "registration/templates/t0.nii.gz"):
        make(results / name, "file")
    for pattern, kind in PER_SCAN_LAYERS[2]:
        for scan in scans:
            make(results / pattern.format(scan=scan), kind)
    write_table(results / "qc/registration.tsv", pd.DataFrame({"scan": scans, "verdict": "accept"}))
    for name, kind in (("qc/registration_clusters.tsv", "file"), ("figures/registration_qc.png", "file"),
                       ("figures/registration_clusters", "dir")):
        make(results / name, kind)
    for pattern, kind in PER_SCAN_LAYERS[3]:
        for scan in scans:
            make(results / pattern.format(scan=scan), kind)
    write_table(results / "qc/preprocess.tsv", pd.DataFrame({"scan": scans, "status": "kept"}))
    for name in (f"splits/seed{SEED}.tsv", "figures/preprocessing_montage.png", "qc/exclusions.tsv",
                 "tables/exclusions.md", "tables/exclusions.html", f"models/{MODEL}/seed{SEED}/final.pt",
                 f"models/{MODEL}/seed{SEED}/train_log.tsv", f"models/{MODEL}/seed{SEED}/training_curves.png",
                 f"predictions/{MODEL}/seed{SEED}.tsv", "tables/classification.md", "tables/classification.html",
                 "metrics/classification.tsv", "figures/classification_examples.png"):
        make(results / name, "file")
    return config


CHECKPOINTS = ["index", "ingest_qc", "registration_qc", "preprocess_qc"]
# `snakemake --dry-run` that writes the metadata records of the jobs it lists as if they had run
# (Snakemake 9.27.1 internals; `--touch` writes none and sleeps 0.1 s per job).
RECORD_METADATA = """
import sys
import snakemake.executors.dryrun as dryrun
from snakemake.cli import main


_run_job = dryrun.Executor.run_job


def run_job(self, job):
    for member in getattr(job, "jobs", [job]):
        self.workflow.async_run(self.workflow.persistence.finished(member))
    _run_job(self, job)


dryrun.Executor.run_job = run_job
dryrun.Executor.printjob = lambda self, job: None
sys.exit(main())
"""


def snakemake(workdir: Path, config: Path, *args: str, prefix: tuple[str, ...] = ("-m", "snakemake")) -> tuple[float, str]:
    """Run the repository's Snakefile (``python PREFIX ARGS``); returns (wall seconds, stdout + stderr)."""
    command = [sys.executable, *prefix, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(config), *args]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return seconds, result.stdout + result.stderr


def complete(workdir: Path, config: Path) -> float:
    """Metadata records for every output of the fabricated run (its mtimes are already in DAG order)."""
    _, listing = snakemake(workdir, config, "--list-rules")
    rules = [line for line in listing.splitlines() if re.fullmatch(r"[a-z_]+", line) and line not in [*CHECKPOINTS, "all"]]
    seconds = 0.0
    for forced in [*([checkpoint] for checkpoint in CHECKPOINTS), rules]:
        seconds += snakemake(workdir, config, "--dry-run", "--forcerun", *forced, prefix=("-c", RECORD_METADATA))[0]
    _, output = snakemake(workdir, config, "--dry-run")
    if "Nothing to be done" not in output:
        raise RuntimeError(f"the fabricated run is not complete; Snakemake would run:\n{output[-3000:]}")
    return seconds


def time_cohort(out: Path, n_scans: int, files_per_scan: int) -> dict:
    workdir = out / f"scans{n_scans}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    start = time.monotonic()
    config = fabricate(workdir, n_scans, files_per_scan)
    fabricate_seconds = time.monotonic() - start
    metadata_seconds = complete(workdir, config)
    dag_seconds, _ = snakemake(workdir, config, "--dry-run")
    noop_seconds, output = snakemake(workdir, config, "--cores", "1")
    assert "Nothing to be done" in output, output[-2000:]
    return {"scans": n_scans, "fabricate s": fabricate_seconds, "metadata s": metadata_seconds,
            "dag build s": dag_seconds, "no-op s": noop_seconds, "no-op ms/scan": 1000 * noop_seconds / n_scans}


JOBS_SNAKEFILE = """
rule all:
    input: expand("shell/{{i}}.txt", i=range({jobs})), expand("script/{{i}}.txt", i=range({script_jobs}))

rule shell_job:
    output: "shell/{{i}}.txt"
    shell: "touch {{output}}"

rule script_job:
    output: "script/{{i}}.txt"
    script: "job.py"
"""
JOB_SCRIPT = """from pathlib import Path
from cfbrain.provenance import snakemake_job
with snakemake_job(snakemake):
    Path(snakemake.output[0]).write_text("x")
"""


def run_jobs(workdir: Path, jobs: int, script_jobs: int) -> float:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(JOBS_SNAKEFILE.format(jobs=jobs, script_jobs=script_jobs))
    (workdir / "job.py").write_text(JOB_SCRIPT)
    # the provenance helper writes under results/{dataset}/; config gives it the results root
    (workdir / "config.yaml").write_text("results: results\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "snakemake", "--directory", str(workdir), "--snakefile",
                    str(workdir / "Snakefile"), "--configfile", str(workdir / "config.yaml"), "--cores", "1"],
                   check=True, capture_output=True, env=env)
    return time.monotonic() - start


def job_overhead(out: Path, jobs: int, script_jobs: int) -> dict:
    """Milliseconds per job over a one-job run (best of two runs each: the machine may be shared)."""
    base = min(run_jobs(out / "jobs0", 1, 0) for _ in range(2))
    shell = min(run_jobs(out / "jobs_shell", jobs + 1, 0) for _ in range(2))
    script = min(run_jobs(out / "jobs_script", 1, script_jobs) for _ in range(2))
    return {"shell ms/job": 1000 * (shell - base) / jobs, "script ms/job": 1000 * (script - base) / script_jobs}


def print_profile(out: Path, n_scans: int, files_per_scan: int, top: int = 15) -> None:
    workdir = out / f"scans{n_scans}"
    config = workdir / "config.yaml"
    if not config.exists():
        config = fabricate(workdir, n_scans, files_per_scan)
        complete(workdir, config)
    stats_path = out / f"profile_{n_scans}.pstats"
    snakemake(workdir, config, "--dry-run", prefix=("-m", "cProfile", "-o", str(stats_path), "-m", "snakemake"))
    print(f"\ncProfile of `snakemake --dry-run` at {n_scans} scans ({stats_path}), by cumulative time: "
          f"Snakemake's DAG code, then this workflow's functions and cfbrain")
    stats = pstats.Stats(str(stats_path)).sort_stats("cumulative")
    stats.print_stats(r"snakemake/(dag|persistence)", top)
    stats.print_stats(r"\.smk|cfbrain", top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--files-per-scan", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--script-jobs", type=int, default=20)
    parser.add_argument("--profile", type=int, help="cProfile the dry run at this many scans")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "dag")
    args = parser.parse_args()
    out = args.out.resolve()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.files_per_scan} source files per scan")
    rows = []
    for n in args.scans:
        rows.append(time_cohort(out, n, args.files_per_scan))
        print(pd.DataFrame(rows[-1:]).round(2).to_string(index=False), flush=True)
    table = pd.DataFrame(rows).set_index("scans")
    print("\n" + table.round(2).to_string())
    if len(table) > 1:
        growth = table[["dag build s", "no-op s"]] / table[["dag build s", "no-op s"]].shift(1)
        growth.insert(0, "scans x", table.index.to_series() / table.index.to_series().shift(1))
        print("\ngrowth from the previous size:\n" + growth.dropna().round(2).to_string())
    overhead = job_overhead(out, args.jobs, args.script_jobs)
    print(f"\nlocal execution, per job: {overhead['shell ms/job']:.0f} ms (shell job, Snakemake alone), "
          f"{overhead['script ms/job']:.0f} ms (cfbrain script job with provenance record)")
    if args.profile:
        print_profile(out, args.profile, args.files_per_scan)


if __name__ == "__main__":
    main()
