"""The base of every API view, and what the operations share; the operations live by topic beside their
schema: `studies.py`, `radiographs.py`, `reading.py`, `batches.py`, `exports.py`, `integration.py`.

One class per operation, each with explicit input and output serializers. A path that carries two
operations (GET lists, POST creates) is a class composed of the two operation classes. Views parse, call a
selector or service, and serialize; they hold no clinical logic. Each operation declares the problem codes
it can answer with (`problems`, see api/schema.py), which the OpenAPI document lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from radiology import selectors
from radiology.api import schema
from radiology.api import serializers as s
from radiology.api.pagination import ApiPagination
from radiology.api.permissions import IsClinician
from radiology.api.problems import CATALOGUE, Problem
from radiology.api.throttles import SubmitThrottle, UserThrottle
from radiology.models import Radiograph, Study
from radiology.services import ServiceError


class ApiView(APIView):
    """Defaults for every operation: clinical role, per-user throttle, bounded request size."""

    permission_classes = [IsClinician]
    throttle_classes = [UserThrottle, SubmitThrottle]
    # No OPTIONS introspection: the OpenAPI schema documents the API; OPTIONS (and PUT, ...) answer 405.
    metadata_class = None
    http_method_names = ["get", "post", "head"]
    # What every operation of the class can answer with; each method adds its own (schema.operation).
    problems: ClassVar[tuple[str, ...]] = schema.AUTHENTICATED

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


def problem_from_service(error: ServiceError) -> Problem:
    errors = [{"field": error.field, "code": error.code, "message": error.message}] if error.field else None
    return Problem(error.code, error.message, errors=errors)


def paginated(
    view: APIView, request: Request, queryset: QuerySet[Any], out: type[Any], count: int | None = None
) -> Response:
    """One page of the queryset, filtered first by the view's filter backends (its `filterset_class`).
    `count`: how many rows the filtered queryset holds, when the view knows without counting them."""
    for backend in getattr(view, "filter_backends", ()):
        queryset = backend().filter_queryset(request, queryset, view)
    paginator = ApiPagination()
    paginator.known_count = count
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(out(page, many=True, context={"request": request}).data)


def study_for(request: Request, pk: int) -> Study:
    try:
        return selectors.study_get(user=request.user, pk=pk)
    except Study.DoesNotExist:
        raise Problem("not_found", "No such study.", status_code=404) from None


def radiograph_for(request: Request, pk: int) -> Radiograph:
    try:
        return selectors.radiograph_get_with_results(user=request.user, pk=pk)
    except Radiograph.DoesNotExist:
        raise Problem("not_found", "No such radiograph.", status_code=404) from None


def stamp() -> str:
    """The time in a download's file name."""
    return timezone.now().strftime("%Y%m%dT%H%M%SZ")


class AnyContent(BaseContentNegotiation):
    """The path decides what comes back (an image, a CSV file): the Accept header cannot make it a 406."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class PassthroughRenderer(BaseRenderer):
    media_type = "application/octet-stream"
    format = "bin"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> Any:
        return data


# --- Problem types (public) ----------------------------------------------------------------------------


class ProblemTypeApi(APIView):
    """What a problem `type` means: the URI every problem document names resolves here."""

    permission_classes: list[Any] = []
    authentication_classes: list[Any] = []
    throttle_classes = [UserThrottle]
    metadata_class = None
    problems: ClassVar[tuple[str, ...]] = schema.PUBLIC

    @schema.operation(
        operation_id="problem_types_retrieve",
        tag="problems",
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
        response=s.ProblemTypeOut,
        response_example={
            "code": "not_ready",
            "status": 409,
            "title": "Not ready for review",
            "description": "The radiograph has no prediction to review yet.",
        },
        problems=schema.FOUND,
    )
    def get(self, request: Request, code: str) -> Response:
        entry = CATALOGUE.get(code)
        if entry is None:
            raise Problem("not_found", "No such problem type.", status_code=404)
        return Response(
            {"code": code, "status": entry.status, "title": entry.title, "description": entry.description}
        )
