"""Debian packages a test needs (slurm-wlm, chromium): installed with apt-get only when a binary is missing."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


def which(name: str) -> str | None:
    """``name`` on PATH or in the sbin directories (daemons live there)."""
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SBIN_PATH}")


def ensure_installed(packages: list[str], binaries: list[str]) -> float:
    """apt-get install ``packages`` if one of ``binaries`` is missing; returns the seconds spent (0 if none).
    Skips the test when a binary is missing and this is not root or there is no apt-get."""
    missing = [name for name in binaries if which(name) is None]
    if not missing:
        return 0.0
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.skip(f"{', '.join(missing)} missing, and installing {' '.join(packages)} needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": f"{os.environ.get('PATH', '')}:{SBIN_PATH}"}
    start = time.monotonic()
    for command in ([apt, "-q", "update"],
                    [apt, "-q", "-y", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confdef",
                     "-o", "Dpkg::Options::=--force-confold", "install", *packages]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    still_missing = [name for name in binaries if which(name) is None]
    if still_missing:
        raise RuntimeError(f"installed {packages} but still missing {still_missing}")
    return time.monotonic() - start
