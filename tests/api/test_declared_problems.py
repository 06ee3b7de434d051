"""What each API operation declares it can answer with (its `problems`, which the OpenAPI document lists)
is what it really answers: for every operation, the refusals every view meets (no credentials, no role,
an unknown id, a body in the wrong media type, a bad Idempotency-Key), and for the operations with their
own refusals, one request that provokes each code worth provoking here. Each answer's code must be one the
operation declares."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from rest_framework.test import APIClient

from radiology.api.schema import declared_problems
from radiology.models import Adjudication
from tests.api.conftest import (
    assert_problem,
    png_bytes,
    predicted_radiograph,
    queued_radiograph,
    study_form,
    upload,
)
from tests.api.test_schema_examples import OPERATIONS, _ids
from tests.factories import ReviewFactory

pytestmark = pytest.mark.django_db

BODY_PARSED = {"radiographs_reviews_create", "radiographs_unaided_read_create", "adjudications_decide"}


def _url(route: str, pk: Any = 999_999) -> str:
    path = re.sub(r"<uuid:pk>", "6f1c2b7e-3a4d-4e5f-9a8b-7c6d5e4f3a2b", route)
    path = re.sub(r"<int:pk>", str(pk), path)
    path = re.sub(r"<str:code>", "no_such_code", path)
    return f"/api/{path}"


def _call(client: APIClient, method: str, url: str, **kwargs: Any) -> Any:
    return getattr(client, method)(url, **kwargs)


def _declares(view: Any, method: str, response: Any) -> str:
    code = json.loads(response.content)["code"]
    assert code in declared_problems(view, method), f"{view.__name__}.{method} answered {code} undeclared"
    return code


@pytest.mark.parametrize("operation", OPERATIONS, ids=_ids)
def test_the_refusals_every_operation_meets_are_declared(
    operation: tuple[str, str, Any], api_for: Any, settings: Any
) -> None:
    route, method, view = operation
    url = _url(route)
    public = route.startswith("problems/")
    if not public:
        assert _declares(view, method, _call(api_for("anonymous"), method, url)) == "not_authenticated"
        assert _declares(view, method, _call(api_for("outsider"), method, url)) == "permission_denied"
    caller = api_for("admin")
    if "<" in route:
        assert _declares(view, method, _call(caller, method, url)) == "not_found"
    if method == "post":
        bad_key = caller.post(url, HTTP_IDEMPOTENCY_KEY="x" * 300)
        assert _declares(view, method, bad_key) == "invalid_idempotency_key"
        settings.API_MAX_REQUEST_BYTES = 4
        too_large = caller.post(url, data="0123456789", content_type="application/json")
        assert _declares(view, method, too_large) == "request_too_large"
        settings.API_MAX_REQUEST_BYTES = 10**6
    if getattr(view, method).operation_id in BODY_PARSED:
        review = ReviewFactory.create()
        case = Adjudication.objects.create(
            radiograph=review.radiograph, review=review, trigger="model_disagrees"
        )
        pk = case.pk if "adjudications" in route else review.radiograph_id
        wrong = caller.post(_url(route, pk), data="label", content_type="text/plain")
        assert _declares(view, method, wrong) == "unsupported_media_type"
        broken = caller.post(_url(route, pk), data="{", content_type="application/json")
        assert _declares(view, method, broken) == "parse_error"


def _view(operation_id: str) -> tuple[str, str, Any]:
    (found,) = [op for op in OPERATIONS if getattr(op[2], op[1]).operation_id == operation_id]
    return found


def test_the_lists_declare_a_bad_filter_and_a_page_past_the_end(admin_api: APIClient) -> None:
    for operation_id in ("studies_list", "radiographs_list"):
        route, method, view = _view(operation_id)
        assert _declares(view, method, admin_api.get(_url(route), {"body_region": "elbw"})) == (
            "validation_error"
        )
        assert _declares(view, method, admin_api.get(_url(route), {"page": 99})) == "not_found"
    route, method, view = _view("exports_results_json")
    assert _declares(view, method, admin_api.get(_url(route), {"verdict": "perhaps"})) == "validation_error"


def test_the_operations_own_refusals_are_declared(clinician_api: APIClient, clinician: Any) -> None:
    queued = queued_radiograph()
    route, method, view = _view("radiographs_prediction_retrieve")
    response = clinician_api.get(_url(route, queued.pk))
    assert _declares(view, method, response) == "prediction_not_available"

    route, method, view = _view("radiographs_reviews_create")
    response = clinician_api.post(_url(route, queued.pk), {"decision": "confirm"}, format="json")
    assert _declares(view, method, response) == "not_ready"
    predicted = predicted_radiograph(probability=0.9, label="fractured")
    response = clinician_api.post(_url(route, predicted.pk), {"decision": "override"}, format="json")
    assert _declares(view, method, response) == "reason_required"

    route, method, view = _view("studies_confirm")
    response = clinician_api.post(_url(route, queued.study_id))
    assert _declares(view, method, response) == "nothing_to_confirm"

    route, method, view = _view("studies_read_without_model")
    response = clinician_api.post(_url(route, queued.study_id))
    assert _declares(view, method, response) == "not_declined"

    route, method, view = _view("radiographs_unaided_read_create")
    ReviewFactory.create(prediction=predicted.current_prediction, reviewer=clinician)
    response = clinician_api.post(_url(route, predicted.pk), {"label": "fractured"}, format="json")
    assert _declares(view, method, response) == "already_seen"

    route, method, view = _view("studies_create")
    refused = clinician_api.post(
        _url(route), {**study_form(), "files": [upload("notes.txt", b"not an image")]}, format="multipart"
    )
    assert _declares(view, method, refused) == "files_rejected"
    duplicate = study_form(accession_number=queued.study.accession_number)
    response = clinician_api.post(
        _url(route), {**duplicate, "files": [upload("a.png", png_bytes())]}, format="multipart"
    )
    assert _declares(view, method, response) == "duplicate_accession"

    route, method, view = _view("batches_create")
    manifest = {"studies": [{**duplicate, "files": ["a.png"]}]}
    response = clinician_api.post(
        _url(route),
        {"manifest": json.dumps(manifest), "files": [upload("a.png", png_bytes())]},
        format="multipart",
    )
    assert_problem(response, 422, "batch_rejected")
    assert _declares(view, method, response) == "batch_rejected"
