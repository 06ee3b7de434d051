"""The reading workflow through the API: reasons checked against their direction, blinded reads, study
confirmation, adjudication by a second clinician, the wrong-patient guard."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from radiology.models import Adjudication, AuditEvent, Review, Study, UnaidedRead
from tests.api.conftest import assert_problem, predicted_radiograph, study_form, token_client, upload
from tests.factories import ClinicianFactory

pytestmark = pytest.mark.django_db


def _reviews(radiograph_id: int) -> str:
    return f"/api/v1/radiographs/{radiograph_id}/reviews"


@pytest.mark.parametrize(
    ("probability", "label", "final", "reason"),
    [
        (0.9, "fractured", "not_fractured", "missed_fracture"),
        (0.1, "not_fractured", "fractured", "old_fracture"),
    ],
)
def test_an_override_reason_against_its_direction_is_a_422(
    clinician_api: APIClient, probability: float, label: str, final: str, reason: str
) -> None:
    radiograph = predicted_radiograph(probability=probability, label=label)
    response = clinician_api.post(
        _reviews(radiograph.pk),
        {"decision": "override", "final_label": final, "reason_code": reason},
        format="json",
    )
    body = assert_problem(response, 422, "reason_contradicts_label")
    assert body["errors"][0]["field"] == "reason_code"
    assert not Review.objects.exists()
    assert clinician_api.get("/api/problems/reason_contradicts_label").status_code == 200


def test_a_blinded_reader_records_the_unaided_call_first_and_all_three_are_stored(
    clinician_api: APIClient, clinician: Any, settings: Any
) -> None:
    settings.BLINDED_READ_DEFAULT = True
    radiograph = predicted_radiograph(probability=0.9, label="fractured")
    refused = clinician_api.post(_reviews(radiograph.pk), {"decision": "confirm"}, format="json")
    assert_problem(refused, 422, "unaided_read_required")
    read = clinician_api.post(
        f"/api/v1/radiographs/{radiograph.pk}/unaided-read", {"label": "not_fractured"}, format="json"
    )
    assert read.status_code == 201
    assert read.json()["label"] == "not_fractured" and read.json()["reader"] == "dr.ada"
    again = clinician_api.post(
        f"/api/v1/radiographs/{radiograph.pk}/unaided-read", {"label": "fractured"}, format="json"
    )
    assert_problem(again, 422, "already_recorded")
    review = clinician_api.post(_reviews(radiograph.pk), {"decision": "confirm"}, format="json")
    assert review.status_code == 201
    assert (review.json()["unaided_label"], review.json()["final_label"]) == ("not_fractured", "fractured")
    assert UnaidedRead.objects.get().label == "not_fractured"
    event = AuditEvent.objects.get(action=AuditEvent.Action.REVIEW_SUBMITTED)
    assert (event.details["unaided_label"], event.details["model_label"], event.details["final_label"]) == (
        "not_fractured",
        "fractured",
        "fractured",
    )


def test_a_study_is_confirmed_in_one_request(clinician_api: APIClient) -> None:
    radiograph = predicted_radiograph(probability=0.8, label="fractured")
    response = clinician_api.post(f"/api/v1/studies/{radiograph.study_id}/confirm")
    assert response.status_code == 201
    assert [r["decision"] for r in response.json()] == ["confirm"]
    assert_problem(
        clinician_api.post(f"/api/v1/studies/{radiograph.study_id}/confirm"), 422, "nothing_to_confirm"
    )


def test_adjudication_by_a_second_clinician_locks_the_label(clinician_api: APIClient) -> None:
    radiograph = predicted_radiograph(probability=0.95, label="fractured")
    clinician_api.post(
        _reviews(radiograph.pk),
        {"decision": "override", "final_label": "not_fractured", "reason_code": "false_alarm"},
        format="json",
    )
    listed = clinician_api.get("/api/v1/adjudications").json()["results"]
    assert [(a["radiograph"], a["trigger"], a["state"]) for a in listed] == [
        (radiograph.pk, "model_disagrees", "open")
    ]
    pk = listed[0]["id"]
    own = clinician_api.post(f"/api/v1/adjudications/{pk}/decision", {"label": "fractured"}, format="json")
    assert_problem(own, 422, "own_case")

    colleague = token_client(ClinicianFactory.create(username="dr.grace"))
    decided = colleague.post(f"/api/v1/adjudications/{pk}/decision", {"label": "fractured"}, format="json")
    assert decided.status_code == 200
    assert (decided.json()["state"], decided.json()["label"], decided.json()["adjudicator"]) == (
        "decided",
        "fractured",
        "dr.grace",
    )
    assert_problem(
        colleague.post(f"/api/v1/adjudications/{pk}/decision", {"label": "not_fractured"}, format="json"),
        409,
        "already_adjudicated",
    )
    locked = colleague.post(_reviews(radiograph.pk), {"decision": "confirm"}, format="json")
    assert_problem(locked, 409, "adjudicated")
    assert Adjudication.objects.get().label == "fractured"


def test_a_typed_mrn_that_differs_from_the_dicom_file_needs_confirmation(clinician_api: APIClient) -> None:
    from tests.conftest import fixture_bytes

    dicom = fixture_bytes("dicom/monochrome2_8bit.dcm")  # PatientID DCM-0001
    form = study_form(accession_number="ACC-WP", mrn="MRN-OTHER", files=[upload("pa.dcm", dicom)])
    body = assert_problem(
        clinician_api.post("/api/v1/studies", form, format="multipart"), 422, "patient_details_differ"
    )
    assert "DCM-0001" in body["detail"]
    assert not Study.objects.exists()
    form = study_form(
        accession_number="ACC-WP",
        mrn="MRN-OTHER",
        confirm_patient_mismatch="true",
        files=[upload("pa.dcm", dicom)],
    )
    assert clinician_api.post("/api/v1/studies", form, format="multipart").status_code == 201
    assert AuditEvent.objects.filter(action=AuditEvent.Action.PATIENT_DETAILS_DIFFER).count() == 1
