"""API views of the hospital integration: a study as a FHIR R4 Bundle, and its DICOM result deliveries."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from radiology import fhir
from radiology.api import schema
from radiology.api.views import ApiView, study_for
from radiology.dicomnet import selectors as dicom_selectors
from radiology.dicomnet.models import ResultDelivery

FHIR_JSON = "application/fhir+json"
_FHIR_EXAMPLE = {
    "resourceType": "Bundle",
    "type": "collection",
    "timestamp": "2026-12-02T15:40:00+00:00",
    "entry": [
        {
            "fullUrl": "urn:uuid:8f0e3c52-61a7-5b7e-9d55-0c7d7a3b1a10",
            "resource": {
                "resourceType": "ImagingStudy",
                "status": "available",
                "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.8.498.1"}],
                "subject": {"reference": "urn:uuid:0b7f5d3e-4c1a-5e0b-8a5f-3f1f7c2d9e01"},
            },
        },
        {
            "fullUrl": "urn:uuid:5d1f6a0b-2b8e-5c3d-9f4a-7e6b5c4d3a21",
            "resource": {
                "resourceType": "Observation",
                "status": "preliminary",
                "code": {"coding": [{"system": "urn:fracture-review:codes", "code": "fracture-probability"}]},
                "valueQuantity": {
                    "value": 0.91,
                    "unit": "probability",
                    "system": "http://unitsofmeasure.org",
                    "code": "1",
                },
            },
        },
        {
            "fullUrl": "urn:uuid:2c9a8b7d-6e5f-5a4b-8c3d-1e2f3a4b5c6d",
            "resource": {
                "resourceType": "DiagnosticReport",
                "status": "preliminary",
                "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
                "imagingStudy": [{"reference": "urn:uuid:8f0e3c52-61a7-5b7e-9d55-0c7d7a3b1a10"}],
                "result": [{"reference": "urn:uuid:5d1f6a0b-2b8e-5c3d-9f4a-7e6b5c4d3a21"}],
            },
        },
    ],
}
_DELIVERY_EXAMPLE = {
    "id": 41,
    "kind": "model_result",
    "status": "sent",
    "destination": "C-STORE ORTHANC@pacs.example.org:4242",
    "attempts": 1,
    "last_error": "",
    "sr_sop_instance_uid": "1.2.826.0.1.3680043.8.498.11",
    "documents": [
        {
            "role": "sr",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.88.34",
            "sop_instance_uid": "1.2.826.0.1.3680043.8.498.11",
        },
        {
            "role": "sc",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
            "sop_instance_uid": "1.2.826.0.1.3680043.8.498.12",
        },
    ],
    "created_at": "2026-12-02T15:40:03Z",
    "sent_at": "2026-12-02T15:40:05Z",
}


class StudyFhirApi(ApiView):
    @schema.operation(
        operation_id="studies_fhir",
        tag="studies",
        summary="The study's result as a FHIR R4 Bundle (DiagnosticReport, Observations, ImagingStudy)",
        parameters=[schema.PK],
        responses={
            (200, FHIR_JSON): OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="A FHIR R4 Bundle.",
                examples=[OpenApiExample("bundle", value=_FHIR_EXAMPLE)],
            )
        },
        problems=schema.FOUND,
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        study = study_for(request, pk)
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

    @extend_schema_field(
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "role": {"type": "string", "enum": ["sr", "sc"]},
                    "sop_class_uid": {"type": "string"},
                    "sop_instance_uid": {"type": "string"},
                },
                "required": ["role", "sop_class_uid", "sop_instance_uid"],
            },
        }
    )
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
    @schema.operation(
        operation_id="studies_deliveries",
        tag="studies",
        summary="DICOM results sent to the PACS for this study (SR, Secondary Capture) and their status",
        parameters=[schema.PK],
        response=ResultDeliveryOut(many=True),
        response_example=_DELIVERY_EXAMPLE,
        problems=schema.FOUND,
    )
    def get(self, request: Request, pk: int) -> Response:
        study = study_for(request, pk)
        deliveries = dicom_selectors.study_result_deliveries(study=study)
        data: Any = ResultDeliveryOut(deliveries, many=True).data
        return Response(data)
