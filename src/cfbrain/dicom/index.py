"""Index a DICOM source tree from headers only: one row per series, one per file, nothing dropped.

The index is the only place where raw identifiers and source paths are read. It returns
three things: pseudonymised public tables (series and files), and a private manifest and
pseudonym map that stay outside ``results/``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cfbrain.convert.bone import DEFAULT_DESCRIPTION_WORDS, KernelTable, bone_description_word
from cfbrain.dicom.headers import IMAGE_CLASSES, FileHeader, UnusableFile, read_header
from cfbrain.dicom.private import create_private_file
from cfbrain.dicom.pseudonymise import PseudonymKey

log = logging.getLogger(__name__)

MODALITY_CLASSES = {"CT": ("ct", "enhanced_ct"), "MR": ("mr", "enhanced_mr")}


@dataclass(frozen=True)
class HeaderRules:
    """Header-level exclusion rules of thesis 003 §3.4.4 steps 1, 3 and 4 (configurable).

    A series is a bone reconstruction when its ImageType holds one of ``bone_image_types``, its
    kernel is a bone kernel in ``kernel_table``, or its description holds one of
    ``bone_description_words``; the convert stage adds a check on the image itself.
    """

    modality: str = "CT"
    axial_max_angle_deg: float = 45.0
    localiser_image_types: tuple[str, ...] = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW")
    bone_image_types: tuple[str, ...] = ("BONE",)
    kernel_table: KernelTable = field(default_factory=KernelTable.load)
    bone_description_words: tuple[str, ...] = DEFAULT_DESCRIPTION_WORDS

    @classmethod
    def from_config(cls, ingest: dict, kernel_table: str | Path) -> "HeaderRules":
        """From the ``ingest`` config section (lists become tuples; unrelated keys ignored) and the
        kernel table file."""
        return cls(modality=ingest.get("modality", "CT"), axial_max_angle_deg=float(ingest["axial_max_angle_deg"]),
                   localiser_image_types=tuple(t.upper() for t in ingest["localiser_image_types"]),
                   bone_image_types=tuple(t.upper() for t in ingest["bone_image_types"]),
                   kernel_table=KernelTable.load(kernel_table),
                   bone_description_words=tuple(w.upper() for w in ingest["bone_description_words"]))


@dataclass
class SourceIndex:
    """Result of indexing: public tables and the private manifest/map."""

    series: pd.DataFrame
    files: pd.DataFrame
    manifest: pd.DataFrame
    pseudonym_map: dict[str, dict[str, str]] = field(default_factory=dict)


def index_source(source_dir: Path, key: PseudonymKey, rules: HeaderRules | None = None) -> SourceIndex:
    """Read every file below ``source_dir`` and decide each series' header-level verdict.

    ``series`` has one row per (patient, study, series) with ``verdict`` in
    {candidate, excluded} and a ``reason``; ``files`` has one row per file with
    ``status`` in {used, unused, excluded}; files + series account for every input.
    ``rules`` default to :class:`HeaderRules` with the shipped kernel table.
    """
    rules = HeaderRules() if rules is None else rules
    source_dir = Path(source_dir)
    paths = sorted(p for p in source_dir.rglob("*") if p.is_file())
    log.info("indexing %d files under the source", len(paths))
    pmap: dict[str, dict[str, str]] = defaultdict(dict)
    pmap["source_dirs"][key.source_dir(source_dir)] = str(source_dir)
    file_rows, groups = [], defaultdict(list)
    seen_instances: dict[tuple[str, str], str] = {}
    for path in paths:
        rel = path.relative_to(source_dir).as_posix()
        file_id = key.file(rel)
        pmap["files"][file_id] = rel
        try:
            header = read_header(path)
        except UnusableFile as unusable:
            file_rows.append(_file_row(file_id, "", "excluded", unusable.reason, unusable.detail))
            continue
        instance = (header.series_uid, header.sop_uid)
        if instance in seen_instances:
            file_rows.append(_file_row(file_id, "", "excluded", "duplicate_instance",
                                       f"same SOPInstanceUID as {seen_instances[instance]}"))
            continue
        seen_instances[instance] = file_id
        groups[(header.patient_id, header.study_uid, header.series_uid)].append((rel, file_id, header))

    series_rows, manifest_rows = [], []
    for (patient_id, study_uid, series_uid), members in sorted(groups.items(), key=lambda kv: key.scan(*kv[0])):
        scan = key.scan(patient_id, study_uid, series_uid)
        pmap["patients"][key.patient(patient_id)] = patient_id
        pmap["studies"][key.study(study_uid)] = study_uid
        pmap["series"][key.series(series_uid)] = series_uid
        headers = [header for _, _, header in members]
        row, used = _series_verdict(scan, headers, rules)
        series_rows.append(row)
        for i, (_, file_id, _) in enumerate(members):
            status = "used" if i in used else "unused"
            reason = "" if status == "used" else ("non_axial_slice" if row["verdict"] == "candidate" else row["reason"])
            file_rows.append(_file_row(file_id, scan, status, reason, ""))
        for rank, i in enumerate(_slice_order(headers, used)):
            rel, file_id, _ = members[i]
            manifest_rows.append({"scan": scan, "rank": rank, "file": file_id, "path": str(source_dir / rel)})
    if len(series_rows) != len({r["scan"] for r in series_rows}):
        raise RuntimeError("pseudonym collision between two series; use a longer digest")
    return SourceIndex(series=pd.DataFrame(series_rows, columns=SERIES_COLUMNS),
                       files=pd.DataFrame(file_rows, columns=FILE_COLUMNS).sort_values("file", ignore_index=True),
                       manifest=pd.DataFrame(manifest_rows, columns=["scan", "rank", "file", "path"]),
                       pseudonym_map={k: dict(sorted(v.items())) for k, v in pmap.items()})


SERIES_COLUMNS = ["scan", "patient", "study", "series", "modality", "sop_class", "image_type", "kernel",
                  "kernel_class", "manufacturer", "transfer_syntax", "n_files", "n_axial", "n_sagittal", "n_coronal",
                  "n_oblique", "n_unknown_plane", "rows", "cols", "frames", "pixel_spacing_mm", "slice_thickness_mm",
                  "slice_gap_mm", "uneven_spacing", "gantry_tilt_deg", "age_years", "sex", "verdict",
                  "reason", "detail"]
FILE_COLUMNS = ["file", "scan", "status", "reason", "detail"]


def _file_row(file_id: str, scan: str, status: str, reason: str, detail: str) -> dict[str, str]:
    return {"file": file_id, "scan": scan, "status": status, "reason": reason, "detail": detail}


def _series_verdict(scan: str, headers: list[FileHeader], rules: HeaderRules) -> tuple[dict, set[int]]:
    """One index row for a series and the indices of the files conversion will use."""
    planes = [h.plane(rules.axial_max_angle_deg) for h in headers]
    axial = [h for h, p in zip(headers, planes) if p == "axial"]
    first = axial[0] if axial else headers[0]
    gaps = _slice_gaps([h for h in axial if h.position is not None])
    row = {
        "scan": scan, "patient": scan.split("_")[0], "study": scan.split("_")[1], "series": scan.split("_")[2],
        "modality": first.modality, "sop_class": first.sop_class, "image_type": "\\".join(first.image_type),
        "kernel": first.kernel, "kernel_class": rules.kernel_table.kernel_class(first.kernel, first.manufacturer),
        "manufacturer": first.manufacturer, "transfer_syntax": first.transfer_syntax,
        "n_files": len(headers), "n_axial": planes.count("axial"), "n_sagittal": planes.count("sagittal"),
        "n_coronal": planes.count("coronal"), "n_oblique": planes.count("oblique"), "n_unknown_plane": planes.count("unknown"),
        "rows": first.rows, "cols": first.cols, "frames": first.frames,
        "pixel_spacing_mm": "x".join(f"{v:.4g}" for v in first.pixel_spacing) if first.pixel_spacing else "",
        "slice_thickness_mm": first.slice_thickness, "slice_gap_mm": float(np.median(gaps)) if len(gaps) else None,
        "uneven_spacing": bool(len(gaps) and np.ptp(gaps) > 0.01 * max(np.median(gaps), 1e-6) + 1e-3),
        "gantry_tilt_deg": first.gantry_tilt, "age_years": None if first.age_years is None else round(first.age_years, 1),
        "sex": first.sex, "verdict": "candidate", "reason": "", "detail": "",
    }
    reason, detail = _header_exclusion(headers, planes, rules)
    if reason:
        row.update(verdict="excluded", reason=reason, detail=detail)
        return row, set()
    if len(axial) < len(headers):
        row["detail"] = f"kept the {len(axial)} axial of {len(headers)} slices"
    return row, {i for i, plane in enumerate(planes) if plane == "axial"}


def _header_exclusion(headers: list[FileHeader], planes: list[str], rules: HeaderRules) -> tuple[str, str]:
    """First applicable header-level exclusion (reason, detail), or ('', '') for a conversion candidate."""
    first = headers[0]
    if IMAGE_CLASSES[first.sop_class] not in MODALITY_CLASSES[rules.modality]:
        return "wrong_modality", f"{first.sop_class}, dataset modality {rules.modality}"
    missing = sorted({m for h in headers for m in h.missing})
    if missing:
        n = sum(bool(h.missing) for h in headers)
        return "missing_geometry", f"{', '.join(missing)} absent on {n} of {len(headers)} files"
    image_types = {t for h in headers for t in h.image_type}
    localiser = image_types & set(rules.localiser_image_types)
    if localiser:
        return "localiser", f"ImageType {'/'.join(sorted(localiser))}"
    bone_types = image_types & set(rules.bone_image_types)
    if bone_types:
        return "bone_kernel", f"ImageType {'/'.join(sorted(bone_types))}"
    kernel = rules.kernel_table.rule_for(first.kernel, first.manufacturer)
    if kernel is not None and kernel.kernel_class == "bone":
        return "bone_kernel", f"ConvolutionKernel {first.kernel} ({kernel.note})"
    word = bone_description_word(first.description, rules.bone_description_words)
    if word:
        return "bone_kernel", f"SeriesDescription word {word}"
    n_axial = planes.count("axial")
    if n_axial * 2 <= len(planes):
        majority = max(set(planes), key=planes.count)
        return "non_axial", f"{n_axial} of {len(planes)} slices axial; majority {majority}"
    return "", ""


def _slice_positions(headers: list[FileHeader]) -> np.ndarray:
    """Position of each slice along the series' slice normal, mm, shape (n,)."""
    if not headers:
        return np.zeros(0)
    normal = headers[0].slice_normal
    return np.array([float(np.dot(h.position, normal)) for h in headers])


def _slice_order(headers: list[FileHeader], used: set[int]) -> list[int]:
    """The ``used`` indices of ``headers`` sorted by position along the normal (then instance number)."""
    chosen = sorted(used)
    positions = dict(zip(chosen, _slice_positions([headers[i] for i in chosen])))
    return sorted(chosen, key=lambda i: (positions[i], headers[i].instance_number or 0))


def _slice_gaps(headers: list[FileHeader]) -> np.ndarray:
    """Gaps between consecutive slice positions, mm, shape (n-1,)."""
    return np.diff(np.sort(_slice_positions(headers))) if len(headers) > 1 else np.zeros(0)


def files_state(paths: list[Path]) -> str:
    """Hash of (path, size, mtime) of ``paths``: changes when a file is added, removed or modified,
    without reading it. Only this hash, never a path, leaves the private side."""
    digest = hashlib.sha256()
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def write_index(source_dir: Path, key: PseudonymKey, rules: HeaderRules, *, series_tsv: Path, files_tsv: Path,
                manifest_tsv: Path, pseudonym_map_json: Path) -> SourceIndex:
    """Index ``source_dir`` and write the public tables and the private manifest/map (mode 0600, folders 0700)."""
    index = index_source(source_dir, key, rules)
    for frame, path in ((index.series, series_tsv), (index.files, files_tsv)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, sep="\t", index=False)
    for path in (manifest_tsv, pseudonym_map_json):
        create_private_file(path)
    index.manifest.to_csv(manifest_tsv, sep="\t", index=False)
    Path(pseudonym_map_json).write_text(json.dumps(index.pseudonym_map, indent=1))
    log.info("%d series (%d candidates), %d files (%d excluded)", len(index.series),
             int((index.series.verdict == "candidate").sum()), len(index.files),
             int((index.files.status == "excluded").sum()))
    return index
