"""The study review page's data: every image of a study in acquisition order, with what the reader may see
of the model's answer (nothing of it before their own call when they read blinded), the reviews, the second
reader's state, the files refused at upload, and the page's context around it.

The review page's script reads the same dictionary as JSON (live updates, answers to actions), so the
display words (band names, percentages, the study summary) are made here with the template filters of
radiology.templatetags.radiology_ui, the ones the templates use.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from radiology import selectors, services
from radiology.models import AuditEvent, Label, Radiograph, Review, Study
from radiology.selectors import reading
from radiology.templatetags.radiology_ui import (
    band_breakdown,
    band_name,
    outcome_text,
    threshold_percents,
    verdict_percent,
    verdict_text,
)

# Shown for files refused at upload (the study page lists them after the upload's messages are gone).
REJECTION_TEXT = {
    "empty_file": "the file is empty",
    "file_too_large": "the file is larger than the upload limit",
    "unsupported_format": "not a PNG, JPEG or DICOM image",
    "unreadable_image": "the image could not be decoded",
    "too_many_pixels": "the image has more pixels than the limit",
    "image_too_small": "the image is too small to be a radiograph",
    "no_pixel_data": "the DICOM file holds no image",
    "not_a_radiograph": "not a plain radiograph (DICOM modality)",
    "duplicate_file": "the same image was already in the upload",
}
NOT_ANALYSED_TEXT = "Outside the model's intended use."


def prediction_data(prediction: Any, policy: reading.DisplayPolicy) -> dict[str, Any]:
    verdict = selectors.Verdict.of(prediction)
    return {
        "id": prediction.pk,
        "band": prediction.band,
        "band_display": band_name(verdict.band),
        "percent": verdict_percent(verdict),
        # The thresholds written with the probability's decimals, so the sentence beside it never blurs them.
        "threshold_percents": threshold_percents(verdict),
        "text": verdict_text(verdict),
        "probability": round(prediction.probability, 4),
        "label": prediction.label,
        "label_display": prediction.get_label_display(),
        "model_version": prediction.model_version,
        "threshold_sensitive": prediction.threshold_sensitive,
        "threshold_specific": prediction.threshold_specific,
        "boxes": prediction.boxes,
        "boxes_default": policy.boxes_validated,
        "boxes_caption": policy.boxes_caption,
        # The heatmap is offered only when the card validates it (the first model's peak fell on the
        # fracture in 1 of 69 images): otherwise it is not shown at all.
        "heatmap_url": reverse("radiology:heatmap_image", args=[prediction.pk])
        if prediction.heatmap and policy.heatmap_validated
        else None,
    }


def review_data(review: Review) -> dict[str, Any]:
    return {
        "id": review.pk,
        "decision": review.decision,
        "decision_display": review.get_decision_display(),
        "final_label": review.final_label,
        "final_label_display": review.get_final_label_display(),
        "unaided_label": review.unaided_label,
        "reason": review.get_reason_code_display() if review.reason_code else "",
        "notes": review.reason_text,
        "reviewer": review.reviewer.get_username(),
        "created_at": review.created_at.isoformat(),
    }


def _adjudication_data(adjudication: Any) -> dict[str, Any]:
    return {
        "state": adjudication.state,
        "state_display": adjudication.get_state_display(),
        "trigger_display": adjudication.get_trigger_display(),
        "label_display": adjudication.get_label_display() if adjudication.label else "",
        "adjudicator": adjudication.adjudicator.get_username() if adjudication.adjudicator else "",
    }


def _image_data(
    radiograph: Radiograph,
    *,
    number: int,
    user: Any,
    blinded: bool,
    prediction: Any,
    policies: dict[str, reading.DisplayPolicy],
    unaided: dict[int, str],
    adjudication: Any,
) -> dict[str, Any]:
    reviews = sorted(radiograph.reviews.all(), key=lambda r: (r.created_at, r.pk), reverse=True)
    reviewed_by_me = any(r.reviewer_id == user.pk for r in reviews)
    hidden = blinded and prediction is not None and radiograph.pk not in unaided and not reviewed_by_me
    attributes = radiograph.dicom_attributes or {}
    not_analysed = radiograph.status == Radiograph.Status.NOT_ANALYSED
    refusal = selectors.radiograph_refusal(radiograph)
    return {
        "id": radiograph.pk,
        "number": number,
        "filename": radiograph.original_filename,
        "width": radiograph.width,
        "height": radiograph.height,
        "format": radiograph.format,
        "view": attributes.get("ViewPosition", ""),
        "laterality": attributes.get("ImageLaterality") or attributes.get("Laterality", ""),
        "status": radiograph.status,
        "status_display": radiograph.get_status_display(),
        "failure_message": radiograph.failure_message
        or (refusal.reason if refusal else "")
        or (NOT_ANALYSED_TEXT if not_analysed else ""),
        "image_url": reverse("radiology:radiograph_image", args=[radiograph.pk]),
        "pixels_url": reverse("radiology:radiograph_pixels", args=[radiograph.pk]),
        "review_url": reverse("radiology:radiograph_review", args=[radiograph.pk]),
        "hidden": hidden,
        "unaided": unaided.get(radiograph.pk, ""),
        "prediction": None
        if prediction is None or hidden
        else prediction_data(prediction, policies[prediction.model_version]),
        "awaiting": prediction is not None and not reviews,
        "reviews": [] if hidden else [review_data(r) for r in reviews],
        "adjudication": None if adjudication is None or hidden else _adjudication_data(adjudication),
    }


def study_data(*, user: Any, study: Study) -> dict[str, Any]:
    """Everything the review page shows for a study. In blinded mode an image's band, boxes and earlier
    reviews are left out (not hidden: absent) until the reader has recorded their own call on it."""
    radiographs = reading.in_acquisition_order(study.radiographs.all())
    ids = [r.pk for r in radiographs]
    unaided = reading.unaided_reads_of(reader=user, radiograph_ids=ids)
    adjudications = reading.adjudications_of(radiograph_ids=ids)
    blinded, blinded_by = services.reader_blinding(user)
    predictions = {r.pk: selectors.radiograph_current_prediction(r) for r in radiographs}
    policies = reading.display_policies(p.model_version for p in predictions.values() if p is not None)
    images = [
        _image_data(
            radiograph,
            number=number,
            user=user,
            blinded=blinded,
            prediction=predictions[radiograph.pk],
            policies=policies,
            unaided=unaided,
            adjudication=adjudications.get(radiograph.pk),
        )
        for number, radiograph in enumerate(radiographs, start=1)
    ]
    any_hidden = any(image["hidden"] for image in images)
    verdict = None if any_hidden else selectors.study_verdict(study)
    outcome = None if any_hidden else selectors.study_outcome(study)
    return {
        "id": study.pk,
        "state": study.state,
        "state_display": study.get_state_display(),
        "blinded": blinded,
        "blinded_by": blinded_by,
        "images": images,
        "awaiting": sum(image["awaiting"] for image in images),
        "summary": None
        if verdict is None
        else {"band": verdict.band, "text": verdict_text(verdict), "breakdown": band_breakdown(verdict)},
        "outcome": outcome_text(outcome),
        "confirm_url": reverse("radiology:study_confirm", args=[study.pk]),
        "unaided_url": reverse("radiology:study_unaided", args=[study.pk]),
        "status_url": reverse("radiology:study_status", args=[study.pk]),
        "leave_url": reverse("radiology:study_leave", args=[study.pk]),
        "rejected": rejected_files(study),
    }


def rejected_files(study: Study) -> list[dict[str, str]]:
    """Files refused when the study was uploaded, from its upload audit event."""
    event = (
        AuditEvent.objects.filter(
            action=AuditEvent.Action.STUDY_UPLOADED, target_type="study", target_id=str(study.pk)
        )
        .values_list("details", flat=True)
        .first()
    )
    rejected = (event or {}).get("rejected", []) if isinstance(event, dict) else []
    return [
        {
            "file": str(r.get("file", "")),
            "reason": REJECTION_TEXT.get(str(r.get("code")), str(r.get("code", ""))),
        }
        for r in rejected
        if isinstance(r, dict)
    ]


def selected_image(data: dict[str, Any], requested: Any) -> int | None:
    """The image asked for in ?r=, else the first one still awaiting review, else the first."""
    images = data["images"]
    try:
        wanted = int(requested)
    except (TypeError, ValueError):
        wanted = None
    for image in images:
        if image["id"] == wanted:
            return int(image["id"])
    for image in images:
        if image["awaiting"]:
            return int(image["id"])
    return int(images[0]["id"]) if images else None


def reading_marker(*, user: Any, study: Study) -> str | None:
    """The colleague reading this study right now, if any (not the user)."""
    marked = Study.objects.select_related("reading_by").only(
        "pk", "reading_by", "reading_until", "reading_by__username"
    )
    return reading.study_reading_marker(study=marked.get(pk=study.pk), user=user)


def review_page(*, user: Any, study: Study, requested: Any) -> dict[str, Any]:
    """The review page's context: the study's data, the image to open, the colleague reading it, the
    neighbours in the queue and the review form's choices (the colleague reading it is reading_marker's,
    taken before the reader's own marker replaces it)."""
    data = study_data(user=user, study=study)
    previous_study, next_study = selectors.study_queue_neighbours(user=user, study=study)
    return {
        "study": study,
        "data": data,
        "selected": selected_image(data, requested),
        "previous_study": previous_study,
        "next_study": next_study,
        "labels": Label.choices,
        "reasons": Review.Reason.choices,
        "reasons_for_label": {label: list(codes) for label, codes in Review.REASONS_FOR_LABEL.items()},
        "nav": "queue",
    }


def image_number(radiograph: Radiograph) -> int:
    """The image's number in its study's acquisition order (1-based), as the review page shows it."""
    ordered = reading.in_acquisition_order(Radiograph.objects.filter(study_id=radiograph.study_id))
    return next((i for i, r in enumerate(ordered, start=1) if r.pk == radiograph.pk), radiograph.position + 1)
