"""Template -> CT registration (FSL FLIRT or SimpleITK) and the cohort PCA + GMM check.

Thesis 003 §3.4.4 step 5: an MRI T1 template (age-matched) is registered *to* each CT
with 12 DOF, so the CT is never resampled; the per-scan product is a FLIRT-convention
matrix (template = source, CT = reference) and the template resampled onto the CT grid.
Every affine here is in world RAS mm unless its name says LPS or FLIRT.

Modules: :mod:`.templates` (age-indexed choice), :mod:`.registration` (backend dispatch,
the per-scan call), :mod:`.sitk_backend`, :mod:`.fsl_backend`, :mod:`.flirt_matrix`
(FLIRT <-> world), :mod:`.midline` (mid-sagittal plane in CT voxels), :mod:`.qc`
(PCA + GMM verdicts, review overrides), :mod:`.figures` (QC plots).
"""
from cfbrain.register.flirt_matrix import (flirt_to_world, read_template_to_ct, world_to_flirt,
                                           write_template_to_ct)
from cfbrain.register.midline import Midline, midline_in_ct
from cfbrain.register.qc import QCCriteria, RegistrationQC, load_linear_parts, read_review, registration_qc
from cfbrain.register.registration import register_template_to_ct, resolve_backend
from cfbrain.register.result import RegistrationFailed, RegistrationResult
from cfbrain.register.sitk_backend import SimpleITKSettings
from cfbrain.register.templates import DEFAULT_TEMPLATES, TemplateChoiceError, choose_template, write_template
from cfbrain.register.volumes import InvalidImage

__all__ = [
    "DEFAULT_TEMPLATES", "InvalidImage", "Midline", "QCCriteria", "RegistrationFailed", "RegistrationQC",
    "RegistrationResult", "SimpleITKSettings", "TemplateChoiceError", "choose_template", "flirt_to_world",
    "load_linear_parts", "midline_in_ct", "read_review", "read_template_to_ct", "register_template_to_ct",
    "registration_qc", "resolve_backend", "world_to_flirt", "write_template", "write_template_to_ct",
]
