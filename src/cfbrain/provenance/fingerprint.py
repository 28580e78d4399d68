"""Fingerprints of package code, placed in rule params so a code change reruns exactly its rules."""
from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def code_fingerprint(*modules: str, package_root: Path = PACKAGE_ROOT) -> str:
    """sha256 over the source of the named cfbrain modules or subpackages.

    ``modules`` are dotted names relative to the package ("dicom", "convert.dcm2niix");
    a subpackage covers every ``.py`` file below it. Shared infrastructure that every
    job runs (``provenance``) is always included. Returns 16 hex digits.
    """
    digest = hashlib.sha256()
    for name in sorted(set(modules) | {"provenance"}):
        for source in _module_sources(package_root, name):
            digest.update(source.relative_to(package_root).as_posix().encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _module_sources(package_root: Path, name: str) -> list[Path]:
    """The ``.py`` files of one module or subpackage, sorted; error if it does not exist."""
    base = package_root.joinpath(*name.split("."))
    if base.is_dir():
        return sorted(base.rglob("*.py"))
    module = base.with_suffix(".py")
    if module.is_file():
        return [module]
    raise ValueError(f"cfbrain has no module or subpackage {name!r} under {package_root}")
