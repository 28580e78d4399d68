"""`cfbrain ...` entry points for users (the workflow runs the same functions through its rules)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


def _synth_ct(args: argparse.Namespace) -> None:
    from cfbrain.synth.ct import cohort_config, make_ct_cohort
    make_ct_cohort(Path(args.out), cohort_config(args.patients, args.seed, lesion_contrast_hu=args.lesion_contrast_hu))
    print(f"synthetic CT cohort written to {args.out} (DICOM under dicom/, labels.tsv, truth/)")


def _synth_mri(args: argparse.Namespace) -> None:
    from cfbrain.synth.mri import SynthMRIConfig, make_mri_cohort
    make_mri_cohort(Path(args.out), SynthMRIConfig(n_healthy=args.healthy, n_stroke=args.strokes,
                                                   n_tumour=args.tumours, seed=args.seed, workers=args.workers))
    print(f"synthetic MRI cohort written to {args.out} (atlas/ and brats/ layouts, subjects.tsv, truth/)")


def _provenance_verify(args: argparse.Namespace) -> None:
    from cfbrain.provenance.audit import verify
    findings = verify(Path(args.results), Path(args.workdir))
    for finding in findings:
        print(f"{finding.problem}\t{finding.path}")
    print(f"{len(findings)} problem(s) under {args.results}")
    if findings:
        raise SystemExit(1)


def _provenance_trace(args: argparse.Namespace) -> None:
    import json

    from cfbrain.provenance.audit import to_prov_json, trace
    chain = trace(Path(args.file), Path(args.results), Path(args.workdir))
    if args.prov_json:
        Path(args.prov_json).write_text(json.dumps(to_prov_json(chain), indent=1))
    for record in chain:
        data = record.data
        print(f"{record.label}  {data['started']} -> {data['finished']}  cfbrain {data['cfbrain_version']} "
              f"git {data['git']['commit'][:10]}{'+dirty' if data['git']['dirty'] else ''}")
        for name, item in data["inputs"].items():
            print(f"    in  {name}: {item['path']}  sha256 {item['sha256'][:16]}")
        for name, item in data["outputs"].items():
            print(f"    out {name}: {item['path']}  sha256 {item['sha256'][:16]}")
        sources = data.get("extra", {}).get("sources", {})
        if sources:
            print(f"    from {len(sources)} source files: " + ", ".join(sorted(sources)[:3]) + (" ..." if len(sources) > 3 else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfbrain", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser("synth", help="generate embedded synthetic cohorts")
    kinds = synth.add_subparsers(dest="kind", required=True)
    ct = kinds.add_parser("ct", help="IST-3-like CT DICOM cohort from the MNI152 template")
    ct.add_argument("--out", required=True, help="output folder (gets dicom/, labels.tsv, truth/)")
    ct.add_argument("--patients", type=int, default=60)
    ct.add_argument("--seed", type=int, default=0)
    ct.add_argument("--lesion-contrast-hu", type=float, nargs=2, metavar=("LOW", "HIGH"),
                    help="lesion darkening range in HU: baseline lesions in the lower half, follow-up in the upper "
                         "(default 6 15, acute-infarct-like)")
    ct.set_defaults(run=_synth_ct)
    mri = kinds.add_parser("mri", help="T1 MRI cohort (ATLAS-like strokes, BraTS-like tumours) with true indirect effects")
    mri.add_argument("--out", required=True, help="output folder (gets atlas/, brats/, subjects.tsv, truth/)")
    mri.add_argument("--healthy", type=int, default=20)
    mri.add_argument("--strokes", type=int, default=20)
    mri.add_argument("--tumours", type=int, default=20)
    mri.add_argument("--seed", type=int, default=0)
    mri.add_argument("--workers", type=int, default=1, help="render subjects in this many processes")
    mri.set_defaults(run=_synth_mri)
    provenance = commands.add_parser("provenance", help="audit results against their provenance records")
    audits = provenance.add_subparsers(dest="audit", required=True)
    for name, run, help_text in (("verify", _provenance_verify, "list files that no longer match their record"),
                                 ("trace", _provenance_trace, "print the chain of jobs that made FILE")):
        sub = audits.add_parser(name, help=help_text)
        if name == "trace":
            sub.add_argument("file")
            sub.add_argument("--prov-json", help="also write the chain as W3C PROV-JSON to this path")
        sub.add_argument("--results", default="results", help="the workflow's results folder")
        sub.add_argument("--workdir", default=".", help="the workflow's working directory (paths in records are relative to it)")
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
