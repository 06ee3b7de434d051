"""Turns every exception an API request can meet into a problem-details response, and records denials.

Denied access (401 and 403) is audited here, in the one place every API denial passes through.
Unexpected exceptions are logged with their traceback and answered with a generic 500: the client never
sees str(exception), which may carry file paths, SQL or patient data.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFilesSent
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.template import loader
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.views import set_rollback

from radiology.access import client_ip
from radiology.api.problems import (
    Problem,
    code_for_status,
    problem_body,
    problem_response,
)
from radiology.models import AuditEvent
from radiology.services import audit_record

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"

# DRF's own codes, renamed where ours are more telling; others pass through when catalogued.
_DRF_CODES = {
    "invalid": "validation_error",
    "not_authenticated": "not_authenticated",
    "authentication_failed": "authentication_failed",
    "permission_denied": "permission_denied",
    "not_found": "not_found",
    "method_not_allowed": "method_not_allowed",
    "not_acceptable": "not_acceptable",
    "unsupported_media_type": "unsupported_media_type",
    "throttled": "throttled",
    "parse_error": "parse_error",
}


def flatten_errors(detail: Any, path: str = "") -> list[dict[str, Any]]:
    """DRF's nested {"studies": [{"files": ["..."]}]} as a flat list with a dotted field path each."""
    if isinstance(detail, dict):
        out: list[dict[str, Any]] = []
        for key, value in detail.items():
            # non_field_errors concern the whole object: the path stops at its parent.
            child = path if key in ("non_field_errors", "detail") else f"{path}.{key}" if path else str(key)
            out.extend(flatten_errors(value, child))
        return out
    if isinstance(detail, list):
        out = []
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                out.extend(flatten_errors(value, f"{path}.{index}" if path else str(index)))
            else:
                out.extend(flatten_errors(value, path))
        return out
    entry: dict[str, Any] = {"code": str(getattr(detail, "code", None) or "invalid"), "message": str(detail)}
    if path:
        entry["field"] = path
    return [entry]


def _audit_denial(request: Any, code: str) -> None:
    user = getattr(request, "user", None)
    audit_record(
        action=AuditEvent.Action.ACCESS_DENIED,
        actor=user,
        details={"path": request.path[:300], "method": request.method, "reason": code, "via": "api"},
        client_ip=client_ip(request),
    )


def _problem_for(exc: exceptions.APIException, instance: str) -> tuple[dict[str, Any], dict[str, str]]:
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = str(exc.auth_header)  # type: ignore[attr-defined]
    if isinstance(exc, Problem):
        headers.update(exc.headers)
        body = problem_body(
            code=exc.problem_code,
            status_code=exc.status_code,
            detail=exc.problem_detail,
            instance=instance,
            errors=exc.errors,
            **exc.extra,
        )
        return body, headers
    if getattr(exc, "wait", None):
        headers["Retry-After"] = f"{int(exc.wait)}"  # type: ignore[attr-defined]
    if isinstance(exc, exceptions.ValidationError):
        return (
            problem_body(
                code="validation_error",
                status_code=exc.status_code,
                detail="The request is not valid; see errors.",
                instance=instance,
                errors=flatten_errors(exc.detail),
            ),
            headers,
        )
    raw_code = exc.get_codes() if not isinstance(exc.detail, dict | list) else None
    code = _DRF_CODES.get(str(raw_code), code_for_status(exc.status_code))
    detail = exc.detail if isinstance(exc.detail, str) else "The request was refused."
    if isinstance(exc, exceptions.ParseError):
        # DRF appends the parser's own exception text (positions, internals): say only what failed.
        detail = "The request body could not be parsed; check it matches its Content-Type."
    return problem_body(
        code=code, status_code=exc.status_code, detail=str(detail), instance=instance
    ), headers


# The database out of reach (a restart, a failover, a dropped connection, SQLite locked for longer than the
# wait): not the request's fault and over in a moment, so 503 with Retry-After, which clients retry, never a
# 500. A constraint or a bad query (IntegrityError, ProgrammingError) stays a 500: retrying will not help.
DATABASE_OUTAGE = (OperationalError, InterfaceError)
DATABASE_RETRY_AFTER = "5"


def _database_unavailable() -> Problem:
    logger.warning("database unavailable: answered 503", exc_info=True)
    return Problem(
        "database_unavailable",
        "The database is unavailable for a moment; nothing was changed. Please retry.",
        headers={"Retry-After": DATABASE_RETRY_AFTER},
    )


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: never returns None, so nothing reaches Django's debug page."""
    request = context.get("request")
    instance = request.path if request is not None else None
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()  # Http404's message is for developers (it may name the model)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = Problem("request_too_large", "The request body exceeds the configured limit.")
    elif isinstance(exc, TooManyFilesSent):
        # More file parts than DATA_UPLOAD_MAX_NUMBER_FILES: Django stops reading the body.
        exc = Problem("too_many_files", "The request holds more files than the configured limit.")
    elif isinstance(exc, RecursionError):
        # A JSON body or manifest nested thousands deep exhausts the parser's recursion: the client's fault.
        exc = Problem("bad_request", "The request body is nested too deeply.", status_code=400)
    elif isinstance(exc, DATABASE_OUTAGE):
        exc = _database_unavailable()
    elif isinstance(exc, SuspiciousOperation):
        # Too many fields or files, a malformed multipart body: the client's fault, said without detail.
        exc = Problem("bad_request", "The request could not be processed as sent.", status_code=400)

    if not isinstance(exc, exceptions.APIException):
        logger.exception("unhandled error in API view %s", instance)
        set_rollback()
        return problem_response(
            problem_body(
                code="server_error",
                status_code=500,
                detail="The server failed to process the request. It has been logged; please retry later.",
                instance=instance,
            )
        )

    body, headers = _problem_for(exc, instance or "")
    if request is not None and body["status"] in (401, 403):
        _audit_denial(request, body["code"])
    set_rollback()
    return problem_response(body, headers=headers)


# --- Outside DRF: Django's own error handlers, answered as problems under /api/ ---------------------------


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


@csrf_exempt  # it changes nothing; a CSRF failure page would hide the 404 problem for POSTs
def not_found_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The catch-all under /api/: an unknown API path is a 404 problem, not the web UI's HTML page."""
    return problem_response(
        problem_body(code="not_found", status_code=404, detail="No such API path.", instance=request.path)
    )


def handler400(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return problem_response(
            problem_body(
                code="bad_request",
                status_code=400,
                detail="The request could not be understood.",
                instance=request.path,
            )
        )
    return defaults.bad_request(request, exception)


def handler403(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return problem_response(
            problem_body(
                code="permission_denied", status_code=403, detail="Permission denied.", instance=request.path
            )
        )
    return defaults.permission_denied(request, exception)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return not_found_view(request)
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    # Called while the exception is being handled: one raised outside an API view (a session or sign-in
    # lookup in middleware, any page) may be the database being away.
    if isinstance(sys.exc_info()[1], DATABASE_OUTAGE):
        logger.warning("database unavailable: answered 503")
        if _is_api(request):
            response = problem_response(
                problem_body(
                    code="database_unavailable",
                    status_code=503,
                    detail="The database is unavailable for a moment; nothing was changed. Please retry.",
                    instance=request.path,
                )
            )
        else:
            # Like Django's own 500 page: a template with no context, which needs no database.
            response = HttpResponse(loader.get_template("503.html").render(), status=503)
        response["Retry-After"] = DATABASE_RETRY_AFTER
        return response
    if _is_api(request):
        return problem_response(
            problem_body(
                code="server_error",
                status_code=500,
                detail="The server failed to process the request. It has been logged; please retry later.",
                instance=request.path,
            )
        )
    return defaults.server_error(request)
