"""Clinicians' verdicts on the model's predictions: one image at a time, or a whole study confirmed at once.

Every review is checked the same way, from the web page or the API: an override's reason must fit its
direction; a reader in blinded mode must have recorded an unaided call first; an adjudicated radiograph is
locked. A review that disagrees with a confident model band, or with the reader's own unaided call, opens an
adjudication for a second clinician (radiology.services.reading).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from radiology.models import (
    Adjudication,
    AuditEvent,
    Label,
    Prediction,
    Radiograph,
    Review,
    Study,
    UnaidedRead,
)
from radiology.services.audit import audit_record
from radiology.services.errors import ServiceError
from radiology.services.reading import adjudication_open_if_needed, reader_is_blinded
from radiology.services.tallies import standing_reviews_change
from radiology.services.triage import current_predictions, study_refresh_triage


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
        prediction = radiograph.current_prediction
        if radiograph.status != Radiograph.Status.PREDICTED or prediction is None:
            raise ServiceError("not_ready", "This radiograph has no prediction to review yet.")
        final_label, reason_code = _checked_decision(
            prediction, decision, final_label, reason_code, reason_text
        )
        unaided = _unaided_label(radiograph, reviewer)
        return _review_create(
            radiograph=radiograph,
            prediction=prediction,
            reviewer=reviewer,
            decision=decision,
            final_label=final_label,
            reason_code=reason_code,
            reason_text=reason_text,
            unaided_label=unaided,
            client_ip=client_ip,
        )


def study_confirm(*, study_id: int, reviewer: Any, client_ip: str | None = None) -> list[Review]:
    """Confirm the model's label on every image of the study that still awaits a review, in one action.

    Images already reviewed (an override made a moment ago, say) keep their review. Nothing is recorded
    unless every image can be: in blinded mode each one needs the reader's unaided call first.
    """
    with transaction.atomic():
        radiographs = list(
            Radiograph.objects.select_for_update()
            .filter(study_id=study_id, status=Radiograph.Status.PREDICTED)
            .order_by("pk")
        )
        reviewed = set(
            Review.objects.filter(radiograph__in=radiographs).values_list("radiograph_id", flat=True)
        )
        waiting = [r for r in radiographs if r.pk not in reviewed]
        if not waiting:
            raise ServiceError("nothing_to_confirm", "No image of this study awaits a review.")
        predictions = current_predictions([r.pk for r in waiting])
        reviews = []
        for radiograph in waiting:
            prediction = predictions[radiograph.pk]
            reviews.append(
                _review_create(
                    radiograph=radiograph,
                    prediction=prediction,
                    reviewer=reviewer,
                    decision=Review.Decision.CONFIRM,
                    final_label=prediction.label,
                    reason_code="",
                    reason_text="",
                    unaided_label=_unaided_label(radiograph, reviewer),
                    client_ip=client_ip,
                    refresh=False,
                    study_wide=True,
                )
            )
        study_refresh_triage(study_id=study_id)
    return reviews


def study_read_without_model(*, study_id: int, reader: Any, client_ip: str | None = None) -> None:
    """Take a study the model declined entirely off the Not analysed worklist: the clinician has read its
    radiographs without the model (in the PACS). No label is recorded here; the report is theirs, there."""
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        if study.state != Study.State.NOT_ANALYSED:
            raise ServiceError(
                "not_declined",
                "Only a study the model did not analyse can be marked as read without it.",
            )
        study.read_without_model_by = reader
        study.read_without_model_at = timezone.now()
        study.save(update_fields=["read_without_model_by", "read_without_model_at"])
        study_refresh_triage(study_id=study.pk)
        audit_record(
            action=AuditEvent.Action.STUDY_READ_WITHOUT_MODEL,
            actor=reader,
            target=study,
            details={"accession_number": study.accession_number},
            client_ip=client_ip,
        )


def override_reasons_for(label: str) -> Sequence[str]:
    """The reasons that can explain an override to `label` (empty for an unknown label)."""
    return Review.REASONS_FOR_LABEL.get(label, ())


def _checked_decision(
    prediction: Prediction, decision: str, final_label: str | None, reason_code: str, reason_text: str
) -> tuple[str, str]:
    if decision == Review.Decision.CONFIRM:
        if final_label and final_label != prediction.label:
            raise ServiceError(
                "confirm_label_mismatch",
                "Confirming keeps the model's label; choose Override to record a different one.",
                field="final_label",
            )
        return prediction.label, ""
    if decision != Review.Decision.OVERRIDE:
        raise ServiceError("invalid_decision", "The decision must be confirm or override.", field="decision")
    final_label = final_label or Label.opposite(prediction.label)
    if final_label not in Label.values:
        raise ServiceError("invalid_label", "Choose fractured or not fractured.", field="final_label")
    if final_label == prediction.label:
        raise ServiceError(
            "override_same_label",
            "An override must change the label; choose Confirm to agree with the model.",
            field="final_label",
        )
    if reason_code not in Review.Reason.values:
        raise ServiceError("reason_required", "Choose a reason for the override.", field="reason_code")
    if reason_code not in override_reasons_for(final_label):
        raise ServiceError(
            "reason_contradicts_label",
            f"“{Review.Reason(reason_code).label}” cannot explain a final label of "
            f"“{Label(final_label).label}”; choose a reason that fits.",
            field="reason_code",
        )
    if reason_code == Review.Reason.OTHER and not reason_text:
        raise ServiceError(
            "reason_required", "Describe the reason when you choose 'Other'.", field="reason_text"
        )
    return final_label, reason_code


def _unaided_label(radiograph: Radiograph, reviewer: Any) -> str:
    """The reader's unaided call on this image; required first when the reader reads blinded."""
    read = UnaidedRead.objects.filter(radiograph=radiograph, reader=reviewer).first()
    if read is not None:
        return read.label
    if reader_is_blinded(reviewer):
        raise ServiceError(
            "unaided_read_required",
            "You read blinded: record your own call on this image before the model's answer.",
        )
    return ""


def _review_create(
    *,
    radiograph: Radiograph,
    prediction: Prediction,
    reviewer: Any,
    decision: str,
    final_label: str,
    reason_code: str,
    reason_text: str,
    unaided_label: str,
    client_ip: str | None,
    refresh: bool = True,
    study_wide: bool = False,
) -> Review:
    if Adjudication.objects.filter(radiograph=radiograph, state=Adjudication.State.DECIDED).exists():
        raise ServiceError(
            "adjudicated",
            "A second reader has adjudicated this image; its label is locked.",
        )
    # The audit dashboard's tallies move the prediction from its earlier standing review (if any) to this one.
    with standing_reviews_change([prediction.pk]):
        review = Review.objects.create(
            radiograph=radiograph,
            prediction=prediction,
            reviewer=reviewer,
            decision=decision,
            final_label=final_label,
            reason_code=reason_code,
            reason_text=reason_text,
            unaided_label=unaided_label,
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
                "model_band": prediction.band,
                "unaided_label": unaided_label,
                "decision": decision,
                "final_label": final_label,
                "reason_code": reason_code,
                "study_confirm": study_wide,
            },
            client_ip=client_ip,
        )
    if not radiograph.has_review:
        radiograph.has_review = True
        radiograph.save(update_fields=["has_review"])
    adjudication_open_if_needed(review=review, prediction=prediction)
    if refresh:
        study_refresh_triage(study_id=radiograph.study_id)
    return review
