"""verify, trace and privacy on a small workflow run (a user's DICOM folder, the dicom_dir source kind, under a
folder named after a patient), and verify on the finished tiny run."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from cfbrain.dicom.pseudonymise import PseudonymKey
from cfbrain.provenance.audit import to_prov_json, trace, verify
from conftest import REPO, SAGITTAL, write_series

pytestmark = pytest.mark.workflow
SOURCE_FOLDER = "export_DOE_JANE_MRN4455"  # clinical exports name folders after patients
PHI = ("DOE_JANE", "MRN4455", "IST00001", "DOE^JANE", "19400102", "ST ELSEWHERE", "HOUSE^GREGORY", "ACC998877")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("audit")
    source = workdir / SOURCE_FOLDER
    write_series(source / "DOE_JANE" / "SE2", 26, n_rows=24)
    write_series(source / "DOE_JANE" / "SE3", 10, n_rows=24, prefix="SP")
    write_series(source / "DOE_JANE" / "SE4", 8, n_rows=24, prefix="SAG", orientation=SAGITTAL)
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    config["datasets"] = {"mine": {"modality": "ct", "source": {"kind": "dicom_dir", "path": str(source)}}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                             str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_clean_run_verifies(small_run):
    assert verify(small_run / "results", small_run) == []


def test_finished_tiny_run_verifies_clean(tiny_run):
    """The tiny run trains (resume checkpoints): they are kept outside results/, where verify has nothing to say."""
    assert verify(tiny_run / "results", tiny_run) == []
    assert list((tiny_run / "resume").rglob("last.pt"))


def test_tampering_and_stray_files_are_found(small_run, tmp_path):
    table = small_run / "results" / "mine" / "qc" / "exclusions.tsv"
    original = table.read_bytes()
    stray = small_run / "results" / "mine" / "tables" / "hand_made.md"
    exported = next((small_run / "results" / "mine" / "dicom").glob("*/0001.dcm"))
    exported_bytes = exported.read_bytes()
    try:
        table.write_bytes(original + b"\n")
        stray.write_text("not from the workflow")
        exported.write_bytes(exported_bytes[:-1] + b"\x01")
        found = {(Path(f.path).name, f.problem) for f in verify(small_run / "results", small_run)}
        assert found == {("exclusions.tsv", "modified"), ("hand_made.md", "no_record"),
                         (exported.parent.name, "modified")}
    finally:
        table.write_bytes(original)
        exported.write_bytes(exported_bytes)
        stray.unlink()


def test_trace_walks_back_to_the_source_files(small_run):
    target = small_run / "results" / "mine" / "tables" / "exclusions.md"
    chain = trace(target, small_run / "results", small_run)
    rules = [record.data["rule"] for record in chain]
    assert rules[0] == "exclusions" and {"ingest_qc", "convert", "export_series", "index"} <= set(rules)
    exports = [r for r in chain if r.data["rule"] == "export_series"]
    assert sum(len(r.data["extra"]["sources"]) for r in exports) == 26 + 10
    inside = next((small_run / "results" / "mine" / "nifti").glob("*/image.nii.gz"))
    assert trace(inside, small_run / "results", small_run)[0].data["rule"] == "convert"
    prov = to_prov_json(chain)
    assert set(prov) == {"prefix", "entity", "activity", "used", "wasGeneratedBy"}
    assert any(e["cfbrain:sha256"] for e in prov["entity"].values())
    json.dumps(prov)


def test_cli_verify_exit_code(small_run):
    cli = [sys.executable, "-m", "cfbrain.cli"]
    ok = subprocess.run([*cli, "provenance", "verify", "--results", "results"], cwd=small_run, capture_output=True, text=True)
    assert ok.returncode == 0 and "0 problem(s)" in ok.stdout


def _contents(path: Path) -> bytes:
    """A file's bytes, decompressed (NIfTI .gz; .npz and .pt files are zip archives)."""
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return b"".join(archive.read(name) for name in archive.namelist())
    return path.read_bytes()


def test_no_identifier_of_the_source_folder_or_headers_reaches_results(small_run):
    files = [p for p in (small_run / "results").rglob("*") if p.is_file()]
    files += [p for p in (small_run / ".snakemake" / "log").rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in files) and any(p.parent.name == "index" for p in files)
    for path in files:
        blob = _contents(path) + str(path.relative_to(small_run)).encode()
        leaked = [text for text in PHI if text.encode() in blob]
        assert not leaked, f"{path.relative_to(small_run)} holds {leaked}"


def test_the_source_folder_is_recorded_by_its_keyed_digest(small_run):
    key = PseudonymKey.load(small_run / "private" / "mine" / "pseudonym.key")
    record = json.loads((small_run / "results" / "mine" / "provenance" / "index" / "all.json").read_text())
    reference = key.source_dir(small_run / SOURCE_FOLDER)
    assert record["params"]["source_dir"] == reference
    pseudonyms = json.loads((small_run / "private" / "mine" / "pseudonym_map.json").read_text())
    assert pseudonyms["source_dirs"] == {reference: str(small_run / SOURCE_FOLDER)}


def test_private_folders_are_0700_and_files_0600(small_run):
    private = small_run / "private"
    assert {p.relative_to(private).as_posix(): p.stat().st_mode & 0o777 for p in [private, *private.rglob("*")]} == {
        ".": 0o700, "mine": 0o700, "mine/pseudonym.key": 0o600, "mine/source_manifest.tsv": 0o600,
        "mine/pseudonym_map.json": 0o600}
