"""profiles/slurm against a real single-node Slurm (tests/slurm_cluster.py).

The tiny config up to its exclusion and label tables (synthetic cohort, index, per-scan export/convert,
registration, preprocessing, their QC checkpoints) goes through sbatch with the profile: every job must
be a Slurm job, per-scan jobs must arrive in batches sized like one job, and the tables must equal a
local run's byte for byte. A one-rule workflow checks that GPU rules get a GPU. Only what a real
cluster has and this one lacks is overridden on the command line: partition, no account, small
memory/CPUs, batches of 2 scans, a short status poll after a job ends, kept Slurm logs.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cfbrain.dicom.pseudonymise import PseudonymKey
from conftest import REPO
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slurm
PROFILE = REPO / "profiles" / "slurm"
DATASET = "tiny-ct"
# Targets: every rule up to these two tables runs (training and reports do not).
TABLES = [f"results/{DATASET}/qc/exclusions.tsv", f"results/{DATASET}/labels.tsv"]
TEST_MEM_MB = 1000
BATCH = 2  # scans per batch here (--group-components per_scan=2): several batches from the tiny cohort


def profile_overrides(cluster: SlurmCluster) -> list[str]:
    """The profile's resources with this cluster's partition, no account, and sizes that fit one small node."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    defaults = {name: value for name, value in profile["default-resources"].items() if name != "slurm_account"}
    defaults.update(slurm_partition=cluster.partition, runtime=10, mem_mb=TEST_MEM_MB)
    per_rule = []
    for rule, resources in profile["set-resources"].items():
        resources = dict(resources)
        if "slurm_partition" in resources:
            resources["slurm_partition"] = cluster.partition
        if "mem_mb" in resources:
            resources["mem_mb"] = TEST_MEM_MB
        if "cpus_per_task" in resources:
            resources["cpus_per_task"] = min(resources["cpus_per_task"], cluster.cpus)
        per_rule += [f"{rule}:{name}={value}" for name, value in resources.items()]
    return ["--default-resources", *(f"{name}={value}" for name, value in defaults.items()),
            "--set-resources", *per_rule,
            "--slurm-init-seconds-before-status-checks", "2",  # poll 2 s after a job ends, not 40
            "--slurm-keep-successful-logs"]


def environment(cluster: SlurmCluster | None = None) -> dict:
    base = cluster.env if cluster else os.environ
    return {**base, "PATH": f"{Path(sys.executable).parent}:{base['PATH']}"}


def snakemake_command(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile") -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir), *args]


def run_with_profile(cluster: SlurmCluster, workdir: Path, *args: str, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(snakemake_command(workdir, *args, "--profile", str(PROFILE), *profile_overrides(cluster), **kwargs),
                            cwd=workdir, env=environment(cluster), capture_output=True, text=True, timeout=900)
    return result, time.monotonic() - start


def failure_report(result: subprocess.CompletedProcess, cluster: SlurmCluster, workdir: Path) -> str:
    slurm_logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-1500:]}" for p in slurm_logs[-3:])
    return f"{result.stderr[-4000:]}\n{tails}\n{cluster.log_tails(15)}"


def submitted_slurm_ids(log: str) -> dict[str, str]:
    """Slurm job id -> Snakemake job id (a group job's is a UUID), from the plugin's one line per sbatch."""
    return {slurm: job for job, slurm in re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)", log)}


def slurm_jobs(cluster: SlurmCluster, run_id: str) -> dict[str, dict[str, str]]:
    """What slurmctld knows about this run's jobs (name = the plugin's run id), finished ones included."""
    ids = cluster.run("squeue", "--states=all", "--noheader", "--name", run_id, "--format=%i").stdout.split()
    jobs = {}
    for slurm_id in ids:
        line = cluster.run("scontrol", "--oneliner", "show", "job", slurm_id).stdout
        jobs[slurm_id] = dict(item.split("=", 1) for item in line.split() if "=" in item)
    return jobs


def megabytes(memory: str) -> int:
    return int(float(memory[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[memory[-1]])


def minutes(limit: str) -> int:
    days, _, clock = limit.rpartition("-")
    hours, mins, _ = (int(part) for part in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory):
    """The same run locally (--cores 2, in the background) and through Slurm, with one pseudonym key."""
    local_dir, slurm_dir = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("slurm-run")
    key = PseudonymKey.load_or_create(local_dir / "private" / DATASET / "pseudonym.key")
    (slurm_dir / "private" / DATASET).mkdir(parents=True)
    slurm_key = slurm_dir / "private" / DATASET / "pseudonym.key"
    slurm_key.write_bytes((local_dir / "private" / DATASET / "pseudonym.key").read_bytes())
    slurm_key.chmod(0o600)
    assert PseudonymKey.load(slurm_key).scan("p", "s", "e") == key.scan("p", "s", "e")

    config = ["--configfile", str(REPO / "config" / "tiny.yaml")]
    local = subprocess.Popen(snakemake_command(local_dir, *TABLES, *config, "--cores", "2"), cwd=local_dir,
                             env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    slurm, seconds = run_with_profile(slurm_cluster, slurm_dir, *TABLES, *config,
                                      "--group-components", f"per_scan={BATCH}")
    local_output, _ = local.communicate(timeout=600)
    print(f"\nslurm run: {seconds:.0f}s (apt-get {slurm_cluster.install_seconds:.0f}s, "
          f"cluster start {slurm_cluster.startup_seconds:.0f}s)")
    assert slurm.returncode == 0, failure_report(slurm, slurm_cluster, slurm_dir)
    assert local.returncode == 0, local_output[-3000:]
    return local_dir, slurm_dir, slurm


def test_jobs_went_through_sbatch(runs, slurm_cluster):
    """Snakemake's own record of its sbatch calls, slurmctld's record of the run's jobs and the Slurm logs agree."""
    _, workdir, result = runs
    submitted = submitted_slurm_ids(result.stderr)
    run_id = re.search(r"SLURM run ID: (\S+)", result.stderr).group(1)
    jobs = slurm_jobs(slurm_cluster, run_id)
    assert submitted and set(jobs) == set(submitted), (sorted(submitted), sorted(jobs))
    assert {job["JobState"] for job in jobs.values()} == {"COMPLETED"}
    assert all(job["Partition"] == slurm_cluster.partition and job["WorkDir"] == str(workdir) for job in jobs.values())
    logs = {path.stem for path in (workdir / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert logs == set(submitted)
    records = [json.loads(path.read_text()) for path in (workdir / "results" / DATASET / "provenance").rglob("*.json")]
    assert {record["slurm_job_id"] for record in records} == set(submitted)


def batch_members(slurm_log: Path) -> list[dict[str, str]]:
    """The jobs a batch ran: each job's inner Snakemake prints `localrule NAME:` and its resources/wildcards."""
    members = []
    for line in slurm_log.read_text(errors="replace").splitlines():
        if match := re.match(r"localrule (\w+):", line):
            members.append({"rule": match.group(1)})
        elif members and (match := re.match(r"    (resources|wildcards): (.*)", line)):
            members[-1].update(item.split("=", 1) for item in match.group(2).split(", ") if "=" in item)
    return members


@pytest.fixture(scope="module")
def batches(runs, slurm_cluster):
    """Slurm job record and member jobs of every per-scan batch."""
    _, workdir, result = runs
    run_id = re.search(r"SLURM run ID: (\S+)", result.stderr).group(1)
    jobs = slurm_jobs(slurm_cluster, run_id)
    logs = {path.stem: path for path in (workdir / ".snakemake" / "slurm_logs").glob("group_per_scan*/*.log")}
    found = {slurm_id: (job, batch_members(logs[slurm_id])) for slurm_id, job in jobs.items()
             if job["Comment"].startswith("rule_per_scan")}
    all_jobs = len(list((workdir / "results" / DATASET / "provenance").rglob("*.json")))
    per_scan = sum(len(members) for _, members in found.values())
    print(f"\n{len(jobs)} sbatch calls for {all_jobs} jobs; {len(found)} of them for {per_scan} per-scan jobs; "
          f"scans per batch: {sorted(len({m['scan'] for m in members}) for _, members in found.values())}")
    assert len(jobs) < all_jobs
    return found


def scans(members: list[dict[str, str]]) -> set[str]:
    return {member["scan"] for member in members}


def test_per_scan_jobs_are_batched_and_sized_like_one_job(batches):
    per_scan_jobs = sum(len(members) for _, members in batches.values())
    assert 1 < len(batches) < per_scan_jobs / 2, (len(batches), per_scan_jobs)
    for slurm_id, (job, members) in batches.items():
        # the jobs of a batch run one after another: the largest memory and CPU count of its jobs ...
        assert megabytes(job["MinMemoryNode"]) == max(int(member["mem_mb"]) for member in members), (slurm_id, job)
        assert job["NumCPUs"] == str(max(int(member["cpus_per_task"]) for member in members)), (slurm_id, job)
        # ... and the sum of their runtimes
        assert minutes(job["TimeLimit"]) == sum(int(member["runtime"]) for member in members), (slurm_id, job)


def test_batches_keep_to_group_components(batches):
    """Snakemake 9.27.1 merged batches again after a checkpoint (more scans than --group-components, jobs
    run in two batches at once); workflow/rules/snakemake_fixes.smk patches it."""
    assert max(len(scans(members)) for _, members in batches.values()) <= BATCH
    ran = [(member["rule"], member["scan"]) for _, members in batches.values() for member in members]
    assert len(ran) == len(set(ran)), "jobs ran in two batches"


def test_tables_equal_a_local_run(runs):
    local_dir, slurm_dir, _ = runs
    for table in TABLES:
        assert (slurm_dir / table).read_bytes() == (local_dir / table).read_bytes(), table


def test_gpu_rules_get_a_gpu(slurm_cluster, tmp_path):
    """A rule the profile lists as a GPU rule gets `--gpus=1` (the test node has one fake GPU)."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text('rule train_classifier:\n    output: "gpu.txt"\n'
                         '    shell: "echo ${{SLURM_STEP_GPUS:-none}} ${{CUDA_VISIBLE_DEVICES:-none}} > {output}"\n')
    result, _ = run_with_profile(slurm_cluster, tmp_path, snakefile=snakefile)
    assert result.returncode == 0, failure_report(result, slurm_cluster, tmp_path)
    assert (tmp_path / "gpu.txt").read_text().split() == ["0", "0"]
    (slurm_id,) = submitted_slurm_ids(result.stderr)
    job = slurm_cluster.run("scontrol", "--oneliner", "show", "job", slurm_id).stdout
    assert "TresPerJob=gres:gpu:1" in job, job
