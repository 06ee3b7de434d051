"""The whole path over real connections: a browser-like client uploads a study to the live server,
a real `celery worker` process classifies it with the model artifact, the client reviews it.

Runs against PostgreSQL + Redis (DATABASE_URL / CELERY_BROKER_URL set, `make test-e2e-services`) and
against the embedded default, SQLite + the file broker (`make test-e2e-embedded`)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests

from radiology.models import AuditEvent, Prediction, Radiograph, RadiographTally, Review, Study, StudyTally
from tests.conftest import fixture_bytes
from tests.e2e.harness import WorkerProcess, wait_for
from tests.factories import ClinicianFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"


def _login(base: str, username: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, "login form has a CSRF token"
    response = session.post(
        f"{base}/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token.group(1)},
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=10,
    )
    assert response.ok and "/accounts/login/" not in response.url, "clinician can sign in"
    return session


def _csrf(session: requests.Session, url: str) -> str:
    page = session.get(url, timeout=10)
    assert page.status_code == 200
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def test_upload_classify_and_review_over_real_services(
    live_server: Any, celery_worker: WorkerProcess, e2e_model_path: Any
) -> None:
    base = live_server.url
    ClinicianFactory.create(username="e2e.clinician")
    session = _login(base, "e2e.clinician")

    upload_url = f"{base}/studies/new/"
    token = _csrf(session, upload_url)
    files = [
        ("files", ("wrist-fractured.jpg", fixture_bytes("images/kaggle_fractured_1.jpg"), "image/jpeg")),
        ("files", ("hand-normal.jpg", fixture_bytes("images/kaggle_not_fractured_1.jpg"), "image/jpeg")),
        ("files", ("scan.dcm", fixture_bytes("dicom/monochrome1_voi_12bit.dcm"), "application/dicom")),
        ("files", ("broken.jpg", fixture_bytes("images/kaggle_truncated.jpg"), "image/jpeg")),
    ]
    response = session.post(
        upload_url,
        data={
            "csrfmiddlewaretoken": token,
            "mrn": "E2E-0001",
            "patient_name": "Grace Hopper",
            "accession_number": "E2E-ACC-1",
            "body_region": "wrist",
            # The DICOM file names another patient (DCM-0001): filed under the typed details knowingly.
            "confirm_patient_mismatch": "on",
        },
        files=files,
        headers={"Referer": upload_url},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:500]
    study = Study.objects.get(accession_number="E2E-ACC-1")
    assert response.url.endswith(f"/studies/{study.pk}/")
    assert "broken.jpg was not accepted" in response.text  # the bad sibling is named, the good ones kept
    assert study.radiographs.count() == 3

    status_url = f"{base}/studies/{study.pk}/status/"

    def finished() -> dict[str, Any] | None:
        body = session.get(status_url, timeout=10).json()
        return body if body["state"] != Study.State.PROCESSING else None

    status = wait_for(finished, timeout=240, message=f"predictions; worker log:\n{celery_worker.output()}")
    assert status["state"] == Study.State.AWAITING_REVIEW, json.dumps(status)

    card = json.loads((e2e_model_path / "card.json").read_text())
    predictions = list(Prediction.objects.filter(radiograph__study=study))
    assert len(predictions) == 3
    assert {p.model_version for p in predictions} == {card["version"]}
    assert all(0.0 <= p.probability <= 1.0 and p.heatmap for p in predictions)
    assert set(Radiograph.objects.filter(study=study).values_list("status", flat=True)) == {"predicted"}

    # The heatmap and the image are served to the signed-in clinician, and only through the app.
    # (The review page offers the heatmap only when the model card validates it; the URL serves it anyway.)
    heatmap_url = f"/predictions/{status['images'][0]['prediction']['id']}/heatmap/"
    # Every image's band and its boxes reach the page's data; the pixels come at their own depth.
    assert {i["prediction"]["band"] for i in status["images"]} <= {"fracture", "doubt", "no_fracture"}
    dicom = next(i for i in status["images"] if i["format"] == "DICOM")
    pixels = session.get(f"{base}{dicom['pixels_url']}", timeout=10)
    assert pixels.status_code == 200 and "bits" in json.loads(pixels.headers["X-Pixels"])
    heatmap = session.get(f"{base}{heatmap_url}", timeout=10)
    assert heatmap.status_code == 200 and heatmap.headers["Content-Type"] == "image/png"
    assert requests.get(f"{base}{heatmap_url}", timeout=10, allow_redirects=False).status_code == 302
    dicom_view = session.get(f"{base}{dicom['image_url']}", timeout=10)
    assert dicom_view.headers["Content-Type"] == "image/png"

    # Review every radiograph: confirm the first two, override the third with a reason.
    review_page = f"{base}/studies/{study.pk}/"
    radiographs = list(study.radiographs.order_by("position"))
    for radiograph in radiographs[:2]:
        token = _csrf(session, review_page)
        reply = session.post(
            f"{base}/radiographs/{radiograph.pk}/review/",
            data={"csrfmiddlewaretoken": token, "decision": "confirm"},
            headers={"Referer": review_page},
            timeout=10,
        )
        assert reply.status_code == 200
    third = radiographs[2]
    model_label = Prediction.objects.get(radiograph=third).label
    token = _csrf(session, review_page)
    session.post(
        f"{base}/radiographs/{third.pk}/review/",
        data={"csrfmiddlewaretoken": token, "decision": "override", "reason_code": "image_quality"},
        headers={"Referer": review_page},
        timeout=10,
    )
    study.refresh_from_db()
    assert study.state == Study.State.REVIEWED
    override = Review.objects.get(radiograph=third)
    assert override.decision == "override" and override.final_label != model_label
    assert Review.objects.filter(radiograph__study=study).count() == 3
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"study.uploaded", "file.rejected", "prediction.stored", "review.submitted"} <= actions
    assert "patient.details_differ" in actions
    # The running totals, kept by triggers that fire at commit on PostgreSQL, counted the committed rows.
    assert RadiographTally.objects.get().radiographs == Radiograph.objects.count() == 3
    assert {(t.state, t.studies) for t in StudyTally.objects.filter(studies__gt=0)} == {("reviewed", 1)}
