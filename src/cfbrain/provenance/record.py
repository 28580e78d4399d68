"""One provenance record per Snakemake job, written by one helper that every script uses."""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import cfbrain
from cfbrain.errors import InsufficientData

TRACKED_LIBRARIES = (
    "numpy", "scipy", "pandas", "pydicom", "nibabel", "dcm2niix", "fslpy", "SimpleITK",
    "scikit-learn", "torch", "monai", "torchmetrics", "snakemake",
)
REPO_ROOT = Path(cfbrain.__file__).resolve().parents[2]
_CHUNK_BYTES = 1 << 20
SNAKEMAKE_TIMESTAMP = ".snakemake_timestamp"  # Snakemake touches it inside directory outputs after the job


def sha256_path(path: Path) -> dict[str, Any]:
    """Content hash of a file, or of a directory as the hash of its sorted (relative path, file hash) pairs.

    Member names of a directory are hashed, not listed: a source tree's folder names may identify patients.
    """
    path = Path(path)
    if path.is_dir():
        files = [(p.relative_to(path).as_posix(), _sha256_file(p)) for p in sorted(path.rglob("*"))
                 if p.is_file() and p.name != SNAKEMAKE_TIMESTAMP]
        combined = hashlib.sha256("\n".join(f"{k}\t{v}" for k, v in files).encode()).hexdigest()
        return {"sha256": combined, "kind": "directory", "n_files": len(files)}
    return {"sha256": _sha256_file(path), "kind": "file", "bytes": path.stat().st_size}


def _sha256_file(path: Path) -> str:
    """sha256 of a file; a job hashes its inputs twice (``Job.resume_dir``, then the record), so the
    digest is remembered for the same path, size and modification time."""
    stat = path.stat()
    return _sha256_unchanged_file(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=65536)
def _sha256_unchanged_file(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and dirty flag of the repository cfbrain runs from ("unknown" outside git)."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour can change results."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _device() -> str:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


def _jsonable(value: Any) -> Any:
    """Params and config values as plain JSON (Snakemake Namedlists, Paths, numpy scalars)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _named(items: Any) -> dict[str, Any]:
    """Snakemake Namedlist -> {name: value or list of values}; unnamed entries keyed by position."""
    named = dict(items.items()) if hasattr(items, "items") else {}
    spans = getattr(items, "_names", {})
    in_named = {i for start, end in spans.values() for i in range(start, start + 1 if end is None else end)}
    named.update({str(i): value for i, value in enumerate(items) if i not in in_named})
    return named


def job_record(*, rule: str, wildcards: Mapping[str, str], inputs: Mapping[str, Any],
               outputs: Mapping[str, Any], params: Mapping[str, Any], seed: int | None,
               started: dt.datetime, finished: dt.datetime) -> dict[str, Any]:
    """The provenance record of one finished job (ARCHITECTURE.md contract 2)."""
    def hashes(paths: Mapping[str, Any]) -> dict[str, Any]:
        flat = {}
        for name, value in paths.items():
            for i, path in enumerate(value if isinstance(value, (list, tuple)) else [value]):
                key = name if not isinstance(value, (list, tuple)) else f"{name}[{i}]"
                flat[key] = {"path": str(path), **sha256_path(Path(path))}
        return flat

    return {
        "rule": rule,
        "wildcards": dict(wildcards),
        "inputs": hashes(inputs),
        "outputs": hashes(outputs),
        "params": _jsonable(dict(params)),
        "seed": seed,
        "cfbrain_version": cfbrain.__version__,
        "git": git_state(),
        "libraries": library_versions(),
        "device": _device(),
        "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),  # None outside a Slurm job
        "started": started.isoformat(),
        "finished": finished.isoformat(),
    }


def results_dir(smk: Any) -> Path:
    """The results folder of the workflow running ``smk`` (config key ``results``)."""
    return Path(smk.config.get("results", "results"))


def record_path(results_root: Path, rule: str, wildcards: Mapping[str, str]) -> Path:
    """results/{dataset}/provenance/{rule}/{other wildcard values}.json."""
    dataset = wildcards.get("dataset", "_workflow")
    rest = [f"{k}-{v}" for k, v in sorted(wildcards.items()) if k != "dataset"]
    return Path(results_root) / dataset / "provenance" / rule / (("__".join(rest) or "all") + ".json")


@dataclass
class Job:
    """What a script body gets: the job logger, extra fields for its provenance record, params to record
    by a reference instead of their value, and :meth:`resume_dir` for training jobs."""

    log: logging.Logger
    smk: Any
    extra: dict[str, Any] = field(default_factory=dict)
    private_params: dict[str, str] = field(default_factory=dict)

    def resume_dir(self, base: str | Path) -> Path:
        """``base/<digest>``: where this job keeps the checkpoints it resumes from. The digest covers the
        rule, wildcards, params (settings and code fingerprint) and the sha256 of every input, so a rerun
        after a kill finds its own ``last.pt``, while a rerun because data, settings or code changed
        starts fresh instead of resuming (or, if that run had finished, returning) the old model.

        Raises:
            ValueError: if ``base`` is inside the results folder, where no provenance record describes
                resume state and ``cfbrain provenance verify`` would report it.
        """
        results = results_dir(self.smk).resolve()
        if Path(base).resolve().is_relative_to(results):
            raise ValueError(f"resume state {base} is inside {results}; keep it outside (config key 'resume')")
        inputs = {name: paths if isinstance(paths, (list, tuple)) else [paths]
                  for name, paths in _named(self.smk.input).items()}
        key = {"rule": self.smk.rule, "wildcards": dict(self.smk.wildcards.items()),
               "params": _jsonable(_named(self.smk.params)),
               "inputs": {name: [sha256_path(Path(p))["sha256"] for p in paths] for name, paths in inputs.items()}}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return Path(base) / digest


@contextlib.contextmanager
def snakemake_job(smk: Any) -> Iterator[Job]:
    """Run a Snakemake script body with logging to the rule's log and a provenance record at the end.

    Usage in a script: ``with snakemake_job(snakemake) as job: ...``. The record is written
    only if the body finishes; an exception propagates so that the job fails loudly, except
    :class:`~cfbrain.errors.InsufficientData` (a data problem), which fails it with one log line.
    ``job.extra`` lands in the record under "extra" (e.g. hashes of private source files);
    ``job.private_params[name] = reference`` records the param ``name`` as ``reference`` (e.g. a raw
    source path as its keyed digest).
    """
    job = Job(_job_logger(smk), smk)
    started = dt.datetime.now(dt.timezone.utc)
    job.log.info("rule %s %s started", smk.rule, dict(smk.wildcards.items()))
    try:
        yield job
    except InsufficientData as problem:
        job.log.error("%s", problem)
        raise SystemExit(1) from None
    finished = dt.datetime.now(dt.timezone.utc)
    wildcards = dict(smk.wildcards.items())
    params = {**_named(smk.params), **job.private_params}
    record = job_record(rule=smk.rule, wildcards=wildcards, inputs=_named(smk.input),
                        outputs=_named(smk.output), params=params, seed=params.get("seed"),
                        started=started, finished=finished)
    record["extra"] = _jsonable(job.extra)
    path = record_path(results_dir(smk), smk.rule, wildcards)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, sort_keys=True))
    job.log.info("finished in %.1f s; provenance %s", (finished - started).total_seconds(), path)


def _job_logger(smk: Any) -> logging.Logger:
    """The package-wide "cfbrain" logger, writing to stderr and the rule's log file."""
    logger = logging.getLogger("cfbrain")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if len(smk.log):
        Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(smk.log[0], mode="w"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
    return logger
