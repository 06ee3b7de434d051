"""Server-rendered pages. Each view: a role decorator, a selector or service call, a render."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from radiology import exports, imaging, selectors, services
from radiology.access import admin_required, client_ip, clinician_required
from radiology.forms import DateRangeForm, QueueFilterForm, ReviewForm, StudyUploadForm
from radiology.ingest import IngestError, IngestLimits, ingest_file
from radiology.models import Label, Prediction, Radiograph, Review, Study
from radiology.roles import is_clinician

def _get_study_for_user(request: HttpRequest, pk: int) -> Study:
    try:
        return selectors.study_get(user=request.user, pk=pk)
    except Study.DoesNotExist:
        raise Http404("No such study") from None


def _get_radiograph_for_user(request: HttpRequest, pk: int) -> Radiograph:
    try:
        return selectors.radiograph_get(user=request.user, pk=pk)
    except Radiograph.DoesNotExist:
        raise Http404("No such radiograph") from None


@clinician_required
@require_http_methods(["GET", "POST"])
def study_upload(request: HttpRequest) -> HttpResponse:
    form = StudyUploadForm(request.POST or None, request.FILES or None)
    rejected: list[IngestError] = []
    if request.method == "POST" and form.is_valid():
        details = services.StudyDetails.from_fields(form.cleaned_data)
        try:
            result = services.study_create(
                uploaded_by=request.user,
                details=details,
                files=[services.UploadedImage.from_upload(f) for f in form.cleaned_data["files"]],
                client_ip=client_ip(request),
            )
        except services.ServiceError as error:
            field = error.field if error.field in form.fields else None
            form.add_error(field, error.message)
        else:
            rejected = result.rejected
            if result.study is not None:
                accepted = len(result.accepted)
                messages.success(
                    request,
                    f"Study {result.study.accession_number}: {accepted} radiograph(s) accepted and queued.",
                )
                for refusal in rejected:
                    messages.error(request, f"{refusal.filename} was not accepted: {refusal.message}")
                return redirect("radiology:study_detail", pk=result.study.pk)
            form.add_error("files", "None of the files could be accepted, so no study was created.")
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "radiology/study_upload.html",
        {
            "form": form,
            "rejected": rejected,
            "limits": IngestLimits.from_settings(),
            "max_files": settings.UPLOAD_MAX_FILES_PER_STUDY,
            "nav": "upload",
        },
        status=status,
    )


@clinician_required
@require_POST
def dicom_inspect(request: HttpRequest) -> JsonResponse:
    """Read a DICOM file's patient and study attributes to pre-fill the upload form (nothing is stored)."""
    uploaded = request.FILES.get("file")
    if uploaded is None:
        return JsonResponse({"error": "No file was sent."}, status=400)
    if (uploaded.size or 0) > settings.UPLOAD_MAX_FILE_BYTES:
        return JsonResponse({"error": "The file is larger than the upload limit."}, status=400)
    try:
        image = ingest_file(uploaded.name or "upload", uploaded.read(), IngestLimits.from_settings())
    except IngestError as error:
        return JsonResponse({"error": error.message, "file": error.filename}, status=400)
    return JsonResponse({"format": image.format, "attributes": image.dicom_attributes})


def radiograph_summary(radiograph: Radiograph) -> dict[str, Any]:
    """What the study page shows for one radiograph, also served as JSON to refresh it in place."""
    prediction = selectors.radiograph_current_prediction(radiograph)
    review = selectors.radiograph_latest_review(radiograph)
    summary: dict[str, Any] = {
        "id": radiograph.pk,
        "status": radiograph.status,
        "status_display": radiograph.get_status_display(),
        "failure_message": radiograph.failure_message,
        "image_url": reverse("radiology:radiograph_image", args=[radiograph.pk]),
        "prediction": None,
        "review": None,
    }
    if prediction is not None:
        verdict = selectors.Verdict.of(prediction)
        summary["prediction"] = {
            "id": prediction.pk,
            "probability": round(prediction.probability, 4),
            "label": prediction.label,
            "label_display": prediction.get_label_display(),
            "verdict": verdict.text,
            "threshold": prediction.threshold,
            "model_version": prediction.model_version,
            "heatmap_url": reverse("radiology:heatmap_image", args=[prediction.pk])
            if prediction.heatmap
            else None,
        }
    if review is not None:
        summary["review"] = {
            "decision": review.decision,
            "final_label": review.final_label,
            "final_label_display": review.get_final_label_display(),
            "reviewer": review.reviewer.get_username(),
            "created_at": review.created_at.isoformat(),
        }
    return summary


@dataclass(frozen=True)
class RadiographPanel:
    """One radiograph of the review page: its record, its model verdict and its reviews, newest first."""

    radiograph: Radiograph
    number: int
    prediction: Prediction | None
    verdict: selectors.Verdict | None
    reviews: list[Review]
    awaiting_review: bool

    @property
    def latest_review(self) -> Review | None:
        return self.reviews[0] if self.reviews else None


def _panels(study: Study) -> list[RadiographPanel]:
    panels = []
    for number, radiograph in enumerate(study.radiographs.all(), start=1):
        prediction = selectors.radiograph_current_prediction(radiograph)
        reviews = sorted(radiograph.reviews.all(), key=lambda r: (r.created_at, r.pk), reverse=True)
        panels.append(
            RadiographPanel(
                radiograph=radiograph,
                number=number,
                prediction=prediction,
                verdict=selectors.Verdict.of(prediction) if prediction else None,
                reviews=reviews,
                awaiting_review=selectors.radiograph_awaiting_review(radiograph),
            )
        )
    return panels


def _selected_panel(panels: list[RadiographPanel], requested: Any) -> RadiographPanel | None:
    """The radiograph asked for in ?r=, else the most suspicious one awaiting review (the finding that put
    the study where it is in the queue), else the first."""
    try:
        wanted = int(requested)
    except (TypeError, ValueError):
        wanted = None
    for panel in panels:
        if panel.radiograph.pk == wanted:
            return panel
    waiting = [p for p in panels if p.awaiting_review and p.verdict is not None]
    if waiting:
        return max(waiting, key=lambda p: (p.verdict.probability if p.verdict else 0.0, -p.number))
    return panels[0] if panels else None


def _review_page(
    request: HttpRequest,
    study: Study,
    *,
    selected: Any = None,
    review_form: ReviewForm | None = None,
    status: int = 200,
) -> HttpResponse:
    panels = _panels(study)
    panel = _selected_panel(panels, selected)
    previous_study, next_study = selectors.study_queue_neighbours(user=request.user, study=study)
    form = review_form
    if form is None and panel is not None and panel.prediction is not None:
        # Override starts from the opposite of the model's label: the only other answer there is.
        form = ReviewForm(initial={"final_label": Label.opposite(panel.prediction.label)})
    index = panels.index(panel) if panel else 0
    return render(
        request,
        "radiology/study_detail.html",
        {
            "study": study,
            "panels": panels,
            "panel": panel,
            "previous_panel": panels[index - 1] if panel and index > 0 else None,
            "next_panel": panels[index + 1] if panel and index + 1 < len(panels) else None,
            "summary": radiograph_summary(panel.radiograph) if panel else None,
            "review_form": form,
            "previous_study": previous_study,
            "next_study": next_study,
            "awaiting_count": sum(p.awaiting_review for p in panels),
            "labels": Label.choices,
            "reasons": Review.Reason.choices,
            "nav": "queue",
        },
        status=status,
    )


@clinician_required
@require_GET
def study_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The review page: one radiograph in the viewer, the study's others as thumbnails (?r= picks one)."""
    study = _get_study_for_user(request, pk)
    return _review_page(request, study, selected=request.GET.get("r"))


@clinician_required
@require_GET
def study_status(request: HttpRequest, pk: int) -> JsonResponse:
    study = _get_study_for_user(request, pk)
    return JsonResponse(
        {
            "id": study.pk,
            "state": study.state,
            "state_display": study.get_state_display(),
            "max_probability": study.max_probability,
            "radiographs": [radiograph_summary(r) for r in study.radiographs.all()],
        }
    )


@clinician_required
@require_GET
def radiograph_image(request: HttpRequest, pk: int) -> HttpResponse:
    """Streams a stored radiograph to an authorised user. DICOM is rendered to PNG (browsers cannot show
    it) with the same windowing the model sees."""
    radiograph = _get_radiograph_for_user(request, pk)
    if request.headers.get("If-None-Match") == f'"{radiograph.sha256}"':
        return HttpResponse(status=304)
    try:
        content, content_type = imaging.radiograph_for_display(radiograph)
    except imaging.ImageUnavailable as error:
        raise Http404(str(error)) from None
    return imaging.image_response(content, content_type, radiograph.sha256)


@clinician_required
@require_GET
def heatmap_image(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        content = imaging.heatmap_overlay_png(selectors.prediction_get(user=request.user, pk=pk))
    except Prediction.DoesNotExist:
        raise Http404("No such heatmap") from None
    except imaging.ImageUnavailable as error:
        raise Http404(str(error)) from None
    return imaging.image_response(content, "image/png")


def _after_review_url(request: HttpRequest, reviewed: Radiograph) -> tuple[str, str]:
    """Where a clinician goes after a review, and what to tell them: the study's next radiograph still
    awaiting review, else the next study in the queue, else the queue itself."""
    study = _get_study_for_user(request, reviewed.study_id)
    panels = _panels(study)
    waiting = [p for p in panels if p.awaiting_review]
    if waiting:
        target = _selected_panel(panels, None)
        assert target is not None
        url = reverse("radiology:study_detail", args=[study.pk])
        note = f"{len(waiting)} more radiograph(s) of this study to review."
        return f"{url}?r={target.radiograph.pk}", note
    following = selectors.next_study_to_review(user=request.user, after=study)
    if following is not None:
        return (
            reverse("radiology:study_detail", args=[following.pk]),
            f"Study {study.accession_number} is done. Next in the queue: {following.accession_number}.",
        )
    return reverse("radiology:queue"), f"Study {study.accession_number} is done. No studies await review."


@clinician_required
@require_http_methods(["GET", "POST"])
def radiograph_review(request: HttpRequest, pk: int) -> HttpResponse:
    radiograph = _get_radiograph_for_user(request, pk)
    if request.method == "GET":
        # Reached after signing in again when the session expired during a review: show the radiograph.
        url = reverse("radiology:study_detail", args=[radiograph.study_id])
        return redirect(f"{url}?r={radiograph.pk}")
    form = ReviewForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            review = services.review_submit(
                radiograph_id=radiograph.pk,
                reviewer=request.user,
                decision=data["decision"],
                final_label=data["final_label"] or None,
                reason_code=data["reason_code"],
                reason_text=data["reason_text"],
                client_ip=client_ip(request),
            )
        except services.ServiceError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
    if form.errors:
        # Show the page again with what was typed and why it was refused (nothing was recorded).
        study = _get_study_for_user(request, radiograph.study_id)
        return _review_page(request, study, selected=radiograph.pk, review_form=form, status=400)
    target, note = _after_review_url(request, radiograph)
    done = "Confirmed" if review.decision == Review.Decision.CONFIRM else "Override recorded"
    messages.success(
        request,
        f"{done}: {review.get_final_label_display()} for {radiograph.study.accession_number} "
        f"image {radiograph.position + 1}. {note}",
    )
    return redirect(target)


@admin_required
@require_POST
def radiograph_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """Send a failed radiograph to the worker again (after the cause was fixed)."""
    radiograph = _get_radiograph_for_user(request, pk)
    try:
        services.radiograph_retry(
            radiograph_id=radiograph.pk, actor=request.user, client_ip=client_ip(request)
        )
    except services.ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{radiograph.original_filename} was sent to the classifier again.")
    url = reverse("radiology:study_detail", args=[radiograph.study_id])
    return redirect(f"{url}?r={radiograph.pk}")


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Clinicians start at the queue; a signed-in user without a role is told so (nothing is denied:
    there is simply nothing clinical to show them)."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if is_clinician(request.user):
        return redirect("radiology:queue")
    return render(request, "radiology/no_role.html")


# --- Queue -------------------------------------------------------------------------------------------------

QUEUE_PAGE_SIZE = 25


@dataclass(frozen=True)
class QueueRow:
    study: Study
    verdict: selectors.Verdict | None
    outcome: selectors.StudyOutcome | None

    @property
    def processing(self) -> bool:
        return self.study.state == Study.State.PROCESSING

    @property
    def finished_count(self) -> int:
        """Radiographs the worker is done with (predicted or failed), from the prefetched statuses."""
        done = (Radiograph.Status.PREDICTED, Radiograph.Status.FAILED)
        return sum(r.status in done for r in self.study.radiographs.all())


def _queue_rows(studies: Iterable[Study]) -> list[QueueRow]:
    return [QueueRow(s, selectors.study_verdict(s), selectors.study_outcome(s)) for s in studies]


def _queue_studies(request: HttpRequest, form: QueueFilterForm) -> QuerySet[Study]:
    state = form.current_state()
    studies = selectors.study_queue(
        user=request.user, state=None if state == QueueFilterForm.ALL else state, **form.filters()
    )
    if state == Study.State.REVIEWED:
        # Finished work reads best most recent first; the suspicion order is for work still to do.
        # (Every reviewed study has reviewed_at, so no NULLS LAST: the order is the tab's index.)
        studies = studies.order_by("-reviewed_at", "-pk")
    return selectors.study_queue_with_results(studies)


@clinician_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    form = QueueFilterForm(request.GET)
    form.is_valid()
    state = form.current_state()
    paginator = Paginator(_queue_studies(request, form), QUEUE_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    counts = selectors.study_queue_counts(user=request.user, **form.filters())
    tabs = [
        (value, label, counts.get(value))
        for value, label in [
            (Study.State.AWAITING_REVIEW, "Awaiting review"),
            (Study.State.PROCESSING, "Processing"),
            (Study.State.REVIEWED, "Reviewed"),
            (Study.State.FAILED, "Failed"),
            (QueueFilterForm.ALL, "All"),
        ]
    ]
    filters = request.GET.copy()
    filters.pop("page", None)
    tab_query = filters.copy()
    tab_query.pop("state", None)
    return render(
        request,
        "radiology/queue.html",
        {
            "form": form,
            "state": state,
            "tabs": tabs,
            "total": sum(counts.values()),
            "page": page,
            "rows": _queue_rows(page.object_list),
            "filtered": any(form.filters().values()),
            "query": filters.urlencode(),
            "tab_query": tab_query.urlencode(),
            "nav": "queue",
        },
    )


@clinician_required
@require_GET
def queue_rows(request: HttpRequest) -> JsonResponse:
    """Fresh HTML for the queue rows the page is watching (those still processing) and fresh tab counts,
    so the queue updates in place without a reload."""
    form = QueueFilterForm(request.GET)
    form.is_valid()
    try:
        ids = [int(v) for v in request.GET.get("ids", "").split(",") if v.strip()][: QUEUE_PAGE_SIZE * 2]
    except ValueError:
        return JsonResponse({"error": "ids must be a comma-separated list of numbers."}, status=400)
    studies = selectors.study_queue_with_results(selectors.study_queue(user=request.user).filter(pk__in=ids))
    rows = {
        str(row.study.pk): render_to_string("radiology/_queue_row.html", {"row": row}, request=request)
        for row in _queue_rows(studies)
    }
    counts = selectors.study_queue_counts(user=request.user, **form.filters())
    return JsonResponse({"rows": rows, "counts": counts})


# --- Audit (admins) ----------------------------------------------------------------------------------------


@admin_required
@require_GET
def audit_dashboard(request: HttpRequest) -> HttpResponse:
    """Per model version: how it agrees with the clinicians, where it errs and why they override it."""
    form = DateRangeForm(request.GET or None)
    window = form.range()
    versions = selectors.audit_model_versions(user=request.user, **window)
    series = selectors.audit_agreement_by_day(user=request.user, **window)
    export_query = {k: v for k, v in window.items() if v}
    return render(
        request,
        "radiology/audit_dashboard.html",
        {
            "form": form,
            "versions": versions,
            "series": series,
            "recent_reviews": selectors.review_recent(user=request.user, limit=25),
            "labels": Label.choices,
            "export_query": urlencode({k: v.isoformat() for k, v in export_query.items()}),
            "nav": "audit",
        },
    )


@admin_required
@require_GET
def prediction_export(request: HttpRequest) -> HttpResponseBase:
    """CSV of every prediction joined with its latest review; the export itself is audited."""
    form = DateRangeForm(request.GET or None)
    window = form.range()
    model_version = (form.cleaned_data.get("model_version") if form.is_bound else "") or None
    rows = selectors.prediction_export_rows(user=request.user, model_version=model_version, **window)
    filters = {k: v.isoformat() for k, v in window.items() if v}
    if model_version:
        filters["model_version"] = model_version
    response = exports.prediction_csv_response(request=request, rows=rows, filters=filters)
    return response
