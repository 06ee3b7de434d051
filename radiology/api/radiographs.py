"""Radiograph operations: the list, one radiograph, its current prediction, its stored image, the heatmap,
and its reviews (list and create); each with its schema and one example."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, HttpResponseBase
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from radiology import imaging, selectors, services
from radiology.access import client_ip
from radiology.api import schema
from radiology.api import serializers as s
from radiology.api.filters import RadiographFilter
from radiology.api.idempotency import run_idempotently
from radiology.api.pagination import ApiPagination
from radiology.api.problems import Problem
from radiology.api.schema import EXAMPLE_HOST as HOST
from radiology.api.views import (
    AnyContent,
    ApiView,
    PassthroughRenderer,
    paginated,
    problem_from_service,
    radiograph_for,
)
from radiology.models import Prediction, Radiograph
from radiology.services import ServiceError

PREDICTION = {
    "id": 812,
    "probability": 0.9312,
    "label": "fractured",
    "band": "fracture",
    "boxes": [{"x0": 412.0, "y0": 655.5, "x1": 538.0, "y1": 790.0, "score": 0.81}],
    "threshold": 0.42,
    "threshold_sensitive": 0.18,
    "threshold_specific": 0.61,
    "model_version": "effnet-lite0-2025.06",
    "created_at": "2025-06-02T09:14:07.512Z",
    "heatmap_url": f"{HOST}/api/v1/predictions/812/heatmap",
}
REVIEW = {
    "id": 95,
    "decision": "override",
    "final_label": "not_fractured",
    "unaided_label": "",
    "reason_code": "old_fracture",
    "reason_text": "",
    "reviewer": "dr.ada",
    "prediction": 812,
    "created_at": "2025-06-02T10:02:41.003Z",
}
RADIOGRAPH: dict[str, Any] = {
    "id": 4051,
    "url": f"{HOST}/api/v1/radiographs/4051",
    "study": 1377,
    "accession_number": "ACC-2025-000123",
    "body_region": "wrist",
    "position": 0,
    "original_filename": "wrist_pa.jpg",
    "format": "JPEG",
    "width": 1024,
    "height": 1280,
    "status": "predicted",
    "failure_message": "",
    "not_analysed": None,
    "created_at": "2025-06-02T09:14:05.120Z",
    "image_url": f"{HOST}/api/v1/radiographs/4051/image",
    "prediction": PREDICTION,
    "review": None,
}
QUEUED_RADIOGRAPH = {**RADIOGRAPH, "status": "queued", "prediction": None}


class RadiographListApi(ApiView):
    filter_backends = [DjangoFilterBackend]
    filterset_class = RadiographFilter
    pagination_class = ApiPagination
    queryset = Radiograph.objects.none()

    @schema.operation(
        operation_id="radiographs_list",
        tag="radiographs",
        summary="List radiographs with their current prediction and latest review",
        description="Newest first, paginated. Filter by status, body region, date, verdict, band, review "
        "status, study or batch.",
        response=s.RadiographOut(many=True),
        response_example=RADIOGRAPH,
        problems=schema.LISTED,
    )
    def get(self, request: Request) -> Response:
        # Filtered by nothing: the count from the running total (deep pages at 1,000,000 radiographs spent
        # a third of their time counting); a filter still counts its matching radiographs.
        unfiltered = set(request.query_params) <= {"page", "page_size"}
        count = selectors.radiograph_tallied_count(user=request.user) if unfiltered else None
        return paginated(self, request, selectors.radiograph_list(user=request.user), s.RadiographOut, count)


class RadiographDetailApi(ApiView):
    @schema.operation(
        operation_id="radiographs_retrieve",
        tag="radiographs",
        summary="One radiograph",
        parameters=[schema.PK],
        response=s.RadiographDetailOut,
        response_example={
            **RADIOGRAPH,
            "review": REVIEW,
            "sha256": "9f2c1e0b4d5a6c7e8f9012a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7",
            "byte_size": 183220,
            "attempts": 1,
            "dicom_attributes": {},
        },
        problems=schema.FOUND,
    )
    def get(self, request: Request, pk: int) -> Response:
        radiograph = radiograph_for(request, pk)
        return Response(s.RadiographDetailOut(radiograph, context={"request": request}).data)


class RadiographPredictionApi(ApiView):
    @schema.operation(
        operation_id="radiographs_prediction_retrieve",
        tag="radiographs",
        summary="A radiograph's current prediction",
        description="Probability, label at the model's threshold, band (fracture / doubt / no_fracture) "
        "from the two operating points, the model's boxes (original-image pixels), model version and "
        "heatmap URL. 404 `prediction_not_available` while the radiograph is queued, running or failed.",
        parameters=[schema.PK],
        response=s.PredictionOut,
        response_example=PREDICTION,
        problems=(*schema.FOUND, "prediction_not_available"),
    )
    def get(self, request: Request, pk: int) -> Response:
        radiograph = radiograph_for(request, pk)
        prediction = selectors.radiograph_current_prediction(radiograph)
        if prediction is None:
            raise Problem(
                "prediction_not_available",
                f"The radiograph has no prediction; its status is {radiograph.status}.",
                status_code=404,
                radiograph_status=radiograph.status,
            )
        return Response(s.PredictionOut(prediction, context={"request": request}).data)


class RadiographImageApi(ApiView):
    renderer_classes = [PassthroughRenderer]
    content_negotiation_class = AnyContent

    @schema.operation(
        operation_id="radiographs_image_retrieve",
        tag="radiographs",
        summary="The stored radiograph, as uploaded",
        parameters=[schema.PK],
        responses={
            (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="A PNG upload."),
            (200, "image/jpeg"): OpenApiResponse(OpenApiTypes.BINARY, description="A JPEG upload."),
            (200, "application/dicom"): OpenApiResponse(OpenApiTypes.BINARY, description="A DICOM upload."),
        },
        problems=schema.FOUND,  # also when the stored file is missing (imaging.ImageUnavailable)
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        radiograph = radiograph_for(request, pk)
        try:
            content, content_type = imaging.radiograph_stored(radiograph)
        except imaging.ImageUnavailable as error:
            raise Problem("not_found", str(error), status_code=404) from None
        return imaging.image_response(content, content_type, radiograph.sha256)


class PredictionHeatmapApi(ApiView):
    renderer_classes = [PassthroughRenderer]
    content_negotiation_class = AnyContent

    @schema.operation(
        operation_id="predictions_heatmap_retrieve",
        tag="radiographs",
        summary="The heatmap of where the model looked (PNG)",
        parameters=[schema.PK],
        responses={(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="Grad-CAM heatmap.")},
        problems=schema.FOUND,
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        try:
            content = imaging.heatmap_overlay_png(selectors.prediction_get(user=request.user, pk=pk))
        except Prediction.DoesNotExist:
            raise Problem("not_found", "No such prediction.", status_code=404) from None
        except imaging.ImageUnavailable as error:
            raise Problem("not_found", str(error), status_code=404) from None
        return imaging.image_response(content, "image/png")


# --- Reviews ---------------------------------------------------------------------------------------------


class ReviewListApi(ApiView):
    @schema.operation(
        operation_id="radiographs_reviews_list",
        tag="reviews",
        summary="A radiograph's reviews, newest first (the first one stands)",
        parameters=[schema.PK],
        response=s.ReviewOut(many=True),
        response_example=REVIEW,
        problems=schema.FOUND,
    )
    def get(self, request: Request, pk: int) -> Response:
        radiograph = radiograph_for(request, pk)
        reviews = selectors.radiograph_reviews(radiograph=radiograph)
        return Response(s.ReviewOut(reviews, many=True).data)


class ReviewCreateApi(ApiView):
    parser_classes = [JSONParser]

    @schema.operation(
        operation_id="radiographs_reviews_create",
        tag="reviews",
        summary="Confirm or override the current prediction",
        description="`confirm` keeps the model's label; `override` records the other label and needs a "
        "`reason_code` (and `reason_text` for `other`). The latest review stands.",
        parameters=[schema.PK, schema.IDEMPOTENCY_KEY],
        request=s.ReviewCreateIn,
        request_example={
            "decision": "override",
            "final_label": "not_fractured",
            "reason_code": "old_fracture",
        },
        status=201,
        response=s.ReviewOut,
        response_example=REVIEW,
        problems=(
            *schema.FOUND,
            *schema.BODY,
            *schema.IDEMPOTENT,
            # services.review_submit
            "not_ready",
            "adjudicated",
            "invalid_decision",
            "invalid_label",
            "confirm_label_mismatch",
            "override_same_label",
            "reason_required",
            "reason_contradicts_label",
            "unaided_read_required",
        ),
    )
    def post(self, request: Request, pk: int) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._create(request, pk))

    def _create(self, request: Request, pk: int) -> Response:
        radiograph = radiograph_for(request, pk)
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
            raise problem_from_service(error) from None
        return Response(s.ReviewOut(review).data, status=201)


class ReviewCollectionApi(ReviewListApi, ReviewCreateApi):
    """GET lists a radiograph's reviews (newest first, the first stands); POST adds one."""
