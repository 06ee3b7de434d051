"""Every API endpoint against the fixed cast: anonymous 401, no role 403, clinician and admin allowed
(exports: admin only). Denials are problem documents and audit events; refused writes store nothing.

The endpoint list is checked against the URL conf, so a new API URL cannot escape the matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.urls import URLPattern

from radiology.api import urls as api_urls
from radiology.models import Adjudication, AuditEvent, Batch, BatchItem, Review, Study
from tests.api.conftest import (
    assert_problem,
    denials,
    manifest_part,
    png_bytes,
    study_form,
    upload,
)
from tests.factories import PredictionFactory, ReviewFactory

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Endpoint:
    name: str  # the URL name in radiology.api.urls
    method: str
    expect: dict[str, int]  # role -> status
    call: Callable[[Any, dict[str, Any]], Any]


CLINICAL = {"anonymous": 401, "outsider": 403}
EXPORT = {"anonymous": 401, "outsider": 403, "clinician": 403, "admin": 200}


def _study_create(client: Any, objs: dict[str, Any]) -> Any:
    objs["n"] += 1
    form = study_form(accession_number=f"ACC-M{objs['n']}", files=[upload("kaggle_fractured_1.jpg")])
    return client.post("/api/v1/studies", form, format="multipart")


def _batch_submit(client: Any, objs: dict[str, Any]) -> Any:
    objs["n"] += 1
    manifest = {
        "studies": [
            {
                "accession_number": f"ACC-B{objs['n']}",
                "mrn": "MRN-9",
                "patient_name": "Grace Hopper",
                "body_region": "hand",
                "files": ["hand.png"],
            }
        ]
    }
    return client.post(
        "/api/v1/batches",
        {"manifest": manifest_part(manifest), "files": [upload("hand.png", png_bytes())]},
        format="multipart",
    )


ENDPOINTS = [
    Endpoint("studies", "GET", {"clinician": 200, "admin": 200}, lambda c, o: c.get("/api/v1/studies")),
    Endpoint("studies", "POST", {"clinician": 201, "admin": 201}, _study_create),
    Endpoint(
        "study_detail",
        "GET",
        {"clinician": 200, "admin": 200},
        lambda c, o: c.get(f"/api/v1/studies/{o['prediction'].radiograph.study_id}"),
    ),
    Endpoint(
        "study_fhir",
        "GET",
        {"clinician": 200, "admin": 200},
        lambda c, o: c.get(f"/api/v1/studies/{o['prediction'].radiograph.study_id}/fhir"),
    ),
    Endpoint(
        "study_deliveries",
        "GET",
        {"clinician": 200, "admin": 200},
        lambda c, o: c.get(f"/api/v1/studies/{o['prediction'].radiograph.study_id}/deliveries"),
    ),
    Endpoint(
        "radiographs", "GET", {"clinician": 200, "admin": 200}, lambda c, o: c.get("/api/v1/radiographs")
    ),
    Endpoint(
        "radiograph_detail",
        "GET",
        {"clinician": 200, "admin": 200},
        lambda c, o: c.get(f"/api/v1/radiographs/{o['prediction'].radiograph_id}"),
    ),
    Endpoint(
        "radiograph_image",
        "GET",
        {"clinician": 200, "admin": 200},
        lambda c, o: c.get(f"/api/v1/radiographs/{o['prediction'].radiograph_id}/image"),
    ),
    Endpoint(
        "radiograph_prediction",
        "GET",
        {"clinician": 200, "admin": 200},
        lambda c, o: c.get(f"/api/v1/radiographs/{o['prediction'].radiograph_id}/prediction"),
    ),
    Endpoint(
        "radiograph_reviews",
        "GET",
        {"clinician": 200, "admin": 200},
        lambda c, o: c.get(f"/api/v1/radiographs/{o['prediction'].radiograph_id}/reviews"),
    ),
    Endpoint(
        "radiograph_reviews",
        "POST",
        {"clinician": 201, "admin": 201},
        lambda c, o: c.post(
            f"/api/v1/radiographs/{o['prediction'].radiograph_id}/reviews",
            {"decision": "confirm"},
            format="json",
        ),
    ),
    Endpoint(
        "prediction_heatmap",
        "GET",
        {"clinician": 200, "admin": 200},
        lambda c, o: c.get(f"/api/v1/predictions/{o['prediction'].pk}/heatmap"),
    ),
    Endpoint("batches", "POST", {"clinician": 202, "admin": 202}, _batch_submit),
    Endpoint(
        "batch_detail",
        "GET",
        {"clinician": 200, "admin": 200},
        lambda c, o: c.get(f"/api/v1/batches/{o['batch'].pk}"),
    ),
    Endpoint(
        "radiograph_unaided_read",
        "POST",
        {"clinician": 201, "admin": 201},
        lambda c, o: c.post(
            f"/api/v1/radiographs/{o['prediction'].radiograph_id}/unaided-read",
            {"label": "fractured"},
            format="json",
        ),
    ),
    Endpoint(
        "study_confirm",
        "POST",
        {"clinician": 201, "admin": 201},
        lambda c, o: c.post(f"/api/v1/studies/{o['prediction'].radiograph.study_id}/confirm"),
    ),
    Endpoint(
        "study_read_without_model",
        "POST",
        # Allowed to both (not 403); refused as not_declined, the study being predicted.
        {"clinician": 422, "admin": 422},
        lambda c, o: c.post(f"/api/v1/studies/{o['prediction'].radiograph.study_id}/read-without-model"),
    ),
    Endpoint(
        "adjudications", "GET", {"clinician": 200, "admin": 200}, lambda c, o: c.get("/api/v1/adjudications")
    ),
    Endpoint(
        "adjudication_decide",
        "POST",
        {"clinician": 200, "admin": 200},
        lambda c, o: c.post(
            f"/api/v1/adjudications/{o['adjudication'].pk}/decision", {"label": "fractured"}, format="json"
        ),
    ),
    Endpoint("export_csv", "GET", EXPORT, lambda c, o: c.get("/api/v1/exports/results.csv")),
    Endpoint("export_json", "GET", EXPORT, lambda c, o: c.get("/api/v1/exports/results.json")),
]
PUBLIC = {
    "problem_type": "/api/problems/files_rejected",
    "schema": "/api/schema/",
    "docs": "/api/docs/",
}


@pytest.fixture
def objs(clinician: Any) -> dict[str, Any]:
    prediction = PredictionFactory.create(heatmap=ContentFile(png_bytes(), name="heatmap.png"))
    batch = Batch.objects.create(submitted_by=clinician)
    BatchItem.objects.create(
        batch=batch, index=0, accession_number="X", outcome="created", study=prediction.radiograph.study
    )
    # A case for a second reader, first read by someone else (the cast may adjudicate it).
    other = PredictionFactory.create()
    review = ReviewFactory.create(
        prediction=other, final_label="not_fractured", decision="override", reason_code="false_alarm"
    )
    adjudication = Adjudication.objects.create(
        radiograph=other.radiograph, review=review, trigger="model_disagrees"
    )
    return {"prediction": prediction, "batch": batch, "adjudication": adjudication, "n": 0}


def _counts() -> tuple[int, int, int]:
    return Study.objects.count(), Review.objects.count(), Batch.objects.count()


@pytest.mark.parametrize("role", ["anonymous", "outsider", "clinician", "admin"])
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method}-{e.name}")
def test_role_matrix(endpoint: Endpoint, role: str, api_for: Any, objs: dict[str, Any]) -> None:
    expected = {**CLINICAL, **endpoint.expect}[role]
    before, denied_before = _counts(), denials()

    response = endpoint.call(api_for(role), objs)

    assert response.status_code == expected, response.content[:300]
    if expected in (401, 403):
        body = assert_problem(
            response, expected, "not_authenticated" if expected == 401 else "permission_denied"
        )
        assert body["instance"].startswith("/api/v1/")
        assert _counts() == before, "a refused request stored something"
        assert denials() == denied_before + 1
        event = AuditEvent.objects.filter(action=AuditEvent.Action.ACCESS_DENIED).first()
        assert event is not None and event.details["path"] == body["instance"]
        assert event.details["method"] == endpoint.method
        assert event.actor_name == {"anonymous": "", "outsider": "no.role", "clinician": "dr.ada"}[role]
    else:
        assert denials() == denied_before
    if expected == 401:
        assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("role", ["anonymous", "outsider", "clinician", "admin"])
@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_paths_answer_everyone(name: str, role: str, api_for: Any) -> None:
    assert api_for(role).get(PUBLIC[name]).status_code == 200


def test_every_api_url_is_in_the_matrix() -> None:
    named = {p.name for p in api_urls.urlpatterns if isinstance(p, URLPattern) and p.name}
    covered = {e.name for e in ENDPOINTS} | set(PUBLIC)
    assert named == covered


def test_an_invalid_token_is_a_401_problem_and_audited(db: None) -> None:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0000000000000000000000000000000000000000")
    response = client.get("/api/v1/studies")
    assert_problem(response, 401, "authentication_failed")
    assert denials() == 1


def test_session_login_works_for_the_browsable_api(clinician_client: Any) -> None:
    response = clinician_client.get("/api/v1/studies", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


def test_session_post_without_csrf_token_is_refused(clinician: Any) -> None:
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician)
    prediction = PredictionFactory.create()
    response = client.post(
        f"/api/v1/radiographs/{prediction.radiograph_id}/reviews",
        {"decision": "confirm"},
        content_type="application/json",
    )
    assert_problem(response, 403, "permission_denied")
    assert Review.objects.count() == 0


def test_another_clinicians_batch_is_not_found(objs: dict[str, Any], roles: None) -> None:
    from tests.api.conftest import token_client
    from tests.factories import ClinicianFactory

    other = token_client(ClinicianFactory.create(username="dr.other"))
    assert_problem(other.get(f"/api/v1/batches/{objs['batch'].pk}"), 404, "not_found")
