"""Clinicians' verdicts on the model's predictions."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from radiology.models import AuditEvent, Label, Radiograph, Review
from radiology.services.audit import audit_record
from radiology.services.errors import ServiceError
from radiology.services.studies import current_predictions, study_refresh_triage


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
        prediction = current_predictions([radiograph.pk]).get(radiograph.pk)
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
