"""API views of the hospital integration: a study as a FHIR R4 Bundle, and its DICOM result deliveries."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from radiology import fhir
from radiology.api.problems import Problem
from radiology.api.views import ApiView
from radiology.dicomnet import selectors as dicom_selectors
from radiology.dicomnet.models import ResultDelivery
from radiology.models import Study
from radiology.selectors import study_get

FHIR_JSON = "application/fhir+json"
_PK = OpenApiParameter(name="id", location=OpenApiParameter.PATH, type=int, description="Study identifier.")


def _study_for(request: Request, pk: int) -> Study:
    try:
        return study_get(user=request.user, pk=pk)
    except Study.DoesNotExist:
        raise Problem("not_found", "No such study.", status_code=404) from None


class StudyFhirApi(ApiView):
    @extend_schema(
        operation_id="studies_fhir",
        tags=["studies"],
        summary="The study's result as a FHIR R4 Bundle (DiagnosticReport, Observations, ImagingStudy)",
        parameters=[_PK],
        responses={(200, FHIR_JSON): OpenApiResponse(OpenApiTypes.OBJECT, description="A FHIR R4 Bundle.")},
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        import json

        study = _study_for(request, pk)
        bundle = fhir.study_fhir_bundle(study=study)
        return HttpResponse(json.dumps(bundle), content_type=FHIR_JSON)


class ResultDeliveryOut(serializers.ModelSerializer[ResultDelivery]):
    sr_sop_instance_uid = serializers.CharField(read_only=True)
    documents = serializers.SerializerMethodField()

    class Meta:
        model = ResultDelivery
        fields = [
            "id",
            "kind",
            "status",
            "destination",
            "attempts",
            "last_error",
            "sr_sop_instance_uid",
            "documents",
            "created_at",
            "sent_at",
        ]

    def get_documents(self, delivery: ResultDelivery) -> list[dict[str, str]]:
        return [
            {
                "role": d["role"],
                "sop_class_uid": d["sop_class_uid"],
                "sop_instance_uid": d["sop_instance_uid"],
            }
            for d in delivery.documents
        ]


class StudyDeliveriesApi(ApiView):
    @extend_schema(
        operation_id="studies_deliveries",
        tags=["studies"],
        summary="DICOM results sent to the PACS for this study (SR, Secondary Capture) and their status",
        parameters=[_PK],
        responses={200: ResultDeliveryOut(many=True)},
    )
    def get(self, request: Request, pk: int) -> Response:
        study = _study_for(request, pk)
        deliveries = dicom_selectors.study_result_deliveries(study=study)
        data: Any = ResultDeliveryOut(deliveries, many=True).data
        return Response(data)
