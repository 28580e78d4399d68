"""A real single-node Slurm cluster on localhost for the profile test (session-scoped fixture ``slurm_cluster``).

What it does, in order:
1. Installs Debian's ``slurm-wlm`` and ``munge`` with apt-get, only if their binaries are missing
   (skips with the reason when not root, or when a binary is missing and there is no apt-get).
2. Writes ``slurm.conf`` + ``gres.conf`` for this host into a temp dir: no accounting database,
   no cgroups, one partition, one node with this machine's CPUs and a fake GPU.
3. Starts a private ``munged`` (own key and socket), ``slurmctld`` and ``slurmd`` in the foreground
   as child processes, waits until ``sinfo`` reports the node idle and yields a ``SlurmCluster``.
4. At teardown cancels what is left in the queue and stops exactly those three processes by PID
   (SIGTERM, then SIGKILL), never by name.

Every Slurm command, the daemons included, is pointed at the temp config through ``SLURM_CONF``;
nothing under /etc is written, so a system Slurm or munge (if any) is left alone.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from debian import SBIN_PATH, ensure_installed, which

PACKAGES = ["slurm-wlm", "munge"]
BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun"]
PARTITION = "debug"
# Finished jobs stay visible to squeue/scontrol this long. The plugin's squeue status mode needs it well
# above its longest poll interval (180 s) and above 3 x --slurm-init-seconds-before-status-checks,
# or it falls back to sacct by itself, which has nothing to read without an accounting database.
MIN_JOB_AGE = 3600  # a whole tiny run on a loaded 2-core machine (11 min seen) must stay visible


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    host: str
    partition: str
    cpus: int
    memory_mb: int
    install_seconds: float
    startup_seconds: float
    env: dict = field(repr=False)
    logs: dict = field(repr=False)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def log_tails(self, lines: int = 40) -> str:
        """The last lines of every daemon log (for failure messages)."""
        out = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(missing)"]
            out.append(f"--- {name} ({path}) ---\n" + "\n".join(text))
        return "\n".join(out)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def write_config(root: Path, host: str, cpus: int, memory_mb: int) -> Path:
    """slurm.conf and gres.conf for one node on localhost; every path under ``root``."""
    for sub in ("state", "spool", "log", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ctld_port, slurmd_port = _free_port(), _free_port()
    conf = root / "slurm.conf"
    conf.write_text(f"""\
# Single-node test cluster written by tests/slurm_cluster.py
ClusterName=cfbrain-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/run/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No accounting database (like the clusters the profile's no-accounting notes are about):
# sacct/sacctmgr have nothing to read, job status comes from slurmctld via squeue.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# No cgroups in a container: track processes by /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge={MIN_JOB_AGE}
InactiveLimit=0
KillWait=10
Waittime=0
# One fake GPU: the plugin turns `gpu: 1` into `sbatch --gpus=1`, which Slurm rejects on a cluster
# without gres/gpu. Slurm 22.05 drops a GPU without a device File and wants a character device, so
# gres.conf names /dev/null: no cgroup device constraint here, nothing opens it; GPU jobs just become schedulable.
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    (root / "gres.conf").write_text(f"NodeName={host} Name=gpu File=/dev/null Count=1\n")
    return conf


def write_srun_wrapper(root: Path, conf: Path) -> Path:
    """A ``bin/srun`` that sets SLURM_CONF before running the real srun; returns the ``bin`` dir.

    The jobstep plugin (snakemake-executor-plugin-slurm-jobstep 0.6.1) starts each job inside an
    allocation with ``srun``, after dropping every SLURM_* variable but the job's identity, SLURM_CONF
    included. A real cluster has /etc/slurm/slurm.conf (or configless slurmd) for that srun to find;
    this one has only the temp config, and /etc is left alone, so the test puts this wrapper first on PATH.
    """
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "srun"
    wrapper.write_text(f'#!/bin/sh\nSLURM_CONF="{conf}" exec "{which("srun")}" "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in reversed(processes):
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: slurmctld/slurmd run as root")
    install_seconds = ensure_installed(PACKAGES, BINARIES)
    start = time.monotonic()
    root = tmp_path_factory.mktemp("slurm")
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    cpus = os.cpu_count() if not hasattr(os, "sched_getaffinity") else len(os.sched_getaffinity(0))
    memory_mb = max(1024, int(_memory_mb() * 0.8))
    conf = write_config(root, host, cpus, memory_mb)
    bin_dir = write_srun_wrapper(root, conf)
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}:{SBIN_PATH}"}
    logs = {name: root / "log" / name for name in
            ("munged.stdout", "slurmctld.log", "slurmctld.stdout", "slurmd.log", "slurmd.stdout")}

    key = root / "run" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    daemons = {
        "munged": [which("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={root}/run/munge.socket",
                   f"--pid-file={root}/run/munged.pid", f"--seed-file={root}/run/munge.seed"],
        "slurmctld": [which("slurmctld"), "-D", "-c", "-f", str(conf)],
        "slurmd": [which("slurmd"), "-D", "-f", str(conf), "-N", host],
    }
    processes: list[subprocess.Popen] = []
    cluster = SlurmCluster(root=root, conf=conf, host=host, partition=PARTITION, cpus=cpus, memory_mb=memory_mb,
                           install_seconds=install_seconds, startup_seconds=0.0, env=env, logs=logs)
    try:
        for name, command in daemons.items():
            out = open(logs[f"{name}.stdout"], "w")
            processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True))
            out.close()
            if name == "munged":
                _wait_for(lambda: (root / "run" / "munge.socket").exists(), 20, "munged socket", processes, cluster)
        _wait_for(lambda: _node_state(cluster) == "idle", 60, "node idle in sinfo", processes, cluster)
        cluster.startup_seconds = time.monotonic() - start
        print(f"\nslurm test cluster: install {install_seconds:.1f}s, startup {cluster.startup_seconds:.1f}s, {root}")
        yield cluster
    finally:
        if processes and processes[-1].poll() is None:
            subprocess.run([which("scancel") or "scancel", "--quiet", "--full", f"--partition={PARTITION}"],
                           env=env, capture_output=True, timeout=30)
        _stop(processes)


def _node_state(cluster: SlurmCluster) -> str:
    result = cluster.run("sinfo", "--noheader", "--nodes", cluster.host, "--format=%T", check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def _wait_for(condition, timeout: float, what: str, processes: list[subprocess.Popen], cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p.args[0] for p in processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead} exited while waiting for {what}\n{cluster.log_tails()}")
        if condition():
            return
        time.sleep(0.5)
    raise TimeoutError(f"no {what} after {timeout}s\n{cluster.log_tails()}")
