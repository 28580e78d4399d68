"""`cfbrain ...` entry points for users (the workflow runs the same functions through its rules)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


def _synth_ct(args: argparse.Namespace) -> None:
    from cfbrain.synth.ct import SynthCTConfig, make_ct_cohort
    make_ct_cohort(Path(args.out), SynthCTConfig(n_patients=args.patients, seed=args.seed))
    print(f"synthetic CT cohort written to {args.out} (DICOM under dicom/, labels.tsv, truth/)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfbrain", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser("synth", help="generate embedded synthetic cohorts")
    kinds = synth.add_subparsers(dest="kind", required=True)
    ct = kinds.add_parser("ct", help="IST-3-like CT DICOM cohort from the MNI152 template")
    ct.add_argument("--out", required=True, help="output folder (gets dicom/, labels.tsv, truth/)")
    ct.add_argument("--patients", type=int, default=60)
    ct.add_argument("--seed", type=int, default=0)
    ct.set_defaults(run=_synth_ct)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    args.run(args)
