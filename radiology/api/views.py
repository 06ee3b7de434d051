"""API views: one class per operation, each with explicit input and output serializers.

A path that carries two operations (GET lists, POST creates) is a class composed of the two operation
classes. Views parse, call a selector or service, and serialize; they hold no clinical logic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser, JSONParser, MultiPartParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from radiology import exports, imaging, selectors, services
from radiology.access import client_ip
from radiology.api import schema as docs
from radiology.api import serializers as s
from radiology.api.filters import RadiographFilter, StudyFilter
from radiology.api.idempotency import run_idempotently
from radiology.api.pagination import ApiPagination
from radiology.api.permissions import IsAdmin, IsClinician
from radiology.api.problems import CATALOGUE, Problem
from radiology.api.throttles import SubmitThrottle, UserThrottle
from radiology.models import AuditEvent, Batch, Prediction, Radiograph, Study
from radiology.services import ServiceError


class ApiView(APIView):
    """Defaults for every operation: clinical role, per-user throttle, bounded request size."""

    permission_classes = [IsClinician]
    throttle_classes = [UserThrottle, SubmitThrottle]
    # No OPTIONS introspection: the OpenAPI schema documents the API; OPTIONS (and PUT, ...) answer 405.
    metadata_class = None
    http_method_names = ["get", "post", "head"]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.method in ("POST", "PUT", "PATCH"):
            # Refuse an oversized body before reading it: Django bounds only non-file form fields.
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                raise Problem("bad_request", "Content-Length is not a number.", status_code=400) from None
            if length > settings.API_MAX_REQUEST_BYTES:
                raise Problem(
                    "request_too_large",
                    f"The request body is {length} bytes; the limit is {settings.API_MAX_REQUEST_BYTES}.",
                )


def _problem_from_service(error: ServiceError) -> Problem:
    errors = [{"field": error.field, "code": error.code, "message": error.message}] if error.field else None
    return Problem(error.code, error.message, errors=errors)


def _paginated(view: APIView, request: Request, queryset: QuerySet[Any], out: type[Any]) -> Response:
    paginator = ApiPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(out(page, many=True, context={"request": request}).data)


def _study_for(request: Request, pk: int) -> Study:
    try:
        return selectors.study_get(user=request.user, pk=pk)
    except Study.DoesNotExist:
        raise Problem("not_found", "No such study.", status_code=404) from None


def _radiograph_for(request: Request, pk: int) -> Radiograph:
    try:
        return selectors.radiograph_get_with_results(user=request.user, pk=pk)
    except Radiograph.DoesNotExist:
        raise Problem("not_found", "No such radiograph.", status_code=404) from None


# --- Studies -------------------------------------------------------------------------------------------


class StudyListApi(ApiView):
    filter_backends = [DjangoFilterBackend]
    filterset_class = StudyFilter
    pagination_class = ApiPagination
    queryset = Study.objects.none()  # tells the schema generator the filter's model

    @docs.study_list
    def get(self, request: Request) -> Response:
        studies = selectors.study_queue(user=request.user)
        studies = DjangoFilterBackend().filter_queryset(request, studies, self)
        return _paginated(self, request, studies, s.StudyOut)


class StudyCreateApi(ApiView):
    # Beyond what the operation's shape implies (documented by api/schema.py): the image store can refuse
    # a write (storage_unavailable).
    problem_statuses: ClassVar[dict[str, tuple[int, ...]]] = {"post": (503,)}
    parser_classes = [MultiPartParser]

    @docs.study_create
    def post(self, request: Request) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._create(request))

    def _create(self, request: Request) -> Response:
        serializer = s.StudyCreateIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            result = services.study_create(
                uploaded_by=request.user,
                details=services.StudyDetails.from_fields(data),
                files=[services.UploadedImage.from_upload(f) for f in data["files"]],
                client_ip=client_ip(request),
            )
        except ServiceError as error:
            raise _problem_from_service(error) from None
        rejected = [{"file": e.filename, "code": e.code, "message": e.message} for e in result.rejected]
        if result.study is None:
            raise Problem(
                "files_rejected",
                "No file could be accepted, so no study was created.",
                errors=rejected,
            )
        study = selectors.study_get(user=request.user, pk=result.study.pk)
        body = s.StudyCreateOut({"study": study, "rejected": rejected}, context={"request": request}).data
        return Response(body, status=201, headers={"Location": body["study"]["url"]})


class StudyCollectionApi(StudyListApi, StudyCreateApi):
    """GET /studies lists, POST /studies creates: the two operations above on one path.

    Each operation names its serializers in its method, so composing the classes cannot swap them.
    """


class StudyDetailApi(ApiView):
    @docs.study_detail
    def get(self, request: Request, pk: int) -> Response:
        study = _study_for(request, pk)
        return Response(s.StudyDetailOut(study, context={"request": request}).data)


# --- Radiographs ---------------------------------------------------------------------------------------


class RadiographListApi(ApiView):
    filter_backends = [DjangoFilterBackend]
    filterset_class = RadiographFilter
    pagination_class = ApiPagination
    queryset = Radiograph.objects.none()

    @docs.radiograph_list
    def get(self, request: Request) -> Response:
        radiographs = selectors.radiograph_list(user=request.user)
        radiographs = DjangoFilterBackend().filter_queryset(request, radiographs, self)
        return _paginated(self, request, radiographs, s.RadiographOut)


class RadiographDetailApi(ApiView):
    @docs.radiograph_detail
    def get(self, request: Request, pk: int) -> Response:
        radiograph = _radiograph_for(request, pk)
        return Response(s.RadiographDetailOut(radiograph, context={"request": request}).data)


class RadiographPredictionApi(ApiView):
    @docs.radiograph_prediction
    def get(self, request: Request, pk: int) -> Response:
        radiograph = _radiograph_for(request, pk)
        prediction = selectors.radiograph_current_prediction(radiograph)
        if prediction is None:
            raise Problem(
                "prediction_not_available",
                f"The radiograph has no prediction; its status is {radiograph.status}.",
                status_code=404,
                radiograph_status=radiograph.status,
            )
        return Response(s.PredictionOut(prediction, context={"request": request}).data)


class ReviewListApi(ApiView):
    @docs.review_list
    def get(self, request: Request, pk: int) -> Response:
        radiograph = _radiograph_for(request, pk)
        reviews = selectors.radiograph_reviews(radiograph=radiograph)
        return Response(s.ReviewOut(reviews, many=True).data)


class ReviewCreateApi(ApiView):
    parser_classes = [JSONParser]

    @docs.review_create
    def post(self, request: Request, pk: int) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._create(request, pk))

    def _create(self, request: Request, pk: int) -> Response:
        radiograph = _radiograph_for(request, pk)
        serializer = s.ReviewCreateIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            review = services.review_submit(
                radiograph_id=radiograph.pk,
                reviewer=request.user,
                client_ip=client_ip(request),
                **serializer.validated_data,
            )
        except ServiceError as error:
            raise _problem_from_service(error) from None
        return Response(s.ReviewOut(review).data, status=201)


class ReviewCollectionApi(ReviewListApi, ReviewCreateApi):
    """GET lists a radiograph's reviews (newest first, the first stands); POST adds one."""


# --- Reading workflow ----------------------------------------------------------------------------------


class UnaidedReadCreateApi(ApiView):
    """The caller's own call on a radiograph before they look at the model's (blinded reading)."""

    parser_classes = [JSONParser]

    @docs.unaided_read_create
    def post(self, request: Request, pk: int) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._create(request, pk))

    def _create(self, request: Request, pk: int) -> Response:
        radiograph = _radiograph_for(request, pk)
        serializer = s.UnaidedReadIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            (read,) = services.unaided_read_record(
                radiograph_ids=[radiograph.pk],
                reader=request.user,
                label=serializer.validated_data["label"],
                client_ip=client_ip(request),
            )
        except ServiceError as error:
            raise _problem_from_service(error) from None
        return Response(s.UnaidedReadOut(read).data, status=201)


class StudyConfirmApi(ApiView):
    """Confirm the model's label on every radiograph of the study still awaiting review."""

    @docs.study_confirm
    def post(self, request: Request, pk: int) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._confirm(request, pk))

    def _confirm(self, request: Request, pk: int) -> Response:
        study = _study_for(request, pk)
        try:
            reviews = services.study_confirm(
                study_id=study.pk, reviewer=request.user, client_ip=client_ip(request)
            )
        except ServiceError as error:
            raise _problem_from_service(error) from None
        return Response(s.ReviewOut(reviews, many=True).data, status=201)


class AdjudicationListApi(ApiView):
    """Cases awaiting a second reader, oldest first (paginated)."""

    pagination_class = ApiPagination

    @docs.adjudication_list
    def get(self, request: Request) -> Response:
        from radiology.selectors import reading

        return _paginated(self, request, reading.adjudication_queue(user=request.user), s.AdjudicationOut)


class AdjudicationDecideApi(ApiView):
    """The second reader's label: locked once recorded, the reference standard from then on."""

    parser_classes = [JSONParser]

    @docs.adjudication_decide
    def post(self, request: Request, pk: int) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._decide(request, pk))

    def _decide(self, request: Request, pk: int) -> Response:
        from radiology.models import Adjudication
        from radiology.selectors import reading

        try:
            adjudication = reading.adjudication_get(user=request.user, pk=pk)
        except Adjudication.DoesNotExist:
            raise Problem("not_found", "No such adjudication.", status_code=404) from None
        serializer = s.AdjudicationDecideIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            decided = services.adjudication_decide(
                adjudication_id=adjudication.pk,
                adjudicator=request.user,
                client_ip=client_ip(request),
                **serializer.validated_data,
            )
        except ServiceError as error:
            raise _problem_from_service(error) from None
        decided = reading.adjudication_get(user=request.user, pk=decided.pk)
        return Response(s.AdjudicationOut(decided).data)


# --- Binary content ------------------------------------------------------------------------------------


class _AnyContent(BaseContentNegotiation):
    """The path decides what comes back (an image, a CSV file): the Accept header cannot make it a 406."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class _PassthroughRenderer(BaseRenderer):
    media_type = "application/octet-stream"
    format = "bin"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> Any:
        return data


class RadiographImageApi(ApiView):
    renderer_classes = [_PassthroughRenderer]
    content_negotiation_class = _AnyContent

    @docs.radiograph_image
    def get(self, request: Request, pk: int) -> HttpResponse:
        radiograph = _radiograph_for(request, pk)
        try:
            content, content_type = imaging.radiograph_stored(radiograph)
        except imaging.ImageUnavailable as error:
            raise Problem("not_found", str(error), status_code=404) from None
        return imaging.image_response(content, content_type, radiograph.sha256)


class PredictionHeatmapApi(ApiView):
    renderer_classes = [_PassthroughRenderer]
    content_negotiation_class = _AnyContent

    @docs.prediction_heatmap
    def get(self, request: Request, pk: int) -> HttpResponse:
        try:
            content = imaging.heatmap_overlay_png(selectors.prediction_get(user=request.user, pk=pk))
        except Prediction.DoesNotExist:
            raise Problem("not_found", "No such prediction.", status_code=404) from None
        except imaging.ImageUnavailable as error:
            raise Problem("not_found", str(error), status_code=404) from None
        return imaging.image_response(content, "image/png")


# --- Batches -------------------------------------------------------------------------------------------


class BatchSubmitApi(ApiView):
    # Beyond what the operation's shape implies (documented by api/schema.py): the image store can refuse
    # a write (storage_unavailable).
    problem_statuses: ClassVar[dict[str, tuple[int, ...]]] = {"post": (503,)}
    parser_classes = [MultiPartParser]

    @docs.batch_submit
    def post(self, request: Request) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._submit(request))

    def _submit(self, request: Request) -> Response:
        serializer = s.BatchSubmitIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        manifest = serializer.validated_data["manifest"]
        uploads = serializer.validated_data["uploads"]
        items = []
        for study in manifest["studies"]:
            files = [uploads[s.sanitize_file_name(name)] for name in study["files"]]
            items.append(
                services.BatchItemInput(
                    details=services.StudyDetails.from_fields(study),
                    files=[services.UploadedImage.from_upload(f) for f in files],
                )
            )
        result = services.batch_submit(
            submitted_by=request.user,
            items=items,
            reference=manifest["reference"],
            client_ip=client_ip(request),
        )
        if result.batch is None:
            if any(e["code"] == "storage_unavailable" for r in result.items for e in r.item.errors):
                # Not the batch's fault: a 5xx, which clients retry (with the same Idempotency-Key).
                raise Problem(
                    "storage_unavailable",
                    "The image store is not accepting files right now; nothing was saved. Try again later.",
                    headers={"Retry-After": "30"},
                )
            raise Problem(
                "batch_rejected",
                "No study of the batch could be created; nothing was stored.",
                errors=[
                    {
                        **error,
                        "field": f"manifest.studies.{r.index}"
                        + (f".{error['field']}" if "field" in error else ""),
                    }
                    for r in result.items
                    for error in r.item.errors
                ],
            )
        batch = selectors.batch_get(user=request.user, pk=result.batch.pk)
        body = s.BatchOut(batch, context={"request": request}).data
        return Response(body, status=202, headers={"Location": body["status_url"]})


class BatchDetailApi(ApiView):
    @docs.batch_detail
    def get(self, request: Request, pk: Any) -> Response:
        try:
            batch = selectors.batch_get(user=request.user, pk=pk)
        except Batch.DoesNotExist:
            raise Problem("not_found", "No such batch (or it is not yours).", status_code=404) from None
        return Response(s.BatchOut(batch, context={"request": request}).data)


# --- Exports -------------------------------------------------------------------------------------------


class _ExportApi(ApiView):
    permission_classes = [IsAdmin]
    filter_backends = [DjangoFilterBackend]
    filterset_class = RadiographFilter
    queryset = Radiograph.objects.none()
    content_negotiation_class = _AnyContent
    schema = docs.FilteredExportSchema()
    export_format = ""

    def _rows(self, request: Request) -> tuple[int, Iterator[exports.ResultRow]]:
        radiographs = selectors.export_radiographs(user=request.user)
        radiographs = DjangoFilterBackend().filter_queryset(request, radiographs, self)
        count = radiographs.count()
        services.audit_record(
            action=AuditEvent.Action.EXPORT,
            actor=request.user,
            details={
                "format": self.export_format,
                "rows": count,
                "filters": {key: request.query_params.getlist(key) for key in request.query_params},
            },
            client_ip=client_ip(request),
        )
        return count, exports.result_rows(radiographs)


class _CsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> Any:
        return data


class ResultExportCsvApi(_ExportApi):
    renderer_classes = [_CsvRenderer]
    export_format = "csv"

    @docs.export_csv
    def get(self, request: Request) -> StreamingHttpResponse:
        _count, rows = self._rows(request)
        return exports.download(
            exports.csv_lines(exports.ResultRow, rows),
            content_type="text/csv; charset=utf-8",
            filename=f"fracture-review-results-{_stamp()}.csv",
        )


class ResultExportJsonApi(_ExportApi):
    export_format = "json"

    @docs.export_json
    def get(self, request: Request) -> StreamingHttpResponse:
        count, rows = self._rows(request)
        return exports.download(
            exports.json_chunks(count, rows),
            content_type="application/json",
            filename=f"fracture-review-results-{_stamp()}.json",
        )


def _stamp() -> str:
    return timezone.now().strftime("%Y%m%dT%H%M%SZ")


# --- Problem types (public) ----------------------------------------------------------------------------


class ProblemTypeApi(APIView):
    """What a problem `type` means: the URI every problem document names resolves here."""

    permission_classes: list[Any] = []
    authentication_classes: list[Any] = []
    throttle_classes = [UserThrottle]
    metadata_class = None

    @docs.problem_type
    def get(self, request: Request, code: str) -> Response:
        entry = CATALOGUE.get(code)
        if entry is None:
            raise Problem("not_found", "No such problem type.", status_code=404)
        return Response(
            {"code": code, "status": entry.status, "title": entry.title, "description": entry.description}
        )
