"""API batches: many studies submitted at once, each committed on its own."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from radiology.models import AuditEvent, Batch, BatchItem, Radiograph
from radiology.services.audit import audit_record
from radiology.services.errors import ServiceError
from radiology.services.storage import cleanup_files_on_error
from radiology.services.studies import StudyDetails, UploadedImage, study_create


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
    idempotency_key: str = "",
) -> BatchSubmitResult:
    """Create many studies, each on its own: one failing study never stops or half-writes another.

    Every item commits in its own transaction (the study, its radiographs, its files and its BatchItem
    together), so the worker can start on the first study while later ones are ingested, and an item
    that fails leaves only its BatchItem saying why. Classification is sent after each item's commit.

    With an ``idempotency_key`` (the API's Idempotency-Key), a retry of a batch whose web process died
    part-way resumes that batch: the items already stored are kept as they are and only the missing ones
    are created, instead of a second batch whose first studies fail as duplicate accession numbers.
    """
    if not items:
        raise ServiceError("no_studies", "A batch needs at least one study.", field="studies")
    batch, stored = _batch_to_fill(submitted_by, reference, idempotency_key)
    results: list[BatchItemResult] = []
    try:
        for index, item in enumerate(items):
            if index in stored:
                results.append(BatchItemResult(index=index, item=stored[index]))
            else:
                results.append(_batch_item_create(batch, index, item, submitted_by, client_ip))
    except BaseException:
        if not any(r.item.study_id for r in results):
            batch.delete()  # nothing of value was stored: leave no empty batch behind
        raise
    created = [r for r in results if r.item.study_id]
    if not created:
        batch.delete()
        return BatchSubmitResult(batch=None, items=results)
    # Only a resumed batch can have been recorded already (by the attempt that died after its audit event).
    already_recorded = bool(stored) and (
        AuditEvent.objects.filter(
            action=AuditEvent.Action.BATCH_SUBMITTED, target_type="batch", target_id=str(batch.pk)
        ).exists()
    )
    if not already_recorded:
        audit_record(
            action=AuditEvent.Action.BATCH_SUBMITTED,
            actor=submitted_by,
            target=batch,
            details={
                "items": len(results),
                "created": len(created),
                "failed": len(results) - len(created),
                "studies": [r.item.study_id for r in created],
                "resumed": bool(stored),
            },
            client_ip=client_ip,
        )
    return BatchSubmitResult(batch=batch, items=results)


def _batch_to_fill(submitted_by: Any, reference: str, idempotency_key: str) -> tuple[Batch, dict[int, Any]]:
    """The batch a retry with this key resumes, with its stored items by index; else a new batch.

    A key older than API_IDEMPOTENCY_TTL_HOURS may be used afresh (the API's rule): its old batch keeps
    its studies but gives the key up.
    """
    if idempotency_key:
        earlier = Batch.objects.filter(submitted_by=submitted_by, idempotency_key=idempotency_key).first()
        if earlier is not None:
            fresh_since = timezone.now() - dt.timedelta(hours=settings.API_IDEMPOTENCY_TTL_HOURS)
            if earlier.created_at >= fresh_since:
                return earlier, {item.index: item for item in earlier.items.all()}
            Batch.objects.filter(pk=earlier.pk).update(idempotency_key="")
    batch = Batch.objects.create(
        submitted_by=submitted_by, reference=reference.strip()[:200], idempotency_key=idempotency_key
    )
    return batch, {}


def _batch_item_create(
    batch: Any, index: int, item: BatchItemInput, submitted_by: Any, client_ip: str | None
) -> BatchItemResult:
    accession = item.details.accession_number.strip()[:64]
    with cleanup_files_on_error() as written, transaction.atomic():
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
