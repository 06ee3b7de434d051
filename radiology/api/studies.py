"""Study operations: the list, the upload of a study with its radiographs, and one study; each with its
schema and one example."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponseBase
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from radiology import selectors, services
from radiology.access import client_ip
from radiology.api import schema
from radiology.api import serializers as s
from radiology.api.filters import StudyFilter
from radiology.api.idempotency import complete_in_transaction, run_idempotently
from radiology.api.pagination import ApiPagination
from radiology.api.problems import Problem
from radiology.api.radiographs import QUEUED_RADIOGRAPH, RADIOGRAPH
from radiology.api.schema import EXAMPLE_HOST as HOST
from radiology.api.views import ApiView, paginated, problem_from_service, study_for
from radiology.models import BodyRegion, Study
from radiology.services import ServiceError

STUDY: dict[str, Any] = {
    "id": 1377,
    "url": f"{HOST}/api/v1/studies/1377",
    "accession_number": "ACC-2025-000123",
    "patient": {"id": 311, "mrn": "MRN-0042", "name": "Jane Doe", "date_of_birth": "1961-03-14", "sex": "F"},
    "body_region": "wrist",
    "study_date": "2025-06-02",
    "clinical_notes": "Fall on outstretched hand.",
    "state": "awaiting_review",
    "max_probability": 0.9312,
    "band": "fracture",
    "radiograph_count": 1,
    "failed_count": 0,
    "created_at": "2025-06-02T09:14:05.101Z",
    "reviewed_at": None,
}
STUDY_DETAIL = {
    **STUDY,
    "uploaded_by": "pacs.bridge",
    "read_without_model_by": None,
    "read_without_model_at": None,
    "radiographs": [RADIOGRAPH],
}


class StudyListApi(ApiView):
    filter_backends = [DjangoFilterBackend]
    filterset_class = StudyFilter
    pagination_class = ApiPagination
    queryset = Study.objects.none()  # tells the schema generator the filter's model

    @schema.operation(
        operation_id="studies_list",
        tag="studies",
        summary="List studies",
        description="Studies visible to you, in review order (most suspicious first, then oldest), "
        "paginated.",
        response=s.StudyOut(many=True),
        response_example=STUDY,
        problems=schema.LISTED,
    )
    def get(self, request: Request) -> Response:
        studies = selectors.study_queue(user=request.user)
        return paginated(self, request, studies, s.StudyOut, count=_tallied_count(request))


def _tallied_count(request: Request) -> int | None:
    """The list's size from the running totals per state and body region, when it is filtered by nothing
    else (a few rows instead of counting up to 333,000 studies); None otherwise."""
    params = request.query_params
    if not set(params) <= {"state", "body_region", "page", "page_size"}:
        return None
    state, region = params.get("state") or None, params.get("body_region") or None
    if (state and state not in Study.State.values) or (region and region not in BodyRegion.values):
        return None  # the filter answers 400
    return selectors.study_tallied_count(user=request.user, state=state, body_region=region)


class StudyCreateApi(ApiView):
    parser_classes = [MultiPartParser]

    @schema.operation(
        operation_id="studies_create",
        tag="studies",
        summary="Create a study with its radiographs",
        description=(
            "Multipart upload of one study: patient and study fields plus one or more `files` (PNG, JPEG "
            "or DICOM, recognised by content). Blank fields are filled from DICOM attributes. Each file is "
            "checked on its own: refused files are listed in `rejected` (with file name, code and message) "
            "while the others are kept. If no file is accepted, nothing is created (422 `files_rejected`). "
            "Classification runs asynchronously: poll the study or its radiographs."
        ),
        parameters=[schema.IDEMPOTENCY_KEY],
        request=s.StudyCreateIn,
        request_media_type="multipart/form-data",
        request_example={
            "mrn": "MRN-0042",
            "patient_name": "Jane Doe",
            "accession_number": "ACC-2025-000123",
            "body_region": "wrist",
            "files": ["wrist_pa.jpg"],
        },
        status=201,
        response=s.StudyCreateOut,
        response_example={
            "study": {**STUDY_DETAIL, "state": "processing", "radiographs": [QUEUED_RADIOGRAPH]},
            "rejected": [
                {
                    "file": "notes.png",
                    "code": "unsupported_format",
                    "message": "Not a PNG, JPEG or DICOM file.",
                }
            ],
        },
        problems=(
            *schema.BODY,
            *schema.IDEMPOTENT,
            # services.study_create
            "no_files",
            "too_many_files",
            "files_rejected",
            "missing_field",
            "invalid_body_region",
            "duplicate_accession",
            "patient_mismatch",
            "patient_details_differ",
            "conflict",
            "storage_unavailable",
        ),
    )
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
                # The Idempotency-Key is completed in the study's own transaction (see the function).
                before_commit=lambda created: complete_in_transaction(
                    request, self._created(request, created)
                ),
            )
        except ServiceError as error:
            raise problem_from_service(error) from None
        if result.study is None:
            raise Problem(
                "files_rejected",
                "No file could be accepted, so no study was created.",
                errors=self._rejected(result),
            )
        return self._created(request, result)

    @staticmethod
    def _rejected(result: services.StudyUploadResult) -> list[dict[str, str]]:
        return [{"file": e.filename, "code": e.code, "message": e.message} for e in result.rejected]

    def _created(self, request: Request, result: services.StudyUploadResult) -> Response:
        assert result.study is not None
        study = selectors.study_get(user=request.user, pk=result.study.pk)
        body = s.StudyCreateOut(
            {"study": study, "rejected": self._rejected(result)}, context={"request": request}
        ).data
        return Response(body, status=201, headers={"Location": body["study"]["url"]})


class StudyCollectionApi(StudyListApi, StudyCreateApi):
    """GET /studies lists, POST /studies creates: the two operations above on one path.

    Each operation names its serializers in its method, so composing the classes cannot swap them.
    """


class StudyDetailApi(ApiView):
    @schema.operation(
        operation_id="studies_retrieve",
        tag="studies",
        summary="A study with its radiographs, predictions and latest reviews",
        parameters=[schema.PK],
        response=s.StudyDetailOut,
        response_example=STUDY_DETAIL,
        problems=schema.FOUND,
    )
    def get(self, request: Request, pk: int) -> Response:
        study = study_for(request, pk)
        return Response(s.StudyDetailOut(study, context={"request": request}).data)
