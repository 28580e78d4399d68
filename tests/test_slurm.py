"""Work in progress."""
import pytest

from slurm_cluster import slurm_cluster  # noqa: F401


def test_smoke(slurm_cluster):
    r = slurm_cluster.run("sbatch", "--parsable", "--wrap", "hostname", "-o", str(slurm_cluster.root / "j.out"))
    print(r.stdout, r.stderr)
    r = slurm_cluster.run("sbatch", "--parsable", "--gpus=1", "--wrap", "env | grep -i gpu", "-o", str(slurm_cluster.root / "g.out"))
    print(r.stdout, r.stderr)
    import time; time.sleep(5)
    print(slurm_cluster.run("squeue", "--states=all", "-o", "%i|%T|%b").stdout)
    print(slurm_cluster.run("sacct", check=False))
    print((slurm_cluster.root / "g.out").read_text())
