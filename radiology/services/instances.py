"""DICOM instances uploaded through the form or the API share the network paths' idempotency by
SOPInstanceUID: an uploaded DICOM radiograph is recorded as a DicomInstance (source "upload", filed, with its
radiograph) in the DicomArrival of its StudyInstanceUID, so a later C-STORE or STOW-RS of the same instance
is answered "stored" and creates nothing; and an upload of an instance already received by any path is
refused for that file, naming the SOPInstanceUID and where it already is.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from radiology.ingest import IngestedImage, IngestError
from radiology.models import DicomArrival, DicomInstance, Radiograph
from radiology.services.errors import ServiceError

ALREADY_RECEIVED = "already_received"
_UID_MAX = 64


def _uid(image: IngestedImage, keyword: str) -> str:
    value = str(image.dicom_attributes.get(keyword, "") or "").strip()
    return value if len(value) <= _UID_MAX else ""


_HOW: dict[str, str] = {
    DicomInstance.Source.C_STORE: "over DICOM (C-STORE)",
    DicomInstance.Source.STOW_RS: "over DICOMweb (STOW-RS)",
    DicomInstance.Source.UPLOAD: "in an earlier upload",
}


def _how(instance: DicomInstance) -> str:
    return _HOW.get(instance.source, "before")


def already_received_message(instance: DicomInstance) -> str:
    """Where the instance already is, for the uploader; nothing was created for this file."""
    head = (
        f"This DICOM instance (SOP Instance UID {instance.sop_instance_uid}) was already received "
        f"{_how(instance)} on {timezone.localtime(instance.created_at):%Y-%m-%d %H:%M}"
    )
    radiograph = instance.radiograph
    if radiograph is not None:
        study = radiograph.study
        return (
            f"{head}: it is radiograph {radiograph.position + 1} of study {study.accession_number} "
            f"(study #{study.pk}). It was not added again."
        )
    arrival = instance.arrival
    if instance.state == DicomInstance.State.REFUSED:
        return f"{head} and refused when its study was filed: {instance.failure_message}"
    if arrival.state == DicomArrival.State.FAILED:
        return (
            f"{head}; its study (Study Instance UID {arrival.study_instance_uid}) could not be filed: "
            f"{arrival.failure_message} An admin can see it under DICOM arrivals."
        )
    return (
        f"{head} and will be filed with its study (Study Instance UID {arrival.study_instance_uid}) "
        "shortly. It was not added again."
    )


def refuse_known(
    images: Sequence[IngestedImage], rejected: Sequence[IngestError], *, enabled: bool = True
) -> tuple[list[IngestedImage], list[IngestError]]:
    """The images to keep, and `rejected` with a refusal added for each DICOM image whose SOPInstanceUID
    was already received (by any path) or repeats another file's in this upload."""
    if not enabled:
        return list(images), list(rejected)
    uids = {uid for image in images if (uid := _uid(image, "SOPInstanceUID"))}
    known = {
        instance.sop_instance_uid: instance
        for instance in DicomInstance.objects.filter(sop_instance_uid__in=uids).select_related(
            "arrival", "radiograph__study"
        )
    }
    kept: list[IngestedImage] = []
    refused = list(rejected)
    seen: set[str] = set()
    for image in images:
        uid = _uid(image, "SOPInstanceUID")
        if uid in known:
            refused.append(
                IngestError(image.original_filename, ALREADY_RECEIVED, already_received_message(known[uid]))
            )
        elif uid and uid in seen:
            refused.append(
                IngestError(
                    image.original_filename,
                    "duplicate_file",
                    f"Another file of this upload is the same DICOM instance (SOP Instance UID {uid}).",
                )
            )
        else:
            if uid:
                seen.add(uid)
            kept.append(image)
    return kept, refused


def record_uploaded(
    radiographs: Sequence[Radiograph],
    images: Sequence[IngestedImage],
    uploaded_by: Any,
    *,
    enabled: bool = True,
) -> None:
    """Record each uploaded DICOM radiograph as a filed DicomInstance, inside the upload's transaction. When
    the same instance arrived over the network since refuse_known looked, ServiceError (the upload's
    transaction is then rolled back: nothing is half-written)."""
    if not enabled:
        return
    now = timezone.now()
    for radiograph, image in zip(radiographs, images, strict=True):
        uid, study_uid = _uid(image, "SOPInstanceUID"), _uid(image, "StudyInstanceUID")
        if image.format != "DICOM" or not uid or not study_uid:
            continue
        arrival, _ = DicomArrival.objects.get_or_create(
            study_instance_uid=study_uid,
            defaults={
                "study": radiograph.study,
                "state": DicomArrival.State.FILED,
                "last_received_at": now,
                "filed_at": now,
            },
        )
        instance = DicomInstance(
            arrival=arrival,
            sop_instance_uid=uid,
            sop_class_uid=_sop_class(image.content),
            series_instance_uid=_uid(image, "SeriesInstanceUID"),
            transfer_syntax_uid=_uid(image, "TransferSyntaxUID"),
            sha256=image.sha256,
            byte_size=len(image.content),
            source=DicomInstance.Source.UPLOAD,
            received_by=uploaded_by if getattr(uploaded_by, "is_authenticated", False) else None,
            state=DicomInstance.State.FILED,
            radiograph=radiograph,
        )
        try:
            with transaction.atomic():  # a savepoint: the instance's unique SOPInstanceUID decides a race
                instance.save()
        except IntegrityError:
            if DicomInstance.objects.filter(sop_instance_uid=uid).exists():
                raise ServiceError(
                    ALREADY_RECEIVED,
                    f"The DICOM instance {uid} ({image.original_filename}) arrived over the network while "
                    "this upload was being saved, so nothing was saved. Upload again: instances already "
                    "received are then named and skipped.",
                ) from None
            raise


def _sop_class(data: bytes) -> str:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    meta = getattr(dataset, "file_meta", None)
    value = getattr(dataset, "SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", "")
    return str(value)[:_UID_MAX]
