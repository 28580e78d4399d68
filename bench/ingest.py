"""Ingest benchmark: seconds per series and peak memory for indexing and conversion.

Prints ratios against peers measured in the same run, never pass/fail:
- header-only index vs. a full pydicom read of the same files (pixels included);
- dcm2niix conversion vs. SimpleITK's series reader writing the same NIfTI.

    python bench/ingest.py [--source DIR] [--patients 60] [--sample 20]

Without --source it builds (once) the demo synthetic cohort under bench/out/.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
task, args = sys.argv[1], json.loads(sys.argv[2])
start = time.perf_counter()
if task == "index":
    from cfbrain.dicom.index import index_source
    from cfbrain.dicom.pseudonymise import PseudonymKey
    result = index_source(Path(args["source"]), PseudonymKey(b"bench" * 8))
    extra = {"series": len(result.series), "files": len(result.files),
             "candidates": int((result.series.verdict == "candidate").sum())}
    result.manifest.to_csv(args["manifest"], sep="\t", index=False)
elif task == "read_all":
    import pydicom
    paths = [p for p in sorted(Path(args["source"]).rglob("*")) if p.is_file()]
    for p in paths:
        try:
            pydicom.dcmread(p).PixelData
        except Exception:
            pass
    extra = {"files": len(paths)}
elif task == "dcm2niix":
    from cfbrain.convert.dcm2niix import convert_series
    for folder in args["folders"]:
        convert_series(Path(folder), Path(args["out"]) / Path(folder).name)
    extra = {"series": len(args["folders"])}
elif task == "simpleitk":
    import SimpleITK as sitk
    for folder in args["folders"]:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sorted(str(p) for p in Path(folder).glob("*.dcm")))
        sitk.WriteImage(reader.Execute(), str(Path(args["out"]) / (Path(folder).name + "_sitk.nii.gz")))
    extra = {"series": len(args["folders"])}
seconds = time.perf_counter() - start
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_rss_mb": max(own, kids) / 1024, **extra}))
"""


def run_child(task: str, **args) -> dict:
    """Run one measurement in a fresh interpreter so peak memory is its own."""
    out = subprocess.run([sys.executable, "-c", CHILD, task, json.dumps(args)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def demo_source(patients: int) -> Path:
    from cfbrain.synth.ct import SynthCTConfig, make_ct_cohort
    root = HERE / "out" / f"synth-ct-{patients}"
    if not (root / "dicom").exists():
        start = time.perf_counter()
        make_ct_cohort(root, SynthCTConfig(n_patients=patients, seed=0))
        print(f"built synthetic cohort of {patients} patients in {time.perf_counter() - start:.0f} s")
    return root / "dicom"


def export_sample(manifest: Path, n: int, out: Path) -> list[str]:
    """Export ``n`` candidate series (evenly spread) so both converters read identical de-identified input."""
    import pandas as pd

    from cfbrain.dicom.export import export_series
    from cfbrain.dicom.pseudonymise import PseudonymKey
    table = pd.read_csv(manifest, sep="\t")
    scans = sorted(table.scan.unique())
    chosen = scans[:: max(1, len(scans) // n)][:n]
    key = PseudonymKey(b"bench" * 8)
    for scan in chosen:
        rows = table[table.scan == scan].sort_values("rank")
        export_series([Path(p) for p in rows.path], out / scan, key)
    return [str(out / scan) for scan in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path)
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--sample", type=int, default=20)
    args = parser.parse_args()
    source = args.source or demo_source(args.patients)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        index = run_child("index", source=str(source), manifest=str(scratch / "manifest.tsv"))
        full = run_child("read_all", source=str(source))
        folders = export_sample(scratch / "manifest.tsv", args.sample, scratch / "dicom")
        (scratch / "nifti").mkdir()
        dcm = run_child("dcm2niix", folders=folders, out=str(scratch / "nifti"))
        itk = run_child("simpleitk", folders=folders, out=str(scratch / "nifti"))
    print(f"index: {index['files']} files, {index['series']} series ({index['candidates']} candidates)")
    print(f"  header-only index  {1000 * index['seconds'] / index['series']:8.1f} ms/series  "
          f"{1000 * index['seconds'] / index['files']:6.2f} ms/file  peak {index['peak_rss_mb']:.0f} MB")
    print(f"  full pydicom read  {1000 * full['seconds'] / index['series']:8.1f} ms/series  peak {full['peak_rss_mb']:.0f} MB")
    print(f"  ratio full read / header-only index: {full['seconds'] / index['seconds']:.2f}")
    print(f"conversion of {dcm['series']} exported series:")
    print(f"  dcm2niix   {1000 * dcm['seconds'] / dcm['series']:8.1f} ms/series  peak {dcm['peak_rss_mb']:.0f} MB")
    print(f"  SimpleITK  {1000 * itk['seconds'] / itk['series']:8.1f} ms/series  peak {itk['peak_rss_mb']:.0f} MB")
    print(f"  ratio SimpleITK / dcm2niix: {itk['seconds'] / dcm['seconds']:.2f}")


if __name__ == "__main__":
    main()
