"""Export operations (admins): the results as CSV or JSON, one row per radiograph (radiology/exports.py's
one row definition), with the row serializer that documents it, the schema and one example each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import StreamingHttpResponse
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

from radiology import exports, selectors, services
from radiology.access import client_ip
from radiology.api import schema
from radiology.api.filters import RadiographFilter
from radiology.api.permissions import IsAdmin
from radiology.api.views import AnyContent, ApiView, stamp
from radiology.governance.models import GuardrailRefusal
from radiology.models import AuditEvent, Band, BodyRegion, Label, Radiograph, Review


class ExportRowOut(serializers.Serializer):
    """exports.ExportRow as JSON: the same columns, in order (checked by a test); null where absent."""

    radiograph_id = serializers.IntegerField()
    study_id = serializers.IntegerField()
    accession_number = serializers.CharField()
    body_region = serializers.ChoiceField(choices=BodyRegion.choices)
    radiograph_status = serializers.ChoiceField(choices=Radiograph.Status.choices)
    original_filename = serializers.CharField()
    uploaded_at = serializers.DateTimeField()
    prediction_id = serializers.IntegerField(allow_null=True)
    model_version = serializers.CharField(allow_null=True)
    probability = serializers.FloatField(allow_null=True)
    model_label = serializers.ChoiceField(choices=Label.choices, allow_null=True)
    band = serializers.ChoiceField(
        choices=Band.choices, allow_null=True, help_text="The model's band (null before bands existed)."
    )
    threshold = serializers.FloatField(allow_null=True)
    predicted_at = serializers.DateTimeField(allow_null=True)
    not_analysed_code = serializers.ChoiceField(
        choices=GuardrailRefusal.Code.choices,
        allow_null=True,
        help_text="Why the model gave no verdict (radiograph_status not_analysed only).",
    )
    not_analysed_reason = serializers.CharField(allow_null=True)
    review_count = serializers.IntegerField()
    review_decision = serializers.ChoiceField(choices=Review.Decision.choices, allow_null=True)
    review_final_label = serializers.ChoiceField(choices=Label.choices, allow_null=True)
    agrees_with_model = serializers.BooleanField(
        allow_null=True, help_text="Whether the standing review kept the model's label (CSV: yes / no)."
    )
    review_reason_code = serializers.ChoiceField(choices=Review.Reason.choices, allow_null=True)
    review_reason_text = serializers.CharField(allow_null=True)
    reviewer = serializers.CharField(allow_null=True)
    reviewed_at = serializers.DateTimeField(allow_null=True)


class ExportOut(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    count = serializers.IntegerField()
    results = ExportRowOut(many=True)


ROW: dict[str, Any] = {
    "radiograph_id": 4051,
    "study_id": 1377,
    "accession_number": "ACC-2025-000123",
    "body_region": "wrist",
    "radiograph_status": "predicted",
    "original_filename": "wrist_pa.jpg",
    "uploaded_at": "2025-06-02T09:14:05.120Z",
    "prediction_id": 812,
    "model_version": "effnet-lite0-2025.06",
    "probability": 0.9312,
    "model_label": "fractured",
    "band": "fracture",
    "threshold": 0.42,
    "predicted_at": "2025-06-02T09:14:07.512Z",
    "not_analysed_code": None,
    "not_analysed_reason": None,
    "review_count": 1,
    "review_decision": "override",
    "review_final_label": "not_fractured",
    "agrees_with_model": False,
    "review_reason_code": "old_fracture",
    "review_reason_text": None,
    "reviewer": "dr.ada",
    "reviewed_at": "2025-06-02T10:02:41.003Z",
}
_DESCRIPTION = (
    "One row per radiograph: its current prediction joined with its latest review. Takes the radiograph "
    "list's filters. Every export is recorded in the audit trail."
)


class _CsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> Any:
        return data


class _ExportApi(ApiView):
    permission_classes = [IsAdmin]
    filter_backends = [DjangoFilterBackend]
    filterset_class = RadiographFilter
    queryset = Radiograph.objects.none()
    content_negotiation_class = AnyContent
    schema = schema.FilteredExportSchema()
    export_format = ""

    def _rows(self, request: Request) -> tuple[int, Iterator[exports.ExportRow]]:
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
        return count, exports.radiograph_rows(radiographs)


class ResultExportCsvApi(_ExportApi):
    renderer_classes = [_CsvRenderer]
    export_format = "csv"

    @schema.operation(
        operation_id="exports_results_csv",
        tag="exports",
        summary="Export results as CSV (admins)",
        description=_DESCRIPTION,
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="CSV with a header row; the JSON export's columns, blank where absent.",
                examples=[OpenApiExample("csv", value="".join(exports.csv_lines([])))],
            )
        },
        problems=("validation_error",),  # an invalid filter value
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        _count, rows = self._rows(request)
        return exports.download(
            exports.csv_lines(rows),
            content_type="text/csv; charset=utf-8",
            filename=f"fracture-review-results-{stamp()}.csv",
        )


class ResultExportJsonApi(_ExportApi):
    export_format = "json"

    @schema.operation(
        operation_id="exports_results_json",
        tag="exports",
        summary="Export results as JSON (admins)",
        description=_DESCRIPTION,
        response=ExportOut,
        response_example={"generated_at": "2025-06-03T00:00:00Z", "count": 1, "results": [ROW]},
        problems=("validation_error",),  # an invalid filter value
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        count, rows = self._rows(request)
        return exports.download(
            exports.json_chunks(count, rows),
            content_type="application/json",
            filename=f"fracture-review-results-{stamp()}.json",
        )
