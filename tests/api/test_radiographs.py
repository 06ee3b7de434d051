"""Radiographs: list and filters, detail, the current prediction, image and heatmap bytes, reviews."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from PIL import Image

from radiology import services
from radiology.governance.models import GuardrailRefusal
from radiology.models import AuditEvent, Batch, BatchItem, Label, Radiograph, Review, Study
from tests.api.conftest import assert_problem, png_bytes
from tests.factories import PredictionFactory, RadiographFactory, ReviewFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def cast(clinician: Any) -> dict[str, Radiograph]:
    """fractured (reviewed), clear (not fractured, an older model too), queued (ankle, old), failed."""
    fractured = PredictionFactory.create(label=Label.FRACTURED, probability=0.9).radiograph
    ReviewFactory.create(prediction=fractured.predictions.get(), reviewer=clinician)
    clear = PredictionFactory.create(
        label=Label.FRACTURED, probability=0.8, model_version="old-model"
    ).radiograph
    later = timezone.now() + dt.timedelta(seconds=5)
    newer = PredictionFactory.create(
        radiograph=clear, label=Label.NOT_FRACTURED, probability=0.1, model_version="new-model"
    )
    type(newer).objects.filter(pk=newer.pk).update(created_at=later)
    queued = RadiographFactory.create(study__body_region="ankle")
    Radiograph.objects.filter(pk=queued.pk).update(
        created_at=timezone.make_aware(dt.datetime(2020, 1, 5, 12))
    )
    failed = RadiographFactory.create(status=Radiograph.Status.FAILED, failure_message="Unreadable.")
    return {"fractured": fractured, "clear": clear, "queued": queued, "failed": failed}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"fractured", "clear", "queued", "failed"}),
        ("status=queued", {"queued"}),
        ("status=failed", {"failed"}),
        ("verdict=fractured", {"fractured"}),  # clear's *current* prediction says not fractured
        ("verdict=not_fractured", {"clear"}),
        ("reviewed=true", {"fractured"}),
        ("reviewed=false", {"clear", "queued", "failed"}),
        ("body_region=ankle", {"queued"}),
        ("created_before=2020-01-05", {"queued"}),
        ("created_after=2020-01-06", {"fractured", "clear", "failed"}),
        ("model_version=old-model", {"clear"}),
    ],
)
def test_radiograph_filters(
    clinician_api: Any, cast: dict[str, Radiograph], query: str, expected: set[str]
) -> None:
    names = {r.pk: name for name, r in cast.items()}
    response = clinician_api.get(f"/api/v1/radiographs?{query}")
    assert response.status_code == 200
    assert {names[r["id"]] for r in response.json()["results"]} == expected


def test_filter_by_study_and_batch(clinician_api: Any, cast: dict[str, Radiograph], clinician: Any) -> None:
    batch = Batch.objects.create(submitted_by=clinician)
    BatchItem.objects.create(batch=batch, index=0, outcome="created", study=cast["failed"].study)
    by_batch = clinician_api.get(f"/api/v1/radiographs?batch={batch.pk}").json()["results"]
    by_study = clinician_api.get(f"/api/v1/radiographs?study={cast['queued'].study_id}").json()["results"]
    assert [r["id"] for r in by_batch] == [cast["failed"].pk]
    assert [r["id"] for r in by_study] == [cast["queued"].pk]


def test_list_shows_current_prediction_and_latest_review(
    clinician_api: Any, cast: dict[str, Radiograph]
) -> None:
    rows = {r["id"]: r for r in clinician_api.get("/api/v1/radiographs").json()["results"]}
    clear, fractured = rows[cast["clear"].pk], rows[cast["fractured"].pk]
    assert clear["prediction"]["model_version"] == "new-model"
    assert clear["prediction"]["label"] == "not_fractured"
    assert clear["review"] is None
    assert fractured["review"]["decision"] == "confirm"
    assert fractured["review"]["reviewer"] == "dr.ada"
    assert rows[cast["failed"].pk]["failure_message"] == "Unreadable."


def test_a_radiograph_the_model_declined_says_why(clinician_api: Any) -> None:
    declined = RadiographFactory.create(status=Radiograph.Status.NOT_ANALYSED)
    GuardrailRefusal.objects.create(
        radiograph=declined, model_version="active-1", code="modality", reason="Not a plain radiograph (CT)."
    )
    GuardrailRefusal.objects.create(
        radiograph=declined, model_version="shadow-2", code="out_of_distribution", reason="Unlike."
    )
    predicted = PredictionFactory.create().radiograph
    GuardrailRefusal.objects.create(
        radiograph=predicted, model_version="shadow-2", code="out_of_distribution", reason="Unlike."
    )
    rows = {r["id"]: r for r in clinician_api.get("/api/v1/radiographs").json()["results"]}
    expected = {"code": "modality", "reason": "Not a plain radiograph (CT).", "model_version": "active-1"}
    assert rows[declined.pk]["status"] == "not_analysed" and rows[declined.pk]["prediction"] is None
    assert rows[declined.pk]["not_analysed"] == expected
    assert rows[predicted.pk]["not_analysed"] is None  # a shadow's refusal is not the radiograph's
    assert clinician_api.get(f"/api/v1/radiographs/{declined.pk}").json()["not_analysed"] == expected


def test_list_queries_do_not_grow_with_rows(clinician_api: Any, django_assert_max_num_queries: Any) -> None:
    for _ in range(40):
        ReviewFactory.create()
    with django_assert_max_num_queries(7):
        response = clinician_api.get("/api/v1/radiographs?verdict=fractured&reviewed=true&page_size=100")
    assert response.json()["count"] == 40


def test_the_band_filter_uses_the_current_prediction(clinician_api: Any) -> None:
    doubtful = PredictionFactory.create(probability=0.5, label="fractured")
    certain = PredictionFactory.create(probability=0.95)
    # A newer model version read the doubtful one again and was sure: only the current band counts.
    PredictionFactory.create(radiograph=certain.radiograph, model_version="test-model-2", probability=0.5)
    clear = PredictionFactory.create(probability=0.05, label="not_fractured")
    ids = {
        band: {r["id"] for r in clinician_api.get(f"/api/v1/radiographs?band={band}").json()["results"]}
        for band in ("fracture", "doubt", "no_fracture")
    }
    assert ids == {
        "fracture": set(),
        "doubt": {doubtful.radiograph_id, certain.radiograph_id},
        "no_fracture": {clear.radiograph_id},
    }
    with transaction.atomic():
        services.studies_refresh_triage(study_ids=[p.radiograph.study_id for p in (doubtful, certain, clear)])
    studies = clinician_api.get("/api/v1/studies?band=doubt").json()["results"]
    assert {s["id"] for s in studies} == {doubtful.radiograph.study_id, certain.radiograph.study_id}
    assert {s["band"] for s in studies} == {"doubt"}
    assert clinician_api.get("/api/v1/radiographs?band=likely").status_code == 400


def test_detail_prediction_and_heatmap(clinician_api: Any) -> None:
    heatmap = png_bytes(200)  # stored levels, as the worker writes them
    prediction = PredictionFactory.create(
        heatmap=ContentFile(heatmap, name="h.png"),
        threshold=0.42,
        boxes=[{"x0": 100.0, "y0": 120.5, "x1": 300.0, "y1": 260.0, "score": 0.8}],
    )
    prediction.radiograph.width, prediction.radiograph.height = 1024, 768
    prediction.radiograph.save(update_fields=["width", "height"])
    pk = prediction.radiograph_id

    detail = clinician_api.get(f"/api/v1/radiographs/{pk}").json()
    current = clinician_api.get(f"/api/v1/radiographs/{pk}/prediction").json()

    assert detail["prediction"] == current
    assert current == {
        "id": prediction.pk,
        "probability": 0.9,
        "label": "fractured",
        "band": "fracture",
        "boxes": [{"x0": 100.0, "y0": 120.5, "x1": 300.0, "y1": 260.0, "score": 0.8}],
        "threshold": 0.42,
        "threshold_sensitive": 0.3,
        "threshold_specific": 0.7,
        "model_version": "test-model-1",
        "created_at": current["created_at"],
        "heatmap_url": f"http://testserver/api/v1/predictions/{prediction.pk}/heatmap",
    }
    response = clinician_api.get(current["heatmap_url"])
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    overlay = Image.open(io.BytesIO(response.content))
    assert overlay.mode == "RGBA" and overlay.size == (512, 384)  # coloured, the radiograph's aspect


def test_an_unreadable_stored_heatmap_is_a_404_problem_not_a_crash(clinician_api: Any) -> None:
    prediction = PredictionFactory.create(heatmap=ContentFile(b"\x89PNG\r\n\x1a\n-cut-short", name="h.png"))
    body = assert_problem(clinician_api.get(f"/api/v1/predictions/{prediction.pk}/heatmap"), 404, "not_found")
    assert "cannot be read" in body["detail"]


def test_prediction_of_a_queued_radiograph_is_a_404_saying_why(clinician_api: Any) -> None:
    radiograph = RadiographFactory.create()
    body = assert_problem(
        clinician_api.get(f"/api/v1/radiographs/{radiograph.pk}/prediction"), 404, "prediction_not_available"
    )
    assert body["radiograph_status"] == "queued"


def test_image_returns_the_stored_bytes_whatever_the_accept_header(clinician_api: Any) -> None:
    radiograph = RadiographFactory.create(format=Radiograph.Format.JPEG)
    response = clinician_api.get(f"/api/v1/radiographs/{radiograph.pk}/image", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response.content == b"not-read-in-this-test"


def test_missing_heatmap_and_image_are_404_problems(clinician_api: Any) -> None:
    prediction = PredictionFactory.create()
    assert_problem(clinician_api.get(f"/api/v1/predictions/{prediction.pk}/heatmap"), 404, "not_found")
    radiograph = prediction.radiograph
    radiograph.image.storage.delete(radiograph.image.name or "")
    assert_problem(clinician_api.get(f"/api/v1/radiographs/{radiograph.pk}/image"), 404, "not_found")


# --- Reviews -------------------------------------------------------------------------------------------


def test_confirm_records_a_review_and_updates_the_study(clinician_api: Any, clinician: Any) -> None:
    radiograph = PredictionFactory.create(label=Label.FRACTURED).radiograph
    response = clinician_api.post(
        f"/api/v1/radiographs/{radiograph.pk}/reviews", {"decision": "confirm"}, format="json"
    )
    assert response.status_code == 201
    review = Review.objects.get()
    assert response.json()["id"] == review.pk
    assert review.reviewer == clinician and review.final_label == Label.FRACTURED
    radiograph.study.refresh_from_db()
    assert radiograph.study.state == Study.State.REVIEWED
    assert AuditEvent.objects.filter(action=AuditEvent.Action.REVIEW_SUBMITTED).count() == 1


def test_override_with_reason_then_list_newest_first(clinician_api: Any) -> None:
    radiograph = PredictionFactory.create(label=Label.FRACTURED).radiograph
    url = f"/api/v1/radiographs/{radiograph.pk}/reviews"
    clinician_api.post(url, {"decision": "confirm"}, format="json")
    response = clinician_api.post(
        url, {"decision": "override", "reason_code": "old_fracture", "reason_text": "healed"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["final_label"] == "not_fractured"
    listed = clinician_api.get(url).json()
    assert [r["decision"] for r in listed] == ["override", "confirm"]
    assert (
        clinician_api.get(f"/api/v1/radiographs/{radiograph.pk}").json()["review"]["decision"] == "override"
    )


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"decision": "override"}, 422, "reason_required"),
        ({"decision": "override", "reason_code": "other"}, 422, "reason_required"),
        ({"decision": "confirm", "final_label": "not_fractured"}, 422, "confirm_label_mismatch"),
        (
            {"decision": "override", "final_label": "fractured", "reason_code": "other", "reason_text": "x"},
            422,
            "override_same_label",
        ),
        ({"decision": "maybe"}, 400, "validation_error"),
        ({"decision": "override", "reason_code": "bored"}, 400, "validation_error"),
        ({}, 400, "validation_error"),
    ],
)
def test_inconsistent_reviews_are_refused(
    clinician_api: Any, payload: dict[str, str], status: int, code: str
) -> None:
    radiograph = PredictionFactory.create(label=Label.FRACTURED).radiograph
    response = clinician_api.post(f"/api/v1/radiographs/{radiograph.pk}/reviews", payload, format="json")
    body = assert_problem(response, status, code)
    assert body.get("errors"), "each refusal names its field"
    assert Review.objects.count() == 0


def test_reviewing_a_radiograph_without_prediction_is_a_409(clinician_api: Any) -> None:
    radiograph = RadiographFactory.create()
    response = clinician_api.post(
        f"/api/v1/radiographs/{radiograph.pk}/reviews", {"decision": "confirm"}, format="json"
    )
    assert_problem(response, 409, "not_ready")
    assert Review.objects.count() == 0


def test_review_of_unknown_radiograph_is_a_404(clinician_api: Any) -> None:
    assert_problem(
        clinician_api.post("/api/v1/radiographs/424242/reviews", {"decision": "confirm"}, format="json"),
        404,
        "not_found",
    )


def test_review_body_must_be_json(clinician_api: Any) -> None:
    radiograph = PredictionFactory.create().radiograph
    response = clinician_api.post(
        f"/api/v1/radiographs/{radiograph.pk}/reviews",
        "decision=confirm",
        content_type="application/x-www-form-urlencoded",
    )
    assert_problem(response, 415, "unsupported_media_type")
    response = clinician_api.post(
        f"/api/v1/radiographs/{radiograph.pk}/reviews", "{not json", content_type="application/json"
    )
    body = assert_problem(response, 400, "parse_error")
    assert "Expecting" not in body["detail"], "the JSON decoder's own message stays on the server"
    assert Review.objects.count() == 0
