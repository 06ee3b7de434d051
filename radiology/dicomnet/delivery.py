"""Results back to the PACS: which studies are due a delivery, building their DICOM objects once, and
sending them (through radiology.dicomnet.destination: C-STORE SCU or STOW-RS) with retries and a status
admins and API clients can see.

A delivery never blocks classification: it is noticed after the fact (the housekeeping task looks for
studies whose predictions or reviews are newer than their last delivery) and runs in its own task.
Its documents are built once and stored, so a retry sends the very same SOP instances (a PACS that got
the first attempt just overwrites them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from radiology import dispatch, selectors, services
from radiology.dicomnet import results
from radiology.dicomnet.destination import DeliveryError, Destination, configured_destination, send
from radiology.dicomnet.models import ResultDelivery, result_document_storage_name
from radiology.governance.models import GuardrailRefusal
from radiology.models import Radiograph, Review, Study

logger = logging.getLogger(__name__)

# Studies whose predictions or reviews are older than this are not looked at again by the poll.
DUE_WINDOW = dt.timedelta(hours=24)


# --- What is due ---------------------------------------------------------------------------------------


def _dicom_radiographs(study: Study) -> list[Radiograph]:
    # Refusals prefetched: the model result reads each declined image's reason (one query, not one each).
    rows = study.radiographs.filter(format=Radiograph.Format.DICOM).prefetch_related("refusals")
    return [r for r in rows.order_by("position", "pk") if r.dicom_attributes.get("SOPInstanceUID")]


def _key(ids: Sequence[int], declined: Sequence[int] = ()) -> str:
    """What a delivery reports: its predictions' (or reviews') ids and, for the model's result, the
    refusals of the images the model declined (appended, so a key without them is what it always was)."""
    parts = [str(i) for i in sorted(ids)] + [f"refusal-{i}" for i in sorted(declined)]
    return hashlib.sha256(",".join(parts).encode()).hexdigest()


def _refusals(radiographs: Sequence[Radiograph]) -> dict[int, GuardrailRefusal]:
    """The refusal that declined each NOT_ANALYSED radiograph (selectors.radiograph_refusal's rule)."""
    found = {r.pk: selectors.radiograph_refusal(r) for r in radiographs}
    return {pk: refusal for pk, refusal in found.items() if refusal is not None}


def _latest_reviews(radiographs: Sequence[Radiograph]) -> dict[int, Review]:
    latest: dict[int, Review] = {}
    for review in Review.objects.filter(radiograph__in=radiographs).order_by("created_at", "pk"):
        latest[review.radiograph_id] = review
    return latest


def result_deliveries_create_due(*, now: dt.datetime | None = None) -> list[int]:
    """Create (and send after commit) a delivery for each study with a new result or a new final call."""
    destination = configured_destination()
    if destination is None:
        return []
    since = (now or timezone.now()) - DUE_WINDOW
    predicted = [Study.State.AWAITING_REVIEW, Study.State.REVIEWED]
    due = [
        # A model result once a study has a prediction newer than its last result delivery, or an image
        # the model declined since (the result then says so, with the reason)...
        (ResultDelivery.Kind.MODEL_RESULT, predicted, "predictions"),
        (ResultDelivery.Kind.MODEL_RESULT, [*predicted, Study.State.NOT_ANALYSED], "refusals"),
        # ...and a final call once a reviewed study has a review newer than its last final-call delivery.
        (ResultDelivery.Kind.FINAL_CALL, [Study.State.REVIEWED], "reviews"),
    ]
    created: list[int] = []
    for kind, states, events in due:
        for study_id in _due_studies(kind, states, events, since):
            delivery = _create(study_id, kind, destination)
            if delivery:
                created.append(delivery)
    return created


def _due_studies(kind: str, states: Sequence[str], events: str, since: dt.datetime) -> list[int]:
    """DICOM studies in ``states`` whose newest radiograph ``events`` (predictions or reviews), since
    ``since``, is newer than their last delivery of ``kind``: at most 200 a poll."""
    studies = (
        Study.objects.filter(
            state__in=states,
            radiographs__format=Radiograph.Format.DICOM,
            **{f"radiographs__{events}__created_at__gte": since},
        )
        .annotate(
            last_event=Max(f"radiographs__{events}__created_at"),
            last_delivery=Max("result_deliveries__created_at", filter=Q(result_deliveries__kind=kind)),
        )
        .filter(Q(last_delivery__isnull=True) | Q(last_delivery__lt=F("last_event")))
        .values_list("pk", flat=True)
        .distinct()
    )
    return list(studies)[:200]


def _create(study_id: int, kind: str, destination: Destination) -> int | None:
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        radiographs = _dicom_radiographs(study)
        declined: list[int] = []
        if kind == ResultDelivery.Kind.MODEL_RESULT:
            ids = [p.pk for p in services.current_predictions([r.pk for r in radiographs]).values()]
            declined = [refusal.pk for refusal in _refusals(radiographs).values()]
        else:
            ids = [r.pk for r in _latest_reviews(radiographs).values()]
        if not ids and not declined:
            return None
        # A shadow version's refusal, or a re-run of the poll, makes the same key: nothing is sent twice.
        delivery, created = ResultDelivery.objects.get_or_create(
            study=study, kind=kind, key=_key(ids, declined), defaults={"destination": str(destination)}
        )
        if not created:
            # The same content was delivered before (e.g. a re-run of the poll): touch it so the poll
            # stops finding this study, and send nothing twice.
            ResultDelivery.objects.filter(pk=delivery.pk).update(created_at=timezone.now())
            return None
        transaction.on_commit(lambda: dispatch.send_result_delivery(delivery.pk))
    return delivery.pk


def result_deliveries_resend_stale(*, now: dt.datetime | None = None) -> list[int]:
    """PENDING deliveries whose message never reached the broker, or whose worker died: send again."""
    now = now or timezone.now()
    stale = now - dt.timedelta(seconds=settings.DICOM_DELIVERY_RESEND_AFTER_SECONDS)
    never_sent = now - dt.timedelta(seconds=5)
    ids = list(
        ResultDelivery.objects.filter(status=ResultDelivery.Status.PENDING)
        .filter(Q(dispatched_at__isnull=True, created_at__lt=never_sent) | Q(updated_at__lt=stale))
        .values_list("pk", flat=True)[:200]
    )
    for pk in ids:
        dispatch.send_result_delivery(pk)
    return ids


# --- Building ------------------------------------------------------------------------------------------


def _read_dataset(radiograph: Radiograph, *, pixels: bool) -> Any:
    import pydicom

    with radiograph.image.open("rb") as handle:
        data = handle.read()
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixels), data


def _store_document(dataset: Any, role: str, written: list[str]) -> dict[str, str]:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    name = default_storage.save(result_document_storage_name(None, ""), ContentFile(buffer.getvalue()))
    written.append(name)
    return {
        "role": role,
        "sop_class_uid": str(dataset.SOPClassUID),
        "sop_instance_uid": str(dataset.SOPInstanceUID),
        "file": name,
    }


def _build_model_result(study: Study, written: list[str]) -> list[dict[str, str]]:
    from classifier.decoding import decode_grayscale

    radiographs = _dicom_radiographs(study)
    current = services.current_predictions([r.pk for r in radiographs])
    refusals = _refusals(radiographs)
    items: list[tuple[results.ImageResult, Any, bytes]] = []
    reported: list[results.ImageResult | results.ImageNotAnalysed] = []  # the study's order
    version = ""
    for radiograph in radiographs:
        prediction = current.get(radiograph.pk)
        refusal = refusals.get(radiograph.pk)
        if prediction is None and refusal is not None:
            version = version or refusal.model_version
            source, _ = _read_dataset(radiograph, pixels=False)
            reported.append(
                results.ImageNotAnalysed(source=source, code=refusal.code, label=refusal.get_code_display())
            )
            continue
        if prediction is None:
            continue
        version = prediction.model_version
        source, data = _read_dataset(radiograph, pixels=False)
        items.append(
            (
                results.ImageResult(
                    source=source,
                    probability=prediction.probability,
                    label=prediction.label,
                    band=getattr(prediction, "band", "") or "",
                    threshold=prediction.threshold,
                    threshold_sensitive=getattr(prediction, "threshold_sensitive", None),
                    threshold_specific=getattr(prediction, "threshold_specific", None),
                    boxes=results.parse_boxes(getattr(prediction, "boxes", [])),
                ),
                source,
                data,
            )
        )
        reported.append(items[-1][0])
    if not reported:
        raise DeliveryError("The study has no predicted or declined DICOM radiograph to report.")
    sr = results.build_model_result_sr(
        results=reported,
        model_version=version,
        series_instance_uid=results.new_uid(),
        sop_instance_uid=results.new_uid(),
        institution_name=settings.DICOM_INSTITUTION_NAME,
    )
    documents = [_store_document(sr, "sr", written)]
    sc_series = results.new_uid()
    for number, (item, _, data) in enumerate(items, start=1):
        import pydicom

        full = pydicom.dcmread(io.BytesIO(data))
        rgb = results.draw_boxes(decode_grayscale(data), item, version)
        sc = results.build_secondary_capture(
            source=full,
            pixels_rgb=rgb,
            series_instance_uid=sc_series,
            sop_instance_uid=results.new_uid(),
            instance_number=number,
            model_version=version,
        )
        documents.append(_store_document(sc, "sc", written))
    return documents


def _build_final_call(study: Study, written: list[str]) -> list[dict[str, str]]:
    import pydicom

    first = (
        ResultDelivery.objects.filter(study=study, kind=ResultDelivery.Kind.MODEL_RESULT)
        .exclude(documents=[])
        .order_by("-created_at", "-pk")
        .first()
    )
    sr_document = next((d for d in (first.documents if first else []) if d["role"] == "sr"), None)
    if sr_document is None:
        raise DeliveryError("The model's result SR has not been built yet; the final call follows it.")
    with default_storage.open(sr_document["file"], "rb") as handle:
        model_sr = pydicom.dcmread(handle)
    radiographs = _dicom_radiographs(study)
    latest = _latest_reviews(radiographs)
    reviews = []
    reviewers = []
    for radiograph in radiographs:
        review = latest.get(radiograph.pk)
        if review is None:
            continue
        source, _ = _read_dataset(radiograph, pixels=False)
        reviews.append(
            results.ImageReview(
                source=source,
                decision=review.decision,
                final_label=review.final_label,
                reason_code=review.reason_code,
                reason_label=review.get_reason_code_display() if review.reason_code else "",
                reason_text=review.reason_text,
            )
        )
        reviewers.append(review.reviewer)
    if not reviews:
        raise DeliveryError("The study has no review to report.")
    reviewer = reviewers[-1]
    sr = results.build_final_call_sr(
        reviews=reviews,
        model_result_sr=model_sr,
        reviewer_name=reviewer.get_full_name() or reviewer.get_username(),
        series_instance_uid=results.new_uid(),
        sop_instance_uid=results.new_uid(),
        institution_name=settings.DICOM_INSTITUTION_NAME,
    )
    return [_store_document(sr, "sr", written)]


def _documents_for(delivery_id: int) -> tuple[ResultDelivery, list[dict[str, str]]]:
    """The delivery's documents, built on the first attempt (under the row's lock) and reused after."""
    with services.cleanup_files_on_error() as written, transaction.atomic():
        delivery = ResultDelivery.objects.select_for_update().select_related("study").get(pk=delivery_id)
        if delivery.documents or delivery.status != ResultDelivery.Status.PENDING:
            return delivery, list(delivery.documents)
        if delivery.kind == ResultDelivery.Kind.MODEL_RESULT:
            documents = _build_model_result(delivery.study, written)
        else:
            documents = _build_final_call(delivery.study, written)
        delivery.documents = documents
        delivery.save(update_fields=["documents", "updated_at"])
    return delivery, documents


# --- Sending -------------------------------------------------------------------------------------------


def result_delivery_send(*, delivery_id: int) -> ResultDelivery:
    """One attempt: build the documents if needed and send them all. Raises DeliveryError on failure."""
    delivery, documents = _documents_for(delivery_id)
    if delivery.status != ResultDelivery.Status.PENDING:
        return delivery
    destination = configured_destination()
    if destination is None:
        raise DeliveryError("No DICOM destination is configured (DICOM_DESTINATION).")
    payloads = []
    for document in documents:
        with default_storage.open(document["file"], "rb") as handle:
            payloads.append(handle.read())
    send(destination, payloads)
    ResultDelivery.objects.filter(pk=delivery.pk).update(
        status=ResultDelivery.Status.SENT,
        sent_at=timezone.now(),
        last_error="",
        attempts=F("attempts") + 1,
        destination=str(destination),
        updated_at=timezone.now(),
    )
    delivery.refresh_from_db()
    return delivery


def result_delivery_record_failure(*, delivery_id: int, message: str) -> ResultDelivery:
    """Count a failed attempt; after DICOM_DELIVERY_MAX_ATTEMPTS the delivery is FAILED with the reason."""
    with transaction.atomic():
        delivery = ResultDelivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.status != ResultDelivery.Status.PENDING:
            return delivery
        delivery.attempts += 1
        delivery.last_error = message[:2000]
        if delivery.attempts >= settings.DICOM_DELIVERY_MAX_ATTEMPTS:
            delivery.status = ResultDelivery.Status.FAILED
        delivery.save(update_fields=["attempts", "last_error", "status", "updated_at"])
    return delivery


def result_delivery_retry(*, delivery_id: int) -> ResultDelivery:
    """Send a FAILED delivery again (an admin action, after the PACS was fixed)."""
    with transaction.atomic():
        delivery = ResultDelivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.status != ResultDelivery.Status.FAILED:
            raise services.ServiceError("not_failed", "Only a failed delivery can be sent again.")
        delivery.status = ResultDelivery.Status.PENDING
        delivery.attempts = 0
        delivery.dispatched_at = None
        delivery.save(update_fields=["status", "attempts", "dispatched_at", "updated_at"])
        transaction.on_commit(lambda: dispatch.send_result_delivery(delivery.pk))
    return delivery
