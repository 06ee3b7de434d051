"""DICOM arrivals: receiving instances (C-STORE and STOW-RS share this) and filing them into studies.

Receiving checks an instance completely (SOP class, modality, size, and a full decode through the same
ingest as an upload), then commits its file and its row before the sender is told "stored": an
acknowledged instance is never lost, and an instance whose association dropped was never acknowledged and
left nothing. Filing waits until the study has been quiet for DICOM_QUIET_PERIOD_SECONDS, then creates the
study through services.study_create (the upload's own service: patient checks, audit, dispatch after
commit), or adds late instances to the study already filed.

Just over 400 lines on purpose: receiving and filing are the two halves of one arrival's state machine
(DicomArrival and DicomInstance statuses, the ingest limits both apply), read top to bottom as the path of
one instance; split, each half would reach into the other's private helpers.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from radiology import dispatch, services
from radiology.dicomnet.models import DicomArrival, DicomInstance
from radiology.ingest import IngestError, IngestLimits, ingest_file
from radiology.models import AuditEvent, BodyRegion, Radiograph, Study

logger = logging.getLogger(__name__)

# The storage SOP classes of plain radiographs: CR, and DX (for presentation and for processing).
RADIOGRAPH_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}
# "DR" is not a DICOM modality, but some vendors' digital radiography units write it.
RADIOGRAPH_MODALITIES = {"CR", "DX", "DR"}


class Refusal:
    """Why an instance is refused; each maps to a DIMSE status (listener) and a STOW failure reason."""

    SOP_CLASS = "sop_class_not_supported"
    NOT_A_RADIOGRAPH = "not_a_radiograph"
    TOO_LARGE = "file_too_large"
    UNREADABLE = "unreadable"
    MISSING_ATTRIBUTE = "missing_attribute"
    STORAGE = "storage_unavailable"


@dataclass(frozen=True)
class ReceiveOutcome:
    """`stored`: new; `duplicate`: this SOP Instance UID was received before (nothing created);
    `refused`: `reason` (a Refusal) and `message` (for the sender's log) say why."""

    outcome: str
    sop_instance_uid: str = ""
    sop_class_uid: str = ""
    reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("stored", "duplicate")


def _refused(
    reason: str, message: str, sop_instance_uid: str = "", sop_class_uid: str = ""
) -> ReceiveOutcome:
    return ReceiveOutcome("refused", sop_instance_uid, sop_class_uid, reason, message)


@dataclass(frozen=True)
class _Header:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    modality: str
    patient_id: str


def _read_header(data: bytes) -> _Header:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=False)
    meta = getattr(dataset, "file_meta", None)
    return _Header(
        sop_class_uid=str(
            getattr(dataset, "SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", "")
        ),
        sop_instance_uid=str(
            getattr(dataset, "SOPInstanceUID", "") or getattr(meta, "MediaStorageSOPInstanceUID", "")
        ).strip(),
        study_instance_uid=str(getattr(dataset, "StudyInstanceUID", "") or "").strip(),
        series_instance_uid=str(getattr(dataset, "SeriesInstanceUID", "") or "").strip(),
        transfer_syntax_uid=str(getattr(meta, "TransferSyntaxUID", "") or ""),
        modality=str(getattr(dataset, "Modality", "") or "").strip().upper(),
        patient_id=str(getattr(dataset, "PatientID", "") or "").strip(),
    )


def dicom_instance_receive(
    *,
    data: bytes,
    source: str,
    calling_ae_title: str = "",
    received_by: Any = None,
    limits: IngestLimits | None = None,
) -> ReceiveOutcome:
    """Check one DICOM Part 10 file and keep it in its study's arrival; see the module docstring."""
    if len(data) > settings.DICOM_MAX_INSTANCE_BYTES:
        return _refused(
            Refusal.TOO_LARGE,
            f"The instance is {len(data)} bytes; the limit is {settings.DICOM_MAX_INSTANCE_BYTES}.",
        )
    try:
        header = _read_header(data)
    except Exception:  # pydicom raises many types on a damaged header; the answer is the same
        return _refused(Refusal.UNREADABLE, "The DICOM header is damaged and cannot be read.")
    uid, sop_class = header.sop_instance_uid, header.sop_class_uid
    if sop_class not in RADIOGRAPH_SOP_CLASSES:
        return _refused(
            Refusal.SOP_CLASS,
            f"SOP class {sop_class or '(none)'} is not accepted: only CR and DX radiographs are.",
            uid,
            sop_class,
        )
    if header.modality not in RADIOGRAPH_MODALITIES:
        return _refused(
            Refusal.NOT_A_RADIOGRAPH,
            f"Modality {header.modality or '(none)'} is not a plain radiograph (CR, DX, DR).",
            uid,
            sop_class,
        )
    for keyword, value in (
        ("SOPInstanceUID", uid),
        ("StudyInstanceUID", header.study_instance_uid),
        ("PatientID", header.patient_id),
    ):
        if not value:
            return _refused(Refusal.MISSING_ATTRIBUTE, f"The instance has no {keyword}.", uid, sop_class)
    if len(uid) > 64 or len(header.study_instance_uid) > 64:
        return _refused(Refusal.MISSING_ATTRIBUTE, "A UID is longer than 64 characters.", uid, sop_class)
    if DicomInstance.objects.filter(sop_instance_uid=uid).exists():
        return ReceiveOutcome("duplicate", uid, sop_class)
    try:
        image = ingest_file(f"{uid}.dcm", data, limits or _limits())
    except IngestError as error:
        reason = (
            Refusal.TOO_LARGE if error.code in ("file_too_large", "too_many_pixels") else Refusal.UNREADABLE
        )
        return _refused(reason, error.message, uid, sop_class)

    now = timezone.now()
    try:
        with services.cleanup_files_on_error() as written, transaction.atomic():
            arrival, created = DicomArrival.objects.select_for_update().get_or_create(
                study_instance_uid=header.study_instance_uid, defaults={"last_received_at": now}
            )
            if not created:
                # A late instance re-opens a filed (or failed) arrival, filed after its own quiet period.
                arrival.last_received_at = now
                arrival.state = DicomArrival.State.OPEN
                arrival.save(update_fields=["last_received_at", "state"])
            instance = DicomInstance(
                arrival=arrival,
                sop_instance_uid=uid,
                sop_class_uid=sop_class,
                series_instance_uid=header.series_instance_uid[:64],
                transfer_syntax_uid=header.transfer_syntax_uid[:64],
                sha256=image.sha256,
                byte_size=len(data),
                source=source,
                calling_ae_title=calling_ae_title[:16],
                received_by=received_by if getattr(received_by, "is_authenticated", False) else None,
            )
            services.save_file(instance.file, "instance.dcm", data, written)
            with transaction.atomic():  # a savepoint: a concurrent copy of the same instance loses here
                instance.save()
    except IntegrityError:
        if DicomInstance.objects.filter(sop_instance_uid=uid).exists():
            return ReceiveOutcome("duplicate", uid, sop_class)
        raise
    except services.ServiceError as error:
        return _refused(Refusal.STORAGE, error.message, uid, sop_class)
    return ReceiveOutcome("stored", uid, sop_class)


def _limits() -> IngestLimits:
    base = IngestLimits.from_settings()
    return IngestLimits(
        max_bytes=settings.DICOM_MAX_INSTANCE_BYTES, max_pixels=base.max_pixels, min_side=base.min_side
    )


# --- Filing ------------------------------------------------------------------------------------------


def dicom_system_user() -> Any:
    """The account studies received over DICOM are recorded under: no password, no role."""
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=settings.DICOM_SYSTEM_USERNAME)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def dicom_arrivals_file_due(*, now: dt.datetime | None = None) -> list[int]:
    """File every arrival that has been quiet for the quiet period; returns the arrival ids filed."""
    now = now or timezone.now()
    quiet_since = now - dt.timedelta(seconds=settings.DICOM_QUIET_PERIOD_SECONDS)
    due = list(
        DicomArrival.objects.filter(state=DicomArrival.State.OPEN, last_received_at__lte=quiet_since)
        .order_by("last_received_at")
        .values_list("pk", flat=True)[:200]
    )
    filed = []
    for arrival_id in due:
        if dicom_arrival_file(arrival_id=arrival_id, quiet_since=quiet_since):
            filed.append(arrival_id)
    return filed


def dicom_arrival_file(*, arrival_id: int, quiet_since: dt.datetime | None = None) -> bool:
    """File an arrival's received instances into its study, in one transaction. False when there was
    nothing to do (another process filed it, or an instance arrived since the caller looked)."""
    staged: list[str] = []
    with services.cleanup_files_on_error() as written, transaction.atomic():
        arrival = DicomArrival.objects.select_for_update().get(pk=arrival_id)
        if arrival.state != DicomArrival.State.OPEN:
            return False
        if quiet_since is not None and arrival.last_received_at > quiet_since:
            return False
        instances = list(
            arrival.instances.select_for_update()
            .filter(state=DicomInstance.State.RECEIVED)
            .order_by("created_at", "pk")
        )
        staged = [str(i.file.name) for i in instances if i.file]
        try:
            with transaction.atomic():
                _file_instances(arrival, instances, written)
        except services.ServiceError as error:
            arrival.state = DicomArrival.State.FAILED
            arrival.failure_message = error.message
            arrival.save(update_fields=["state", "failure_message"])
            logger.warning("DICOM arrival %s could not be filed: %s", arrival.pk, error.code)
            return True
        arrival.state = DicomArrival.State.FILED
        arrival.failure_message = ""
        arrival.filed_at = timezone.now()
        arrival.save(update_fields=["state", "failure_message", "filed_at", "study"])
        # The inbox copies are no longer needed once the radiographs (with their own copies) are committed.
        DicomInstance.objects.filter(pk__in=[i.pk for i in instances]).update(file="")
        transaction.on_commit(lambda: _delete_files(staged))
    return True


def _delete_files(names: Sequence[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not remove the inbox file %s", name)


def _file_instances(arrival: DicomArrival, instances: list[DicomInstance], written: list[str]) -> None:
    study = arrival.study or _existing_study(arrival)
    pending: list[tuple[DicomInstance, bytes]] = []
    for instance in instances:
        existing = _radiograph_with_uid(study, instance.sop_instance_uid) if study else None
        if existing is not None:
            # Already in the study (uploaded through the form, say): the same image, not a second one.
            _mark(instance, DicomInstance.State.FILED, radiograph=existing)
            continue
        with instance.file.open("rb") as handle:
            pending.append((instance, handle.read()))
    if not pending:
        arrival.study = study
        return
    if study is None:
        study = _study_create(arrival, pending, written)
    else:
        _study_extend(study, pending, written)
    arrival.study = study


def _existing_study(arrival: DicomArrival) -> Study | None:
    """A study already holding this StudyInstanceUID (uploaded as DICOM files through the form or API)."""
    radiograph = (
        Radiograph.objects.filter(dicom_attributes__StudyInstanceUID=arrival.study_instance_uid)
        .select_related("study")
        .first()
    )
    return radiograph.study if radiograph else None


def _radiograph_with_uid(study: Study, sop_instance_uid: str) -> Radiograph | None:
    return study.radiographs.filter(dicom_attributes__SOPInstanceUID=sop_instance_uid).first()


def _mark(
    instance: DicomInstance, state: str, *, radiograph: Radiograph | None = None, message: str = ""
) -> None:
    instance.state = state
    instance.radiograph = radiograph
    instance.failure_message = message
    instance.save(update_fields=["state", "radiograph", "failure_message"])


def _study_create(
    arrival: DicomArrival, pending: list[tuple[DicomInstance, bytes]], written: list[str]
) -> Study:
    limit = settings.UPLOAD_MAX_FILES_PER_STUDY
    accepted, extra = pending[:limit], pending[limit:]
    files = [services.UploadedImage(f"{instance.sop_instance_uid}.dcm", data) for instance, data in accepted]
    header = _first_attributes(accepted[0][1])
    details = services.StudyDetails(
        # Blank fields are filled from the instances' own attributes by study_create.
        accession_number="" if header.get("AccessionNumber") else arrival.study_instance_uid,
        patient_name="" if header.get("PatientName") else "Unnamed patient",
    )
    user = dicom_system_user()
    try:
        with transaction.atomic():
            result = services.study_create(
                uploaded_by=user, details=details, files=files, record_instances=False
            )
    except services.ServiceError as error:
        if error.field != "body_region":
            raise
        # BodyPartExamined is missing or names no region the queue knows: file the study under "other".
        details = services.StudyDetails(**{**details.__dict__, "body_region": BodyRegion.OTHER})
        result = services.study_create(uploaded_by=user, details=details, files=files, record_instances=False)
    if result.study is None:
        raise services.ServiceError("no_images", "No instance of the study could be read.")
    written.extend(str(r.image.name) for r in result.accepted)
    _record_outcome(accepted, result.accepted, result.rejected)
    for instance, _ in extra:
        _mark(instance, DicomInstance.State.REFUSED, message=f"A study holds at most {limit} radiographs.")
    return result.study


def _study_extend(study: Study, pending: list[tuple[DicomInstance, bytes]], written: list[str]) -> None:
    """Add late instances to a study already filed: the same checks as an upload, classified after
    commit."""
    limits = _limits()
    room = settings.UPLOAD_MAX_FILES_PER_STUDY - study.radiographs.count()
    position = (study.radiographs.order_by("-position").values_list("position", flat=True).first() or 0) + 1
    added: list[Radiograph] = []
    rejected: list[IngestError] = []
    for instance, data in pending:
        if room <= 0:
            _mark(
                instance,
                DicomInstance.State.REFUSED,
                message=f"A study holds at most {settings.UPLOAD_MAX_FILES_PER_STUDY} radiographs.",
            )
            continue
        try:
            image = ingest_file(f"{instance.sop_instance_uid}.dcm", data, limits)
        except IngestError as error:
            rejected.append(error)
            continue
        if study.radiographs.filter(sha256=image.sha256).exists():
            rejected.append(
                IngestError(image.original_filename, "duplicate_file", "The study already holds it.")
            )
            continue
        radiograph = services.radiograph_from_image(study=study, position=position, image=image)
        services.save_file(radiograph.image, "upload", image.content, written)
        radiograph.save()
        added.append(radiograph)
        position += 1
        room -= 1
    _record_outcome(pending, added, rejected)
    if added:
        services.audit_record(
            action=AuditEvent.Action.STUDY_UPLOADED,
            actor=dicom_system_user(),
            target=study,
            details={"radiographs": [r.pk for r in added], "added_to_existing_study": True},
        )
        services.study_refresh_triage(study_id=study.pk)
        ids = [r.pk for r in added]
        transaction.on_commit(lambda: dispatch.send_classification(ids))


def _record_outcome(
    pending: Sequence[tuple[DicomInstance, bytes]],
    accepted: Sequence[Radiograph],
    rejected: Sequence[IngestError],
) -> None:
    by_name = {r.original_filename: r for r in accepted}
    reasons = {e.filename: e.message for e in rejected}
    for instance, _ in pending:
        name = f"{instance.sop_instance_uid}.dcm"
        if name in by_name:
            _mark(instance, DicomInstance.State.FILED, radiograph=by_name[name])
        else:
            _mark(
                instance,
                DicomInstance.State.REFUSED,
                message=reasons.get(name, "The instance was not filed."),
            )


def _first_attributes(data: bytes) -> dict[str, str]:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return {
        "AccessionNumber": str(getattr(dataset, "AccessionNumber", "") or "").strip(),
        "PatientName": str(getattr(dataset, "PatientName", "") or "").strip(),
    }
