"""Deterministic synthetic IST-3-like cohort of head CT DICOM files.

``make_ct_cohort(out_dir, SynthCTConfig())`` writes

* ``dicom/<patient>/<study>/<series>/<file>.dcm``: a messy PACS-like export
  (identifying folder names, ~10% of studies with two series in one folder,
  file names not sorted by slice position);
* ``labels.tsv``: one row per study (lesion presence, side, territory, size, age);
* ``truth/series.tsv``: one row per series (kind, expected ingest verdict, geometry, pose);
* ``truth/masks/{series_uid}.nii.gz`` (+ ``_brain.nii.gz``): lesion and brain
  masks (uint8) on the series' axial slice grid, data [column, row, slice] in
  ascending slice position, RAS affine from the DICOM geometry; ``_slices.tsv``
  lists each mask slice's ImagePositionPatient (needed for uneven spacing).

Images are pseudo-CT (Hounsfield units) made from the MNI152 2009a template
(:mod:`cfbrain.synth.anatomy`), posed per study, resampled into each series'
slice grid, with scanner-like noise, kernels, pixel encodings and headers.
Every random draw comes from ``numpy`` generators seeded by
``(cfg.seed, purpose, indices)``, and DICOM UIDs from ``generate_uid`` with
seeded entropy, so reruns are byte-identical.

Coordinates: template space is MNI RAS mm, patient space is DICOM LPS mm
(+x = patient left, +y = posterior, +z = superior).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import multiprocessing
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from cfbrain.synth import anatomy
from cfbrain.synth.anatomy import BlobSpec, HeadModel, Pose, Region

EXPECTED_VERDICT = {
    "axial": "kept",
    "full_size": "kept",
    "mixed": "kept",
    "bad_pose": "kept",
    "tilt": "kept",
    "uneven": "kept",
    "bone": "bone",
    "localizer": "localiser",
    "localizer_blank": "localiser",
    "sagittal": "non_axial",
    "coronal": "non_axial",
    "split_base": "split_review",
    "split_vault": "split_review",
}
"""Series kind -> verdict the ingest stage should reach."""
KINDS = tuple(EXPECTED_VERDICT)
MASKED_KINDS = frozenset({"axial", "full_size", "mixed", "bad_pose", "tilt", "uneven"})
"""Kinds that get ground-truth lesion/brain masks (the brain axial candidate of a study)."""

HU_WM, HU_GM, HU_CSF, HU_SCALP, HU_AIR = 25.0, 38.0, 5.0, 30.0, -1000.0
HU_SKULL_DIPLOE, HU_SKULL_TABLE = 700.0, 1800.0
HU_MIN, HU_MAX = -1024.0, 3071.0
LESION_VOLUME_ML = {1: 3.0, 2: 12.0, 3: 35.0, 4: 80.0}
"""IST-3-like size class -> total lesion volume (ml), split over the blobs."""

AXIAL_SLICES = (11, 60)
SPLIT_MAX_SLICES = 24
LOCALIZER_MATRIX, LOCALIZER_FOV_MM = 256, 320.0
_AXIAL_DIRS = (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
_SAGITTAL_DIRS = (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0]), np.array([1.0, 0.0, 0.0]))
_CORONAL_DIRS = (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.0]))
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_UID_ROOT = "cfbrain-synth-ct"
_IMPLEMENTATION_UID = generate_uid(entropy_srcs=[_UID_ROOT, "implementation"])
_PRIVATE_CREATOR = "PACS EXPORT 2.1"
_FIRST_BASELINE = dt.date(2001, 1, 1)
_RECRUITMENT_DAYS = 3800


@dataclass(frozen=True)
class SynthCTConfig:
    """Cohort size, randomness and the distributions of series kinds and geometry.

    ``main_kind_probs`` give the fraction of studies whose brain series is of
    that kind instead of a plain ``axial`` one; ``extra_series_probs`` the
    fraction of studies with that additional series.  Fractions are realised
    as quotas, ``max(1, round(p * n_studies))`` randomly chosen studies, so
    every kind occurs even in a tiny cohort (one study always stays plain
    axial; with fewer studies than kinds the last kinds are dropped).

    Other fields: ``workers`` > 1 builds studies in forked processes (output is
    identical); ``followup_fraction`` of patients get a 24-48 h follow-up
    study; a baseline lesion is visible with ``baseline_lesion_prob``, then
    persists at follow-up (one size class larger with ``followup_growth_prob``),
    otherwise appears at follow-up with ``followup_new_lesion_prob``;
    ``matrix_probs`` is the matrix of ordinary series, full_size series use
    ``full_size_matrix`` (every ``large_matrix_every``-th one ``large_matrix``);
    ranges are (low, high) of uniform draws: HU noise std, lesion contrast
    (baseline in the lower, follow-up in the upper half), reconstruction FOV.
    """

    n_patients: int = 60
    seed: int = 0
    template_resolution_mm: int = 1
    workers: int = 1
    followup_fraction: float = 0.95
    baseline_lesion_prob: float = 0.5
    followup_new_lesion_prob: float = 0.4
    followup_growth_prob: float = 0.5
    main_kind_probs: dict[str, float] = field(
        default_factory=lambda: {
            "full_size": 0.05, "tilt": 0.10, "uneven": 0.06,
            "mixed": 0.05, "bad_pose": 0.05, "split": 0.06,
        }
    )
    extra_series_probs: dict[str, float] = field(
        default_factory=lambda: {
            "localizer": 0.6, "localizer_blank": 0.06, "bone": 0.2,
            "sagittal": 0.1, "coronal": 0.1,
        }
    )
    matrix_probs: dict[int, float] = field(default_factory=lambda: {192: 0.6, 256: 0.4})
    full_size_matrix: int = 512
    full_size_thickness_mm: float = 5.0
    large_matrix: int = 768
    large_matrix_every: int = 3
    thickness_probs: dict[float, float] = field(
        default_factory=lambda: {5.0: 0.7, 4.0: 0.1, 3.0: 0.1, 2.5: 0.1}
    )
    fov_mm: tuple[float, float] = (220.0, 300.0)
    max_rotation_deg: float = 6.0
    max_shift_mm: float = 15.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    soft_noise_hu: tuple[float, float] = (3.0, 6.0)
    bone_noise_hu: tuple[float, float] = (20.0, 40.0)
    lesion_contrast_hu: tuple[float, float] = (6.0, 15.0)
    shared_folder_prob: float = 0.1


def cohort_config(n_patients: int, seed: int, workers: int = 1,
                  lesion_contrast_hu: tuple[float, float] | list[float] | None = None) -> SynthCTConfig:
    """The config the CLI and the workflow build: the defaults, except the given size, seed, workers and, when
    given (not None or empty), the lesion contrast range (HU)."""
    contrast = {"lesion_contrast_hu": tuple(lesion_contrast_hu)} if lesion_contrast_hu else {}
    return SynthCTConfig(n_patients=n_patients, seed=seed, workers=workers, **contrast)


# --------------------------------------------------------------------------- sites


@dataclass(frozen=True)
class PixelEncoding:
    """How HU are stored: ``HU = stored + intercept`` (slope 1).

    ``padding`` is the stored value outside the reconstruction circle (written
    as PixelPaddingValue), or None when the scanner just stores HU -1024 there.
    """

    intercept: int
    signed: bool
    bits_stored: int
    padding: int | None

    @property
    def stored_range(self) -> tuple[int, int]:
        """Inclusive (min, max) of representable stored values."""
        if self.signed:
            return -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1
        return 0, 2**self.bits_stored - 1


OFFSET_SIGNED = PixelEncoding(intercept=-1024, signed=True, bits_stored=16, padding=-2000)
HU_SIGNED = PixelEncoding(intercept=0, signed=True, bits_stored=16, padding=-32768)
OFFSET_UNSIGNED_12 = PixelEncoding(intercept=-1024, signed=False, bits_stored=12, padding=None)
LOCALIZER_ENCODING = PixelEncoding(intercept=0, signed=False, bits_stored=12, padding=None)


@dataclass(frozen=True)
class Site:
    """A hospital + scanner: identifying strings, kernels, encoding and export style."""

    manufacturer: str
    model: str
    institution: str
    address: str
    station: str
    serial: str
    encoding: PixelEncoding
    soft_kernels: tuple[str, ...]
    bone_kernels: tuple[str, ...]
    sharp_kernel: str
    writes_slice_spacing: bool
    instances_top_down: bool
    patient_folder: str
    study_folder: str
    series_folder: str
    file_name: str


SITES = (
    Site("SIEMENS", "SOMATOM Definition AS", "ST MUNGO GENERAL HOSPITAL",
         "12 CASTLE WYND, GLASGOW G4 0XX", "CTSTM01", "64123", OFFSET_UNSIGNED_12,
         ("H30s", "H31s"), ("H70h",), "J70h", False, True,
         "{surname}_{given}_{pid}", "{date}", "SE{number}", "IM{index:05d}.dcm"),
    Site("GE MEDICAL SYSTEMS", "LightSpeed VCT", "NORTHFIELD ROYAL INFIRMARY",
         "1 INFIRMARY ROAD, NORTHFIELD NF2 4QQ", "NFRICT2", "LSVCT0457", OFFSET_SIGNED,
         ("STANDARD", "SOFT"), ("BONE", "BONEPLUS"), "EDGE", True, False,
         "{pid}_{surname}", "{date}_{accession}", "S{number:04d}", "{sop_uid}.dcm"),
    Site("TOSHIBA", "Aquilion", "KINGSBRIDGE COMMUNITY HOSPITAL",
         "HARBOUR LANE, KINGSBRIDGE KB7 1AA", "KCH_CT1", "TSB4C2219", HU_SIGNED,
         ("FC21", "FC26"), ("FC30",), "FC81", True, False,
         "{surname}^{given}", "{date}", "{number:03d}", "CT{index:06d}.dcm"),
    Site("Philips", "Brilliance 64", "ST BRIDE'S HOSPITAL",
         "7 ABBEY STREET, DUNMORE DM3 8RT", "STBCT64", "PB64-10293", OFFSET_UNSIGNED_12,
         ("UB", "UC"), ("YC",), "E", False, True,
         "{surname}_{given}_{pid}", "{date}_{accession}", "SE{number}", "IM{index:05d}.dcm"),
    Site("SIEMENS", "SOMATOM Emotion 16", "WESTLEIGH DISTRICT GENERAL HOSPITAL",
         "WESTLEIGH PARK, WESTLEIGH WL1 5HH", "WDGHCT", "30872", OFFSET_UNSIGNED_12,
         ("H30s",), ("H70h",), "J70h", False, False,
         "{pid}_{surname}", "{date}", "SE{number}", "{sop_uid}.dcm"),
    Site("GE MEDICAL SYSTEMS", "BrightSpeed", "ALDERMOOR UNIVERSITY HOSPITAL",
         "ALDERMOOR DRIVE, ALDERMOOR AM4 9JB", "AUHCT16", "BS16-3381", OFFSET_SIGNED,
         ("STANDARD",), ("BONE",), "EDGE", True, True,
         "{surname}_{given}_{pid}", "{date}", "S{number:04d}", "IM{index:05d}.dcm"),
)

SURNAMES = (
    "ANDERSON", "BAIRD", "CAMPBELL", "DOUGLAS", "ELLIOT", "FERGUSON", "GRAHAM", "HENDERSON",
    "IRVINE", "JOHNSTONE", "KERR", "LINDSAY", "MACDONALD", "MCLEAN", "MUNRO", "NICOLSON",
    "OGILVIE", "PATERSON", "QUINN", "ROBERTSON", "SINCLAIR", "THOMSON", "URQUHART", "WALLACE",
    "YOUNG", "ARMSTRONG", "BRUCE", "CRAIG", "DUNCAN", "FRASER", "GORDON", "HAMILTON",
    "KENNEDY", "MORRISON", "REID", "SCOTT", "STEWART", "TAYLOR", "WATSON", "WILSON",
)
GIVEN_NAMES = {
    "F": ("AGNES", "ELSPETH", "FIONA", "ISOBEL", "JEAN", "MARGARET", "MORAG", "NANCY",
          "ELIZABETH", "CATHERINE", "HELEN", "JANET", "MARY", "SHEILA", "ANNE", "BRENDA",
          "DOROTHY", "EILEEN", "IRENE", "JOAN"),
    "M": ("ALASDAIR", "ANGUS", "DOUGAL", "EWAN", "HAMISH", "IAIN", "JAMES", "KENNETH",
          "MALCOLM", "NEIL", "ROBERT", "THOMAS", "WILLIAM", "ARCHIBALD", "DAVID", "GEORGE",
          "HUGH", "JOHN", "PETER", "STUART"),
}
STAFF = ("MACLEOD^FIONA", "GRANT^EUAN", "BELL^MAIRI", "DRUMMOND^CALUM", "ROSS^KIRSTY")

SERIES_DESCRIPTIONS = {
    "axial": ("HEAD 5mm", "Routine Head", "BRAIN STD", "AX BRAIN"),
    "bone": ("HEAD BONE", "Bone Head", "BONE WINDOW"),
    "localizer": ("Topogram  0.6  T20s", "SCOUT", "Surview"),
    "localizer_blank": ("", "Monitoring", "PreMonitoring"),
    "sagittal": ("SAG MPR", "Sagittal"),
    "coronal": ("COR MPR", "Coronal"),
    "split_base": ("POST FOSSA", "Base Skull"),
    "split_vault": ("CEREBRUM", "Vault"),
}
"""SeriesDescription options; the brain candidates (tilt, uneven, ...) reuse 'axial'."""


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class PatientPlan:
    """Identity (raw PHI) and site of one patient."""

    index: int
    patient_id: str
    surname: str
    given_name: str
    sex: str
    birth_date: dt.date
    site: Site
    head_scale: float
    baseline_date: dt.date

    @property
    def patient_name(self) -> str:
        """DICOM PN value 'SURNAME^GIVEN'."""
        return f"{self.surname}^{self.given_name}"


@dataclass(frozen=True)
class LesionPlan:
    """Visible ischaemic lesion(s) of one study."""

    side: str
    territories: tuple[str, ...]
    size: int
    contrast_hu: float
    blobs: tuple[BlobSpec, ...]


@dataclass(frozen=True)
class StudyPlan:
    """Everything drawn at cohort level for one study."""

    index: int
    patient: PatientPlan
    timepoint: str
    date: dt.date
    time: str
    accession: str
    study_id: str
    pose: Pose
    lesion: LesionPlan | None
    main_kind: str
    extras: tuple[str, ...]
    shares_folder: bool
    main_matrix: int
    study_uid: str
    frame_uid: str

    @property
    def age(self) -> int:
        """Age in whole years on the study date."""
        birth, date = self.patient.birth_date, self.date
        return date.year - birth.year - ((date.month, date.day) < (birth.month, birth.day))


def _uid(seed: int, *parts: object) -> str:
    """Deterministic UID from the cohort seed and the parts (e.g. "series", 3, 2)."""
    return generate_uid(entropy_srcs=[_UID_ROOT, str(seed), *(str(p) for p in parts)])


def _rng(seed: int, purpose: str, *indices: int) -> np.random.Generator:
    """Independent generator for (cohort seed, purpose, indices)."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode()), *indices])


def _choice(rng: np.random.Generator, probs: dict, size: int | None = None):
    """Draw key(s) of ``probs`` with the given (normalised) probabilities."""
    keys = list(probs)
    weights = np.array([probs[k] for k in keys], float)
    picks = rng.choice(len(keys), size=size, p=weights / weights.sum())
    return keys[picks] if size is None else [keys[i] for i in picks]


def plan_cohort(cfg: SynthCTConfig) -> list[StudyPlan]:
    """Draw patients, studies, poses, lesions and series kinds (no images)."""
    patients = _plan_patients(cfg)
    n_followups = int(round(cfg.followup_fraction * cfg.n_patients))
    with_followup = set(_rng(cfg.seed, "followup").permutation(cfg.n_patients)[:n_followups])
    visits = [(p, tp) for p in patients for tp in ("baseline", "followup")
              if tp == "baseline" or p.index in with_followup]
    main_kinds = _assign_main_kinds(cfg, len(visits))
    extras = _assign_extras(cfg, main_kinds)
    shares = _assign_shared_folders(cfg, main_kinds, extras)
    matrices = _assign_main_matrices(cfg, main_kinds)
    lesions = {p.index: _plan_lesions(cfg, p.index) for p in patients}
    return [
        _plan_study(cfg, i, patient, timepoint, lesions[patient.index][timepoint],
                    main_kinds[i], extras[i], shares[i], matrices[i])
        for i, (patient, timepoint) in enumerate(visits)
    ]


def _plan_patients(cfg: SynthCTConfig) -> list[PatientPlan]:
    """Unique fake names and IDs, sex, birth date (IST-3-like ages), site, head size."""
    rng = _rng(cfg.seed, "patients")
    n = cfg.n_patients
    ids = rng.choice(90000, size=n, replace=False) + 10000
    sexes = rng.choice(["F", "M"], size=n)
    name_pairs = {
        sex: [(s, g) for s in SURNAMES for g in GIVEN_NAMES[sex]] for sex in GIVEN_NAMES
    }
    if max(np.sum(sexes == s) for s in GIVEN_NAMES) > len(name_pairs["F"]):
        raise ValueError(f"n_patients={n} exceeds the fake name list")
    name_order = {sex: rng.permutation(len(pairs)) for sex, pairs in name_pairs.items()}
    ages = (40 + 55 * rng.beta(3.2, 2.4, size=n)).astype(int)
    birthday_offsets = rng.integers(1, 365, size=n)
    site_index = rng.integers(len(SITES), size=n)
    scales = rng.uniform(*cfg.scale_range, size=n)
    used = {"F": 0, "M": 0}
    patients = []
    for i in range(n):
        sex = str(sexes[i])
        surname, given = name_pairs[sex][name_order[sex][used[sex]]]
        used[sex] += 1
        baseline = _baseline_date(cfg, i)
        birth = _years_before(baseline, int(ages[i])) - dt.timedelta(days=int(birthday_offsets[i]))
        patients.append(PatientPlan(
            index=i, patient_id=f"IST{ids[i]:05d}", surname=surname, given_name=given,
            sex=sex, birth_date=birth, site=SITES[site_index[i]], head_scale=float(scales[i]),
            baseline_date=baseline,
        ))
    return patients


def _baseline_date(cfg: SynthCTConfig, patient_index: int) -> dt.date:
    """Randomisation date within the IST-3 recruitment years."""
    days = _rng(cfg.seed, "baseline_date", patient_index).integers(_RECRUITMENT_DAYS)
    return _FIRST_BASELINE + dt.timedelta(days=int(days))


def _years_before(date: dt.date, years: int) -> dt.date:
    """Same calendar day ``years`` earlier (29 Feb -> 28 Feb)."""
    day = min(date.day, 28) if date.month == 2 else date.day
    return date.replace(year=date.year - years, day=day)


def _quota(prob: float, n: int) -> int:
    """Number of studies (out of n) that realise a fraction ``prob``: at least one."""
    return min(n, max(1, int(round(prob * n)))) if n else 0


def _pick(rng: np.random.Generator, candidates: list[int], prob: float) -> set[int]:
    """A random quota of the candidate study indices."""
    chosen = rng.permutation(len(candidates))[: _quota(prob, len(candidates))]
    return {candidates[i] for i in chosen}


def _assign_main_kinds(cfg: SynthCTConfig, n_studies: int) -> list[str]:
    """Brain-series kind per study: quotas of each rare kind, one study kept plain axial."""
    rng = _rng(cfg.seed, "main_kinds")
    kinds = ["axial"] * n_studies
    free = [int(i) for i in rng.permutation(n_studies)[1:]]
    for kind, prob in cfg.main_kind_probs.items():
        count = _quota(prob, n_studies)
        for study in free[:count]:
            kinds[study] = kind
        free = free[count:]
    return kinds


def _assign_extras(cfg: SynthCTConfig, main_kinds: list[str]) -> list[tuple[str, ...]]:
    """Extra (non-brain-candidate) series kinds per study, each kind by quota."""
    rng = _rng(cfg.seed, "extras")
    chosen = [[] for _ in main_kinds]
    for kind, prob in cfg.extra_series_probs.items():
        eligible = [i for i, m in enumerate(main_kinds) if not (kind == "bone" and m == "split")]
        for study in sorted(_pick(rng, eligible, prob)):
            chosen[study].append(kind)
    return [tuple(kinds) for kinds in chosen]


def _assign_shared_folders(
    cfg: SynthCTConfig, main_kinds: list[str], extras: list[tuple[str, ...]]
) -> list[bool]:
    """Whether the study's last series is exported into its previous series' folder."""
    rng = _rng(cfg.seed, "shared_folders")
    multi = [i for i, (m, e) in enumerate(zip(main_kinds, extras)) if m == "split" or e]
    shared = _pick(rng, multi, cfg.shared_folder_prob)
    return [i in shared for i in range(len(main_kinds))]


def _assign_main_matrices(cfg: SynthCTConfig, main_kinds: list[str]) -> list[int]:
    """Matrix of each study's brain series: full_size studies get 512 (every n-th: 768)."""
    rng = _rng(cfg.seed, "matrices")
    matrices = _choice(rng, cfg.matrix_probs, size=len(main_kinds))
    full_size = [i for i, kind in enumerate(main_kinds) if kind == "full_size"]
    for rank, study in enumerate(full_size, start=1):
        large = rank % cfg.large_matrix_every == 0
        matrices[study] = cfg.large_matrix if large else cfg.full_size_matrix
    return matrices


def _plan_lesions(cfg: SynthCTConfig, patient_index: int) -> dict[str, LesionPlan | None]:
    """Stroke of one patient: visible at baseline and/or follow-up (then maybe larger)."""
    rng = _rng(cfg.seed, "stroke", patient_index)
    side = _choice(rng, {"left": 0.45, "right": 0.45, "both": 0.1})
    first = _choice(rng, {"MCA": 0.7, "PCA": 0.18, "ACA": 0.12})
    affected = {first}
    if rng.random() < 0.15:
        affected.add(_choice(rng, {t: 1.0 for t in anatomy.TERRITORIES if t != first}))
    territories = tuple(t for t in anatomy.TERRITORIES if t in affected)
    size = _choice(rng, {1: 0.35, 2: 0.3, 3: 0.2, 4: 0.15})
    visible_at_baseline = rng.random() < cfg.baseline_lesion_prob
    new_at_followup = rng.random() < cfg.followup_new_lesion_prob
    grows = rng.random() < cfg.followup_growth_prob
    low, high = cfg.lesion_contrast_hu
    middle = (low + high) / 2
    contrast = {"baseline": -rng.uniform(low, middle), "followup": -rng.uniform(middle, high)}
    hemispheres = anatomy.HEMISPHERES if side == "both" else (side,)

    def lesion(timepoint: str, lesion_size: int) -> LesionPlan:
        slots = [(h, t) for h in hemispheres for t in territories]
        volume = LESION_VOLUME_ML[lesion_size] / len(slots)
        blobs = tuple(
            BlobSpec(t, h, volume, (cfg.seed, patient_index, k)) for k, (h, t) in enumerate(slots)
        )
        return LesionPlan(side, territories, lesion_size, contrast[timepoint], blobs)

    followup_size = min(4, size + 1) if grows and visible_at_baseline else size
    return {
        "baseline": lesion("baseline", size) if visible_at_baseline else None,
        "followup": lesion("followup", followup_size)
        if visible_at_baseline or new_at_followup else None,
    }


def _plan_study(
    cfg: SynthCTConfig, index: int, patient: PatientPlan, timepoint: str,
    lesion: LesionPlan | None, main_kind: str,
    extras: tuple[str, ...], shares_folder: bool, main_matrix: int,
) -> StudyPlan:
    """Date/time, accession and head pose of one study."""
    rng = _rng(cfg.seed, "study", index)
    days_after = 0 if timepoint == "baseline" else int(rng.integers(1, 3))
    seconds = int(rng.integers(24 * 3600))
    rotation = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg, 3)
    shift = rng.uniform(-cfg.max_shift_mm, cfg.max_shift_mm, 3)
    pose = Pose(
        rot_deg=tuple(round(float(v), 3) for v in rotation),
        shift_mm=tuple(round(float(v), 3) for v in shift),
        scale=round(patient.head_scale, 4),
    )
    return StudyPlan(
        index=index, patient=patient, timepoint=timepoint,
        date=patient.baseline_date + dt.timedelta(days=days_after),
        time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        accession=f"A{rng.integers(10**7, 10**8)}", study_id=str(rng.integers(1000, 99999)),
        pose=pose, lesion=lesion, main_kind=main_kind, extras=extras,
        shares_folder=shares_folder, main_matrix=main_matrix,
        study_uid=_uid(cfg.seed, "study", index), frame_uid=_uid(cfg.seed, "frame", index),
    )


def _bad_pose(pose: Pose, rng: np.random.Generator) -> Pose:
    """A head flipped 150-180 deg about one axis, or pitched 60-90 deg."""
    axis, low, high = [(0, 150, 180), (1, 150, 180), (2, 150, 180), (0, 60, 90)][rng.integers(4)]
    rotation = list(pose.rot_deg)
    rotation[axis] = float(rng.choice([-1, 1]) * rng.uniform(low, high))
    return replace(pose, rot_deg=tuple(round(r, 3) for r in rotation))


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Stack:
    """Slices sharing one in-plane grid, in ascending position order.

    Attributes:
        positions: (K, 3) ImagePositionPatient, LPS mm of the first pixel centre.
        row_dir, col_dir: (3,) unit vectors of increasing column / row index
            (the two ImageOrientationPatient triplets).
        spacing_mm: square pixel size (mm).
        rows, cols: matrix size.
        thickness_mm: (K,) SliceThickness per slice.
        tilt_deg: GantryDetectorTilt (0 unless tilted).
        circular: True for acquired axial images (padding outside the FOV circle).
    """

    positions: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    spacing_mm: float
    rows: int
    cols: int
    thickness_mm: np.ndarray
    tilt_deg: float = 0.0
    circular: bool = True

    @property
    def n_slices(self) -> int:
        return len(self.positions)

    @property
    def orientation(self) -> np.ndarray:
        """(6,) ImageOrientationPatient."""
        return np.concatenate([self.row_dir, self.col_dir])

    def pixel_offsets_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(R, C) row/column offsets (mm) of pixel centres from the image centre."""
        r = (np.arange(self.rows) - (self.rows - 1) / 2) * self.spacing_mm
        c = (np.arange(self.cols) - (self.cols - 1) / 2) * self.spacing_mm
        return np.broadcast_arrays(r[:, None], c[None, :])


def _make_stack(
    centres: np.ndarray, dirs: tuple[np.ndarray, np.ndarray], spacing_mm: float, matrix: int,
    thickness_mm: np.ndarray, tilt_deg: float = 0.0, circular: bool = True,
) -> Stack:
    """Stack from slice centres (K, 3) LPS mm; header values are rounded as written."""
    row_dir, col_dir = (np.round(d, 6) for d in dirs)
    spacing_mm = round(spacing_mm, 6)
    half = (matrix - 1) / 2 * spacing_mm
    positions = np.round(centres - half * row_dir - half * col_dir, 4)
    return Stack(positions, row_dir, col_dir, spacing_mm, matrix, matrix,
                 np.asarray(thickness_mm, float), tilt_deg, circular)


@dataclass(frozen=True)
class Frame:
    """In-plane frame fitted to a head: slice positions s along ``step_dir``.

    Slice centre k is ``origin + s_k * step_dir``; a point p lies on the
    slice plane of s = normal.p / normal.step_dir.
    """

    row_dir: np.ndarray
    col_dir: np.ndarray
    step_dir: np.ndarray
    origin: np.ndarray
    s_min: float
    s_max: float
    radius_mm: float

    def centres(self, s: np.ndarray) -> np.ndarray:
        """(K, 3) slice centres for positions s (K,)."""
        return self.origin + np.asarray(s)[:, None] * self.step_dir


def _fit_frame(points: np.ndarray, row_dir, col_dir, step_dir) -> Frame:
    """Centre an in-plane frame on head points (N, 3 LPS mm) and measure their extent."""
    normal = np.cross(row_dir, col_dir)
    s = points @ normal / (normal @ step_dir)
    in_plane = points - s[:, None] * step_dir
    u, v = in_plane @ row_dir, in_plane @ col_dir
    u0, v0 = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    radius = float(np.hypot(u - u0, v - v0).max())
    return Frame(row_dir, col_dir, step_dir, u0 * row_dir + v0 * col_dir,
                 float(s.min()), float(s.max()), radius)


def _centred_positions(frame: Frame, step_mm: float, limits: tuple[int, int]) -> np.ndarray:
    """Slice positions (K,) covering [s_min, s_max], K clipped to limits and centred."""
    count = int(np.ceil((frame.s_max - frame.s_min) / step_mm))
    count = int(np.clip(count, *limits))
    middle = (frame.s_min + frame.s_max) / 2
    return middle + (np.arange(count) - (count - 1) / 2) * step_mm


def _fov_spacing(frame: Frame, fov_mm: float, matrix: int) -> float:
    """Pixel size so that the FOV circle holds the head (at least ``fov_mm`` wide)."""
    return max(fov_mm, 2 * frame.radius_mm + 8.0) / matrix


def _head_points(model: HeadModel, pose: Pose, skull_base_up: bool) -> np.ndarray:
    """(N, 3) patient LPS mm of head lattice points (optionally only above the skull base)."""
    points = model.head_points_mm
    if skull_base_up:
        points = points[points[:, 2] >= anatomy.SKULL_BASE_Z_MM]
    matrix = pose.patient_from_template()
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _tilted_dirs(tilt_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axial row/column directions tilted about x, and the table (step) direction +z."""
    angle = np.deg2rad(tilt_deg)
    return (np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(angle), -np.sin(angle)]),
            np.array([0.0, 0.0, 1.0]))


def _axial_stack(points, thickness, matrix, fov_mm, tilt_deg=0.0) -> Stack:
    """Contiguous axial (optionally gantry-tilted) slices covering the head points."""
    row_dir, col_dir, step_dir = _tilted_dirs(tilt_deg)
    frame = _fit_frame(points, row_dir, col_dir, step_dir)
    table_step = thickness / np.cos(np.deg2rad(tilt_deg))
    s = _centred_positions(frame, table_step, AXIAL_SLICES)
    return _make_stack(frame.centres(s), (row_dir, col_dir), _fov_spacing(frame, fov_mm, matrix),
                       matrix, np.full(len(s), thickness), tilt_deg=tilt_deg)


def _uneven_stack(points, matrix, fov_mm, n_fine: int) -> Stack:
    """2.5 mm slices through the skull base, then 5 mm slices to the vertex."""
    frame = _fit_frame(points, *_AXIAL_DIRS)
    fine = frame.s_min + 1.25 + 2.5 * np.arange(n_fine)
    fine_top = frame.s_min + 2.5 * n_fine
    n_coarse = int(np.ceil((frame.s_max - fine_top) / 5.0))
    n_coarse = min(n_coarse, AXIAL_SLICES[1] - n_fine)
    coarse = fine_top + 2.5 + 5.0 * np.arange(n_coarse)
    thickness = np.concatenate([np.full(n_fine, 2.5), np.full(n_coarse, 5.0)])
    return _make_stack(frame.centres(np.concatenate([fine, coarse])), _AXIAL_DIRS[:2],
                       _fov_spacing(frame, fov_mm, matrix), matrix, thickness)


def _split_stacks(points, matrix, fov_mm, base: tuple[int, float], vault_thickness: float):
    """Skull-base stack (``base`` = slice count, thickness) and vault stack up to the vertex.

    Both stay below 25 slices (the vault is cut at 24 if 5 mm slices cannot reach the vertex).
    """
    frame = _fit_frame(points, *_AXIAL_DIRS)
    spacing = _fov_spacing(frame, fov_mm, matrix)
    base_slices, base_thickness = base
    base_s = frame.s_min + base_thickness * (np.arange(base_slices) + 0.5)
    base_top = frame.s_min + base_thickness * base_slices
    n_vault = int(np.clip(np.ceil((frame.s_max - base_top) / vault_thickness), 8, SPLIT_MAX_SLICES))
    vault_s = base_top + vault_thickness * (np.arange(n_vault) + 0.5)
    return (
        _make_stack(frame.centres(base_s), _AXIAL_DIRS[:2], spacing, matrix,
                    np.full(base_slices, base_thickness)),
        _make_stack(frame.centres(vault_s), _AXIAL_DIRS[:2], spacing, matrix,
                    np.full(n_vault, vault_thickness)),
    )


def _reformat_stack(points, dirs, thickness, matrix) -> Stack:
    """Sagittal or coronal reformat (rectangular, no FOV circle) covering the head."""
    frame = _fit_frame(points, *dirs)
    s = _centred_positions(frame, thickness, AXIAL_SLICES)
    return _make_stack(frame.centres(s), dirs[:2], _fov_spacing(frame, 0.0, matrix), matrix,
                       np.full(len(s), thickness), circular=False)


def _mixed_sagittal_stack(axial: Stack, offsets_mm: np.ndarray) -> Stack:
    """1-2 sagittal slices through the middle of an axial stack (same matrix/spacing)."""
    half = (axial.rows - 1) / 2 * axial.spacing_mm
    middle = axial.positions.mean(axis=0) + half * (axial.row_dir + axial.col_dir)
    centres = middle + offsets_mm[:, None] * _SAGITTAL_DIRS[2]
    return _make_stack(centres, _SAGITTAL_DIRS[:2], axial.spacing_mm, axial.rows,
                       axial.thickness_mm[: len(offsets_mm)], circular=False)


def _localizer_stack(points, dirs) -> Stack:
    """One projection image plane through the head centre (lateral or AP)."""
    frame = _fit_frame(points, *dirs)
    centre = frame.centres(np.array([(frame.s_min + frame.s_max) / 2]))
    return _make_stack(centre, dirs[:2], LOCALIZER_FOV_MM / LOCALIZER_MATRIX, LOCALIZER_MATRIX,
                       np.zeros(1), circular=False)


# --------------------------------------------------------------------------- series plan


@dataclass(frozen=True)
class SeriesSpec:
    """One DICOM series to render and write.

    ``stacks[0]`` holds the main slices; a mixed series has a second stack of
    sagittal slices.  ``image_type`` None means the tag is absent.
    """

    kind: str
    number: int
    description: str
    image_type: tuple[str, ...] | None
    kernel: str
    pose: Pose
    stacks: tuple[Stack, ...]
    noise_hu: float
    sharpen: bool
    window: tuple[int, int]
    projection: bool = False


def plan_series(cfg: SynthCTConfig, study: StudyPlan, model: HeadModel) -> list[SeriesSpec]:
    """Series of one study in SeriesNumber order: localisers, brain series, bone, reformats."""
    rng = _rng(cfg.seed, "series", study.index)
    site = study.patient.site
    pose = _bad_pose(study.pose, rng) if study.main_kind == "bad_pose" else study.pose
    points = _head_points(model, pose, skull_base_up=study.main_kind != "bad_pose")
    fov = float(rng.uniform(*cfg.fov_mm))
    thickness = float(_choice(rng, cfg.thickness_probs))
    if study.main_kind == "full_size":
        thickness = cfg.full_size_thickness_mm
    soft_kernel = str(rng.choice(site.soft_kernels))

    def soft(kind, stacks, description_kind="axial"):
        return dict(kind=kind, description=str(rng.choice(SERIES_DESCRIPTIONS[description_kind])),
                    image_type=("ORIGINAL", "PRIMARY", "AXIAL"), kernel=soft_kernel, pose=pose,
                    stacks=stacks, noise_hu=float(rng.uniform(*cfg.soft_noise_hu)),
                    sharpen=False, window=(40, 80))

    main = _main_series(cfg, study, rng, points, fov, thickness, soft)
    specs = []
    if "localizer" in study.extras:
        specs.append(_localizer_series(rng, model, pose))
    if "localizer_blank" in study.extras:
        specs.append(_blank_localizer_series(cfg, rng, points, fov, soft))
    specs.extend(main)
    if "bone" in study.extras:
        specs.append(_bone_series(cfg, rng, site, main[0]))
    for kind, dirs in (("sagittal", _SAGITTAL_DIRS), ("coronal", _CORONAL_DIRS)):
        if kind in study.extras:
            matrix = int(_choice(rng, cfg.matrix_probs))
            stack = _reformat_stack(points, dirs, float(rng.choice([3.0, 4.0, 5.0])), matrix)
            specs.append(dict(soft(kind, (stack,), kind), image_type=(
                "DERIVED", "SECONDARY", str(rng.choice(["MPR", "REFORMATTED"])))))
    return [SeriesSpec(number=n, **spec) for n, spec in enumerate(specs, start=1)]


def _main_series(cfg, study, rng, points, fov, thickness, soft) -> list[dict]:
    """The study's brain-containing series (two short ones for a split study)."""
    matrix = study.main_matrix
    kind = study.main_kind
    if kind == "split":
        base_protocol = (int(rng.integers(8, 15)), float(rng.choice([2.0, 2.5, 3.0])))
        base, vault = _split_stacks(points, matrix, fov, base_protocol,
                                    float(rng.choice([5.0, 8.0, 10.0])))
        return [soft("split_base", (base,), "split_base"),
                soft("split_vault", (vault,), "split_vault")]
    if kind == "uneven":
        return [soft(kind, (_uneven_stack(points, matrix, fov, int(rng.integers(6, 11))),))]
    tilt = round(float(rng.uniform(10, 25)), 2) if kind == "tilt" else 0.0
    axial = _axial_stack(points, thickness, matrix, fov, tilt)
    if kind == "mixed":
        offsets = rng.uniform(-8, 8, size=int(rng.integers(1, 3))).round(1)
        return [soft(kind, (axial, _mixed_sagittal_stack(axial, offsets)))]
    return [soft(kind, (axial,))]


def _localizer_series(rng, model: HeadModel, pose: Pose) -> dict:
    """Lateral (and sometimes AP) projection scout, ImageType ORIGINAL\\PRIMARY\\LOCALIZER."""
    points = _head_points(model, pose, skull_base_up=False)
    planes = [_SAGITTAL_DIRS, _CORONAL_DIRS][: int(rng.integers(1, 3))]
    return dict(kind="localizer", description=str(rng.choice(SERIES_DESCRIPTIONS["localizer"])),
                image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), kernel="T20s", pose=pose,
                stacks=tuple(_localizer_stack(points, dirs) for dirs in planes),
                noise_hu=8.0, sharpen=False, window=(2048, 4096), projection=True)


def _blank_localizer_series(cfg, rng, points, fov, soft) -> dict:
    """1-2 axial monitoring slices with no (or an empty) ImageType."""
    matrix = int(_choice(rng, cfg.matrix_probs))
    stack = _axial_stack(points, 10.0, matrix, fov)
    keep = int(rng.integers(1, 3))
    middle = stack.n_slices // 2
    stack = replace(stack, positions=stack.positions[middle: middle + keep],
                    thickness_mm=stack.thickness_mm[middle: middle + keep])
    image_type = None if rng.random() < 0.5 else ()
    return dict(soft("localizer_blank", (stack,), "localizer_blank"), image_type=image_type)


def _bone_series(cfg, rng, site: Site, main: dict) -> dict:
    """Bone-kernel copy of the brain series geometry (kernel name or ImageType says BONE)."""
    by_kernel = rng.random() < 0.5
    return dict(
        main, kind="bone", description=str(rng.choice(SERIES_DESCRIPTIONS["bone"])),
        image_type=("ORIGINAL", "PRIMARY", "AXIAL") if by_kernel
        else ("ORIGINAL", "PRIMARY", "AXIAL", "BONE"),
        kernel=str(rng.choice(site.bone_kernels)) if by_kernel else site.sharp_kernel,
        stacks=main["stacks"][:1], noise_hu=float(rng.uniform(*cfg.bone_noise_hu)),
        sharpen=True, window=(500, 2000),
    )


# --------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=2)
def hu_volume(model: HeadModel) -> np.ndarray:
    """(X, Y, Z) float32 pseudo-CT (HU) of the template head.

    Brain: partial-volume mix of WM 25, GM 38, CSF 5; CSF shell 5; skull 700
    (diploe) to 1800 (inner/outer table); scalp 30; air -1000.
    """
    csf = np.clip(1.0 - model.gm - model.wm, 0.0, 1.0)
    brain_hu = HU_CSF * csf + HU_GM * model.gm + HU_WM * model.wm
    skull_hu = HU_SKULL_DIPLOE + (HU_SKULL_TABLE - HU_SKULL_DIPLOE) * (
        2.0 * model.skull_depth - 1.0
    ) ** 2
    labels = model.labels
    hu = np.select(
        [model.brain, labels == anatomy.TISSUE_CSF, labels == anatomy.TISSUE_SKULL,
         labels == anatomy.TISSUE_SCALP],
        [brain_hu, HU_CSF, skull_hu, HU_SCALP],
        HU_AIR,
    )
    return np.asfortranarray(hu, dtype=np.float32)


@functools.lru_cache(maxsize=2)
def _brain_fraction(model: HeadModel) -> np.ndarray:
    """(X, Y, Z) float32 brain mask for linear resampling."""
    return np.asfortranarray(model.brain, dtype=np.float32)


@functools.lru_cache(maxsize=2)
def _attenuation_2x(model: HeadModel) -> np.ndarray:
    """Water-relative attenuation (HU + 1000) / 1000 on every second voxel."""
    return np.asfortranarray(np.maximum(hu_volume(model)[::2, ::2, ::2] - HU_AIR, 0.0) / 1000.0)


def _slice_coords(stack: Stack, voxel_from_patient: np.ndarray) -> Iterator[np.ndarray]:
    """Yield per slice the (3, R, C) float32 voxel coordinates of its pixel centres."""
    linear, shift = voxel_from_patient[:3, :3], voxel_from_patient[:3, 3]
    per_col = (linear @ stack.row_dir * stack.spacing_mm).astype(np.float32)
    per_row = (linear @ stack.col_dir * stack.spacing_mm).astype(np.float32)
    col_steps = per_col[:, None, None] * np.arange(stack.cols, dtype=np.float32)[None, None, :]
    row_steps = per_row[:, None, None] * np.arange(stack.rows, dtype=np.float32)[None, :, None]
    in_plane = row_steps + col_steps
    for position in stack.positions:
        yield in_plane + (linear @ position + shift).astype(np.float32)[:, None, None]


def sample_stack(
    volume: np.ndarray, voxel_from_patient: np.ndarray, stack: Stack, outside: float,
    offset: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Linearly resample a template-grid volume onto a stack: (K, R, C) float32.

    ``volume`` may be a box of the template grid starting at voxel ``offset``;
    slices that miss the box are filled with ``outside`` without resampling.
    Axial slices run along template x, so the volume is read as a C-ordered
    (Z, Y, X) view (no copy for Fortran-ordered volumes) for cache locality.
    """
    shifted = voxel_from_patient.copy()
    shifted[:3, 3] -= offset
    volume_zyx = np.asfortranarray(volume).T
    out = np.full((stack.n_slices, stack.rows, stack.cols), outside, np.float32)
    upper = np.array(volume.shape) - 1
    for k, coords in enumerate(_slice_coords(stack, shifted)):
        corners = coords[:, [0, 0, -1, -1], [0, -1, 0, -1]]
        if np.any(corners.max(axis=1) < 0) or np.any(corners.min(axis=1) > upper):
            continue
        ndimage.map_coordinates(volume_zyx, coords[::-1], output=out[k], order=1,
                                cval=outside, prefilter=False)
    return out


def _project_stack(model: HeadModel, spec: SeriesSpec, stack: Stack, rng) -> np.ndarray:
    """Projection radiograph-like image (1, R, C) in 0..4095 along the slice normal."""
    scale_2x = np.diag([0.5, 0.5, 0.5, 1.0])
    voxel_from_patient = scale_2x @ anatomy.voxel_from_patient(model, spec.pose)
    normal = np.cross(stack.row_dir, stack.col_dir)
    step_mm = 4.0
    path = np.zeros((stack.rows, stack.cols), np.float32)
    attenuation = _attenuation_2x(model)
    for offset in np.arange(-140.0, 140.0, step_mm):
        ray = replace(stack, positions=stack.positions + offset * normal)
        path += sample_stack(attenuation, voxel_from_patient, ray, 0.0)[0] * step_mm
    image = 4095.0 * (1.0 - np.exp(-path / 150.0)) + rng.normal(0, spec.noise_hu, path.shape)
    return np.clip(image, 0, 4095)[None]


def _correlated_noise(shape: tuple, sigma: float, corr_px: float, rng) -> np.ndarray:
    """(K, R, C) float32 Gaussian noise with in-plane correlation and std ``sigma``."""
    white = rng.standard_normal(shape, dtype=np.float32)
    return ndimage.gaussian_filter(white, (0, corr_px, corr_px)) * (sigma / _filter_gain(corr_px))


@functools.lru_cache(maxsize=8)
def _filter_gain(corr_px: float) -> float:
    """Std of unit white noise after a 2D Gaussian filter of ``corr_px`` pixels."""
    impulse = np.zeros((41, 41))
    impulse[20, 20] = 1.0
    return float(np.sqrt((ndimage.gaussian_filter(impulse, corr_px) ** 2).sum()))


def _outside_circle(stack: Stack) -> np.ndarray:
    """(R, C) bool: pixel centres outside the inscribed reconstruction circle."""
    row, col = stack.pixel_offsets_mm()
    return np.hypot(row, col) > stack.rows * stack.spacing_mm / 2


def _render_hu(spec: SeriesSpec, stack: Stack, model: HeadModel, lesion: Region | None,
               contrast_hu: float, rng) -> tuple[np.ndarray, np.ndarray | None]:
    """HU image (K, R, C) of a stack, plus the resampled soft lesion map (or None)."""
    voxel_from_patient = anatomy.voxel_from_patient(model, spec.pose)
    hu = sample_stack(hu_volume(model), voxel_from_patient, stack, HU_AIR)
    lesion_frac = None
    if lesion is not None:
        lesion_frac = sample_stack(lesion.values, voxel_from_patient, stack, 0.0, lesion.offset)
        hu += contrast_hu * lesion_frac
    if spec.sharpen:
        hu += 1.5 * (hu - ndimage.gaussian_filter(hu, (0, 1.0, 1.0)))
    hu += _correlated_noise(hu.shape, spec.noise_hu, 0.5 if spec.sharpen else 0.8, rng)
    return hu, lesion_frac


def encode_pixels(
    hu: np.ndarray, outside: np.ndarray | None, encoding: PixelEncoding
) -> np.ndarray:
    """Stored pixel values (K, R, C) int16/uint16 for HU; padding where ``outside`` (R, C)."""
    low, high = encoding.stored_range
    stored = np.clip(np.rint(np.clip(hu, HU_MIN, HU_MAX)) - encoding.intercept, low, high)
    if outside is not None:
        stored[:, outside] = low if encoding.padding is None else encoding.padding
    return stored.astype("<i2" if encoding.signed else "<u2")


# --------------------------------------------------------------------------- DICOM


def _ds(value: float) -> str:
    """Decimal-string formatting (<= 16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _series_time(study: StudyPlan, number: int, seconds: int = 0) -> str:
    """HHMMSS of a series start (+ seconds), counting from the study time."""
    start = dt.datetime.strptime(study.time, "%H%M%S") + dt.timedelta(
        seconds=60 * number + seconds)
    return start.strftime("%H%M%S")


def _base_dataset(
    study: StudyPlan, spec: SeriesSpec, series_uid: str, sop_uid: str
) -> FileDataset:
    """Patient, study, series and equipment modules shared by all files of a series."""
    patient, site = study.patient, study.patient.site
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PACSEXPORT21"
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    date = study.date.strftime("%Y%m%d")
    series_time = _series_time(study, spec.number)
    values = dict(
        SpecificCharacterSet="ISO_IR 100", SOPClassUID=CTImageStorage, SOPInstanceUID=sop_uid,
        StudyDate=date, SeriesDate=date, AcquisitionDate=date, ContentDate=date,
        StudyTime=study.time, SeriesTime=series_time, AccessionNumber=study.accession,
        Modality="CT", Manufacturer=site.manufacturer, InstitutionName=site.institution,
        InstitutionAddress=site.address, ReferringPhysicianName=f"{STAFF[study.index % 5]}^^DR",
        StationName=site.station, StudyDescription="CT HEAD",
        SeriesDescription=spec.description, OperatorsName=STAFF[(study.index + 2) % 5],
        ManufacturerModelName=site.model, PatientName=patient.patient_name,
        PatientID=patient.patient_id, PatientBirthDate=patient.birth_date.strftime("%Y%m%d"),
        PatientSex=patient.sex, PatientAge=f"{study.age:03d}Y", BodyPartExamined="HEAD",
        DeviceSerialNumber=site.serial, PatientPosition="HFS",
        StudyInstanceUID=study.study_uid, SeriesInstanceUID=series_uid, StudyID=study.study_id,
        SeriesNumber=spec.number, AcquisitionNumber=1, FrameOfReferenceUID=study.frame_uid,
        PositionReferenceIndicator="", KVP="120", ConvolutionKernel=spec.kernel,
        SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", BitsAllocated=16,
        RescaleSlope="1", WindowCenter=str(spec.window[0]),
        WindowWidth=str(spec.window[1]),
    )
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    if spec.image_type is not None:
        ds.ImageType = list(spec.image_type)
    block = ds.private_block(0x0019, _PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", patient.patient_name)
    block.add_new(0x11, "LO", patient.patient_id)
    block.add_new(0x12, "LO", site.institution)
    return ds


def _slice_dataset(
    seed: int, study: StudyPlan, spec: SeriesSpec, series_uid: str, stack: Stack, k: int,
    instance: int, pixels: np.ndarray, encoding: PixelEncoding,
) -> FileDataset:
    """Full dataset of slice k of a stack with InstanceNumber ``instance``."""
    sop_uid = _uid(seed, "instance", study.index, spec.number, instance)
    ds = _base_dataset(study, spec, series_uid, sop_uid)
    position = stack.positions[k]
    normal = np.cross(stack.row_dir, stack.col_dir)
    ds.InstanceNumber = instance
    ds.AcquisitionTime = ds.ContentTime = _series_time(study, spec.number, instance)
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in stack.orientation]
    ds.PixelSpacing = [_ds(stack.spacing_mm)] * 2
    if not spec.projection:
        ds.RescaleType = "HU"
        ds.SliceLocation = _ds(float(position @ normal))
        ds.SliceThickness = _ds(stack.thickness_mm[k])
        ds.ReconstructionDiameter = _ds(stack.rows * stack.spacing_mm)
        ds.GantryDetectorTilt = _ds(stack.tilt_deg)
    if _regular_spacing(stack) and study.patient.site.writes_slice_spacing:
        ds.SpacingBetweenSlices = _ds(stack.thickness_mm[k])
    ds.Rows, ds.Columns = stack.rows, stack.cols
    ds.BitsStored = encoding.bits_stored
    ds.HighBit = encoding.bits_stored - 1
    ds.PixelRepresentation = int(encoding.signed)
    ds.RescaleIntercept = str(encoding.intercept)
    if encoding.padding is not None:
        ds.add_new(0x00280120, "SS" if encoding.signed else "US", encoding.padding)
    ds.add_new(0x7FE00010, "OW", pixels.tobytes())
    return ds


def _regular_spacing(stack: Stack) -> bool:
    """True for multi-slice stacks with one thickness (SpacingBetweenSlices meaningful)."""
    return stack.n_slices > 2 and bool(np.all(stack.thickness_mm == stack.thickness_mm[0])) \
        and stack.thickness_mm[0] > 0


def _instance_order(n: int, top_down: bool) -> np.ndarray:
    """InstanceNumber (1-based) of each slice in ascending position order."""
    numbers = np.arange(1, n + 1)
    return numbers[::-1] if top_down else numbers


def _file_indices(instances: np.ndarray, rng) -> np.ndarray:
    """File numbers: the instance numbers with about a third of them shuffled."""
    indices = instances.copy()
    chosen = np.flatnonzero(rng.random(len(indices)) < 0.35)
    indices[chosen] = indices[rng.permutation(chosen)]
    return indices


def _folder_names(study: StudyPlan, spec: SeriesSpec) -> Path:
    """Patient/study/series folders named from raw identifiers, like a PACS export."""
    site, patient = study.patient.site, study.patient
    return Path(
        site.patient_folder.format(surname=patient.surname, given=patient.given_name,
                                   pid=patient.patient_id),
        site.study_folder.format(date=study.date.strftime("%Y%m%d"), accession=study.accession),
        site.series_folder.format(number=spec.number),
    )


# --------------------------------------------------------------------------- truth


def ras_affine(stack: Stack) -> np.ndarray:
    """(4, 4) NIfTI RAS affine of a stack with data indexed [column, row, slice].

    The slice axis uses the mean step between first and last slice (exact for
    evenly spaced stacks; see ``*_slices.tsv`` for uneven ones).
    """
    step = (stack.positions[-1] - stack.positions[0]) / max(stack.n_slices - 1, 1)
    affine = np.eye(4)
    affine[:3, 0] = _LPS_FROM_RAS @ stack.row_dir * stack.spacing_mm
    affine[:3, 1] = _LPS_FROM_RAS @ stack.col_dir * stack.spacing_mm
    affine[:3, 2] = _LPS_FROM_RAS @ step
    affine[:3, 3] = _LPS_FROM_RAS @ stack.positions[0]
    return affine


def _save_mask(path: Path, mask: np.ndarray, stack: Stack) -> None:
    """Save a (K, R, C) bool mask as uint8 NIfTI [C, R, K] with the stack's RAS affine."""
    affine = ras_affine(stack)
    image = nib.Nifti1Image(mask.transpose(2, 1, 0).astype(np.uint8), affine)
    orthogonal = np.allclose(affine[:3, :3].T @ affine[:3, :3],
                             np.diag((affine[:3, :3] ** 2).sum(axis=0)), atol=1e-4)
    image.set_qform(affine if orthogonal else None, code=1 if orthogonal else 0)
    image.set_sform(affine, code=1)
    image.to_filename(path)


def _write_truth_masks(masks_dir: Path, series_uid: str, stack: Stack, instances: np.ndarray,
                       lesion_frac: np.ndarray | None, brain_frac: np.ndarray) -> None:
    """Lesion mask, brain mask and per-slice positions of a brain series' axial slices."""
    brain = brain_frac > 0.5
    lesion = brain & (lesion_frac > 0.5) if lesion_frac is not None else np.zeros_like(brain)
    _save_mask(masks_dir / f"{series_uid}.nii.gz", lesion, stack)
    _save_mask(masks_dir / f"{series_uid}_brain.nii.gz", brain, stack)
    rows = [
        {"slice": k, "instance_number": int(instances[k]), "ipp_x": _ds(p[0]),
         "ipp_y": _ds(p[1]), "ipp_z": _ds(p[2]), "slice_thickness_mm": _ds(stack.thickness_mm[k])}
        for k, p in enumerate(stack.positions)
    ]
    _write_tsv(masks_dir / f"{series_uid}_slices.tsv", rows)


def _write_tsv(path: Path, rows: list[dict]) -> None:
    """Tab-separated file with a header from the first row's keys."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------- study build


def _build_study(out_dir: Path, cfg: SynthCTConfig, study: StudyPlan) -> list[dict]:
    """Render and write all series of one study; return their truth/series.tsv rows."""
    model = anatomy.load_head_model(cfg.template_resolution_mm)
    lesion = anatomy.lesion_map(model, study.lesion.blobs) if study.lesion else None
    specs = plan_series(cfg, study, model)
    file_counts: dict[Path, int] = {}
    previous_folder = None
    rows = []
    for spec in specs:
        folder = _folder_names(study, spec)
        if study.shares_folder and spec is specs[-1] and previous_folder is not None:
            folder = previous_folder
        previous_folder = folder
        rows.append(_write_series(out_dir, cfg, study, spec, lesion, folder, file_counts))
    return rows


def _render_stack(spec: SeriesSpec, stack: Stack, model: HeadModel, lesion: Region | None,
                  contrast_hu: float, encoding: PixelEncoding, rng) -> tuple:
    """Stored pixels (K, R, C) of a stack and its soft lesion map (K, R, C) or None."""
    if spec.projection:
        return np.rint(_project_stack(model, spec, stack, rng)).astype("<u2"), None
    hu, lesion_frac = _render_hu(spec, stack, model, lesion, contrast_hu, rng)
    outside = _outside_circle(stack) if stack.circular else None
    return encode_pixels(hu, outside, encoding), lesion_frac


def _write_series(out_dir: Path, cfg: SynthCTConfig, study: StudyPlan, spec: SeriesSpec,
                  lesion: Region | None, folder: Path, file_counts: dict[Path, int]) -> dict:
    """Render one series, write its DICOM files (and truth masks); return its truth row.

    ``file_counts`` tracks files per folder so a second series in a folder
    continues the file numbering.
    """
    model = anatomy.load_head_model(cfg.template_resolution_mm)
    rng = _rng(cfg.seed, "pixels", study.index, spec.number)
    site = study.patient.site
    series_uid = _uid(cfg.seed, "series", study.index, spec.number)
    encoding = LOCALIZER_ENCODING if spec.projection else site.encoding
    contrast_hu = study.lesion.contrast_hu if study.lesion else 0.0
    (out_dir / "dicom" / folder).mkdir(parents=True, exist_ok=True)
    n_before = file_counts.get(folder, 0)
    n_files = 0
    for stack_index, stack in enumerate(spec.stacks):
        pixels, lesion_frac = _render_stack(spec, stack, model, lesion, contrast_hu, encoding, rng)
        instances = n_files + _instance_order(stack.n_slices, site.instances_top_down)
        file_indices = n_before + _file_indices(instances, rng)
        for k in range(stack.n_slices):
            ds = _slice_dataset(cfg.seed, study, spec, series_uid, stack, k, int(instances[k]),
                                pixels[k], encoding)
            name = site.file_name.format(index=int(file_indices[k]), sop_uid=ds.SOPInstanceUID)
            ds.save_as(out_dir / "dicom" / folder / name, enforce_file_format=True)
        if stack_index == 0 and spec.kind in MASKED_KINDS:
            brain = sample_stack(_brain_fraction(model),
                                 anatomy.voxel_from_patient(model, spec.pose), stack, 0.0)
            _write_truth_masks(out_dir / "truth" / "masks", series_uid, stack, instances,
                               lesion_frac, brain)
        n_files += stack.n_slices
    file_counts[folder] = n_before + n_files
    return _series_row(study, spec, series_uid, n_files)


def _series_row(study: StudyPlan, spec: SeriesSpec, series_uid: str, n_files: int) -> dict:
    """One truth/series.tsv row."""
    main = spec.stacks[0]
    thickness = "" if spec.projection else _ds(float(np.max(main.thickness_mm)))
    return {
        "patient_id": study.patient.patient_id, "study_uid": study.study_uid,
        "series_uid": series_uid, "kind": spec.kind, "expected": EXPECTED_VERDICT[spec.kind],
        "n_files": n_files, "rows": main.rows, "cols": main.cols,
        "slice_thickness_mm": thickness,
        **{f"rot_{axis}_deg": _ds(v) for axis, v in zip("xyz", spec.pose.rot_deg)},
        **{f"t{axis}_mm": _ds(v) for axis, v in zip("xyz", spec.pose.shift_mm)},
        "scale": _ds(spec.pose.scale),
    }


def _label_row(study: StudyPlan) -> dict:
    """One labels.tsv row."""
    lesion = study.lesion
    return {
        "patient_id": study.patient.patient_id, "study_uid": study.study_uid,
        "timepoint": study.timepoint, "lesion": int(lesion is not None),
        "side": lesion.side if lesion else "none",
        "territory": ",".join(lesion.territories) if lesion else "",
        "size": lesion.size if lesion else 0,
        "n_lesions": len(lesion.blobs) if lesion else 0, "age": study.age,
    }


def make_ct_cohort(out_dir: Path, cfg: SynthCTConfig) -> None:
    """Write the synthetic CT cohort (DICOM, labels and truth) under ``out_dir``.

    Raises:
        FileExistsError: if ``out_dir/dicom`` already holds files.
    """
    out_dir = Path(out_dir)
    dicom_dir = out_dir / "dicom"
    if dicom_dir.exists() and any(dicom_dir.iterdir()):
        raise FileExistsError(f"{dicom_dir} is not empty")
    (out_dir / "truth" / "masks").mkdir(parents=True, exist_ok=True)
    studies = plan_cohort(cfg)
    model = anatomy.load_head_model(cfg.template_resolution_mm)
    for warm_cache in (hu_volume, _brain_fraction, _attenuation_2x, anatomy.territory_regions):
        warm_cache(model)  # computed once, inherited by forked workers
    build = functools.partial(_build_study, out_dir, cfg)
    if cfg.workers > 1:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(cfg.workers, mp_context=context) as pool:
            series_rows = list(pool.map(build, studies))
    else:
        series_rows = [build(study) for study in studies]
    _write_tsv(out_dir / "labels.tsv", [_label_row(study) for study in studies])
    _write_tsv(out_dir / "truth" / "series.tsv", [row for rows in series_rows for row in rows])
