"""Every write to the clinical records. Views, API views, admin actions, commands and tasks call these.

Functions are keyword-only and named <entity>_<action>. Each either completes or leaves nothing behind:
database work is atomic, and files written to storage are removed again if the transaction fails.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from radiology import dispatch
from radiology.ingest import IngestedImage, IngestError, IngestLimits, ingest_file
from radiology.models import (
    AuditEvent,
    BodyRegion,
    Label,
    Patient,
    Prediction,
    Radiograph,
    Review,
    Sex,
    Study,
)

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses. `code` is stable (API clients match on it); `message` is for people."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


# --- Audit ---------------------------------------------------------------------------------------------


def audit_record(
    *,
    action: str,
    actor: Any = None,
    target: Any = None,
    details: dict[str, Any] | None = None,
    client_ip: str | None = None,
) -> AuditEvent:
    event = _audit_event(action=action, actor=actor, target=target, details=details, client_ip=client_ip)
    event.save()
    return event


def _audit_event(
    *,
    action: str,
    actor: Any = None,
    target: Any = None,
    details: dict[str, Any] | None = None,
    client_ip: str | None = None,
) -> AuditEvent:
    """An unsaved audit event (audit_record saves one; batch services bulk_create several)."""
    is_person = actor is not None and getattr(actor, "is_authenticated", False)
    return AuditEvent(
        actor=actor if is_person else None,
        actor_name=actor.get_username() if is_person else "",
        action=action,
        target_type=type(target).__name__.lower() if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        details=details or {},
        client_ip=client_ip,
    )


# --- Upload --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedImage:
    """A file as received: its name as the uploader gave it and its bytes."""

    name: str
    data: bytes

    @classmethod
    def from_upload(cls, upload: Any) -> UploadedImage:
        """Read a Django UploadedFile, at most one byte past the per-file limit: for an oversized file
        ingest only needs to know that it is too large, not its whole content in memory."""
        return cls(upload.name or "", upload.read(settings.UPLOAD_MAX_FILE_BYTES + 1))


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
) -> StudyUploadResult:
    """Create a study from uploaded radiographs.

    Every file is checked on its own: a valid file is kept even when a sibling is refused, and each
    refusal names the file and the reason. When no file is valid, nothing is created.
    Classification is requested after commit, with radiograph ids only.
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
    for error in rejected:
        audit_record(
            action=AuditEvent.Action.FILE_REJECTED,
            actor=uploaded_by,
            details={"file": error.filename, "code": error.code, "reason": error.message},
            client_ip=client_ip,
        )
    if not accepted_images:
        return StudyUploadResult(study=None, rejected=rejected)

    resolved = _resolve_details(details, accepted_images)
    with _cleanup_files_on_error() as written:
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
                    radiograph = Radiograph(
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
                    _save_file(radiograph.image, "upload", image.content, written)
                    radiograph.save()
                    radiographs.append(radiograph)
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
                ids = [r.pk for r in radiographs]
                transaction.on_commit(lambda: dispatch.send_classification(ids))
        except IntegrityError as exc:
            # A concurrent upload took the accession number between our check and our insert.
            if Study.objects.filter(accession_number=resolved.accession_number).exists():
                raise _duplicate_accession(resolved.accession_number) from None
            raise ServiceError("conflict", "The study could not be saved; please try again.") from exc
    return StudyUploadResult(study=study, accepted=radiographs, rejected=rejected)


def _ingest_all(
    files: Sequence[UploadedImage], limits: IngestLimits
) -> tuple[list[IngestedImage], list[IngestError]]:
    accepted: list[IngestedImage] = []
    rejected: list[IngestError] = []
    seen: set[str] = set()
    for upload in files:
        try:
            image = ingest_file(upload.name, upload.data, limits)
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


def _resolve_details(details: StudyDetails, images: Sequence[IngestedImage]) -> StudyDetails:
    """Fill blank fields from the first DICOM file that has them; refuse if something required is missing."""
    dicom: dict[str, str] = {}
    for image in images:
        for key, value in image.dicom_attributes.items():
            dicom.setdefault(key, value)

    def pick(typed: str, keyword: str) -> str:
        return typed.strip() or dicom.get(keyword, "").strip()

    resolved = StudyDetails(
        mrn=pick(details.mrn, "PatientID"),
        patient_name=pick(details.patient_name, "PatientName"),
        date_of_birth=details.date_of_birth or _parse_date(dicom.get("PatientBirthDate")),
        sex=details.sex or _dicom_sex(dicom.get("PatientSex", "")),
        accession_number=pick(details.accession_number, "AccessionNumber"),
        body_region=details.body_region or _dicom_region(dicom.get("BodyPartExamined", "")),
        clinical_notes=details.clinical_notes.strip(),
        study_date=details.study_date or _parse_date(dicom.get("StudyDate")),
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
    if _normalise_name(patient.name) != _normalise_name(details.patient_name):
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


def _parse_date(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _dicom_sex(value: str) -> str:
    return {"F": Sex.FEMALE, "M": Sex.MALE, "O": Sex.OTHER}.get(value.strip().upper()[:1], "")


_DICOM_BODY_PARTS = {
    "HAND": BodyRegion.HAND,
    "FINGER": BodyRegion.HAND,
    "WRIST": BodyRegion.WRIST,
    "FOREARM": BodyRegion.FOREARM,
    "ELBOW": BodyRegion.ELBOW,
    "HUMERUS": BodyRegion.HUMERUS,
    "ARM": BodyRegion.HUMERUS,
    "SHOULDER": BodyRegion.SHOULDER,
    "CLAVICLE": BodyRegion.SHOULDER,
    "HIP": BodyRegion.HIP,
    "PELVIS": BodyRegion.PELVIS,
    "FEMUR": BodyRegion.FEMUR,
    "THIGH": BodyRegion.FEMUR,
    "KNEE": BodyRegion.KNEE,
    "LEG": BodyRegion.LEG,
    "LOWER LEG": BodyRegion.LEG,
    "TIBIA": BodyRegion.LEG,
    "ANKLE": BodyRegion.ANKLE,
    "FOOT": BodyRegion.FOOT,
    "TOE": BodyRegion.FOOT,
    "SPINE": BodyRegion.SPINE,
    "CSPINE": BodyRegion.SPINE,
    "TSPINE": BodyRegion.SPINE,
    "LSPINE": BodyRegion.SPINE,
}


def _dicom_region(value: str) -> str:
    return _DICOM_BODY_PARTS.get(value.strip().upper(), "")


@contextmanager
def _cleanup_files_on_error() -> Iterator[list[str]]:
    """Collects storage names written inside the block and deletes them if the block raises,
    so a failed transaction never leaves orphan files (and no row ever points at a missing one)."""
    written: list[str] = []
    try:
        yield written
    except BaseException:
        for name in written:
            try:
                default_storage.delete(name)
            except OSError:
                logger.warning("could not remove orphan file %s after a failed write", name)
        raise


def _save_file(file_field: Any, name: str, content: bytes, written: list[str]) -> None:
    try:
        file_field.save(name, ContentFile(content), save=False)
    except OSError as exc:
        logger.error("storage refused a write: %s", exc.__class__.__name__)
        raise ServiceError(
            "storage_unavailable",
            "The image store is not accepting files right now (it may be full). Nothing was saved; "
            "please try again later or tell your administrator.",
        ) from None
    written.append(file_field.name)


# --- Classification ------------------------------------------------------------------------------------


def _claimable(now: dt.datetime) -> Q:
    stale_before = now - dt.timedelta(seconds=settings.CLASSIFY_RUNNING_TIMEOUT_SECONDS)
    return Q(status=Radiograph.Status.QUEUED) | Q(
        status=Radiograph.Status.RUNNING, claimed_at__lt=stale_before
    )


def radiograph_claim(*, radiograph_id: int) -> bool:
    """QUEUED -> RUNNING as one conditional UPDATE: of two workers given the same radiograph, one wins.

    A RUNNING row whose claim is older than the running timeout is taken over: its worker died.
    """
    now = timezone.now()
    claimed = Radiograph.objects.filter(_claimable(now), pk=radiograph_id).update(
        status=Radiograph.Status.RUNNING, claimed_at=now, attempts=F("attempts") + 1
    )
    return claimed == 1


def radiograph_claim_batch(*, radiograph_id: int, max_batch: int) -> list[int]:
    """Claim the given radiograph and, to fill one forward pass, up to max_batch - 1 other queued ones.

    One transaction (one commit): the given row's conditional UPDATE, then the others, oldest
    dispatched first, in one locked SELECT (rows another worker is claiming right now are skipped, not
    waited for) and one UPDATE. Their own messages arrive later, find them claimed or predicted, and
    do nothing.
    """
    with transaction.atomic():
        if not radiograph_claim(radiograph_id=radiograph_id):
            return []
        candidates: list[int] = []
        if max_batch > 1:
            candidates = list(
                Radiograph.objects.select_for_update(skip_locked=True)
                .filter(status=Radiograph.Status.QUEUED, dispatched_at__isnull=False)
                .exclude(pk=radiograph_id)
                .order_by("dispatched_at", "pk")
                .values_list("pk", flat=True)[: max_batch - 1]
            )
        if candidates:
            # Locked above (PostgreSQL) or inside the one writer's transaction (SQLite): all still QUEUED.
            Radiograph.objects.filter(pk__in=candidates, status=Radiograph.Status.QUEUED).update(
                status=Radiograph.Status.RUNNING, claimed_at=timezone.now(), attempts=F("attempts") + 1
            )
    return [radiograph_id, *candidates]


def radiograph_release(*, radiograph_id: int) -> None:
    """RUNNING -> QUEUED, so a retried task can claim the row again."""
    Radiograph.objects.filter(pk=radiograph_id, status=Radiograph.Status.RUNNING).update(
        status=Radiograph.Status.QUEUED, claimed_at=None
    )


def radiograph_read_image(*, radiograph: Radiograph) -> bytes:
    with radiograph.image.open("rb") as handle:
        return handle.read()


@dataclass(frozen=True)
class PredictionResult:
    """One radiograph's result from a forward pass, as prediction_store_batch stores it."""

    radiograph_id: int
    probability: float
    label: str
    heatmap_png: bytes | None
    inference_ms: float


def prediction_store(
    *,
    radiograph_id: int,
    model_version: str,
    probability: float,
    label: str,
    threshold: float,
    heatmap_png: bytes | None,
    inference_ms: float,
) -> Prediction:
    """Store the model's result and mark the radiograph PREDICTED.

    Idempotent: a second call for the same radiograph and model version returns the first prediction.
    """
    result = PredictionResult(radiograph_id, probability, label, heatmap_png, inference_ms)
    return prediction_store_batch(model_version=model_version, threshold=threshold, results=[result])[0]


def prediction_store_batch(
    *, model_version: str, threshold: float, results: Sequence[PredictionResult]
) -> list[Prediction]:
    """Store one forward pass's results and mark their radiographs PREDICTED, in one transaction.

    A fixed number of queries however many results (one commit instead of one per radiograph: the
    worker stores a whole micro-batch at once). Idempotent per radiograph, as prediction_store.
    Rows are locked radiographs first, then studies, each in id order, so two workers storing
    radiographs of the same studies cannot deadlock. Returns the predictions in the order given.
    """
    for result in results:
        if result.label not in Label.values:
            raise ValueError(f"unknown label {result.label!r}")
    ids = sorted({r.radiograph_id for r in results})
    with _cleanup_files_on_error() as written, transaction.atomic():
        radiographs = {
            r.pk: r for r in Radiograph.objects.select_for_update().filter(pk__in=ids).order_by("pk")
        }
        missing = set(ids) - set(radiographs)
        if missing:
            raise Radiograph.DoesNotExist(f"radiographs {sorted(missing)} do not exist")
        stored = {
            p.radiograph_id: p
            for p in Prediction.objects.filter(radiograph_id__in=ids, model_version=model_version)
        }
        new: list[Prediction] = []
        for result in results:
            if result.radiograph_id in stored:
                continue
            prediction = Prediction(
                radiograph=radiographs[result.radiograph_id],
                model_version=model_version,
                probability=float(result.probability),
                label=result.label,
                threshold=float(threshold),
                inference_ms=float(result.inference_ms),
            )
            if result.heatmap_png:
                _save_file(prediction.heatmap, "heatmap.png", result.heatmap_png, written)
            new.append(prediction)
            stored[result.radiograph_id] = prediction
        if new:
            Prediction.objects.bulk_create(new)
            AuditEvent.objects.bulk_create(
                [
                    _audit_event(
                        action=AuditEvent.Action.PREDICTION_STORED,
                        target=prediction,
                        details={
                            "radiograph": prediction.radiograph_id,
                            "model_version": model_version,
                            "probability": round(prediction.probability, 4),
                            "label": prediction.label,
                        },
                    )
                    for prediction in new
                ]
            )
        Radiograph.objects.filter(pk__in=ids).update(
            status=Radiograph.Status.PREDICTED, failure_message="", updated_at=timezone.now()
        )
        studies_refresh_triage(study_ids=[r.study_id for r in radiographs.values()])
    return [stored[r.radiograph_id] for r in results]


def radiograph_fail(*, radiograph_id: int, message: str) -> None:
    """Mark a radiograph FAILED with a message a clinician can read (never a stack trace)."""
    with transaction.atomic():
        radiograph = Radiograph.objects.select_for_update().get(pk=radiograph_id)
        if radiograph.status == Radiograph.Status.PREDICTED:
            return  # another worker finished it; a late failure must not undo a stored result
        radiograph.status = Radiograph.Status.FAILED
        radiograph.failure_message = message or "The radiograph could not be classified."
        radiograph.save(update_fields=["status", "failure_message", "updated_at"])
        audit_record(
            action=AuditEvent.Action.RADIOGRAPH_FAILED,
            target=radiograph,
            details={"message": radiograph.failure_message, "attempts": radiograph.attempts},
        )
        study_refresh_triage(study_id=radiograph.study_id)


def radiograph_retry(*, radiograph_id: int, actor: Any, client_ip: str | None = None) -> Radiograph:
    """Send a FAILED radiograph back to the queue (e.g. after an administrator fixed the model)."""
    with transaction.atomic():
        radiograph = Radiograph.objects.select_for_update().get(pk=radiograph_id)
        if radiograph.status != Radiograph.Status.FAILED:
            raise ServiceError("not_failed", "Only a failed radiograph can be sent again.")
        radiograph.status = Radiograph.Status.QUEUED
        radiograph.failure_message = ""
        radiograph.dispatched_at = None
        radiograph.claimed_at = None
        radiograph.save(
            update_fields=["status", "failure_message", "dispatched_at", "claimed_at", "updated_at"]
        )
        audit_record(
            action=AuditEvent.Action.RADIOGRAPH_RESENT, actor=actor, target=radiograph, client_ip=client_ip
        )
        study_refresh_triage(study_id=radiograph.study_id)
        transaction.on_commit(lambda: dispatch.send_classification([radiograph_id]))
    return radiograph


def radiographs_resend_stale(*, now: dt.datetime | None = None) -> list[int]:
    """The sweep: send again what the broker never got or a dead worker never finished.

    - RUNNING for longer than the running timeout: its worker is presumed dead; back to QUEUED.
    - QUEUED and never sent (the broker was down at upload), or sent long ago and still unclaimed.
    Re-sending is safe because classification claims the row first and stores idempotently.
    """
    now = now or timezone.now()
    stale_running = now - dt.timedelta(seconds=settings.CLASSIFY_RUNNING_TIMEOUT_SECONDS)
    resend_before = now - dt.timedelta(seconds=settings.CLASSIFY_RESEND_AFTER_SECONDS)
    # Fresh uploads are dispatched by their own on-commit hook; leave them a moment.
    grace = now - dt.timedelta(seconds=5)
    with transaction.atomic():
        Radiograph.objects.filter(status=Radiograph.Status.RUNNING, claimed_at__lt=stale_running).update(
            status=Radiograph.Status.QUEUED, claimed_at=None, dispatched_at=None
        )
        ids = list(
            Radiograph.objects.filter(status=Radiograph.Status.QUEUED, created_at__lt=grace)
            .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=resend_before))
            .order_by("created_at")
            .values_list("pk", flat=True)[:1000]
        )
    if ids:
        dispatch.send_classification(ids)
    return ids


def study_refresh_triage(*, study_id: int) -> None:
    """Recompute a study's queue summary from its radiographs, inside the transaction that changed them."""
    studies_refresh_triage(study_ids=[study_id])


def studies_refresh_triage(*, study_ids: Sequence[int]) -> None:
    """study_refresh_triage for several studies in five queries (locked in id order)."""
    studies = list(Study.objects.select_for_update().filter(pk__in=set(study_ids)).order_by("pk"))
    if not studies:
        raise Study.DoesNotExist(f"studies {sorted(set(study_ids))} do not exist")
    by_study: dict[int, list[Radiograph]] = {study.pk: [] for study in studies}
    for radiograph in Radiograph.objects.filter(study_id__in=by_study).order_by("position", "pk"):
        by_study[radiograph.study_id].append(radiograph)
    current = _current_predictions([r.pk for members in by_study.values() for r in members])
    reviewed = set(
        Review.objects.filter(radiograph__study_id__in=by_study)
        .values_list("radiograph_id", flat=True)
        .distinct()
    )
    for study in studies:
        radiographs = by_study[study.pk]
        statuses = [r.status for r in radiographs]
        in_flight = any(s in (Radiograph.Status.QUEUED, Radiograph.Status.RUNNING) for s in statuses)
        predicted = [r.pk for r in radiographs if r.status == Radiograph.Status.PREDICTED and r.pk in current]
        failed = statuses.count(Radiograph.Status.FAILED)
        if in_flight:
            state = Study.State.PROCESSING
        elif any(pk not in reviewed for pk in predicted):
            state = Study.State.AWAITING_REVIEW
        elif not predicted:
            state = Study.State.FAILED
        else:
            state = Study.State.REVIEWED
        probabilities = [current[pk].probability for pk in predicted]
        study.state = state
        study.max_probability = max(probabilities) if probabilities else None
        study.radiograph_count = len(radiographs)
        study.failed_count = failed
        if state == Study.State.REVIEWED and study.reviewed_at is None:
            study.reviewed_at = timezone.now()
        elif state != Study.State.REVIEWED:
            study.reviewed_at = None
    fields = ["state", "max_probability", "radiograph_count", "failed_count", "reviewed_at"]
    if len(studies) == 1:
        studies[0].save(update_fields=fields)
    else:
        Study.objects.bulk_update(studies, fields)


def _current_predictions(radiograph_ids: Sequence[int]) -> dict[int, Prediction]:
    """Each radiograph's most recent prediction (the newest model version to have read it)."""
    latest: dict[int, Prediction] = {}
    for prediction in Prediction.objects.filter(radiograph_id__in=radiograph_ids).order_by(
        "created_at", "id"
    ):
        latest[prediction.radiograph_id] = prediction
    return latest


# --- Review --------------------------------------------------------------------------------------------


def review_submit(
    *,
    radiograph_id: int,
    reviewer: Any,
    decision: str,
    final_label: str | None = None,
    reason_code: str = "",
    reason_text: str = "",
    client_ip: str | None = None,
) -> Review:
    """Record a clinician's verdict on the model's current prediction. The latest review stands."""
    reason_text = reason_text.strip()
    with transaction.atomic():
        radiograph = Radiograph.objects.select_for_update().get(pk=radiograph_id)
        prediction = _current_predictions([radiograph.pk]).get(radiograph.pk)
        if radiograph.status != Radiograph.Status.PREDICTED or prediction is None:
            raise ServiceError("not_ready", "This radiograph has no prediction to review yet.")
        if decision == Review.Decision.CONFIRM:
            if final_label and final_label != prediction.label:
                raise ServiceError(
                    "confirm_label_mismatch",
                    "Confirming keeps the model's label; choose Override to record a different one.",
                    field="final_label",
                )
            final_label = prediction.label
            reason_code = ""
        elif decision == Review.Decision.OVERRIDE:
            final_label = final_label or _opposite(prediction.label)
            if final_label not in Label.values:
                raise ServiceError("invalid_label", "Choose fractured or not fractured.", field="final_label")
            if final_label == prediction.label:
                raise ServiceError(
                    "override_same_label",
                    "An override must change the label; choose Confirm to agree with the model.",
                    field="final_label",
                )
            if reason_code not in Review.Reason.values:
                raise ServiceError(
                    "reason_required", "Choose a reason for the override.", field="reason_code"
                )
            if reason_code == Review.Reason.OTHER and not reason_text:
                raise ServiceError(
                    "reason_required", "Describe the reason when you choose 'Other'.", field="reason_text"
                )
        else:
            raise ServiceError(
                "invalid_decision", "The decision must be confirm or override.", field="decision"
            )
        review = Review.objects.create(
            radiograph=radiograph,
            prediction=prediction,
            reviewer=reviewer,
            decision=decision,
            final_label=final_label,
            reason_code=reason_code,
            reason_text=reason_text,
        )
        audit_record(
            action=AuditEvent.Action.REVIEW_SUBMITTED,
            actor=reviewer,
            target=review,
            details={
                "radiograph": radiograph.pk,
                "prediction": prediction.pk,
                "model_version": prediction.model_version,
                "model_label": prediction.label,
                "decision": decision,
                "final_label": final_label,
                "reason_code": reason_code,
            },
            client_ip=client_ip,
        )
        study_refresh_triage(study_id=radiograph.study_id)
    return review


def _opposite(label: str) -> str:
    return Label.NOT_FRACTURED if label == Label.FRACTURED else Label.FRACTURED


# --- API: batches and tokens ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchItemInput:
    """One study of a batch: what the integrator's manifest says about it, and its files."""

    details: StudyDetails
    files: Sequence[UploadedImage]


@dataclass
class BatchItemResult:
    index: int
    item: Any  # the stored BatchItem
    accepted: list[Radiograph] = field(default_factory=list)


@dataclass
class BatchSubmitResult:
    """`batch` is None when no study could be created: then nothing but audit events was written."""

    batch: Any
    items: list[BatchItemResult] = field(default_factory=list)


def batch_submit(
    *,
    submitted_by: Any,
    items: Sequence[BatchItemInput],
    reference: str = "",
    client_ip: str | None = None,
) -> BatchSubmitResult:
    """Create many studies, each on its own: one failing study never stops or half-writes another.

    Every item commits in its own transaction (the study, its radiographs, its files and its BatchItem
    together), so the worker can start on the first study while later ones are ingested, and an item
    that fails leaves only its BatchItem saying why. Classification is sent after each item's commit.
    """
    from radiology.models import Batch

    if not items:
        raise ServiceError("no_studies", "A batch needs at least one study.", field="studies")
    batch = Batch.objects.create(submitted_by=submitted_by, reference=reference.strip()[:200])
    results: list[BatchItemResult] = []
    try:
        for index, item in enumerate(items):
            results.append(_batch_item_create(batch, index, item, submitted_by, client_ip))
    except BaseException:
        if not any(r.item.study_id for r in results):
            batch.delete()  # nothing of value was stored: leave no empty batch behind
        raise
    created = [r for r in results if r.item.study_id]
    if not created:
        batch.delete()
        return BatchSubmitResult(batch=None, items=results)
    audit_record(
        action=AuditEvent.Action.BATCH_SUBMITTED,
        actor=submitted_by,
        target=batch,
        details={
            "items": len(results),
            "created": len(created),
            "failed": len(results) - len(created),
            "studies": [r.item.study_id for r in created],
        },
        client_ip=client_ip,
    )
    return BatchSubmitResult(batch=batch, items=results)


def _batch_item_create(
    batch: Any, index: int, item: BatchItemInput, submitted_by: Any, client_ip: str | None
) -> BatchItemResult:
    from radiology.models import BatchItem

    accession = item.details.accession_number.strip()[:64]
    with _cleanup_files_on_error() as written, transaction.atomic():
        try:
            upload = study_create(
                uploaded_by=submitted_by, details=item.details, files=item.files, client_ip=client_ip
            )
        except ServiceError as error:
            failure = {"code": error.code, "message": error.message}
            if error.field:
                failure["field"] = error.field
            stored = BatchItem.objects.create(
                batch=batch,
                index=index,
                accession_number=accession,
                outcome=BatchItem.Outcome.FAILED,
                errors=[failure],
            )
            return BatchItemResult(index=index, item=stored)
        # If saving the item fails, the study's rows roll back with it and its files must go too.
        written.extend(str(r.image.name) for r in upload.accepted)
        rejected = [{"file": e.filename, "code": e.code, "message": e.message} for e in upload.rejected]
        study = upload.study
        stored = BatchItem.objects.create(
            batch=batch,
            index=index,
            accession_number=study.accession_number if study else accession,
            outcome=BatchItem.Outcome.CREATED if study else BatchItem.Outcome.FAILED,
            study=study,
            errors=rejected,
        )
    return BatchItemResult(index=index, item=stored, accepted=upload.accepted)


def api_token_issue(*, user: Any, rotate: bool = False, actor: Any = None) -> tuple[str, bool]:
    """The user's API token, created on first request (or replaced when rotating); returns (key, created).

    The key itself is never written to the audit trail or the log.
    """
    from rest_framework.authtoken.models import Token

    with transaction.atomic():
        if rotate:
            Token.objects.filter(user=user).delete()
        token, created = Token.objects.get_or_create(user=user)
        if created:
            audit_record(
                action=AuditEvent.Action.TOKEN_CREATED,
                actor=actor,
                target=user,
                details={"user": user.get_username(), "rotated": rotate},
            )
    return token.key, created
