"""The reading pages: the study review page (one study, all its images, switched in the browser without a
page load), its JSON (live updates), reviews and study confirmation, blinded first reads, the second
reader's adjudication queue, the reader's settings and the full-depth pixels behind the window/level.

Each view: a role decorator, a selector or service call, a render or a JSON answer. Actions answer JSON
to the review page's script (Accept: application/json) and redirect a plain form post.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from radiology import selectors, services
from radiology.access import client_ip, clinician_required
from radiology.models import Adjudication, AuditEvent, Label, Radiograph, Review, Study
from radiology.pixels import PixelsUnavailable, header_json, radiograph_full_depth
from radiology.selectors import reading

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


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _get_study(request: HttpRequest, pk: int) -> Study:
    try:
        return selectors.study_get(user=request.user, pk=pk)
    except Study.DoesNotExist:
        raise Http404("No such study") from None


def _get_radiograph(request: HttpRequest, pk: int) -> Radiograph:
    try:
        return selectors.radiograph_get(user=request.user, pk=pk)
    except Radiograph.DoesNotExist:
        raise Http404("No such radiograph") from None


# --- The study's data, as the review page's script reads it ------------------------------------------------


def _prediction_data(prediction: Any, policy: reading.DisplayPolicy) -> dict[str, Any]:
    verdict = selectors.Verdict.of(prediction)
    return {
        "id": prediction.pk,
        "band": prediction.band,
        "band_display": verdict.headline,
        "percent": verdict.percent,
        "text": verdict.text,
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


def _review_data(review: Review) -> dict[str, Any]:
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


def study_data(request: HttpRequest, study: Study) -> dict[str, Any]:
    """Everything the review page shows for a study. In blinded mode an image's band, boxes and earlier
    reviews are left out (not hidden: absent) until the reader has recorded their own call on it."""
    user = request.user
    radiographs = reading.in_acquisition_order(study.radiographs.all())
    ids = [r.pk for r in radiographs]
    unaided = reading.unaided_reads_of(reader=user, radiograph_ids=ids)
    adjudications = reading.adjudications_of(radiograph_ids=ids)
    blinded = services.reader_is_blinded(user)
    predictions = {r.pk: selectors.radiograph_current_prediction(r) for r in radiographs}
    policies = reading.display_policies(p.model_version for p in predictions.values() if p is not None)
    refusals = reading.not_analysed_reasons(
        radiograph_ids=[r.pk for r in radiographs if r.status == Radiograph.Status.NOT_ANALYSED]
    )
    images = []
    for number, radiograph in enumerate(radiographs, start=1):
        prediction = predictions[radiograph.pk]
        reviews = sorted(radiograph.reviews.all(), key=lambda r: (r.created_at, r.pk), reverse=True)
        reviewed_by_me = any(r.reviewer_id == user.pk for r in reviews)
        hidden = blinded and prediction is not None and radiograph.pk not in unaided and not reviewed_by_me
        attributes = radiograph.dicom_attributes or {}
        adjudication = adjudications.get(radiograph.pk)
        images.append(
            {
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
                or refusals.get(radiograph.pk, "")
                or (
                    "Outside the model's intended use."
                    if radiograph.status == Radiograph.Status.NOT_ANALYSED
                    else ""
                ),
                "image_url": reverse("radiology:radiograph_image", args=[radiograph.pk]),
                "pixels_url": reverse("radiology:radiograph_pixels", args=[radiograph.pk]),
                "review_url": reverse("radiology:radiograph_review", args=[radiograph.pk]),
                "hidden": hidden,
                "unaided": unaided.get(radiograph.pk, ""),
                "prediction": None
                if prediction is None or hidden
                else _prediction_data(prediction, policies[prediction.model_version]),
                "awaiting": prediction is not None and not reviews,
                "reviews": [] if hidden else [_review_data(r) for r in reviews],
                "adjudication": None
                if adjudication is None or hidden
                else {
                    "state": adjudication.state,
                    "state_display": adjudication.get_state_display(),
                    "trigger_display": adjudication.get_trigger_display(),
                    "label_display": adjudication.get_label_display() if adjudication.label else "",
                    "adjudicator": adjudication.adjudicator.get_username()
                    if adjudication.adjudicator
                    else "",
                },
            }
        )
    any_hidden = any(image["hidden"] for image in images)
    verdict = None if any_hidden else selectors.study_verdict(study)
    outcome = None if any_hidden else selectors.study_outcome(study)
    return {
        "id": study.pk,
        "state": study.state,
        "state_display": study.get_state_display(),
        "blinded": blinded,
        "images": images,
        "awaiting": sum(image["awaiting"] for image in images),
        "summary": None
        if verdict is None
        else {"band": verdict.band, "text": verdict.text, "breakdown": verdict.breakdown},
        "outcome": outcome.text if outcome else "",
        "confirm_url": reverse("radiology:study_confirm", args=[study.pk]),
        "unaided_url": reverse("radiology:study_unaided", args=[study.pk]),
        "status_url": reverse("radiology:study_status", args=[study.pk]),
        "rejected": _rejected_files(study),
    }


def _rejected_files(study: Study) -> list[dict[str, str]]:
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


# --- Pages -------------------------------------------------------------------------------------------------


@clinician_required
@require_GET
def study_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The review page: every image of the study, in acquisition order; ?r= opens on one of them."""
    study = _get_study(request, pk)
    colleague = _reading_marker(request, study)
    services.study_mark_reading(study_id=study.pk, reader=request.user)
    data = study_data(request, study)
    previous_study, next_study = selectors.study_queue_neighbours(user=request.user, study=study)
    return render(
        request,
        "radiology/study_detail.html",
        {
            "study": study,
            "data": data,
            "selected": _selected_image(data, request.GET.get("r")),
            "colleague": colleague,
            "previous_study": previous_study,
            "next_study": next_study,
            "labels": Label.choices,
            "reasons": Review.Reason.choices,
            "reasons_for_label": {label: list(codes) for label, codes in Review.REASONS_FOR_LABEL.items()},
            "nav": "queue",
        },
    )


def _reading_marker(request: HttpRequest, study: Study) -> str | None:
    marked = Study.objects.select_related("reading_by").only(
        "pk", "reading_by", "reading_until", "reading_by__username"
    )
    return reading.study_reading_marker(study=marked.get(pk=study.pk), user=request.user)


def _selected_image(data: dict[str, Any], requested: Any) -> int | None:
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


@clinician_required
@require_GET
def study_status(request: HttpRequest, pk: int) -> JsonResponse:
    """The study's data as JSON: the review page polls it for results arriving, and it keeps the reader's
    "being read by" marker fresh while the page is open."""
    study = _get_study(request, pk)
    services.study_mark_reading(study_id=study.pk, reader=request.user)
    data = study_data(request, study)
    data["colleague"] = _reading_marker(request, study)
    return JsonResponse(data)


# --- Actions -----------------------------------------------------------------------------------------------


def _refused(request: HttpRequest, error: services.ServiceError, back: str) -> HttpResponseBase:
    if _wants_json(request):
        return JsonResponse({"error": error.message, "code": error.code, "field": error.field}, status=400)
    messages.error(request, error.message)
    return redirect(back)


def _next_after(request: HttpRequest, study: Study) -> tuple[str, str]:
    """Where a reader goes when a study is done, and what to tell them."""
    following = selectors.next_study_to_review(user=request.user, after=study)
    if following is not None:
        return (
            reverse("radiology:study_detail", args=[following.pk]),
            f"Study {study.accession_number} is done. Next in the queue: {following.accession_number}.",
        )
    return reverse("radiology:queue"), f"Study {study.accession_number} is done. No studies await review."


def _done(request: HttpRequest, study: Study, note: str) -> HttpResponseBase:
    """After an action: the study's fresh data (and where to go when nothing is left), or a redirect."""
    study = _get_study(request, study.pk)
    data = study_data(request, study)
    next_url = None
    if data["awaiting"] == 0 and study.state != Study.State.PROCESSING:
        next_url, done_note = _next_after(request, study)
        note = f"{note} {done_note}"
    if _wants_json(request):
        if next_url:
            messages.success(request, note)  # shown on the page the script goes to next
        return JsonResponse({"ok": True, "message": note, "next": next_url, "study": data})
    messages.success(request, note)
    return redirect(next_url or reverse("radiology:study_detail", args=[study.pk]))


@clinician_required
@require_http_methods(["GET", "POST"])
def radiograph_review(request: HttpRequest, pk: int) -> HttpResponseBase:
    """Confirm or override one image."""
    radiograph = _get_radiograph(request, pk)
    page = f"{reverse('radiology:study_detail', args=[radiograph.study_id])}?r={radiograph.pk}"
    if request.method == "GET":
        # Reached after signing in again when the session expired during a review: show the image.
        return redirect(page)
    try:
        review = services.review_submit(
            radiograph_id=radiograph.pk,
            reviewer=request.user,
            decision=request.POST.get("decision", ""),
            final_label=request.POST.get("final_label") or None,
            reason_code=request.POST.get("reason_code", ""),
            reason_text=request.POST.get("reason_text", "")[:2000],
            client_ip=client_ip(request),
        )
    except services.ServiceError as error:
        return _refused(request, error, page)
    done = "Confirmed" if review.decision == Review.Decision.CONFIRM else "Override recorded"
    note = f"{done}: {review.get_final_label_display()} for image {_number_of(radiograph)}."
    return _done(request, radiograph.study, note)


def _number_of(radiograph: Radiograph) -> int:
    ordered = reading.in_acquisition_order(Radiograph.objects.filter(study_id=radiograph.study_id))
    return next((i for i, r in enumerate(ordered, start=1) if r.pk == radiograph.pk), radiograph.position + 1)


@clinician_required
@require_POST
def study_confirm(request: HttpRequest, pk: int) -> HttpResponseBase:
    """Confirm the model's label on every image of the study still awaiting review."""
    study = _get_study(request, pk)
    page = reverse("radiology:study_detail", args=[study.pk])
    try:
        reviews = services.study_confirm(
            study_id=study.pk, reviewer=request.user, client_ip=client_ip(request)
        )
    except services.ServiceError as error:
        return _refused(request, error, page)
    return _done(request, study, f"Study {study.accession_number}: {len(reviews)} image(s) confirmed.")


@clinician_required
@require_POST
def study_unaided(request: HttpRequest, pk: int) -> HttpResponseBase:
    """The reader's own call before the model is shown: on one image (radiograph=) or on every image of the
    study they have not called yet."""
    study = _get_study(request, pk)
    page = reverse("radiology:study_detail", args=[study.pk])
    wanted = request.POST.get("radiograph", "")
    predicted = [r for r in study.radiographs.all() if r.status == Radiograph.Status.PREDICTED]
    called = reading.unaided_reads_of(reader=request.user, radiograph_ids=[r.pk for r in predicted])
    if wanted:
        ids = [r.pk for r in predicted if str(r.pk) == wanted]
        if not ids:
            raise Http404("No such radiograph in this study")
    else:
        ids = [
            r.pk
            for r in predicted
            if r.pk not in called and not any(v.reviewer_id == request.user.pk for v in r.reviews.all())
        ]
    try:
        services.unaided_read_record(
            radiograph_ids=ids,
            reader=request.user,
            label=request.POST.get("label", ""),
            client_ip=client_ip(request),
        )
    except services.ServiceError as error:
        return _refused(request, error, page)
    label = Label(request.POST["label"]).label
    images = f"{len(ids)} image{'s' if len(ids) != 1 else ''}"
    note = f"Your call recorded: {label} ({images}). The model's answer is shown."
    data = study_data(request, _get_study(request, pk))
    if _wants_json(request):
        return JsonResponse({"ok": True, "message": note, "next": None, "study": data})
    messages.success(request, note)
    return redirect(page)


@clinician_required
@require_POST
def reader_settings(request: HttpRequest) -> HttpResponseBase:
    """The reader's blinded-reading preference: on, off, or the site default."""
    choice = request.POST.get("blinded", "")
    values = {"on": True, "off": False, "default": None}
    if choice not in values:
        messages.error(request, "Choose on, off or the site default.")
    else:
        services.reader_setting_update(
            user=request.user, blinded=values[choice], client_ip=client_ip(request)
        )
        state = "on" if services.reader_is_blinded(request.user) else "off"
        messages.success(request, f"Blinded first read is {state}.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = reverse("radiology:queue")
    return redirect(back)


# --- Second reader -----------------------------------------------------------------------------------------


@clinician_required
@require_GET
def adjudication_list(request: HttpRequest) -> HttpResponse:
    """Cases a second clinician must decide: final calls against a confident band, or readers who changed
    their mind after seeing the model. A reader's own cases are listed but cannot be decided by them."""
    queue = list(reading.adjudication_queue(user=request.user)[:200])
    reviewers = reading.adjudication_reviewers(radiograph_ids=[a.radiograph_id for a in queue])
    rows = [(a, request.user.pk in reviewers.get(a.radiograph_id, set())) for a in queue]
    return render(
        request,
        "radiology/adjudications.html",
        {"rows": rows, "labels": Label.choices, "nav": "adjudication"},
    )


@clinician_required
@require_POST
def adjudication_decide(request: HttpRequest, pk: int) -> HttpResponseBase:
    try:
        adjudication = reading.adjudication_get(user=request.user, pk=pk)
    except Adjudication.DoesNotExist:
        raise Http404("No such adjudication") from None
    try:
        decided = services.adjudication_decide(
            adjudication_id=adjudication.pk,
            adjudicator=request.user,
            label=request.POST.get("label", ""),
            notes=request.POST.get("notes", "")[:2000],
            client_ip=client_ip(request),
        )
    except services.ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(
            request,
            f"Adjudicated: {decided.get_label_display()} for "
            f"{adjudication.radiograph.study.accession_number} (locked; it is now the reference standard).",
        )
    return redirect("radiology:adjudications")


# --- Pixels ------------------------------------------------------------------------------------------------


@clinician_required
@require_GET
def radiograph_pixels(request: HttpRequest, pk: int) -> HttpResponse:
    """The image at its own bit depth (gzip-compressed little-endian integers, row by row) with a JSON
    header (X-Pixels) saying its size, depth, default window and presets."""
    radiograph = _get_radiograph(request, pk)
    etag = f'"px-{radiograph.sha256}"'
    if request.headers.get("If-None-Match") == etag:
        return HttpResponse(status=304)
    try:
        full = radiograph_full_depth(radiograph)
    except PixelsUnavailable as error:
        raise Http404(str(error)) from None
    response = HttpResponse(full.body(), content_type="application/octet-stream")
    response["Content-Encoding"] = "gzip"
    response["X-Pixels"] = header_json(full)
    response["Cache-Control"] = "private, max-age=3600"
    response["ETag"] = etag
    return response
