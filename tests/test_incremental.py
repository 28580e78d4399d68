"""Incremental reruns on a user's DICOM folder: exactly the changed series' chain plus the aggregates."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import yaml
from pydicom.uid import generate_uid

from cfbrain.dicom.pseudonymise import PseudonymKey
from conftest import REPO, write_series

pytestmark = pytest.mark.workflow
PER_SCAN_RULES = {"export_series", "convert", "register", "preprocess", "truth_mask"}
JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")


def run(workdir: Path, *extra: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                             str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *extra],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def executed(log: str) -> list[tuple[str, str]]:
    """(rule, scan or '') of every job a snakemake run executed, from its log."""
    jobs, current = [], None
    for line in log.splitlines():
        header = JOB_HEADER.match(line.strip())
        if header:
            current = header.group(1)
            jobs.append((current, ""))
        elif current and line.strip().startswith("wildcards:"):
            scan = re.search(r"scan=(\w+)", line)
            jobs[-1] = (current, scan.group(1) if scan else "")
    return [job for job in jobs if job[0] != "all"]


def per_scan(jobs: list[tuple[str, str]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for rule, scan in jobs:
        if rule in PER_SCAN_RULES:
            found.setdefault(scan, set()).add(rule)
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("incremental")
    source = workdir / "incoming"
    for patient in ("AAA", "BBB"):
        write_series(source / patient / "SE2", 26, n_rows=24, patient_id=patient,
                     study_uid=generate_uid(entropy_srcs=[patient]))
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    config["datasets"] = {"mine": {"modality": "ct", "source": {"kind": "dicom_dir", "path": str(source)}}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    run(workdir)
    return workdir


def scans_of(workdir: Path) -> set[str]:
    return {p.name for p in (workdir / "results" / "mine" / "dicom").iterdir()}


def test_nothing_changed_nothing_reruns(project):
    assert "Nothing to be done" in run(project, "--dry-run")


def test_one_changed_file_reruns_only_its_series(project):
    before = scans_of(project)
    path = sorted((project / "incoming" / "AAA" / "SE2").glob("*.dcm"))[3]
    ds = pydicom.dcmread(path)
    ds.PixelData = bytes(len(ds.PixelData))
    ds.save_as(path)
    jobs = executed(run(project))
    touched = per_scan(jobs)
    assert len(touched) == 1, touched
    (scan, rules), = touched.items()
    key = PseudonymKey.load(project / "private" / "mine" / "pseudonym.key")
    assert scan in before and scan.startswith(key.patient("AAA") + "_")
    assert {"export_series", "convert", "register"} <= rules
    assert "index" in {rule for rule, _ in jobs}


def test_new_patient_reruns_only_its_chain_and_the_aggregates(project):
    before = scans_of(project)
    write_series(project / "incoming" / "CCC" / "SE2", 26, n_rows=24, patient_id="CCC",
                 study_uid=generate_uid(entropy_srcs=["CCC"]))
    jobs = executed(run(project))
    new = scans_of(project) - before
    assert len(new) == 1
    assert set(per_scan(jobs)) == new
    assert {"index", "ingest_qc", "registration_qc", "exclusions"} <= {rule for rule, _ in jobs}


def test_config_change_reruns_that_stage_and_downstream(project):
    config = yaml.safe_load((project / "config.yaml").read_text())
    config["ingest"]["review_below"] = 20
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    jobs = executed(run(project))
    rules = {rule for rule, _ in jobs}
    assert {rule for rule, scan in jobs if scan} >= {"convert"}
    assert sum(rule == "convert" for rule, _ in jobs) == len(scans_of(project))
    assert "index" not in rules and "export_series" not in rules
