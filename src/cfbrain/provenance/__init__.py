"""Per-job provenance records (ARCHITECTURE.md contract 2) and code fingerprints (contract 3)."""
from cfbrain.provenance.fingerprint import script_fingerprint
from cfbrain.provenance.record import job_record, sha256_path, snakemake_job

__all__ = ["script_fingerprint", "job_record", "sha256_path", "snakemake_job"]
