"""Provenance records and code fingerprints (ARCHITECTURE.md contracts 2 and 3)."""
from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
from types import SimpleNamespace

import pytest

from cfbrain.provenance import job_record, script_fingerprint, sha256_path
from cfbrain.provenance.fingerprint import PACKAGE_ROOT, module_closure
from cfbrain.provenance.record import Job, record_path, snakemake_job


@pytest.fixture
def package_copy(tmp_path):
    copy = tmp_path / "cfbrain"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _script(tmp_path, code):
    path = tmp_path / "script.py"
    path.write_text(code)
    return path


def _touch(path):
    with open(path, "a") as handle:
        handle.write("\n# edited\n")


def test_fingerprint_follows_the_import_closure(package_copy, tmp_path):
    script = _script(tmp_path, "from cfbrain.convert.stage import convert_scan\n")
    before = script_fingerprint(script, package_copy)
    _touch(package_copy / "convert" / "exclusions.py")          # imported by convert.stage
    after_dependency = script_fingerprint(script, package_copy)
    assert after_dependency != before
    _touch(package_copy / "dicom" / "labels.py")                # not reachable from convert.stage
    assert script_fingerprint(script, package_copy) == after_dependency


def test_closure_includes_parent_packages_and_relative_imports(package_copy):
    (package_copy / "dicom" / "extra.py").write_text("from .pseudonymise import PseudonymKey\n")
    closure = module_closure({"cfbrain.dicom.extra"}, package_copy)
    assert {"cfbrain", "cfbrain.dicom", "cfbrain.dicom.pseudonymise"} <= closure
    assert "cfbrain.dicom.pseudonymise.PseudonymKey" not in closure


def test_directory_hash_is_content_and_name_based(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("one")
    first = sha256_path(tmp_path / "d")
    (tmp_path / "d" / ".snakemake_timestamp").write_text("")
    assert sha256_path(tmp_path / "d") == first
    (tmp_path / "d" / "a.txt").write_text("two")
    assert sha256_path(tmp_path / "d")["sha256"] != first["sha256"]
    assert first["n_files"] == 1 and "a.txt" not in str(first)


def test_job_record_fields(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "out.txt").write_text("y")
    now = dt.datetime.now(dt.timezone.utc)
    record = job_record(rule="convert", wildcards={"dataset": "d", "scan": "s"},
                        inputs={"dicom": tmp_path / "in.txt"}, outputs={"status": [tmp_path / "out.txt"]},
                        params={"code": "abc"}, seed=3, started=now, finished=now)
    assert record["inputs"]["dicom"]["sha256"] == sha256_path(tmp_path / "in.txt")["sha256"]
    assert record["outputs"]["status[0]"]["path"].endswith("out.txt")
    assert record["seed"] == 3 and record["params"] == {"code": "abc"}
    assert {"numpy", "pydicom", "python"} <= set(record["libraries"])
    assert set(record["git"]) == {"commit", "dirty"} and record["device"].startswith(("cpu", "cuda"))
    assert record_path(tmp_path, "convert", {"dataset": "d", "scan": "s"}) == tmp_path / "d/provenance/convert/scan-s.json"
    assert record["slurm_job_id"] is None


def test_job_record_names_its_slurm_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    now = dt.datetime.now(dt.timezone.utc)
    record = job_record(rule="r", wildcards={}, inputs={}, outputs={}, params={}, seed=None, started=now, finished=now)
    assert record["slurm_job_id"] == "4711"


def test_resume_dir_is_the_same_after_a_kill_and_new_when_inputs_or_params_change(tmp_path):
    from snakemake.iocontainers import InputFiles, Params, Wildcards
    tensor = tmp_path / "tensor.npz"
    tensor.write_bytes(b"scan 1")

    def job(epochs: int) -> Job:
        smk = SimpleNamespace(rule="train_classifier", wildcards=Wildcards(fromdict={"model": "mtl", "seed": "0"}),
                              params=Params(fromdict={"settings": {"mtl_epochs": [epochs, 1, 1]}, "code": "abc"}),
                              input=InputFiles(fromdict={"tensors": [str(tensor)]}),
                              config={"results": str(tmp_path / "results")})
        return Job(logging.getLogger("test"), smk)

    first = job(6).resume_dir(tmp_path / "checkpoints")
    assert first.parent == tmp_path / "checkpoints"
    assert job(6).resume_dir(tmp_path / "checkpoints") == first
    assert job(12).resume_dir(tmp_path / "checkpoints") != first
    tensor.write_bytes(b"scan 1, edited")
    assert job(6).resume_dir(tmp_path / "checkpoints") != first
    with pytest.raises(ValueError, match="inside"):  # verify would report checkpoints no record describes
        job(6).resume_dir(tmp_path / "results" / "d" / "checkpoints")


def test_private_params_are_recorded_by_reference_only(tmp_path):
    from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, Wildcards
    (tmp_path / "out.tsv").write_text("x")
    smk = SimpleNamespace(rule="index", wildcards=Wildcards(fromdict={"dataset": "d"}), input=InputFiles(),
                          output=OutputFiles(fromdict={"series": str(tmp_path / "out.tsv")}), log=Log(),
                          params=Params(fromdict={"source_dir": "/exports/DOE_JANE_MRN4455", "code": "abc"}),
                          config={"results": str(tmp_path / "results")})
    with snakemake_job(smk) as job:
        job.private_params["source_dir"] = "D0123456789"
    text = record_path(tmp_path / "results", "index", {"dataset": "d"}).read_text()
    assert "MRN4455" not in text and '"source_dir": "D0123456789"' in text


def test_every_resuming_rule_keeps_its_resume_state_outside_results():
    """Rules whose script resumes (``Job.resume_dir``), CT and MRI alike, take the folder from ``resume_state``
    (config key ``resume``), so verify never meets a checkpoint (the job also refuses one inside results/)."""
    from conftest import REPO
    from test_profiles import rule_blocks

    scripts = REPO / "workflow" / "scripts"
    resuming = {name for name, text in rule_blocks().items()
                if (script := re.search(r'script:\s*"\.\./scripts/(\w+\.py)"', text))
                and "resume_dir" in (scripts / script.group(1)).read_text()}
    assert {"train_classifier", "train_ddpm", "train_segmenter", "train_feature_ae"} <= resuming
    assert {name for name in resuming if "checkpoints=resume_state(" not in rule_blocks()[name]} == set()
