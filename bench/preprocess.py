"""Preprocessing benchmark: seconds per scan for convert + register + crop/resize, and the
registration's landmark error against the known pose of synthetic heads.

    python bench/preprocess.py [--scans 4] [--bad-pose 1] [--seed 0] [--out bench/out/preprocess]
                               [--template NAME_OR_PATH ...]

What it does, per scan, on one core (SimpleITK ``threads=1``; OpenMP, BLAS, ITK and torch
pinned to one thread before any import; dcm2niix is a single-threaded child process):

1. builds (not timed) ``--scans`` well-positioned synthetic head CTs of exactly 40 contiguous
   axial slices of 512 x 512 pixels (the slice thickness is chosen per head so the 40 slices
   cover skull base to vertex, about 3.5-4.5 mm; pixels 0.4-0.6 mm), plus ``--bad-pose``
   badly positioned heads (flipped 150-180 deg or pitched 60-90 deg), from the synthetic
   IST-3-like cohort generator (``cfbrain.synth.ct``, fixed ``--seed``);
2. convert: ``convert_series`` (dcm2niix) of the DICOM folder to NIfTI;
3. register: ``register_template_to_ct(backend="simpleitk", threads=1)`` once per
   ``--template``; the first one feeds step 4. By default both built-in MNI152 templates run
   (``nilearn:mni152``, 1 mm, and ``nilearn:mni152_2mm``), the one named in
   config/demo.yaml first; the TOTAL rows mark which is the workflow default;
4. preprocess: ``load_ct`` + ``registered_midline`` + ``preprocess_ct`` (skull crop, 11
   slices, pad/resize to 500 x 400, HU window) + ``save_tensor``, as the workflow's stage does
   (without the demo's lesion-mask resampling).

How to read the output (numbers, never pass/fail):

- "wall" is elapsed time; "CPU" is user + system time of this process and its children
  (core-seconds). Both runs are single-threaded, so seconds per scan = seconds per scan per
  core. On a shared machine wall > CPU (the load average is printed); CPU is the better
  estimate of a dedicated core. "120 s / x" is how many times faster than the thesis's
  ~2 minutes per 40-slice scan; the issue aims for >= 20x.
- The Snakemake workflow runs each stage as a job in a fresh interpreter; that start-up and
  import cost is measured once and printed separately (not in the per-stage numbers).
- Landmark error: the centre of the brain, (0, -18, 10) MNI mm (as in tests/test_register.py),
  and the 8 corners of a 60 mm cube around it, mapped by the true and by the recovered
  template -> CT transform; the distance in CT world mm, mean and max per scan and over
  scans. Compare it with the printed CT voxel size (in-plane pixel and slice spacing).
- The true transform, template world RAS mm -> CT world RAS mm (the world of the dcm2niix
  NIfTI), is ``diag(-1, -1, 1, 1) @ Pose.patient_from_template()``: the generator places the
  template head in DICOM patient LPS mm, ``patient = shift + R @ (scale * diag(-1, -1, 1) @
  mni)``, and NIfTI RAS = diag(-1, -1, 1) @ LPS. The "check" column verifies this on every
  scan: the distance between the generator's own brain mask centroid (truth/masks) and the
  MNI brain-mask centroid mapped by the true transform (restricted to the 40-slice slab);
  it should be a small fraction of a millimetre.

Outputs under ``--out`` (git-ignored): ``cohort/`` (DICOM + truth), ``work/<scan>/`` (NIfTI,
matrices, tensors), ``results.tsv`` (one row per scan and template) and ``summary.json``.
"""
from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                  "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
THESIS_SECONDS = 120.0
N_SLICES = 40
MATRIX = 512
TARGET_HW = (500, 400)
BUILTIN_TEMPLATES = ("nilearn:mni152", "nilearn:mni152_2mm")
BRAIN_CENTRE_MNI = np.array([0.0, -18.0, 10.0])
LANDMARKS_MNI = np.vstack([BRAIN_CENTRE_MNI] + [BRAIN_CENTRE_MNI + np.array([x, y, z])
                                                for x in (-30.0, 30.0) for y in (-30.0, 30.0) for z in (-30.0, 30.0)])
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class Clock:
    """Wall and CPU seconds (this process + waited-for children) of a ``with`` block."""

    @staticmethod
    def _cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def __enter__(self):
        self._wall, self._cpu0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = self._cpu() - self._cpu0
        return False


def apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:3, :3].T + affine[:3, 3]


def true_template_to_ct(pose) -> np.ndarray:
    """(4, 4) template (MNI RAS mm) -> CT world RAS mm of a synthetic series with ``pose``."""
    return RAS_FROM_LPS @ pose.patient_from_template()


def workflow_template() -> str | None:
    """The template of config/demo.yaml when it names a single one (the demo's), else None."""
    try:
        import yaml
        entries = yaml.safe_load((HERE.parent / "config" / "demo.yaml").read_text())["registration"]["templates"]
        return str(entries[0]["path"]) if len(entries) == 1 else None
    except (OSError, KeyError, TypeError, IndexError, ImportError, ValueError):
        return None


def default_templates() -> list[str]:
    """The workflow's default template first (it feeds preprocessing), then the other built-in one."""
    first = workflow_template()
    first = first if first in BUILTIN_TEMPLATES else BUILTIN_TEMPLATES[0]
    return [first] + [t for t in BUILTIN_TEMPLATES if t != first]


def template_label(name: str) -> str:
    return name.split(":", 1)[1] if name.startswith("nilearn:") else Path(name).name.split(".")[0]


# ------------------------------------------------------------------ synthetic scans
def build_scans(root: Path, n_good: int, n_bad: int, seed: int) -> list[dict]:
    """Write ``n_good`` + ``n_bad`` single-series studies of 40 x 512 x 512 axial slices under
    ``root/dicom/scanNN``; return one dict per scan (folder, kind, pose, geometry, truth mask).

    Uses the cohort generator's planning (patients, poses, sites, lesions, noise) and renderer;
    only the main stack is re-sliced to exactly ``N_SLICES`` slices covering the head.
    """
    from cfbrain.synth import anatomy
    from cfbrain.synth import ct as synth

    n = n_good + n_bad
    cfg = synth.SynthCTConfig(
        n_patients=n, seed=seed, followup_fraction=0.0, extra_series_probs={},
        main_kind_probs={"bad_pose": n_bad / n} if n_bad else {},
        matrix_probs={MATRIX: 1.0}, thickness_probs={4.0: 1.0})
    if root.exists():
        shutil.rmtree(root)
    (root / "truth" / "masks").mkdir(parents=True)
    model = anatomy.load_head_model(cfg.template_resolution_mm)
    scans = []
    for study in synth.plan_cohort(cfg):
        spec = synth.plan_series(cfg, study, model)[0]
        stack = spec.stacks[0]
        z = synth._head_points(model, spec.pose, skull_base_up=True)[:, 2]
        thickness = float(np.ceil((z.max() - z.min()) / N_SLICES * 10.0) / 10.0)
        middle = (z.max() + z.min()) / 2.0
        positions = np.repeat(stack.positions[:1], N_SLICES, axis=0)
        positions[:, 2] = np.round(middle + (np.arange(N_SLICES) - (N_SLICES - 1) / 2.0) * thickness, 4)
        stack = replace(stack, positions=positions, thickness_mm=np.full(N_SLICES, thickness))
        spec = replace(spec, stacks=(stack,))
        lesion = anatomy.lesion_map(model, study.lesion.blobs) if study.lesion else None
        name = f"scan{study.index:02d}"
        row = synth._write_series(root, cfg, study, spec, lesion, Path(name), {})
        scans.append({"scan": name, "kind": "bad_pose" if study.main_kind == "bad_pose" else "well_posed",
                      "dicom_dir": root / "dicom" / name, "pose": spec.pose,
                      "brain_mask": root / "truth" / "masks" / f"{row['series_uid']}_brain.nii.gz",
                      "pixel_mm": float(stack.spacing_mm), "slice_mm": thickness, "n_files": int(row["n_files"])})
    with open(root / "truth" / "scans.tsv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["scan", "kind", "n_slices", "pixel_mm", "slice_mm", "rot_x_deg", "rot_y_deg", "rot_z_deg",
                         "tx_mm", "ty_mm", "tz_mm", "scale"])
        for s in scans:
            writer.writerow([s["scan"], s["kind"], s["n_files"], s["pixel_mm"], s["slice_mm"], *s["pose"].rot_deg,
                             *s["pose"].shift_mm, s["pose"].scale])
    return scans


_MNI_BRAIN_POINTS = None


def truth_check_mm(brain_mask_path: Path, truth: np.ndarray) -> float:
    """Distance (mm) between the generator's brain-mask centroid in CT world RAS and the MNI
    brain-mask centroid mapped by ``truth``, both within the scan's slice slab."""
    global _MNI_BRAIN_POINTS
    import nibabel as nib
    if _MNI_BRAIN_POINTS is None:
        from nilearn.datasets import load_mni152_brain_mask
        mni = load_mni152_brain_mask(resolution=1)
        _MNI_BRAIN_POINTS = apply(mni.affine, np.argwhere(np.asarray(mni.dataobj) > 0).astype(np.float64))
    mask = nib.load(str(brain_mask_path))
    centroid_ct = apply(mask.affine, np.argwhere(np.asarray(mask.dataobj) > 0).mean(axis=0))
    mapped = apply(truth, _MNI_BRAIN_POINTS)
    k = apply(np.linalg.inv(mask.affine), mapped)[:, 2]
    inside = (k >= -0.5) & (k <= mask.shape[2] - 0.5)
    return float(np.linalg.norm(mapped[inside].mean(axis=0) - centroid_ct))


# ------------------------------------------------------------------ the stages
def run_scan(scan: dict, templates: dict[str, Path], work: Path) -> list[dict]:
    """Convert, register (each template), preprocess (with the first template's midline)."""
    from cfbrain.convert.dcm2niix import convert_series
    from cfbrain.preprocess import CTPreprocessConfig, UnusableScan, load_ct, preprocess_ct, save_tensor
    from cfbrain.preprocess.stage import registered_midline
    from cfbrain.register import RegistrationFailed, read_template_to_ct, register_template_to_ct

    out = work / scan["scan"]
    if out.exists():
        shutil.rmtree(out)
    truth = true_template_to_ct(scan["pose"])
    with Clock() as convert:
        ct_path = convert_series(scan["dicom_dir"], out / "nifti").nifti
    base = {"scan": scan["scan"], "kind": scan["kind"], "n_slices": scan["n_files"], "pixel_mm": scan["pixel_mm"],
            "slice_mm": scan["slice_mm"], "rot_deg": " ".join(f"{v:g}" for v in scan["pose"].rot_deg),
            "shift_mm": " ".join(f"{v:g}" for v in scan["pose"].shift_mm), "scale": scan["pose"].scale,
            "check_mm": truth_check_mm(scan["brain_mask"], truth),
            "convert_wall": convert.wall, "convert_cpu": convert.cpu}
    rows = []
    for label, template in templates.items():
        matrix = out / label / "template_to_ct.mat"
        row = dict(base, template=label, status="ok", detail="")
        try:
            with Clock() as register:
                result = register_template_to_ct(ct_path, template, matrix, out / label / "template_in_ct.nii.gz",
                                                 backend="simpleitk", threads=1)
        except RegistrationFailed as failure:
            row.update(status="failed", detail=str(failure), register_wall=register.wall, register_cpu=register.cpu,
                       iterations=None, mean_mm=float("nan"), max_mm=float("nan"))
        else:
            recovered = read_template_to_ct(matrix, template, ct_path)
            errors = np.linalg.norm(apply(recovered, LANDMARKS_MNI) - apply(truth, LANDMARKS_MNI), axis=1)
            row.update(register_wall=register.wall, register_cpu=register.cpu, iterations=result.iterations,
                       mean_mm=float(errors.mean()), max_mm=float(errors.max()))
        rows.append(row)

    first = rows[0]
    matrix = out / first["template"] / "template_to_ct.mat"
    try:
        with Clock() as prep:
            ct = load_ct(ct_path)
            midline = registered_midline(matrix, templates[first["template"]], ct_path, ct) \
                if matrix.exists() else None
            tensor = preprocess_ct(ct, CTPreprocessConfig(target_hw=TARGET_HW), midline_col=midline,
                                   midline_source="registration")
            save_tensor(out / "tensor.npz", tensor)
        prep_status = "ok" if midline is not None else "ok (centre midline: registration failed)"
    except UnusableScan as problem:
        prep_status = f"excluded: {problem}"
    for row in rows:
        row.update(preprocess_wall=prep.wall, preprocess_cpu=prep.cpu, preprocess_status=prep_status)
    return rows


def startup_seconds() -> float:
    """Wall seconds of one fresh interpreter importing the three stage modules (a Snakemake job's overhead)."""
    code = ("import cfbrain.convert.dcm2niix, cfbrain.register, cfbrain.preprocess, "
            "cfbrain.preprocess.stage, cfbrain.provenance")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
    return time.perf_counter() - started


# ------------------------------------------------------------------ report
def fmt_ratio(seconds: float) -> str:
    return f"{THESIS_SECONDS / seconds:8.1f}x" if seconds > 0 else "       -"


def report(rows: list[dict], templates: list[str], n_scans: int, seed: int, loads: tuple, startup: float,
           elapsed: float) -> dict:
    default = templates[0]
    good = [r for r in rows if r["kind"] == "well_posed"]
    bad = [r for r in rows if r["kind"] == "bad_pose"]
    good_first = [r for r in good if r["template"] == default]
    pixels = [r["pixel_mm"] for r in good_first]
    slices = [r["slice_mm"] for r in good_first]
    print(f"\npreprocess benchmark: {len(good_first)} well-posed + {len(bad) // len(templates)} badly posed "
          f"synthetic head CTs of {N_SLICES} x {MATRIX} x {MATRIX} (seed {seed})")
    print("single-threaded: 1 core per scan (SimpleITK threads=1; OpenMP/BLAS/ITK/torch 1 thread; dcm2niix 1 "
          f"process), so s/scan = s/scan/core; load average {loads[0]:.1f} at start, {loads[1]:.1f} at end, "
          f"{os.cpu_count()} CPUs")
    print(f"CT voxel (well-posed): in-plane {min(pixels):.3f}-{max(pixels):.3f} mm, "
          f"slices {min(slices):.1f}-{max(slices):.1f} mm")

    def stage(name, key, subset):
        wall = np.array([r[f"{key}_wall"] for r in subset])
        cpu = np.array([r[f"{key}_cpu"] for r in subset])
        return {"stage": name, "wall_per_scan": float(wall.mean()), "cpu_per_scan": float(cpu.mean()),
                "wall_total": float(wall.sum()), "cpu_total": float(cpu.sum()), "scans": len(subset)}

    stages = [stage("convert (dcm2niix)", "convert", good_first)]
    for label in templates:
        stages.append(stage(f"register ({label})", "register", [r for r in good if r["template"] == label]))
    preprocess = stage(f"preprocess (crop+resize {TARGET_HW[0]}x{TARGET_HW[1]})", "preprocess", good_first)
    stages.append(preprocess)
    by_name = {s["stage"]: s for s in stages}
    for label in templates:
        parts = [by_name["convert (dcm2niix)"], by_name[f"register ({label})"], preprocess]
        default_mark = " (workflow default)" if label == template_label(workflow_template() or "") else ""
        stages.append({"stage": f"TOTAL with {label}{default_mark}", **{k: float(sum(p[k] for p in parts)) for k in
                                           ("wall_per_scan", "cpu_per_scan", "wall_total", "cpu_total")},
                       "scans": len(good_first)})
    print(f"\nstage timings over the {len(good_first)} well-posed scans (mean per scan; CPU = core-seconds):")
    print(f"  {'stage':44s} {'wall s/scan/core':>16s} {'CPU s/scan/core':>15s} {'wall total':>10s} "
          f"{'120 s/wall':>10s} {'120 s/CPU':>10s}")
    for s in stages:
        print(f"  {s['stage']:44s} {s['wall_per_scan']:16.2f} {s['cpu_per_scan']:15.2f} {s['wall_total']:10.1f} "
              f"{fmt_ratio(s['wall_per_scan']):>10s} {fmt_ratio(s['cpu_per_scan']):>10s}")
    print(f"  not included: a fresh interpreter + stage imports, paid once per Snakemake job: {startup:.1f} s wall")

    centre = ", ".join(f"{v:g}" for v in BRAIN_CENTRE_MNI)
    print(f"\nregistration accuracy vs the known pose (SimpleITK; 9 landmarks: brain centre ({centre}) MNI mm"
          " + corners of a 60 mm cube), CT world mm:")
    print(f"  {'scan':7s} {'kind':10s} {'rot deg (x y z)':22s} {'scale':>6s} {'voxel mm':>12s} {'check':>6s} "
          f"{'template':18s} {'mean':>6s} {'max':>6s} {'iter':>5s} {'reg wall':>8s}  status")
    for r in rows:
        print(f"  {r['scan']:7s} {r['kind']:10s} {r['rot_deg']:22s} {r['scale']:6.3f} "
              f"{r['pixel_mm']:.2f}x{r['pixel_mm']:.2f}x{r['slice_mm']:.1f} {r['check_mm']:6.2f} {r['template']:18s} "
              f"{r['mean_mm']:6.2f} {r['max_mm']:6.2f} {r['iterations'] if r['iterations'] is not None else '-':>5} "
              f"{r['register_wall']:8.1f}  {r['status']} {r['detail']}".rstrip())
    accuracy = {}
    for group, subset in (("well_posed", good), ("bad_pose", bad)):
        for label in templates:
            chosen = [r for r in subset if r["template"] == label]
            if not chosen:
                continue
            ok = [r for r in chosen if r["status"] == "ok"]
            means = np.array([r["mean_mm"] for r in ok])
            maxes = np.array([r["max_mm"] for r in ok])
            pix, sl = np.mean([r["pixel_mm"] for r in chosen]), np.mean([r["slice_mm"] for r in chosen])
            entry = {"scans": len(chosen), "registered": len(ok),
                     "mean_mm": float(means.mean()) if ok else None, "max_mm": float(maxes.max()) if ok else None,
                     "mean_pixel_mm": float(pix), "mean_slice_mm": float(sl)}
            accuracy[f"{group}/{label}"] = entry
            if ok:
                print(f"  overall {group:10s} {label:18s}: mean {entry['mean_mm']:.2f} mm, max {entry['max_mm']:.2f} mm"
                      f" over {len(ok)}/{len(chosen)} registered; max / in-plane pixel {entry['max_mm'] / pix:.2f},"
                      f" max / slice spacing {entry['max_mm'] / sl:.2f}")
            else:
                print(f"  overall {group:10s} {label:18s}: 0/{len(chosen)} registered")
    print("  check = |generator brain centroid - MNI brain centroid mapped by the true transform| (mm), "
          "a test of the conventions, not of the registration")
    print("  registered = the backend reported success (a wrong fit on a bad pose is left to the workflow's "
          "registration QC)")
    print(f"\nwall time of the whole run (synthesis included): {elapsed:.0f} s")
    return {"stages": stages, "accuracy": accuracy, "startup_seconds": startup, "load_average": loads,
            "templates": templates, "scans": n_scans, "seed": seed, "thesis_seconds": THESIS_SECONDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=4, help="well-positioned scans (default 4)")
    parser.add_argument("--bad-pose", type=int, default=1, help="extra badly positioned scans, reported apart")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "preprocess")
    parser.add_argument("--template", nargs="+", default=default_templates(),
                        help="built-in name(s) or NIfTI path(s) in MNI space; the first feeds preprocessing "
                             "(default: the template of config/demo.yaml, then the other built-in one: "
                             f"{' '.join(default_templates())})")
    args = parser.parse_args()
    if args.scans < 1 or args.bad_pose < 0:
        parser.error("--scans must be >= 1 and --bad-pose >= 0")
    if shutil.which("dcm2niix") is None:
        sys.exit("dcm2niix is not on PATH: put the venv's bin directory on PATH (e.g. .venv/bin)")

    started = time.perf_counter()
    loads = [os.getloadavg()[0]]
    import torch
    torch.set_num_threads(1)
    from cfbrain.register import write_template

    args.out.mkdir(parents=True, exist_ok=True)
    with Clock() as synthesis:
        scans = build_scans(args.out / "cohort", args.scans, args.bad_pose, args.seed)
    print(f"built {len(scans)} synthetic scans in {synthesis.wall:.0f} s (not timed below)")
    templates = {template_label(t): write_template(t, args.out / "templates" / f"{template_label(t)}.nii.gz")
                 for t in args.template}
    rows = []
    for scan in scans:
        rows.extend(run_scan(scan, templates, args.out / "work"))
        done = rows[-len(templates):]
        print(f"  {scan['scan']} ({scan['kind']}): convert {done[0]['convert_wall']:.1f} s, register "
              + ", ".join(f"{r['template']} {r['register_wall']:.1f} s" for r in done)
              + f", preprocess {done[0]['preprocess_wall']:.1f} s", flush=True)
    startup = startup_seconds()
    loads.append(os.getloadavg()[0])
    summary = report(rows, list(templates), args.scans, args.seed, tuple(loads), startup,
                     time.perf_counter() - started)
    columns = list(rows[0])
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(args.out / "results.tsv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"results: {args.out / 'results.tsv'}, {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
