"""The reading pages: the study review page (one study, all its images, switched in the browser without a
page load), its JSON (live updates), reviews and study confirmation, blinded first reads, the second
reader's adjudication queue, the reader's settings and the full-depth pixels behind the window/level.

Each view: a role decorator, a selector, presenter or service call, a render or a JSON answer; the page's
data is radiology.presenters.review's. Actions answer JSON
to the review page's script (Accept: application/json) and redirect a plain form post.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from radiology import selectors, services
from radiology.access import admin_required, client_ip, clinician_required
from radiology.models import Adjudication, Label, Radiograph, Review, Study
from radiology.pixels import PixelsUnavailable, header_json, radiograph_full_depth
from radiology.presenters import review
from radiology.selectors import reading
from radiology.wording import counted


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


# --- Pages -------------------------------------------------------------------------------------------------


@clinician_required
@require_GET
def study_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The review page: every image of the study, in acquisition order; ?r= opens on one of them."""
    study = _get_study(request, pk)
    colleague = review.reading_marker(user=request.user, study=study)
    services.study_mark_reading(study_id=study.pk, reader=request.user)
    context = review.review_page(user=request.user, study=study, requested=request.GET.get("r"))
    return render(request, "radiology/study_detail.html", {**context, "colleague": colleague})


@clinician_required
@require_GET
def study_status(request: HttpRequest, pk: int) -> JsonResponse:
    """The study's data as JSON: the review page polls it for results arriving, and it keeps the reader's
    "being read by" marker fresh while the page is open."""
    study = _get_study(request, pk)
    services.study_mark_reading(study_id=study.pk, reader=request.user)
    data = review.study_data(user=request.user, study=study)
    data["colleague"] = review.reading_marker(user=request.user, study=study)
    return JsonResponse(data)


@clinician_required
@require_POST
def study_leave(request: HttpRequest, pk: int) -> HttpResponse:
    """The reader left the review page (the page's beacon on leaving): their "being read by" marker goes
    now, not when it would lapse minutes later while colleagues are told the study is taken."""
    study = _get_study(request, pk)
    services.study_release_reading(study_id=study.pk, reader=request.user)
    return HttpResponse(status=204)


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
    data = review.study_data(user=request.user, study=study)
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
        submitted = services.review_submit(
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
    done = "Confirmed" if submitted.decision == Review.Decision.CONFIRM else "Override recorded"
    note = f"{done}: {submitted.get_final_label_display()} for image {review.image_number(radiograph)}."
    return _done(request, radiograph.study, note)


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
    return _done(
        request, study, f"Study {study.accession_number}: {counted(len(reviews), 'image')} confirmed."
    )


@clinician_required
@require_POST
def study_read_without_model(request: HttpRequest, pk: int) -> HttpResponseBase:
    """A study the model declined entirely, read without it: off the Not analysed worklist."""
    study = _get_study(request, pk)
    page = reverse("radiology:study_detail", args=[study.pk])
    try:
        services.study_read_without_model(
            study_id=study.pk, reader=request.user, client_ip=client_ip(request)
        )
    except services.ServiceError as error:
        return _refused(request, error, page)
    return _done(request, study, f"Study {study.accession_number}: read without the model.")


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
    data = review.study_data(user=request.user, study=_get_study(request, pk))
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


@admin_required
@require_POST
def site_settings(request: HttpRequest) -> HttpResponseBase:
    """The administrator's choice of the blinded-first-read default (for readers who never chose)."""
    choice = request.POST.get("blinded_read_default", "")
    values = {"on": True, "off": False}
    if choice not in values:
        messages.error(request, "Choose on or off for the blinded first read default.")
    else:
        services.site_blinded_default_update(
            actor=request.user, blinded=values[choice], client_ip=client_ip(request)
        )
        messages.success(
            request,
            f"Blinded first read is now {choice} by default. Readers who chose for themselves keep "
            "their choice.",
        )
    return redirect(f"{reverse('radiology:audit_dashboard')}#site-settings")


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
