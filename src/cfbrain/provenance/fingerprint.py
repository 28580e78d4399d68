"""Fingerprints of package code, placed in rule params so a code change reruns exactly its rules.

A rule's fingerprint covers the cfbrain modules its script can execute: the modules it imports,
the modules those import, and every package ``__init__`` on the way (importing ``a.b.c`` runs
``a/__init__`` and ``a/b/__init__``), found by reading the import statements, so no list can
be forgotten or go stale.
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "cfbrain"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def script_fingerprint(script: Path, package_root: Path = PACKAGE_ROOT) -> str:
    """sha256 (16 hex digits) over the source of every cfbrain module ``script`` can execute."""
    return _digest(module_closure(_imported_modules(Path(script).read_text(), ""), package_root), package_root)


def module_closure(modules: set[str], package_root: Path = PACKAGE_ROOT) -> set[str]:
    """``modules`` (dotted cfbrain names) plus everything they import, transitively, plus parent packages."""
    pending, seen = [*modules, PACKAGE], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        source = _source_file(name, package_root)
        if source is None:
            continue  # ``from cfbrain.x import name`` where name is not a module
        seen.add(name)
        parts = name.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]
        package = name if source.name == "__init__.py" else ".".join(parts[:-1])
        pending += _imported_modules(source.read_text(), package)
    return seen


@functools.lru_cache(maxsize=None)
def _imported_modules(code: str, package: str) -> frozenset[str]:
    """cfbrain modules named by the import statements of ``code`` (``package``: for relative imports).
    For ``from a import b`` both ``a`` and ``a.b`` are returned; the closure drops what is not a module.
    Cached by source text: a workflow fingerprints many scripts that share most of their modules."""
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return frozenset(name for name in found if name == PACKAGE or name.startswith(PACKAGE + "."))


def _source_file(name: str, package_root: Path) -> Path | None:
    relative = Path(*name.split(".")[1:])
    for candidate in (package_root / relative / "__init__.py", (package_root / relative).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _digest(modules: set[str], package_root: Path) -> str:
    digest = hashlib.sha256()
    for source in sorted(_source_file(name, package_root) for name in modules):
        digest.update(source.relative_to(package_root).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]
