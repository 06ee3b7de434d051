"""Generic OpenAPI plumbing. Each operation's schema, example and problem codes live on its view, declared
with `operation(...)`; this module only turns those declarations into the document:

- `operation`: drf-spectacular's `extend_schema` for one view method, with ONE request example (if the
  operation takes a body) and ONE response example, both kept on the method for
  `tests/api/test_schema_examples.py`, which parses them with the operation's serializers;
- the problem codes an operation can answer with: the view class's `problems` (what every operation of the
  class can meet: authentication, role, throttle, an unexpected error) plus the method's own `problems`
  (what its body, its path id, its Idempotency-Key and its service refuse). `add_problem_responses`
  documents exactly those, grouped by HTTP status, one example each, from `api/problems.CATALOGUE`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiRequest, extend_schema
from rest_framework import serializers

from radiology.api.problems import CATALOGUE, PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_PREFIX

F = TypeVar("F", bound=Callable[..., Any])

# --- Problem codes by what raises them (views name these in their `problems`) ----------------------------

# Every authenticated operation: DRF's authentication and permission checks, the throttles, the handler's
# answer to an unexpected exception.
AUTHENTICATED = (
    "not_authenticated",
    "authentication_failed",
    "permission_denied",
    "throttled",
    "server_error",
    "database_unavailable",
)
PUBLIC = ("throttled", "server_error", "database_unavailable")
# An operation whose path names a record: it may not exist or not be visible to the caller.
FOUND = ("not_found",)
# A paginated, filtered list: an invalid filter value; a page past the end.
LISTED = ("validation_error", "not_found")
# A POST: ApiView.initial bounds the body before reading it (bad_request: Content-Length not a number).
POSTED = ("bad_request", "request_too_large")
# A POST with a body: its parser and its input serializer.
BODY = (*POSTED, "parse_error", "unsupported_media_type", "validation_error")
# A POST run through api/idempotency.run_idempotently.
IDEMPOTENT = ("invalid_idempotency_key", "idempotency_in_progress", "idempotency_key_reused")

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
EXAMPLE_HOST = "https://fracture-review.example.org"


def operation(
    *,
    operation_id: str,
    tag: str,
    summary: str,
    problems: Sequence[str],
    description: str = "",
    parameters: Sequence[OpenApiParameter] = (),
    request: type[serializers.Serializer] | None = None,
    request_media_type: str = "application/json",
    request_encoding: Mapping[str, Any] | None = None,
    request_example: Mapping[str, Any] | None = None,
    status: int = 200,
    response: serializers.BaseSerializer | type[serializers.BaseSerializer] | None = None,
    response_example: Any = None,
    responses: Mapping[Any, Any] | None = None,
    **extra: Any,
) -> Callable[[F], F]:
    """The schema of one operation (a view method). `response` with `response_example` documents a JSON
    answer; `responses` replaces them for other media types (images, CSV, FHIR). `problems` are the codes
    this method can answer with beyond its class's; each must be in the problem catalogue."""
    unknown = [code for code in problems if code not in CATALOGUE]
    if unknown:
        raise ImproperlyConfigured(f"{operation_id}: problem codes not in the catalogue: {unknown}")
    examples = []
    body: Any = None
    if request is not None:
        body = (
            OpenApiRequest(request, encoding=dict(request_encoding))
            if request_encoding
            else {request_media_type: request}
        )
        if request_example is not None:
            examples.append(
                OpenApiExample(
                    "request", value=request_example, request_only=True, media_type=request_media_type
                )
            )
    if response_example is not None:
        examples.append(
            OpenApiExample("response", value=response_example, response_only=True, status_codes=[status])
        )

    def decorate(method: F) -> F:
        method.operation_id = operation_id  # type: ignore[attr-defined]
        method.problems = tuple(dict.fromkeys(problems))  # type: ignore[attr-defined]
        method.schema_examples = {  # type: ignore[attr-defined]
            "request": (request, request_example),
            "response": (response, response_example),
        }
        return extend_schema(
            operation_id=operation_id,
            tags=[tag],
            summary=summary,
            description=description,
            parameters=list(parameters),
            request=body,
            responses=dict(responses) if responses is not None else {status: response},
            examples=examples,
            **extra,
        )(method)

    return decorate


def declared_problems(view: Any, method: str) -> tuple[str, ...]:
    """The problem codes an operation declares: its view class's, then its method's."""
    handler = getattr(view, method.lower(), None)
    codes = (*getattr(view, "problems", ()), *getattr(handler, "problems", ()))
    return tuple(dict.fromkeys(codes))


class FilteredExportSchema(AutoSchema):
    """Exports are not paginated lists but take the same query filters as the radiograph list."""

    def get_filter_backends(self) -> list[Any]:
        return list(getattr(self.view, "filter_backends", []))


# --- The problem responses -------------------------------------------------------------------------------

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


def problem_example(code: str) -> dict[str, Any]:
    entry = CATALOGUE[code]
    return {
        "type": f"{PROBLEM_TYPE_PREFIX}{code}",
        "title": entry.title,
        "status": entry.status,
        "detail": entry.description,
        "code": code,
        "instance": "/api/v1/…",
    }


def problem_responses(codes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{status: response} for the codes: one response per status, one example per code."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(CATALOGUE[code].status, []).append(code)
    return {
        str(status): {
            "description": "; ".join(f"`{code}`: {CATALOGUE[code].title}" for code in grouped),
            "content": {
                PROBLEM_CONTENT_TYPE: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "examples": {
                        code: {"value": problem_example(code), "summary": CATALOGUE[code].title}
                        for code in grouped
                    },
                }
            },
        }
        for status, grouped in sorted(by_status.items())
    }


def add_problem_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """POSTPROCESSING_HOOK: each operation documents the problems its view declares, as
    application/problem+json."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["ProblemError"] = PROBLEM_ERROR_SCHEMA
    # The generator's own (path, method, view) walk, so the paths are the schema's.
    for path, _regex, method, view in generator._get_paths_and_endpoints():
        operation_schema = result.get("paths", {}).get(path, {}).get(method.lower())
        if operation_schema is None:
            continue  # excluded from the document
        responses = operation_schema.setdefault("responses", {})
        for status, response in problem_responses(declared_problems(view, method)).items():
            responses.setdefault(status, copy.deepcopy(response))
    return result
