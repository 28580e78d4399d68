"""The private side of a dataset (pseudonym key, source manifest, pseudonym map): folders only their
owner can enter (0700), files only their owner can read (0600)."""
from __future__ import annotations

import os
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_dir(folder: Path, root: Path | None = None) -> Path:
    """Make ``folder`` (creating it and any missing parent) mode 0700, and every folder from ``root`` (an
    ancestor of ``folder``; default ``folder`` itself) down to it. Existing folders are tightened too:
    Snakemake creates the folders of a job's outputs before the job runs, with the umask's mode (0755)."""
    folder = Path(folder).absolute()
    chain = [folder, *folder.parents]
    top = Path(root).absolute() if root is not None else folder
    if top not in chain:
        raise ValueError(f"{root} is not an ancestor of {folder}")
    created = [path for path in chain if not path.exists()]
    for path in reversed(created):
        path.mkdir(mode=FOLDER_MODE)
    for path in {*created, *chain[: chain.index(top) + 1]}:
        path.chmod(FOLDER_MODE)
    return folder


def create_private_file(path: Path) -> Path:
    """Create (or empty) ``path`` with mode 0600 in a 0700 folder, before any content is written to it."""
    private_dir(Path(path).parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE))
    os.chmod(path, FILE_MODE)  # O_CREAT's mode applies only to a new file
    return Path(path)
