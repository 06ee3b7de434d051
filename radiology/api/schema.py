"""OpenAPI documentation for the API views: per-operation extend_schema with examples, and a hook that
documents the problem-details responses every operation can give (401, 403, 404, 429, 500, ...).

Kept apart from the views so each view reads as what it does; each decorator here names its view.
"""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiRequest,
    OpenApiResponse,
    extend_schema,
)

from radiology.api import serializers as s
from radiology.api.problems import CATALOGUE, PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_PREFIX

# --- Example values ----------------------------------------------------------------------------------

_HOST = "https://fracture-review.example.org"

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
    "heatmap_url": f"{_HOST}/api/v1/predictions/812/heatmap",
}
REVIEW = {
    "id": 95,
    "decision": "override",
    "final_label": "not_fractured",
    "reason_code": "old_fracture",
    "reason_text": "",
    "unaided_label": "",
    "reviewer": "dr.ada",
    "prediction": 812,
    "created_at": "2025-06-02T10:02:41.003Z",
}
RADIOGRAPH = {
    "id": 4051,
    "url": f"{_HOST}/api/v1/radiographs/4051",
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
    "created_at": "2025-06-02T09:14:05.120Z",
    "image_url": f"{_HOST}/api/v1/radiographs/4051/image",
    "prediction": PREDICTION,
    "review": None,
}
RADIOGRAPH_DETAIL = {
    **RADIOGRAPH,
    "review": REVIEW,
    "sha256": "9f2c1e0b4d5a6c7e8f9012a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7",
    "byte_size": 183220,
    "attempts": 1,
    "dicom_attributes": {},
}
PATIENT = {"id": 311, "mrn": "MRN-0042", "name": "Jane Doe", "date_of_birth": "1961-03-14", "sex": "F"}
STUDY = {
    "id": 1377,
    "url": f"{_HOST}/api/v1/studies/1377",
    "accession_number": "ACC-2025-000123",
    "patient": PATIENT,
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
STUDY_DETAIL = {**STUDY, "uploaded_by": "pacs.bridge", "radiographs": [RADIOGRAPH]}
QUEUED_RADIOGRAPH = {**RADIOGRAPH, "status": "queued", "prediction": None}
BATCH: dict[str, Any] = {
    "id": "6f1c2b7e-3a4d-4e5f-9a8b-7c6d5e4f3a2b",
    "status_url": f"{_HOST}/api/v1/batches/6f1c2b7e-3a4d-4e5f-9a8b-7c6d5e4f3a2b",
    "reference": "night-run-2025-06-02",
    "created_at": "2025-06-02T09:14:05.001Z",
    "state": "processing",
    "items": {"total": 2, "created": 1, "failed": 1},
    "radiographs": {"total": 1, "queued": 1, "running": 0, "predicted": 0, "failed": 0},
    "results": [
        {
            "index": 0,
            "accession_number": "ACC-2025-000123",
            "outcome": "created",
            "study": 1377,
            "study_url": f"{_HOST}/api/v1/studies/1377",
            "errors": [
                {
                    "file": "scout.txt",
                    "code": "unsupported_format",
                    "message": "Not a PNG, JPEG or DICOM file.",
                }
            ],
            "radiographs": [QUEUED_RADIOGRAPH],
        },
        {
            "index": 1,
            "accession_number": "ACC-2025-000124",
            "outcome": "failed",
            "study": None,
            "study_url": None,
            "errors": [
                {
                    "code": "duplicate_accession",
                    "message": "A study with accession number ACC-2025-000124 already exists.",
                    "field": "accession_number",
                }
            ],
            "radiographs": [],
        },
    ],
}
BATCH_DONE = {
    **BATCH,
    "state": "complete",
    "radiographs": {"total": 1, "queued": 0, "running": 0, "predicted": 1, "failed": 0},
    "results": [{**BATCH["results"][0], "radiographs": [RADIOGRAPH]}, BATCH["results"][1]],
}
MANIFEST = {
    "reference": "night-run-2025-06-02",
    "studies": [
        {
            "accession_number": "ACC-2025-000123",
            "mrn": "MRN-0042",
            "patient_name": "Jane Doe",
            "body_region": "wrist",
            "files": ["wrist_pa.jpg", "scout.txt"],
        },
        {
            "accession_number": "ACC-2025-000124",
            "mrn": "MRN-0043",
            "patient_name": "John Roe",
            "body_region": "ankle",
            "files": ["ankle_ap.png"],
        },
    ],
}


def _problem(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    entry = CATALOGUE[code]
    return {
        "type": f"{PROBLEM_TYPE_PREFIX}{code}",
        "title": entry.title,
        "status": entry.status,
        "detail": detail,
        "code": code,
        "instance": "/api/v1/…",
        **extra,
    }


def _problem_response(description: str, *examples: tuple[str, dict[str, Any]]) -> OpenApiResponse:
    return OpenApiResponse(
        response=OpenApiTypes.OBJECT,  # replaced by a $ref to Problem in add_problem_responses
        description=description,
        examples=[OpenApiExample(name, value=value) for name, value in examples],
    )


IDEMPOTENCY_KEY = OpenApiParameter(
    name="Idempotency-Key",
    location=OpenApiParameter.HEADER,
    required=False,
    type=str,
    description="Any unique string (a UUID) per logical request. A retry with the same key and body "
    "returns the first response (header `Idempotent-Replayed: true`) instead of doing the work again; "
    "the same key with a different body is refused with 422.",
    examples=[OpenApiExample("uuid", value="0b6f7c9e-1d2a-4c3b-8e5f-6a7b8c9d0e1f")],
)
PK = OpenApiParameter(name="id", location=OpenApiParameter.PATH, type=int, description="Identifier.")

_KEY_REUSED = (
    "key reused",
    _problem(
        "idempotency_key_reused",
        "This Idempotency-Key was already used for a different request. Use a new key for a new request.",
    ),
)
_IN_PROGRESS = (
    "in progress",
    _problem(
        "idempotency_in_progress",
        "A request with this Idempotency-Key is still being processed. Retry in a moment.",
    ),
)


class FilteredExportSchema(AutoSchema):
    """Exports are not paginated lists but take the same query filters as the radiograph list."""

    def get_filter_backends(self) -> list[Any]:
        return list(getattr(self.view, "filter_backends", []))


# --- Operations --------------------------------------------------------------------------------------

study_list = extend_schema(
    operation_id="studies_list",
    tags=["studies"],
    summary="List studies",
    description="Studies visible to you, in review order (most suspicious first, then oldest), paginated.",
    responses={200: s.StudyOut(many=True)},
    examples=[OpenApiExample("one study", value=STUDY, response_only=True)],
)

study_create = extend_schema(
    operation_id="studies_create",
    tags=["studies"],
    summary="Create a study with its radiographs",
    description=(
        "Multipart upload of one study: patient and study fields plus one or more `files` (PNG, JPEG or "
        "DICOM, recognised by content). Blank fields are filled from DICOM attributes. Each file is "
        "checked on its own: refused files are listed in `rejected` (with file name, code and message) "
        "while the others are kept. If no file is accepted, nothing is created (422 `files_rejected`). "
        "Classification runs asynchronously: poll the study or its radiographs."
    ),
    parameters=[IDEMPOTENCY_KEY],
    request={"multipart/form-data": s.StudyCreateIn},
    responses={
        201: OpenApiResponse(
            s.StudyCreateOut,
            description="Created; `Location` is the study's URL.",
            examples=[
                OpenApiExample(
                    "created, one file refused",
                    value={
                        "study": {**STUDY_DETAIL, "state": "processing", "radiographs": [QUEUED_RADIOGRAPH]},
                        "rejected": [
                            {
                                "file": "notes.png",
                                "code": "unsupported_format",
                                "message": "Not a PNG, JPEG or DICOM file.",
                            }
                        ],
                    },
                )
            ],
        ),
        (409, PROBLEM_CONTENT_TYPE): _problem_response(
            "The accession number exists, the MRN belongs to someone else, or the key is in use.",
            (
                "duplicate accession",
                _problem(
                    "duplicate_accession",
                    "A study with accession number ACC-2025-000123 already exists.",
                    errors=[
                        {
                            "field": "accession_number",
                            "code": "duplicate_accession",
                            "message": "A study with accession number ACC-2025-000123 already exists.",
                        }
                    ],
                ),
            ),
            _IN_PROGRESS,
        ),
        (422, PROBLEM_CONTENT_TYPE): _problem_response(
            "No file was accepted, a required field is missing, or the Idempotency-Key was reused.",
            (
                "no file accepted",
                _problem(
                    "files_rejected",
                    "No file could be accepted, so no study was created.",
                    errors=[
                        {
                            "file": "scan.png",
                            "code": "truncated",
                            "message": "The image file is incomplete (truncated); upload it again.",
                        }
                    ],
                ),
            ),
            _KEY_REUSED,
        ),
    },
    examples=[
        OpenApiExample(
            "wrist study",
            value={
                "mrn": "MRN-0042",
                "patient_name": "Jane Doe",
                "accession_number": "ACC-2025-000123",
                "body_region": "wrist",
                "files": ["(binary)"],
            },
            request_only=True,
            media_type="multipart/form-data",
        )
    ],
)

study_detail = extend_schema(
    operation_id="studies_retrieve",
    tags=["studies"],
    summary="A study with its radiographs, predictions and latest reviews",
    parameters=[PK],
    responses={200: s.StudyDetailOut},
    examples=[OpenApiExample("study", value=STUDY_DETAIL, response_only=True)],
)

radiograph_list = extend_schema(
    operation_id="radiographs_list",
    tags=["radiographs"],
    summary="List radiographs with their current prediction and latest review",
    description="Newest first, paginated. Filter by status, body region, date, verdict, band, review "
    "status, study or batch.",
    responses={200: s.RadiographOut(many=True)},
    examples=[OpenApiExample("predicted radiograph", value=RADIOGRAPH, response_only=True)],
)

radiograph_detail = extend_schema(
    operation_id="radiographs_retrieve",
    tags=["radiographs"],
    summary="One radiograph",
    parameters=[PK],
    responses={200: s.RadiographDetailOut},
    examples=[OpenApiExample("reviewed radiograph", value=RADIOGRAPH_DETAIL, response_only=True)],
)

radiograph_prediction = extend_schema(
    operation_id="radiographs_prediction_retrieve",
    tags=["radiographs"],
    summary="A radiograph's current prediction",
    description="Probability, label at the model's threshold, band (fracture / doubt / no_fracture) from "
    "the two operating points, the model's boxes (original-image pixels), model version and heatmap URL. "
    "404 `prediction_not_available` while the radiograph is queued, running or failed.",
    parameters=[PK],
    responses={
        200: s.PredictionOut,
        (404, PROBLEM_CONTENT_TYPE): _problem_response(
            "No such radiograph, or no prediction yet.",
            (
                "not predicted yet",
                _problem(
                    "prediction_not_available",
                    "The radiograph has no prediction; its status is queued.",
                    radiograph_status="queued",
                ),
            ),
        ),
    },
    examples=[OpenApiExample("prediction", value=PREDICTION, response_only=True)],
)

review_list = extend_schema(
    operation_id="radiographs_reviews_list",
    tags=["reviews"],
    summary="A radiograph's reviews, newest first (the first one stands)",
    parameters=[PK],
    responses={200: s.ReviewOut(many=True)},
    examples=[OpenApiExample("reviews", value=REVIEW, response_only=True)],
)

review_create = extend_schema(
    operation_id="radiographs_reviews_create",
    tags=["reviews"],
    summary="Confirm or override the current prediction",
    description="`confirm` keeps the model's label; `override` records the other label and needs a "
    "`reason_code` (and `reason_text` for `other`). The latest review stands.",
    parameters=[PK, IDEMPOTENCY_KEY],
    request=s.ReviewCreateIn,
    responses={
        201: s.ReviewOut,
        (409, PROBLEM_CONTENT_TYPE): _problem_response(
            "Nothing to review yet, or the Idempotency-Key is in use.",
            ("not ready", _problem("not_ready", "This radiograph has no prediction to review yet.")),
            _IN_PROGRESS,
        ),
        (422, PROBLEM_CONTENT_TYPE): _problem_response(
            "The review is not consistent (e.g. an override without a reason).",
            (
                "reason required",
                _problem(
                    "reason_required",
                    "Choose a reason for the override.",
                    errors=[
                        {
                            "field": "reason_code",
                            "code": "reason_required",
                            "message": "Choose a reason for the override.",
                        }
                    ],
                ),
            ),
            _KEY_REUSED,
        ),
    },
    examples=[
        OpenApiExample("confirm", value={"decision": "confirm"}, request_only=True),
        OpenApiExample(
            "override",
            value={"decision": "override", "final_label": "not_fractured", "reason_code": "old_fracture"},
            request_only=True,
        ),
        OpenApiExample("stored review", value=REVIEW, response_only=True, status_codes=[201]),
    ],
)

_BINARY = OpenApiTypes.BINARY

radiograph_image = extend_schema(
    operation_id="radiographs_image_retrieve",
    tags=["radiographs"],
    summary="The stored radiograph, as uploaded",
    parameters=[PK],
    responses={
        (200, "image/png"): OpenApiResponse(_BINARY, description="A PNG upload."),
        (200, "image/jpeg"): OpenApiResponse(_BINARY, description="A JPEG upload."),
        (200, "application/dicom"): OpenApiResponse(_BINARY, description="A DICOM upload."),
    },
)

prediction_heatmap = extend_schema(
    operation_id="predictions_heatmap_retrieve",
    tags=["radiographs"],
    summary="The heatmap of where the model looked (PNG)",
    parameters=[PK],
    responses={(200, "image/png"): OpenApiResponse(_BINARY, description="Grad-CAM heatmap.")},
)

batch_submit = extend_schema(
    operation_id="batches_create",
    tags=["batches"],
    summary="Submit many studies in one request",
    description=(
        "Multipart: a `manifest` part (JSON, as text or as a file) listing the studies and, for each, the "
        "names of its files; and one `files` part per file, matched by file name. The manifest and file "
        "references are checked first (400 and nothing stored if they do not match). Then every study "
        "is created on its own, in its own transaction: one that fails (duplicate accession, every file "
        "refused, ...) leaves nothing behind and is reported in `results[].errors`. Answered with 202 and "
        "the batch's status URL (also in `Location`); classification runs asynchronously, so poll that "
        "URL until `state` is `complete`. If no study at all could be created: 422 `batch_rejected`."
    ),
    parameters=[IDEMPOTENCY_KEY],
    request=OpenApiRequest(
        request=s.BatchSubmitIn,
        encoding={"manifest": {"contentType": "application/json"}},
        examples=[
            OpenApiExample("two studies", value={"manifest": MANIFEST, "files": ["(binary)", "(binary)"]})
        ],
    ),
    responses={
        202: OpenApiResponse(
            s.BatchOut,
            description="Accepted; `Location` and `status_url` point at the batch status.",
            examples=[OpenApiExample("accepted", value=BATCH)],
        ),
        (409, PROBLEM_CONTENT_TYPE): _problem_response("The Idempotency-Key is in use.", _IN_PROGRESS),
        (422, PROBLEM_CONTENT_TYPE): _problem_response(
            "No study could be created, or the Idempotency-Key was reused.",
            (
                "no study created",
                _problem(
                    "batch_rejected",
                    "No study of the batch could be created; nothing was stored.",
                    errors=[
                        {
                            "field": "manifest.studies.0.accession_number",
                            "code": "duplicate_accession",
                            "message": "A study with accession number ACC-2025-000123 already exists.",
                        }
                    ],
                ),
            ),
            _KEY_REUSED,
        ),
    },
)

batch_detail = extend_schema(
    operation_id="batches_retrieve",
    tags=["batches"],
    summary="A batch's status and per-study results",
    description="Visible to whoever submitted it, and to admins. `state` is `complete` once no "
    "radiograph of the batch is queued or running; `radiographs` counts them by status.",
    parameters=[
        OpenApiParameter(
            name="id", location=OpenApiParameter.PATH, type=OpenApiTypes.UUID, description="Batch id."
        )
    ],
    responses={200: s.BatchOut},
    examples=[
        OpenApiExample("processing", value=BATCH, response_only=True),
        OpenApiExample("complete", value=BATCH_DONE, response_only=True),
    ],
)

_EXPORT_ROW = {
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
    "threshold": 0.42,
    "predicted_at": "2025-06-02T09:14:07.512Z",
    "review_decision": "override",
    "review_final_label": "not_fractured",
    "review_reason_code": "old_fracture",
    "reviewer": "dr.ada",
    "reviewed_at": "2025-06-02T10:02:41.003Z",
}

export_csv = extend_schema(
    operation_id="exports_results_csv",
    tags=["exports"],
    summary="Export results as CSV (admins)",
    description="One row per radiograph: its current prediction joined with its latest review. Takes the "
    "radiograph list's filters. Every export is recorded in the audit trail.",
    responses={
        (200, "text/csv"): OpenApiResponse(
            OpenApiTypes.STR,
            description="CSV with a header row.",
            examples=[
                OpenApiExample(
                    "csv",
                    value=",".join(_EXPORT_ROW)
                    + "\n"
                    + ",".join(str(v) for v in _EXPORT_ROW.values())
                    + "\n",
                )
            ],
        )
    },
)

export_json = extend_schema(
    operation_id="exports_results_json",
    tags=["exports"],
    summary="Export results as JSON (admins)",
    description="The CSV export's rows as JSON objects (absent values are null).",
    responses={200: s.ExportOut},
    examples=[
        OpenApiExample(
            "json",
            value={"generated_at": "2025-06-03T00:00:00Z", "count": 1, "results": [_EXPORT_ROW]},
            response_only=True,
        )
    ],
)

problem_type = extend_schema(
    operation_id="problem_types_retrieve",
    tags=["problems"],
    summary="What a problem type means",
    description="Every error is an RFC 9457 problem document whose `type` is this URL for its `code`.",
    auth=[],
    parameters=[
        OpenApiParameter(
            name="code",
            location=OpenApiParameter.PATH,
            type=str,
            pattern=r"^[a-z_]+$",
            description="A problem code.",
        )
    ],
    responses={200: s.ProblemTypeOut},
    examples=[
        OpenApiExample(
            "files_rejected",
            value={
                "code": "files_rejected",
                "status": 422,
                "title": CATALOGUE["files_rejected"].title,
                "description": CATALOGUE["files_rejected"].description,
            },
            response_only=True,
        )
    ],
)


# --- Problem responses for every operation -----------------------------------------------------------

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details. Match on `code`; `title` and `detail` are for people.",
    "properties": {
        "type": {"type": "string", "format": "uri-reference", "description": "Names the problem type."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "format": "uri-reference"},
        "code": {"type": "string", "description": "Stable, machine-readable; see /api/problems/{code}."},
        "errors": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/ProblemError"},
            "description": "Each invalid field or refused file.",
        },
    },
    "required": ["type", "title", "status", "detail", "code"],
    "additionalProperties": True,
}
PROBLEM_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "field": {
            "type": "string",
            "description": "Dotted path of the field, e.g. manifest.studies.0.files.",
        },
        "file": {"type": "string", "description": "The uploaded file concerned."},
    },
    "required": ["code", "message"],
}

_STANDARD = {
    400: (
        "validation_error",
        "The request is not valid; see errors.",
        {
            "errors": [
                {"field": "body_region", "code": "invalid_choice", "message": '"elbw" is not a valid choice.'}
            ]
        },
    ),
    401: ("not_authenticated", "Authentication credentials were not provided.", {}),
    403: (
        "permission_denied",
        "Your account has no clinical role; ask an administrator to add you to the clinician group.",
        {},
    ),
    404: ("not_found", "No such resource.", {}),
    406: ("not_acceptable", "Could not satisfy the request Accept header.", {}),
    409: ("conflict", "The request conflicts with a concurrent change; retry.", {}),
    413: ("request_too_large", "The request body is 262144000 bytes; the limit is 209715200.", {}),
    415: ("unsupported_media_type", 'Unsupported media type "text/plain" in request.', {}),
    422: ("validation_error", "", {}),
    429: ("throttled", "Request was throttled. Expected available in 12 seconds.", {}),
    500: (
        "server_error",
        "The server failed to process the request. It has been logged; please retry later.",
        {},
    ),
    503: ("storage_unavailable", "The image store is not accepting files right now.", {}),
}


def _statuses_for(method: str, operation: dict[str, Any], declared: tuple[int, ...]) -> list[int]:
    """What an operation can answer with a problem: from its shape (authentication, path and query
    parameters, a request body) and from what its view declares (`problem_statuses`)."""
    # spectacular omits `security` for an operation without authentication (the problem-type catalogue).
    public = not operation.get("security")
    has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
    statuses = [429, 500] if public else [401, 403, 429, 500]
    has_path_parameter = any(p.get("in") == "path" for p in operation.get("parameters", []))
    if has_path_parameter or has_query:
        statuses.append(404)  # unknown id, or a page past the end
    if (
        has_query
        or "requestBody" in operation
        or any(p.get("in") == "header" for p in operation.get("parameters", []))
    ):
        statuses.append(400)
    if "requestBody" in operation:
        statuses += [413, 415]
    statuses += [status for status in declared if status not in statuses]
    return statuses


def _declared_statuses(generator: Any) -> dict[tuple[str, str], tuple[int, ...]]:
    """(path, method) -> the problem statuses the view declares, e.g. `problem_statuses = {"post": (503,)}`.
    (The generator's own (path, method, view) walk, so the paths are the schema's.)"""
    declared: dict[tuple[str, str], tuple[int, ...]] = {}
    for path, _regex, method, view in generator._get_paths_and_endpoints():
        statuses = getattr(view, "problem_statuses", {}).get(method.lower(), ())
        declared[(path, method.lower())] = tuple(statuses)
    return declared


def add_problem_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """POSTPROCESSING_HOOK: every operation documents its problem responses as application/problem+json."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["ProblemError"] = PROBLEM_ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Problem"}
    declared = _declared_statuses(generator)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            # Responses declared in extend_schema with the problem media type: point them at Problem.
            for response in responses.values():
                content = response.get("content", {})
                if PROBLEM_CONTENT_TYPE in content:
                    content[PROBLEM_CONTENT_TYPE]["schema"] = ref
            for status in _statuses_for(method, operation, declared.get((path, method), ())):
                key = str(status)
                code, detail, extra = _STANDARD[status]
                example = _problem(code, detail, **extra) if detail else None
                if key not in responses:
                    responses[key] = {
                        "description": CATALOGUE[code].title,
                        "content": {PROBLEM_CONTENT_TYPE: {"schema": copy.deepcopy(ref)}},
                    }
                    if example:
                        responses[key]["content"][PROBLEM_CONTENT_TYPE]["examples"] = {
                            code: {"value": example, "summary": CATALOGUE[code].title}
                        }
    return result


# --- Reading workflow ------------------------------------------------------------------------------------

UNAIDED_READ = {
    "id": 17,
    "radiograph": 4051,
    "label": "not_fractured",
    "reader": "dr.ada",
    "created_at": "2025-06-02T10:01:12.000Z",
}
CONFIRMED_REVIEW = {**REVIEW, "decision": "confirm", "final_label": "fractured", "reason_code": ""}
ADJUDICATION = {
    "id": 5,
    "radiograph": 4051,
    "study": 1377,
    "review": REVIEW,
    "trigger": "model_disagrees",
    "state": "open",
    "label": "",
    "adjudicator": None,
    "notes": "",
    "created_at": "2025-06-02T10:02:41.010Z",
    "decided_at": None,
}
ADJUDICATION_DECIDED = {
    **ADJUDICATION,
    "state": "decided",
    "label": "fractured",
    "adjudicator": "dr.grace",
    "notes": "Buckle fracture.",
    "decided_at": "2025-06-02T11:30:00.000Z",
}

unaided_read_create = extend_schema(
    operation_id="radiographs_unaided_read_create",
    tags=["reviews"],
    summary="Record your own call before looking at the model's (blinded reading)",
    description="A reader who reads blinded (their setting, or the site default) must record this before "
    "reviewing: a review without it is refused with `unaided_read_required`. Never changed once recorded "
    "(`already_recorded`), and refused after the caller has reviewed the radiograph (`already_seen`). The "
    "review then stores it beside the model's and the final call.",
    parameters=[PK, IDEMPOTENCY_KEY],
    request=s.UnaidedReadIn,
    examples=[
        OpenApiExample("my call", value={"label": "not_fractured"}, request_only=True),
        OpenApiExample("recorded", value=UNAIDED_READ, response_only=True, status_codes=[201]),
    ],
    responses={
        201: s.UnaidedReadOut,
        (422, PROBLEM_CONTENT_TYPE): _problem_response(
            "Too late for an unaided call, or already recorded.",
            (
                "already seen",
                _problem("already_seen", "You have already reviewed this image with the model's answer."),
            ),
        ),
    },
)

study_confirm = extend_schema(
    operation_id="studies_confirm",
    tags=["reviews"],
    summary="Confirm every radiograph of the study still awaiting review",
    description="One confirmation per radiograph not yet reviewed, keeping the model's label; radiographs "
    "already reviewed (overridden, say) keep their review. All or nothing: in blinded mode each needs the "
    "caller's unaided call first. `nothing_to_confirm` when no radiograph awaits review.",
    parameters=[PK, IDEMPOTENCY_KEY],
    request=None,
    examples=[
        OpenApiExample("confirmed", value=CONFIRMED_REVIEW, response_only=True, status_codes=[201]),
    ],
    responses={
        201: s.ReviewOut(many=True),
        (422, PROBLEM_CONTENT_TYPE): _problem_response(
            "Nothing to confirm, or an unaided call is missing.",
            ("nothing to confirm", _problem("nothing_to_confirm", "No image of this study awaits a review.")),
        ),
    },
)

adjudication_list = extend_schema(
    operation_id="adjudications_list",
    tags=["reviews"],
    summary="Cases awaiting a second reader",
    description="Opened when a final call disagrees with a confident model band (fracture vs no_fracture) "
    "or with the reader's own unaided call. Oldest first, paginated.",
    responses={200: s.AdjudicationOut(many=True)},
    examples=[OpenApiExample("open case", value=ADJUDICATION, response_only=True)],
)

adjudication_decide = extend_schema(
    operation_id="adjudications_decide",
    tags=["reviews"],
    summary="Record the second reader's label",
    description="Locked once recorded (`already_adjudicated`), audited, and the reference standard from "
    "then on; a clinician who reviewed the radiograph cannot adjudicate it (`own_case`).",
    parameters=[PK, IDEMPOTENCY_KEY],
    request=s.AdjudicationDecideIn,
    examples=[
        OpenApiExample(
            "decide", value={"label": "fractured", "notes": "Buckle fracture."}, request_only=True
        ),
        OpenApiExample("decided", value=ADJUDICATION_DECIDED, response_only=True, status_codes=[200]),
    ],
    responses={
        200: s.AdjudicationOut,
        (422, PROBLEM_CONTENT_TYPE): _problem_response(
            "Your own case, or already decided.",
            (
                "own case",
                _problem(
                    "own_case", "You reviewed this image yourself; a different clinician must adjudicate it."
                ),
            ),
        ),
    },
)
