"""Every error is an RFC 9457 problem document with a stable code, whatever went wrong and wherever."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory

from radiology.api import errors
from radiology.models import Study
from tests.api.conftest import assert_problem, png_bytes, study_form, upload
from tests.factories import PredictionFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/api/v1/nothing", "/api/v1/studies/", "/api/v2/studies", "/api/"])
def test_an_unknown_api_path_is_a_404_problem(
    clinician_api: Any, settings: Any, path: str, debug: bool
) -> None:
    settings.DEBUG = debug
    assert_problem(clinician_api.get(path), 404, "not_found")
    assert_problem(clinician_api.post(path, {}), 404, "not_found")


@pytest.mark.parametrize("method", ["put", "patch", "delete", "options"])
def test_an_unsupported_method_is_a_405_problem(clinician_api: Any, method: str) -> None:
    response = getattr(clinician_api, method)("/api/v1/studies")
    assert_problem(response, 405, "method_not_allowed")
    assert "OPTIONS" not in response["Allow"]


def test_an_unsatisfiable_accept_header_is_a_406_problem(clinician_api: Any) -> None:
    assert_problem(clinician_api.get("/api/v1/studies", HTTP_ACCEPT="application/xml"), 406, "not_acceptable")


def test_a_json_body_where_multipart_is_expected_is_a_415_problem(clinician_api: Any) -> None:
    response = clinician_api.post("/api/v1/studies", {"mrn": "x"}, format="json")
    assert_problem(response, 415, "unsupported_media_type")


def test_a_broken_multipart_body_is_a_400_problem(clinician_api: Any) -> None:
    response = clinician_api.post(
        "/api/v1/studies", b"--x\r\nnonsense", content_type="multipart/form-data; boundary=x"
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_too_many_file_parts_is_a_422_too_many_files(clinician_api: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    files = [upload(f"{i}.png", png_bytes(i)) for i in range(3)]
    assert_problem(
        clinician_api.post("/api/v1/studies", study_form(files=files), format="multipart"),
        422,
        "too_many_files",
    )
    assert Study.objects.count() == 0


def test_a_declared_oversized_body_is_a_413_problem(clinician_api: Any, settings: Any) -> None:
    settings.API_MAX_REQUEST_BYTES = 100
    response = clinician_api.post(
        "/api/v1/studies", study_form(files=[upload("kaggle_fractured_1.jpg")]), format="multipart"
    )
    body = assert_problem(response, 413, "request_too_large")
    assert "limit is 100" in body["detail"]


def test_unexpected_errors_are_a_generic_500_that_leaks_nothing(
    clinician_api: Any, monkeypatch: Any, settings: Any, caplog: Any
) -> None:
    settings.DEBUG = True  # not even the debug page may show it

    def explode(**kwargs: Any) -> Any:
        raise RuntimeError("secret: /var/lib/db password=hunter2 patient Jane Doe")

    monkeypatch.setattr("radiology.selectors.study_queue", explode)
    response = clinician_api.get("/api/v1/studies")
    body = assert_problem(response, 500, "server_error")
    assert "secret" not in response.content.decode() and "RuntimeError" not in response.content.decode()
    assert body["instance"] == "/api/v1/studies"
    assert "unhandled error in API view" in caplog.text  # ... but the server log has it


def test_throttling_is_a_429_problem_with_retry_after(clinician_api: Any, settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "3/minute", "submit": "1/minute"},
    }
    for _ in range(3):
        assert clinician_api.get("/api/v1/studies").status_code == 200
    response = clinician_api.get("/api/v1/studies")
    assert_problem(response, 429, "throttled")
    assert 0 < int(response["Retry-After"]) <= 60


def test_submissions_have_their_own_tighter_throttle(clinician_api: Any, settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "100/minute", "submit": "1/minute"},
    }
    radiograph = PredictionFactory.create().radiograph
    url = f"/api/v1/radiographs/{radiograph.pk}/reviews"
    assert clinician_api.post(url, {"decision": "confirm"}, format="json").status_code == 201
    assert_problem(clinician_api.post(url, {"decision": "confirm"}, format="json"), 429, "throttled")
    assert clinician_api.get(url).status_code == 200, "reading is not a submission"


def test_throttles_count_per_user(api_for: Any, settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "1/minute", "submit": "1/minute"},
    }
    assert api_for("clinician").get("/api/v1/studies").status_code == 200
    assert api_for("admin").get("/api/v1/studies").status_code == 200


def test_problem_types_are_documented_at_their_type_uri(client: Any) -> None:
    body = client.get("/api/problems/files_rejected").json()
    assert body["code"] == "files_rejected" and body["status"] == 422 and body["description"]
    assert_problem(client.get("/api/problems/no_such_code"), 404, "not_found")


@pytest.mark.parametrize(
    ("handler", "status", "code"),
    [
        (errors.handler400, 400, "bad_request"),
        (errors.handler403, 403, "permission_denied"),
        (errors.handler404, 404, "not_found"),
    ],
)
def test_django_error_handlers_answer_problems_under_api_only(handler: Any, status: int, code: str) -> None:
    api = handler(RequestFactory().get("/api/v1/studies"), Exception("internal detail"))
    assert_problem(api, status, code)
    assert b"internal detail" not in api.content
    site = handler(RequestFactory().get("/queue/"), Exception("x"))
    assert site.status_code == status and site["Content-Type"].startswith("text/html")


def test_django_500_handler_answers_a_problem_under_api() -> None:
    assert_problem(errors.handler500(RequestFactory().get("/api/v1/studies")), 500, "server_error")
    assert errors.handler500(RequestFactory().get("/queue/"))["Content-Type"].startswith("text/html")


def test_nested_validation_errors_are_flattened_with_dotted_fields() -> None:
    from rest_framework.exceptions import ErrorDetail

    detail = {
        "manifest": {"studies": {"2": {"files": {"0": [ErrorDetail("No such file.", code="missing")]}}}},
        "non_field_errors": [ErrorDetail("Bad.", code="invalid")],
    }
    assert errors.flatten_errors(detail) == [
        {"code": "missing", "message": "No such file.", "field": "manifest.studies.2.files.0"},
        {"code": "invalid", "message": "Bad."},
    ]
