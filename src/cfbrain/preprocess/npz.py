"""Byte-reproducible compressed ``.npz`` files (numpy's own writer stamps the current time)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a deflate-compressed .npz readable by ``np.load`` (no pickles)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def read_npz(path: str | Path, expected_format: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz written by :func:`write_npz` (loaded eagerly, no pickles); raises ValueError
    unless its ``format`` array is ``expected_format`` (a file of another kind, or of an older layout)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if str(arrays.get("format")) != expected_format:
        raise ValueError(f"{path}: not a {expected_format} file (format={arrays.get('format')})")
    return arrays
