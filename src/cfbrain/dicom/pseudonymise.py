"""Pseudonyms and PS3.15 basic-profile de-identification.

Pseudonyms are keyed HMACs of the raw identifier, so the same patient gets the same
pseudonym in every run that uses the same key, a new patient never shifts the others,
and nothing raw can be read back from them. The key lives outside ``results/`` in a
file with mode 0600; without the key the pseudonyms cannot be linked to patients.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pydicom._uid_dict import UID_dictionary

from cfbrain.dicom.private import FILE_MODE, private_dir

DEIDENTIFICATION_METHOD = "cfbrain PS3.15 basic profile, retain age/sex"  # LO: at most 64 chars
# PS3.16 CID 7050 codes of the profile and option applied
DEIDENTIFICATION_CODES = (("113100", "Basic Application Confidentiality Profile"),
                          ("113108", "Retain Patient Characteristics Option"))

# PS3.15 Table E.1-1 basic profile, attributes a CT export carries that are not caught by the
# VR rules below (every PN is replaced, every DA/DT/TM emptied, every non-standard UI re-mapped).
REMOVE_KEYWORDS = frozenset({
    "PatientBirthDate", "PatientBirthTime", "PatientBirthName", "PatientMotherBirthName",
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientAddress",
    "PatientTelephoneNumbers", "PatientInsurancePlanCodeSequence", "MilitaryRank", "BranchOfService",
    "MedicalRecordLocator", "EthnicGroup", "Occupation", "AdditionalPatientHistory", "PatientComments",
    "MedicalAlerts", "Allergies", "CountryOfResidence", "RegionOfResidence", "PatientReligiousPreference",
    "PatientSize", "PatientWeight", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "InstitutionCodeSequence", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "StationName", "DeviceSerialNumber", "PlateID", "DetectorID", "GantryID", "RequestingService",
    "StudyDescription", "SeriesDescription", "ImageComments", "RequestAttributesSequence",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription", "ScheduledProcedureStepID",
    "RequestedProcedureID", "RequestedProcedureDescription", "AdmissionID", "AdmittingDiagnosesDescription",
    "ProtocolName", "PerformedLocation", "PerformedStationName", "ScheduledStationName",
    "IssuerOfPatientID", "CurrentPatientLocation", "PatientState", "ReasonForStudy",
    "DerivationDescription", "AcquisitionComments", "TextComments", "ContentCreatorName",
    "ReferencedPatientSequence", "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "OriginalAttributesSequence", "ModifiedAttributesSequence", "DigitalSignaturesSequence",
})
EMPTY_KEYWORDS = frozenset({"AccessionNumber", "StudyID"})
DATE_TIME_VRS = frozenset({"DA", "DT", "TM"})


class PseudonymKey:
    """The secret that turns raw identifiers into pseudonyms; stored in a 0600 file."""

    def __init__(self, secret: bytes):
        self._secret = secret

    @classmethod
    def load_or_create(cls, path: Path) -> "PseudonymKey":
        """Read the key file, creating it (parents 0700, file 0600) with 32 random bytes if missing.
        Only the index job creates keys; every later stage uses ``load``."""
        path = Path(path)
        if not path.exists():
            private_dir(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> "PseudonymKey":
        """Read an existing key file; refuse one that others can read."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"pseudonym key {path} does not exist; the index stage creates it")
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"pseudonym key {path} is readable by others (mode {mode:o}); chmod 600 it")
        return cls(bytes.fromhex(path.read_text().strip()))

    def digest(self, kind: str, raw: str, length: int) -> str:
        """``length`` hex digits of HMAC-SHA256(key, kind + raw)."""
        message = f"{kind}\x00{raw}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:length]

    def patient(self, patient_id: str) -> str:
        return "P" + self.digest("patient", patient_id, 10)

    def study(self, study_uid: str) -> str:
        return "S" + self.digest("study", study_uid, 6)

    def series(self, series_uid: str) -> str:
        return "E" + self.digest("series", series_uid, 6)

    def file(self, relative_path: str) -> str:
        return "F" + self.digest("file", relative_path, 10)

    def source_dir(self, path: str | Path) -> str:
        """The reference to a source folder that results hold instead of its path (folder names in
        clinical exports often carry names or MRNs); the pseudonym map links it back."""
        return "D" + self.digest("source_dir", str(Path(path)), 10)

    def scan(self, patient_id: str, study_uid: str, series_uid: str) -> str:
        """The scan identifier used in every path and table: ``{patient}_{study}_{series}``."""
        return f"{self.patient(patient_id)}_{self.study(study_uid)}_{self.series(series_uid)}"

    def uid(self, raw_uid: str) -> str:
        """A new UID derived from the key and the raw UID (same input, same output)."""
        return generate_uid(entropy_srcs=[self._secret.hex(), raw_uid])


def deidentify(ds: Dataset, key: PseudonymKey, *, patient_id: str) -> Dataset:
    """De-identify ``ds`` in place (basic profile + retain patient characteristics) and return it.

    PatientID and PatientName become the patient pseudonym; age and sex are kept (templates
    are chosen by age); private tags, dates, times and the identifying attributes above go.
    """
    pseudonym = key.patient(patient_id)
    ds.remove_private_tags()
    ds.walk(lambda dataset, element: _deidentify_element(dataset, element, key, pseudonym))
    ds.PatientID = pseudonym
    ds.PatientName = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    ds.DeidentificationMethodCodeSequence = [_code_item(value, meaning) for value, meaning in DEIDENTIFICATION_CODES]
    if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _deidentify_element(dataset: Dataset, element: DataElement, key: PseudonymKey, pseudonym: str) -> None:
    keyword = element.keyword
    if keyword in REMOVE_KEYWORDS or _is_curve_or_overlay_data(element):
        del dataset[element.tag]
    elif keyword in EMPTY_KEYWORDS or element.VR in DATE_TIME_VRS:
        element.value = ""
    elif element.VR == "PN":
        element.value = pseudonym if keyword == "PatientName" else ""
    elif element.VR == "UI" and element.value:
        element.value = _remap_uids(element.value, key)


def _is_curve_or_overlay_data(element: DataElement) -> bool:
    """Curve groups (50xx) and overlay data/comments (60xx,3000 / 60xx,4000) may burn in text."""
    family = element.tag.group & 0xFF00
    return family == 0x5000 or (family == 0x6000 and element.tag.element in (0x3000, 0x4000))


def _remap_uids(value, key: PseudonymKey):
    """Re-map instance UIDs; keep registered DICOM UIDs (SOP classes, transfer syntaxes)."""
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
        return [_remap_uids(v, key) for v in value]
    return value if str(value) in UID_dictionary else UID(key.uid(str(value)))
