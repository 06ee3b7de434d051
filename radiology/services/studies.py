"""Creating studies from uploads, and keeping a study's queue summary (triage) in step."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from radiology import dispatch
from radiology.ingest import (
    IngestedImage,
    IngestError,
    IngestLimits,
    dicom_study_fields,
    ingest_file,
    person_name_display,
)
from radiology.models import (
    AuditEvent,
    BodyRegion,
    Patient,
    Radiograph,
    Sex,
    Study,
)
from radiology.services import instances
from radiology.services.audit import audit_record
from radiology.services.errors import ServiceError
from radiology.services.storage import cleanup_files_on_error, save_file


@dataclass(frozen=True)
class UploadedImage:
    """A file as received: its name as the uploader gave it and its bytes."""

    name: str
    data: bytes
    # The whole file's size when `data` holds only its first bytes (an oversized upload).
    size: int | None = None

    @classmethod
    def from_upload(cls, upload: Any) -> UploadedImage:
        """Read a Django UploadedFile, at most one byte past the per-file limit: for an oversized file
        ingest only needs to know that it is too large, not its whole content in memory."""
        return cls(upload.name or "", upload.read(settings.UPLOAD_MAX_FILE_BYTES + 1), upload.size)


@dataclass(frozen=True)
class StudyDetails:
    """What the clinician typed. Blank patient and study fields are filled from DICOM attributes."""

    mrn: str = ""
    patient_name: str = ""
    date_of_birth: dt.date | None = None
    sex: str = ""
    accession_number: str = ""
    body_region: str = ""
    clinical_notes: str = ""
    study_date: dt.date | None = None
    # The uploader saw that the typed MRN or name differs from the DICOM header and files it anyway.
    confirm_patient_mismatch: bool = False

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> StudyDetails:
        """From a form's or serializer's cleaned data; fields it does not have keep their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names and value is not None})


@dataclass
class StudyUploadResult:
    study: Study | None
    accepted: list[Radiograph] = field(default_factory=list)
    rejected: list[IngestError] = field(default_factory=list)


def study_create(
    *,
    uploaded_by: Any,
    details: StudyDetails,
    files: Sequence[UploadedImage],
    client_ip: str | None = None,
    limits: IngestLimits | None = None,
    classify: bool = True,
    record_instances: bool = True,  # False only for the DICOM inbox: its instances have their rows
    before_commit: Callable[[StudyUploadResult], None] | None = None,
) -> StudyUploadResult:
    """Create a study from uploaded radiographs.

    Every file is checked on its own: a valid file is kept even when a sibling is refused, and each
    refusal names the file and the reason. When no file is valid, nothing is created.
    Classification is requested after commit, with radiograph ids only.
    DICOM files share the network paths' idempotency by SOPInstanceUID (services.instances).
    ``before_commit`` runs inside the transaction that creates the study, with the result: what the
    caller writes there commits with the study or not at all (the API's Idempotency-Key record).
    """
    if not files:
        raise ServiceError("no_files", "Choose at least one radiograph to upload.", field="files")
    if len(files) > settings.UPLOAD_MAX_FILES_PER_STUDY:
        raise ServiceError(
            "too_many_files",
            f"A study holds at most {settings.UPLOAD_MAX_FILES_PER_STUDY} radiographs; "
            f"{len(files)} were sent.",
            field="files",
        )
    limits = limits or IngestLimits.from_settings()
    accepted_images, rejected = _ingest_all(files, limits)
    accepted_images, rejected = instances.refuse_known(accepted_images, rejected, enabled=record_instances)
    for error in rejected:
        audit_record(
            action=AuditEvent.Action.FILE_REJECTED,
            actor=uploaded_by,
            details={"file": error.filename, "code": error.code, "reason": error.message},
            client_ip=client_ip,
        )
    if not accepted_images:
        return StudyUploadResult(study=None, rejected=rejected)

    differences = patient_details_differences(details, accepted_images)
    if differences and not details.confirm_patient_mismatch:
        listed = "; ".join(
            f"{d['field_label']} typed “{d['typed']}”, DICOM file says “{d['dicom']}”" for d in differences
        )
        raise ServiceError(
            "patient_details_differ",
            f"The typed patient details differ from the DICOM file ({listed}). Check that this is the "
            "right patient, then confirm to file the study under the typed details.",
            field="mrn" if any(d["field"] == "mrn" for d in differences) else "patient_name",
        )
    resolved = _resolve_details(details, accepted_images)
    with cleanup_files_on_error() as written:
        try:
            with transaction.atomic():
                patient = _patient_for(resolved)
                study = Study.objects.create(
                    patient=patient,
                    accession_number=resolved.accession_number,
                    body_region=resolved.body_region,
                    clinical_notes=resolved.clinical_notes,
                    study_date=resolved.study_date,
                    uploaded_by=uploaded_by,
                    radiograph_count=len(accepted_images),
                )
                radiographs = []
                for position, image in enumerate(accepted_images):
                    radiograph = radiograph_from_image(study=study, position=position, image=image)
                    save_file(radiograph.image, "upload", image.content, written)
                    radiograph.save()
                    radiographs.append(radiograph)
                instances.record_uploaded(radiographs, accepted_images, uploaded_by, enabled=record_instances)
                audit_record(
                    action=AuditEvent.Action.STUDY_UPLOADED,
                    actor=uploaded_by,
                    target=study,
                    details={
                        "radiographs": [r.pk for r in radiographs],
                        "rejected": [{"file": e.filename, "code": e.code} for e in rejected],
                    },
                    client_ip=client_ip,
                )
                if differences:
                    audit_record(
                        action=AuditEvent.Action.PATIENT_DETAILS_DIFFER,
                        actor=uploaded_by,
                        target=study,
                        details={"confirmed": True, "differences": differences},
                        client_ip=client_ip,
                    )
                ids = [r.pk for r in radiographs]
                if classify:  # False only for benchmark seeding, which sends the messages itself
                    transaction.on_commit(lambda: dispatch.send_classification(ids))
                if before_commit is not None:
                    before_commit(StudyUploadResult(study=study, accepted=radiographs, rejected=rejected))
        except IntegrityError as exc:
            # A concurrent upload took the accession number between our check and our insert.
            if Study.objects.filter(accession_number=resolved.accession_number).exists():
                raise _duplicate_accession(resolved.accession_number) from None
            raise ServiceError("conflict", "The study could not be saved; please try again.") from exc
    return StudyUploadResult(study=study, accepted=radiographs, rejected=rejected)


def radiograph_from_image(*, study: Study, position: int, image: IngestedImage) -> Radiograph:
    """An unsaved radiograph of `study` for an ingested image (its file is saved by the caller)."""
    return Radiograph(
        study=study,
        position=position,
        original_filename=image.original_filename,
        format=image.format,
        sha256=image.sha256,
        byte_size=len(image.content),
        width=image.width,
        height=image.height,
        dicom_attributes=image.dicom_attributes,
    )


def _ingest_all(
    files: Sequence[UploadedImage], limits: IngestLimits
) -> tuple[list[IngestedImage], list[IngestError]]:
    accepted: list[IngestedImage] = []
    rejected: list[IngestError] = []
    seen: set[str] = set()
    for upload in files:
        try:
            image = ingest_file(upload.name, upload.data, limits, size=upload.size)
        except IngestError as error:
            rejected.append(error)
            continue
        if image.sha256 in seen:
            rejected.append(
                IngestError(
                    image.original_filename, "duplicate_file", "The same image was already in this upload."
                )
            )
            continue
        seen.add(image.sha256)
        accepted.append(image)
    return accepted, rejected


def patient_details_differences(
    details: StudyDetails, images: Sequence[IngestedImage]
) -> list[dict[str, str]]:
    """Where a typed MRN or patient name differs from a DICOM file's PatientID / PatientName.

    The header is never silently replaced: a difference is refused unless the uploader confirms it,
    and a confirmed one is audited (both values kept; the files keep their own header unchanged).
    """
    checks = (
        ("mrn", "MRN", "PatientID", str.strip),
        ("patient_name", "Name", "PatientName", _name_key),
    )
    found: list[dict[str, str]] = []
    for field_name, field_label, keyword, normalise in checks:
        typed = str(getattr(details, field_name)).strip()
        if not typed:
            continue
        for image in images:
            dicom = image.dicom_attributes.get(keyword, "").strip()
            if dicom and normalise(dicom) != normalise(typed):
                found.append(
                    {
                        "field": field_name,
                        "field_label": field_label,
                        "typed": typed,
                        "dicom": dicom,
                        "file": image.original_filename,
                    }
                )
                break
    return found


def _name_key(name: str) -> str:
    """A name's words in any order: DICOM's "Doe^Jane" and a typed "Jane Doe" are the same patient."""
    return " ".join(sorted(_normalise_name(name).split()))


def _resolve_details(details: StudyDetails, images: Sequence[IngestedImage]) -> StudyDetails:
    """Fill blank fields from the first DICOM file that has them; refuse if something required is missing."""
    dicom: dict[str, str] = {}
    for image in images:
        for key, value in image.dicom_attributes.items():
            dicom.setdefault(key, value)

    from_dicom = dicom_study_fields(dicom)
    typed_name = details.patient_name.strip()
    if "^" in typed_name:  # a DICOM / HL7 name typed or sent as it is: filed as a name from DICOM is
        typed_name = person_name_display(typed_name)
    resolved = StudyDetails(
        mrn=details.mrn.strip() or from_dicom.mrn,
        patient_name=typed_name or from_dicom.patient_name,
        date_of_birth=details.date_of_birth or from_dicom.date_of_birth,
        sex=details.sex or from_dicom.sex,
        accession_number=details.accession_number.strip() or from_dicom.accession_number,
        body_region=details.body_region or from_dicom.body_region,
        clinical_notes=details.clinical_notes.strip(),
        study_date=details.study_date or from_dicom.study_date,
    )
    required = {
        "mrn": "the medical record number",
        "patient_name": "the patient's name",
        "accession_number": "the accession number",
        "body_region": "the body region",
    }
    for name, label in required.items():
        if not getattr(resolved, name):
            raise ServiceError("missing_field", f"Enter {label} (no DICOM file supplied it).", field=name)
    if resolved.body_region not in BodyRegion.values:
        raise ServiceError("invalid_body_region", "Choose a body region from the list.", field="body_region")
    if Study.objects.filter(accession_number=resolved.accession_number).exists():
        raise _duplicate_accession(resolved.accession_number)
    return resolved


def _duplicate_accession(accession: str) -> ServiceError:
    return ServiceError(
        "duplicate_accession",
        f"A study with accession number {accession} already exists.",
        field="accession_number",
    )


def _patient_for(details: StudyDetails) -> Patient:
    """The patient with this MRN, created on first sight. A different name under a known MRN is refused:
    filing a radiograph under the wrong patient is the error this check exists to prevent."""
    patient, created = Patient.objects.select_for_update().get_or_create(
        mrn=details.mrn,
        defaults={
            "name": details.patient_name,
            "date_of_birth": details.date_of_birth,
            "sex": details.sex or Sex.UNKNOWN,
        },
    )
    if created:
        return patient
    # Word order aside, as the typed-versus-DICOM check: a patient first filed from DICOM before names
    # were ordered as people write them is "Doe Jane", and a clinician types "Jane Doe".
    if _name_key(patient.name) != _name_key(details.patient_name):
        raise ServiceError(
            "patient_mismatch",
            f"Medical record number {details.mrn} belongs to a patient with a different name. "
            "Check the MRN and the name.",
            field="mrn",
        )
    if details.date_of_birth and patient.date_of_birth and details.date_of_birth != patient.date_of_birth:
        raise ServiceError(
            "patient_mismatch",
            f"Medical record number {details.mrn} belongs to a patient with a different date of birth.",
            field="date_of_birth",
        )
    changed = []
    if details.date_of_birth and not patient.date_of_birth:
        patient.date_of_birth = details.date_of_birth
        changed.append("date_of_birth")
    if details.sex and patient.sex == Sex.UNKNOWN:
        patient.sex = details.sex
        changed.append("sex")
    if changed:
        patient.save(update_fields=changed)
    return patient


def _normalise_name(name: str) -> str:
    return " ".join(name.replace("^", " ").replace(",", " ").lower().split())
