"""RFC 9457 problem details: the one shape every API error takes.

Each problem has a stable `code` that clients match on (titles and details are for people and may be
reworded). `type` is a relative URI naming the code; GET it to read what the code means.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.http import HttpResponse
from rest_framework import status
from rest_framework.exceptions import APIException

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "/api/problems/"


@dataclass(frozen=True)
class ProblemType:
    status: int
    title: str
    description: str


# Every code the API can answer with. Service codes not listed here still work (422, generic title);
# listing them documents them at /api/problems/<code> and in the schema.
CATALOGUE: dict[str, ProblemType] = {
    # Request shape
    "validation_error": ProblemType(
        400, "Invalid request", "A field or query parameter is not valid; see `errors`."
    ),
    "parse_error": ProblemType(
        400, "Malformed request body", "The body could not be parsed as the declared media type."
    ),
    "invalid_idempotency_key": ProblemType(
        400, "Invalid Idempotency-Key", "The key must be 1-255 printable ASCII characters."
    ),
    "bad_request": ProblemType(400, "Bad request", "The request could not be understood."),
    # Who is asking
    "not_authenticated": ProblemType(
        401, "Authentication required", "Send `Authorization: Token <key>` or log in."
    ),
    "authentication_failed": ProblemType(
        401, "Authentication failed", "The token or credentials were not accepted."
    ),
    "permission_denied": ProblemType(
        403, "Permission denied", "Your account's role does not allow this request."
    ),
    # What is asked for
    "not_found": ProblemType(404, "Not found", "No such resource, or it is not visible to you."),
    "prediction_not_available": ProblemType(
        404, "No prediction yet", "The radiograph has not been classified (yet)."
    ),
    "method_not_allowed": ProblemType(
        405, "Method not allowed", "This path does not support the HTTP method."
    ),
    "not_acceptable": ProblemType(
        406, "Not acceptable", "The Accept header asks for a media type this path cannot produce."
    ),
    # State
    "duplicate_accession": ProblemType(
        409, "Duplicate accession number", "A study with this accession number exists."
    ),
    "patient_mismatch": ProblemType(
        409, "Patient mismatch", "The MRN belongs to a patient with other details."
    ),
    "not_ready": ProblemType(409, "Not ready for review", "The radiograph has no prediction to review yet."),
    "not_failed": ProblemType(409, "Not failed", "Only a failed radiograph can be sent again."),
    "conflict": ProblemType(409, "Conflict", "The request conflicts with a concurrent change; retry."),
    "idempotency_in_progress": ProblemType(
        409,
        "Request in progress",
        "A request with this Idempotency-Key is still being processed; retry shortly.",
    ),
    # Size
    "request_too_large": ProblemType(
        413, "Request too large", "The request body exceeds the configured limit."
    ),
    "unsupported_media_type": ProblemType(
        415, "Unsupported media type", "Send the body in a media type this path accepts."
    ),
    # Meaning
    "idempotency_key_reused": ProblemType(
        422, "Idempotency-Key reused", "The key was already used for a different request."
    ),
    "files_rejected": ProblemType(
        422, "No file accepted", "Every file was refused at ingest; `errors` names each file and why."
    ),
    "batch_rejected": ProblemType(
        422, "No study created", "Every study of the batch failed; `errors` says why for each."
    ),
    "no_files": ProblemType(422, "No files", "At least one radiograph is required."),
    "too_many_files": ProblemType(422, "Too many files", "More files than the configured limit."),
    "missing_field": ProblemType(
        422, "Missing field", "A required field was empty and no DICOM file supplied it."
    ),
    "invalid_body_region": ProblemType(
        422, "Invalid body region", "The body region is not one of the listed values."
    ),
    "invalid_decision": ProblemType(422, "Invalid decision", "The decision must be confirm or override."),
    "invalid_label": ProblemType(422, "Invalid label", "The label must be fractured or not_fractured."),
    "confirm_label_mismatch": ProblemType(
        422, "Confirm keeps the label", "A confirmation cannot change the model's label."
    ),
    "override_same_label": ProblemType(
        422, "Override must change the label", "An override must record the other label."
    ),
    "reason_required": ProblemType(
        422, "Reason required", "An override needs a reason code (and text for 'other')."
    ),
    "reason_contradicts_label": ProblemType(
        422,
        "Reason does not fit the override",
        "The reason cannot explain the final label (e.g. 'missed_fracture' with not_fractured).",
    ),
    "patient_details_differ": ProblemType(
        422,
        "Patient details differ from DICOM",
        "The MRN or name given differs from a DICOM file's PatientID / PatientName; send "
        "confirm_patient_mismatch=true to file it under the given details (audited).",
    ),
    "unaided_read_required": ProblemType(
        422, "Unaided read required", "You read blinded: record your own call before reviewing."
    ),
    "already_seen": ProblemType(
        422, "Model already seen", "You reviewed this radiograph already: too late for an unaided call."
    ),
    "already_recorded": ProblemType(
        422, "Already recorded", "Your unaided call is recorded and never changed."
    ),
    "nothing_to_confirm": ProblemType(422, "Nothing to confirm", "No radiograph of the study awaits review."),
    "not_declined": ProblemType(
        422,
        "Not declined by the model",
        "Only a study the model did not analyse (state not_analysed) can be marked as read without it.",
    ),
    "no_radiographs": ProblemType(422, "No radiographs", "Name at least one radiograph."),
    "adjudicated": ProblemType(
        409, "Adjudicated", "A second reader has adjudicated this radiograph; its label is locked."
    ),
    "already_adjudicated": ProblemType(409, "Already adjudicated", "The adjudication is decided and locked."),
    "own_case": ProblemType(
        422, "Your own case", "A clinician who reviewed the radiograph cannot adjudicate it."
    ),
    # Why a file was refused at ingest: the `code` of an entry in `errors` (files_rejected, batch results).
    "empty_file": ProblemType(422, "Empty file", "The file has no content."),
    "file_too_large": ProblemType(422, "File too large", "The file is larger than UPLOAD_MAX_FILE_BYTES."),
    "unsupported_format": ProblemType(
        422, "Unsupported format", "Not a PNG, JPEG or DICOM image (judged by content, not name), or a GIF."
    ),
    "unreadable_image": ProblemType(
        422, "Unreadable image", "The image data is truncated, corrupt, or compressed in a way not decodable."
    ),
    "too_many_pixels": ProblemType(
        422, "Too many pixels", "The header declares more pixels than UPLOAD_MAX_PIXELS (checked first)."
    ),
    "image_too_small": ProblemType(
        422, "Image too small", "A side is shorter than UPLOAD_MIN_SIDE pixels: not a radiograph."
    ),
    "animated_image": ProblemType(422, "Animated image", "An animated PNG holds more than one picture."),
    "no_pixel_data": ProblemType(422, "No pixel data", "The DICOM file holds no image."),
    "multiframe_dicom": ProblemType(
        422, "Several frames", "A multi-frame DICOM object: one radiograph per file."
    ),
    "not_a_radiograph": ProblemType(
        422, "Not a radiograph", "The DICOM modality is not a plain radiograph (CT or MR, for example)."
    ),
    "duplicate_file": ProblemType(422, "Duplicate file", "The same image was already in this upload."),
    "already_received": ProblemType(
        409, "Already received", "The DICOM SOPInstanceUID arrived before (upload, C-STORE or STOW-RS)."
    ),
    # Load and faults
    "throttled": ProblemType(
        429, "Too many requests", "The per-user rate limit was reached; see Retry-After."
    ),
    "server_error": ProblemType(500, "Internal error", "Something failed on the server; it has been logged."),
    "storage_unavailable": ProblemType(
        503, "Storage unavailable", "The image store refused the write; nothing was saved."
    ),
    "database_unavailable": ProblemType(
        503,
        "Database unavailable",
        "The database could not be reached (a restart, a failover); nothing was changed. Retry after "
        "Retry-After seconds (a creating request with the same Idempotency-Key).",
    ),
}

_GENERIC_BY_STATUS = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "throttled",
    500: "server_error",
}


def code_for_status(http_status: int) -> str:
    return _GENERIC_BY_STATUS.get(http_status, "bad_request" if http_status < 500 else "server_error")


def status_for_code(code: str) -> int:
    """Service codes map to their catalogue status; an uncatalogued refusal is 422 (valid but refused)."""
    entry = CATALOGUE.get(code)
    return entry.status if entry else status.HTTP_422_UNPROCESSABLE_ENTITY


def problem_body(
    *,
    code: str,
    status_code: int,
    detail: str,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    entry = CATALOGUE.get(code)
    body: dict[str, Any] = {
        "type": f"{PROBLEM_TYPE_PREFIX}{code}",
        "title": entry.title if entry else "Request refused",
        "status": status_code,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def problem_response(body: dict[str, Any], *, headers: dict[str, str] | None = None) -> HttpResponse:
    """Always JSON, whatever renderer the view negotiated: an HTML or CSV error would hide the code."""
    response = HttpResponse(
        json.dumps(body, ensure_ascii=False),
        status=body["status"],
        content_type=PROBLEM_CONTENT_TYPE,
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


class Problem(APIException):
    """Raised by API views for a refusal that is not a plain DRF exception (a service code, ingest errors)."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status_code: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail=detail, code=code)
        self.status_code = status_code or status_for_code(code)
        self.problem_code = code
        self.problem_detail = detail
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra
