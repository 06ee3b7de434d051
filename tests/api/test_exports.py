"""Exports (admins): one row per radiograph, its current prediction joined with its latest review."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from radiology.governance.models import GuardrailRefusal
from radiology.models import AuditEvent, Label, Radiograph, Review
from tests.api.conftest import assert_problem
from tests.factories import PredictionFactory, RadiographFactory, ReviewFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows(clinician: Any) -> dict[str, Any]:
    reviewed = PredictionFactory.create(
        label=Label.FRACTURED, probability=0.91, radiograph__study__accession_number="=HYPERLINK(1)"
    )
    ReviewFactory.create(prediction=reviewed, reviewer=clinician)
    ReviewFactory.create(
        prediction=reviewed,
        reviewer=clinician,
        decision=Review.Decision.OVERRIDE,
        final_label=Label.NOT_FRACTURED,
        reason_code=Review.Reason.HARDWARE,
    )
    queued = RadiographFactory.create(study__body_region="ankle")
    return {"reviewed": reviewed, "queued": queued}


def _csv(response: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_csv_joins_the_current_prediction_with_the_latest_review(
    admin_api: Any, rows: dict[str, Any]
) -> None:
    response = admin_api.get("/api/v1/exports/results.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="fracture-review-results-')
    first, second = _csv(response)
    prediction = rows["reviewed"]
    assert first["radiograph_id"] == str(prediction.radiograph_id)
    assert first["prediction_id"] == str(prediction.pk)
    assert first["probability"] == "0.91" and first["model_label"] == "fractured"
    assert first["review_decision"] == "override" and first["review_final_label"] == "not_fractured"
    assert first["review_reason_code"] == "hardware" and first["reviewer"] == "dr.ada"
    assert first["accession_number"] == "'=HYPERLINK(1)", "a formula must not reach a spreadsheet"
    assert (
        second["radiograph_status"] == "queued" and second["probability"] == "" and second["reviewer"] == ""
    )


def test_json_has_the_same_rows(admin_api: Any, rows: dict[str, Any]) -> None:
    response = admin_api.get("/api/v1/exports/results.json")
    assert response["Content-Type"] == "application/json"
    body = json.loads(b"".join(response.streaming_content))
    assert body["count"] == 2
    first, second = body["results"]
    assert first["probability"] == 0.91 and first["review_final_label"] == "not_fractured"
    assert first["accession_number"] == "=HYPERLINK(1)"  # JSON is data, not a spreadsheet
    assert second["prediction_id"] is None and second["review_decision"] is None


def test_rows_carry_the_band_and_why_a_radiograph_was_not_analysed(admin_api: Any) -> None:
    doubtful = PredictionFactory.create(probability=0.5, label=Label.FRACTURED)
    # A shadow version declined it too: that refusal is not the radiograph's, which has a verdict.
    GuardrailRefusal.objects.create(
        radiograph=doubtful.radiograph, model_version="shadow-2", code="out_of_distribution", reason="Unlike."
    )
    declined = RadiographFactory.create(status=Radiograph.Status.NOT_ANALYSED)
    GuardrailRefusal.objects.create(
        radiograph=declined,
        model_version="active-1",
        code="body_region",
        reason="Skull: not a trained region.",
    )
    GuardrailRefusal.objects.create(
        radiograph=declined, model_version="shadow-2", code="out_of_distribution", reason="Unlike."
    )
    by_id = {r["radiograph_id"]: r for r in _csv(admin_api.get("/api/v1/exports/results.csv"))}
    doubt_row, declined_row = by_id[str(doubtful.radiograph_id)], by_id[str(declined.pk)]
    assert (doubt_row["band"], doubt_row["not_analysed_code"], doubt_row["not_analysed_reason"]) == (
        "doubt",
        "",
        "",
    )
    assert (declined_row["radiograph_status"], declined_row["band"], declined_row["prediction_id"]) == (
        "not_analysed",
        "",
        "",
    )
    # The refusal that set the status: the first one, by the version that read it first.
    assert (declined_row["not_analysed_code"], declined_row["not_analysed_reason"]) == (
        "body_region",
        "Skull: not a trained region.",
    )
    body = json.loads(b"".join(admin_api.get("/api/v1/exports/results.json").streaming_content))
    declined_json = next(r for r in body["results"] if r["radiograph_id"] == declined.pk)
    assert (declined_json["band"], declined_json["not_analysed_code"]) == (None, "body_region")


def test_exports_take_the_radiograph_filters_and_are_audited(
    admin_api: Any, rows: dict[str, Any], admin: Any
) -> None:
    response = admin_api.get("/api/v1/exports/results.csv?body_region=ankle&status=queued")
    assert [r["radiograph_id"] for r in _csv(response)] == [str(rows["queued"].pk)]
    event = AuditEvent.objects.get(action=AuditEvent.Action.EXPORT)
    assert event.actor == admin
    assert event.details == {
        "format": "csv",
        "rows": 1,
        "filters": {"body_region": ["ankle"], "status": ["queued"]},
    }


def test_invalid_export_filters_are_a_400_and_not_audited(admin_api: Any) -> None:
    assert_problem(admin_api.get("/api/v1/exports/results.json?verdict=perhaps"), 400, "validation_error")
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT).exists()


def test_export_queries_stay_bounded(admin_api: Any, django_assert_max_num_queries: Any) -> None:
    for _ in range(25):
        ReviewFactory.create()
    # 11 whatever the row count: auth (2), count, the export's audit event with its chain head (5), rows (3:
    # radiographs, their reviews, their guardrail refusals).
    with django_assert_max_num_queries(11):
        response = admin_api.get("/api/v1/exports/results.csv")
        assert len(_csv(response)) == 25


def test_clinicians_cannot_export(clinician_api: Any) -> None:
    assert_problem(clinician_api.get("/api/v1/exports/results.csv"), 403, "permission_denied")
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT).exists()
