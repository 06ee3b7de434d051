"""Server-rendered pages. Each view: a role decorator, a selector or service call, a render."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import EmptyPage, PageNotAnInteger
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from radiology import exports, imaging, selectors, services
from radiology.access import admin_required, client_ip, clinician_required
from radiology.forms import DateRangeForm, QueueFilterForm, StudyUploadForm
from radiology.ingest import IngestError, IngestLimits, ingest_file
from radiology.models import Label, Prediction, Radiograph, Study
from radiology.paging import IdsFirstPaginator
from radiology.roles import is_clinician
from radiology.selectors.reading import (
    audit_reading,
    in_acquisition_order,
    readers_with_own_blinded_choice,
    study_reading_marker,
)
from radiology.wording import counted


def _get_radiograph_for_user(request: HttpRequest, pk: int) -> Radiograph:
    try:
        return selectors.radiograph_get(user=request.user, pk=pk)
    except Radiograph.DoesNotExist:
        raise Http404("No such radiograph") from None


@clinician_required
@require_http_methods(["GET", "POST"])
def study_upload(request: HttpRequest) -> HttpResponse:
    """The upload form. The page's script posts it in the background (Accept: application/json) so a
    refusal (a duplicate accession number, say) keeps the chosen files; without script it is a plain form."""
    form = StudyUploadForm(request.POST or None, request.FILES or None)
    rejected: list[IngestError] = []
    mismatch = False
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
            mismatch = error.code == "patient_details_differ"
        else:
            rejected = result.rejected
            if result.study is not None:
                accepted = len(result.accepted)
                messages.success(
                    request,
                    f"Study {result.study.accession_number}: "
                    f"{counted(accepted, 'radiograph')} accepted and queued.",
                )
                for refusal in rejected:
                    messages.error(request, f"{refusal.filename} was not accepted: {refusal.message}")
                target = reverse("radiology:study_detail", args=[result.study.pk])
                if "application/json" in request.headers.get("Accept", ""):
                    return JsonResponse({"redirect": target})
                return redirect(target)
            form.add_error("files", "None of the files could be accepted, so no study was created.")
    status = 400 if request.method == "POST" else 200
    if request.method == "POST" and "application/json" in request.headers.get("Accept", ""):
        return JsonResponse(
            {
                "errors": {name or "__all__": [str(e) for e in errs] for name, errs in form.errors.items()},
                "rejected": [{"file": e.filename, "message": e.message} for e in rejected],
                "patient_mismatch": mismatch,
            },
            status=400,
        )
    return render(
        request,
        "radiology/study_upload.html",
        {
            "form": form,
            "rejected": rejected,
            "patient_mismatch": mismatch or bool(form.data.get("confirm_patient_mismatch")),
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
    verdict: selectors.StudyVerdict | None
    outcome: selectors.StudyOutcome | None
    reading_by: str | None = None  # a colleague reading the study right now

    @property
    def processing(self) -> bool:
        return self.study.state == Study.State.PROCESSING

    @property
    def views(self) -> str:
        """The images' DICOM view and laterality, in acquisition order ("PA L · LAT L"), where known."""
        seen: list[str] = []
        for radiograph in in_acquisition_order(self.study.radiographs.all()):
            attributes = radiograph.dicom_attributes or {}
            side = attributes.get("ImageLaterality") or attributes.get("Laterality", "")
            view = " ".join(v for v in (attributes.get("ViewPosition", ""), side) if v)
            if view and view not in seen:
                seen.append(view)
        return " · ".join(seen)

    @property
    def finished_count(self) -> int:
        """Radiographs the worker is done with (predicted, failed or declined by the model's guardrails),
        from the prefetched statuses."""
        done = (Radiograph.Status.PREDICTED, Radiograph.Status.FAILED, Radiograph.Status.NOT_ANALYSED)
        return sum(r.status in done for r in self.study.radiographs.all())

    @property
    def not_analysed_count(self) -> int:
        """Radiographs the model declined (outside its intended use): a clinician reads them without it."""
        return sum(r.status == Radiograph.Status.NOT_ANALYSED for r in self.study.radiographs.all())

    @property
    def unclassified_note(self) -> str:
        """What the status cell adds of the images without a verdict: "1 image failed · 1 not analysed"."""
        parts = [f"{counted(self.study.failed_count, 'image')} failed"] if self.study.failed_count else []
        if self.not_analysed_count:
            parts.append(f"{self.not_analysed_count} not analysed")
        return " · ".join(parts)


def _queue_rows(studies: Iterable[Study], user: Any) -> list[QueueRow]:
    now = timezone.now()
    return [
        QueueRow(
            s,
            selectors.study_verdict(s),
            selectors.study_outcome(s),
            study_reading_marker(study=s, user=user, now=now),
        )
        for s in studies
    ]


def _queue_studies(request: HttpRequest, form: QueueFilterForm) -> QuerySet[Study]:
    state = form.current_state()
    studies = selectors.study_queue(
        user=request.user, state=None if state == QueueFilterForm.ALL else state, **form.filters()
    )
    ordering = form.ordering()
    if ordering is not None:
        studies = studies.order_by(*ordering[1])
    elif state == Study.State.REVIEWED:
        # Finished work reads best most recent first; the suspicion order is for work still to do.
        # (Every reviewed study has reviewed_at, so no NULLS LAST: the order is the tab's index.)
        studies = studies.order_by("-reviewed_at", "-pk")
    return selectors.study_queue_with_results(studies)


SORTABLE_COLUMNS = [
    ("patient", "Patient"),
    ("accession", "Accession"),
    ("region", "Region"),
    ("study_date", "Study date"),
    ("waiting", "Waiting"),
    ("images", "Img"),
]


@clinician_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    form = QueueFilterForm(request.GET)
    form.is_valid()
    state = form.current_state()
    paginator = IdsFirstPaginator(_queue_studies(request, form), QUEUE_PAGE_SIZE)
    # The tab counts use the same filters: the page count needs no COUNT of its own (at 333,000 studies
    # that second count cost 30-100 ms a page).
    counts = selectors.study_queue_counts(user=request.user, **form.filters())
    paginator.count = (  # a cached_property: set once, here
        counts[state] if state in counts else sum(counts[value] for value in Study.State.values)
    )
    problems = []
    try:
        page = paginator.page(request.GET.get("page") or 1)
    except PageNotAnInteger:
        problems.append("The page number was not a number: showing the first page.")
        page = paginator.page(1)
    except EmptyPage:
        problems.append(
            f"There is no page {request.GET.get('page')}: these studies fill "
            f"{paginator.num_pages} page{'s' if paginator.num_pages != 1 else ''}."
        )
        page = None
    if form.reversed_dates():
        dates = form.filters()
        problems.append(
            f"The dates were the wrong way round: showing uploads from {dates['date_from']:%Y-%m-%d} "
            f"to {dates['date_to']:%Y-%m-%d}."
        )
    tabs = [
        (value, label, counts.get(value))
        for value, label in [
            (Study.State.AWAITING_REVIEW, "Awaiting review"),
            (Study.State.PROCESSING, "Processing"),
            (Study.State.REVIEWED, "Reviewed"),
            (Study.State.NOT_ANALYSED, "Not analysed"),
            (Study.State.FAILED, "Failed"),
            (QueueFilterForm.ALL, "All"),
        ]
    ]
    filters = request.GET.copy()
    filters.pop("page", None)
    tab_query = filters.copy()
    tab_query.pop("state", None)
    sort_query = filters.copy()
    sort_query.pop("sort", None)
    current_sort = (form.ordering() or ("", ()))[0]
    # (key, label, the sort a click asks for, sorted by this column now, descending now)
    columns = [
        (
            key,
            label,
            "-" + key if current_sort == key else key,
            current_sort.lstrip("-") == key,
            current_sort.startswith("-"),
        )
        for key, label in SORTABLE_COLUMNS
    ]
    return render(
        request,
        "radiology/queue.html",
        {
            "form": form,
            "state": state,
            "tabs": tabs,
            "total": sum(counts.values()),
            "page": page,
            "paginator": paginator,
            "rows": _queue_rows(page.object_list, request.user) if page is not None else [],
            "problems": problems,
            "filtered": any(form.filters().values()),
            "query": filters.urlencode(),
            "tab_query": tab_query.urlencode(),
            "sort_query": sort_query.urlencode(),
            "columns": columns,
            "sorted": bool(current_sort),
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
        for row in _queue_rows(studies, request.user)
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
            "reading": audit_reading(user=request.user, **window),
            "site": services.site_settings_get(),
            "own_choices": readers_with_own_blinded_choice(),
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
