"""Audit results against their provenance records: verify hashes, trace a file back to its sources."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfbrain.provenance.record import SNAKEMAKE_TIMESTAMP, sha256_path

UNRECORDED_DIRS = ("provenance", "logs")


@dataclass(frozen=True)
class Record:
    """One job's provenance record and where it lives."""

    path: Path
    data: dict[str, Any]

    @property
    def label(self) -> str:
        wildcards = ", ".join(f"{k}={v}" for k, v in sorted(self.data["wildcards"].items()))
        return f"{self.data['rule']}({wildcards})"


def load_records(results: Path) -> list[Record]:
    """Every provenance record under ``results/*/provenance/``, sorted by path."""
    return [Record(p, json.loads(p.read_text())) for p in sorted(Path(results).glob("*/provenance/*/*.json"))]


def _producers(records: list[Record], workdir: Path) -> dict[Path, tuple[Record, dict[str, Any]]]:
    """Absolute output path -> (record, the output's entry); record paths are relative to ``workdir``."""
    return {_absolute(entry["path"], workdir): (record, entry)
            for record in records for entry in record.data["outputs"].values()}


def _absolute(path: str | Path, workdir: Path) -> Path:
    return (Path(workdir) / path).resolve()


@dataclass(frozen=True)
class Finding:
    path: str
    problem: str  # "modified", "missing", "no_record"


def verify(results: Path, workdir: Path = Path(".")) -> list[Finding]:
    """Files whose content no longer matches their record, recorded outputs that are gone, and
    result files that no record produced (logs and the records themselves excepted)."""
    results = Path(results)
    findings, covered = [], set()
    for path, (record, entry) in sorted(_producers(load_records(results), workdir).items()):
        if not path.exists():
            findings.append(Finding(str(path), "missing"))
            continue
        if sha256_path(path)["sha256"] != entry["sha256"]:
            findings.append(Finding(str(path), "modified"))
        covered.add(path)
    for file in sorted(p for p in results.rglob("*") if p.is_file()):
        relative = file.relative_to(results).parts
        if len(relative) > 1 and relative[1] in UNRECORDED_DIRS or file.name == SNAKEMAKE_TIMESTAMP:
            continue
        resolved = file.resolve()
        if resolved not in covered and not covered.intersection(resolved.parents):
            findings.append(Finding(str(resolved), "no_record"))
    return findings


def trace(target: Path, results: Path, workdir: Path = Path(".")) -> list[Record]:
    """The jobs that led to ``target``, from the target's own job back to the jobs that read sources.

    A file inside a directory output is traced through that directory's job. Raises if no record
    produced the target.
    """
    producers = _producers(load_records(results), workdir)
    start = _producer_of(Path(target).resolve(), producers)
    chain, queue, seen = [], [start], set()
    while queue:
        record = queue.pop(0)
        if record.path in seen:
            continue
        seen.add(record.path)
        chain.append(record)
        for entry in record.data["inputs"].values():
            found = producers.get(_absolute(entry["path"], workdir))
            if found is not None:
                queue.append(found[0])
    return chain


def _producer_of(path: Path, producers: dict[Path, tuple[Record, dict[str, Any]]]) -> Record:
    for probe in (path, *path.parents):
        if probe in producers:
            return producers[probe][0]
    raise KeyError(f"no provenance record produced {path}")


def to_prov_json(chain: list[Record]) -> dict[str, Any]:
    """The chain as W3C PROV-JSON: files are entities (keyed by sha256), jobs are activities."""
    entity, activity, used, generated = {}, {}, {}, {}
    for i, record in enumerate(chain):
        job = f"cfbrain:job/{record.label}"
        data = record.data
        activity[job] = {"prov:startTime": data["started"], "prov:endTime": data["finished"],
                         "cfbrain:rule": data["rule"], "cfbrain:params": json.dumps(data["params"], sort_keys=True),
                         "cfbrain:git": json.dumps(data["git"]), "cfbrain:version": data["cfbrain_version"]}
        for kind, relation, key in (("inputs", used, "prov:entity"), ("outputs", generated, "prov:entity")):
            for j, item in enumerate(data[kind].values()):
                name = f"cfbrain:file/{item['sha256'][:16]}"
                entity[name] = {"prov:label": item["path"], "cfbrain:sha256": item["sha256"]}
                relation[f"_:{kind}{i}_{j}"] = {"prov:activity": job, key: name}
        for file_id, digest in data.get("extra", {}).get("sources", {}).items():
            name = f"cfbrain:source/{file_id}"
            entity[name] = {"prov:label": f"source file {file_id}", "cfbrain:sha256": digest}
            used[f"_:source{i}_{file_id}"] = {"prov:activity": job, "prov:entity": name}
    return {"prefix": {"cfbrain": "https://cfbrain.invalid/ns#"}, "entity": entity, "activity": activity,
            "used": used, "wasGeneratedBy": generated}
