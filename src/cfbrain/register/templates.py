"""Age-indexed MRI T1 templates (thesis 003 §3.4.4 step 5).

The thesis registered a 65-70-year template for patients up to 72 years and a 75-80-year
template from 73 years (Farrell et al. 2009). The config gives a list of entries
``{path, min_age?, max_age?}`` (bounds inclusive, whole years as in DICOM PatientAge; a
missing bound is open). ``path`` is a NIfTI file or a built-in name: ``nilearn:mni152``
(MNI152 2009a T1 shipped with nilearn, 1 mm, works offline) or ``nilearn:mni152_2mm``.
The default is the 1 mm MNI152 template for every age.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib

BUILTIN_TEMPLATES = {"nilearn:mni152": 1, "nilearn:mni152_2mm": 2}
"""Built-in template name -> nilearn MNI152 resolution (mm)."""
DEFAULT_TEMPLATES = ({"path": "nilearn:mni152"},)


class TemplateChoiceError(ValueError):
    """No template (or more than one) covers an age, or the template list is malformed."""


@dataclass(frozen=True)
class TemplateSpec:
    """One template and the inclusive age range (years) it serves; None = open bound."""

    path: str
    min_age: float | None = None
    max_age: float | None = None

    def covers(self, age_years: float) -> bool:
        above_min = self.min_age is None or age_years >= self.min_age
        return above_min and (self.max_age is None or age_years <= self.max_age)

    def describe(self) -> str:
        low = "-inf" if self.min_age is None else f"{self.min_age:g}"
        high = "inf" if self.max_age is None else f"{self.max_age:g}"
        return f"[{low}, {high}] -> {self.path}"


def parse_templates(entries) -> list[TemplateSpec]:
    """Validated template list from config entries (dicts with ``path`` and optional
    ``min_age``, ``max_age``) or :class:`TemplateSpec` objects.

    Raises :class:`TemplateChoiceError` on unknown keys, an inverted range, overlapping
    ranges, or a whole-year gap between consecutive ranges."""
    specs = []
    for entry in entries:
        if isinstance(entry, TemplateSpec):
            entry = {"path": entry.path, "min_age": entry.min_age, "max_age": entry.max_age}
        unknown = set(entry) - {"path", "min_age", "max_age"}
        if unknown or "path" not in entry:
            raise TemplateChoiceError(f"template entry {entry!r}: needs 'path' and only min_age/max_age besides")
        spec = TemplateSpec(str(entry["path"]), entry.get("min_age"), entry.get("max_age"))
        if spec.min_age is not None and spec.max_age is not None and spec.min_age > spec.max_age:
            raise TemplateChoiceError(f"template {spec.describe()}: min_age > max_age")
        specs.append(spec)
    if not specs:
        raise TemplateChoiceError("the template list is empty")
    ordered = sorted(specs, key=lambda s: -math.inf if s.min_age is None else s.min_age)
    for lower, upper in zip(ordered, ordered[1:]):
        lower_end = math.inf if lower.max_age is None else lower.max_age
        upper_start = -math.inf if upper.min_age is None else upper.min_age
        if upper_start <= lower_end:
            raise TemplateChoiceError(f"template age ranges overlap: {lower.describe()} and {upper.describe()}")
        if upper_start > lower_end + 1:
            raise TemplateChoiceError(f"ages between {lower_end:g} and {upper_start:g} have no template: "
                                      f"{lower.describe()} and {upper.describe()}")
    return specs


def choose_template(age_years: float | None, templates) -> str:
    """Path (or built-in name) of the template serving ``age_years``.

    ``templates`` is a list of config entries or :class:`TemplateSpec`. An unknown age
    (None or NaN) is allowed only when one template serves all ages. Raises
    :class:`TemplateChoiceError` when no template covers the age.
    """
    specs = parse_templates(templates)
    if age_years is None or (isinstance(age_years, float) and math.isnan(age_years)):
        if len(specs) == 1 and specs[0].min_age is None and specs[0].max_age is None:
            return specs[0].path
        raise TemplateChoiceError("age unknown but the templates are age-specific: "
                                  + "; ".join(s.describe() for s in specs))
    matches = [s for s in specs if s.covers(age_years)]
    if len(matches) != 1:
        raise TemplateChoiceError(f"age {age_years:g} years is covered by {len(matches)} templates "
                                  "(ages are whole years; ranges are inclusive): "
                                  + "; ".join(s.describe() for s in specs))
    return matches[0].path


def template_image(source: str) -> nib.Nifti1Image:
    """The template as a nibabel image: a built-in name or a NIfTI path."""
    if source in BUILTIN_TEMPLATES:
        from nilearn.datasets import load_mni152_template

        return load_mni152_template(resolution=BUILTIN_TEMPLATES[source])
    if source.startswith("nilearn:"):
        raise TemplateChoiceError(f"unknown built-in template {source!r}; known: {sorted(BUILTIN_TEMPLATES)}")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"template {source} does not exist")
    return nib.load(str(path))


def write_template(source: str, out_path: str | Path) -> Path:
    """Save the template (built-in or user file; header and data kept) at ``out_path``, so that
    every later stage reads templates from one place inside the results tree."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(template_image(source), str(out_path))
    return out_path
