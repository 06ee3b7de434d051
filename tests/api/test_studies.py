"""Creating, listing and reading studies through the API."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from radiology.models import AuditEvent, Label, Patient, Radiograph, Study
from tests.api.conftest import assert_problem, png_bytes, study_form, upload
from tests.conftest import fixture_bytes
from tests.factories import PatientFactory, PredictionFactory, RadiographFactory, StudyFactory

pytestmark = pytest.mark.django_db


def _stored_files() -> list[str]:
    return default_storage.listdir("radiographs")[1] if default_storage.exists("radiographs") else []


def test_it_creates_a_study_and_dispatches_after_commit(
    clinician_api: Any, dispatched: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = clinician_api.post(
            "/api/v1/studies",
            study_form(files=[upload("kaggle_fractured_1.jpg"), upload("b.png", png_bytes())]),
            format="multipart",
        )

    assert response.status_code == 201
    body = response.json()
    study = Study.objects.get(accession_number="ACC-100")
    assert response["Location"] == f"http://testserver/api/v1/studies/{study.pk}"
    assert body["study"]["id"] == study.pk
    assert body["study"]["state"] == "processing"
    assert body["rejected"] == []
    assert [r["status"] for r in body["study"]["radiographs"]] == ["queued", "queued"]
    assert dispatched.sent == sorted(r.pk for r in study.radiographs.all())
    assert AuditEvent.objects.filter(action=AuditEvent.Action.STUDY_UPLOADED).count() == 1


def test_it_keeps_good_files_and_names_each_refused_one(clinician_api: Any) -> None:
    response = clinician_api.post(
        "/api/v1/studies",
        study_form(
            files=[
                upload("kaggle_fractured_1.jpg"),
                upload("kaggle_truncated.jpg"),
                upload("notes.png", b"just text, not an image"),
                upload("empty.png", b""),
            ]
        ),
        format="multipart",
    )
    assert response.status_code == 201
    rejected = {r["file"]: r["code"] for r in response.json()["rejected"]}
    assert rejected == {
        "kaggle_truncated.jpg": "unreadable_image",
        "notes.png": "unsupported_format",
        "empty.png": "empty_file",
    }
    study = Study.objects.get()
    assert study.radiographs.count() == 1


def test_it_creates_nothing_when_every_file_is_refused(clinician_api: Any) -> None:
    response = clinician_api.post(
        "/api/v1/studies",
        study_form(files=[upload("kaggle_truncated.jpg"), upload("a.png", b"\x89PNG\r\n\x1a\n broken")]),
        format="multipart",
    )
    body = assert_problem(response, 422, "files_rejected")
    assert {e["file"] for e in body["errors"]} == {"kaggle_truncated.jpg", "a.png"}
    assert all(e["code"] and e["message"] for e in body["errors"])
    assert Study.objects.count() == 0 and Patient.objects.count() == 0 and Radiograph.objects.count() == 0
    assert _stored_files() == []


def test_a_duplicate_accession_number_is_a_409_naming_the_field(clinician_api: Any) -> None:
    StudyFactory.create(accession_number="ACC-100")
    response = clinician_api.post(
        "/api/v1/studies", study_form(files=[upload("kaggle_fractured_1.jpg")]), format="multipart"
    )
    body = assert_problem(response, 409, "duplicate_accession")
    assert body["errors"] == [
        {"field": "accession_number", "code": "duplicate_accession", "message": body["detail"]}
    ]
    assert Study.objects.count() == 1 and Radiograph.objects.count() == 0
    assert _stored_files() == []


def test_a_known_mrn_with_another_name_is_refused(clinician_api: Any) -> None:
    PatientFactory.create(mrn="MRN-100", name="Someone Else")
    response = clinician_api.post(
        "/api/v1/studies", study_form(files=[upload("kaggle_fractured_1.jpg")]), format="multipart"
    )
    assert_problem(response, 409, "patient_mismatch")
    assert Study.objects.count() == 0


def test_a_missing_required_field_is_a_422_with_the_field(clinician_api: Any) -> None:
    response = clinician_api.post(
        "/api/v1/studies",
        study_form(patient_name="", files=[upload("kaggle_fractured_1.jpg")]),
        format="multipart",
    )
    body = assert_problem(response, 422, "missing_field")
    assert body["errors"][0]["field"] == "patient_name"
    assert Study.objects.count() == 0


def test_dicom_attributes_fill_blank_fields(clinician_api: Any) -> None:
    response = clinician_api.post(
        "/api/v1/studies",
        {"files": [upload("x.dcm", fixture_bytes("dicom/monochrome2_8bit.dcm"))]},
        format="multipart",
    )
    # The fixture DICOM carries patient and accession attributes; whatever it lacks is named.
    if response.status_code == 201:
        assert response.json()["study"]["radiographs"][0]["format"] == "DICOM"
    else:
        assert_problem(response, 422, "missing_field")


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"body_region": "elbw"}, "body_region"),
        ({"date_of_birth": "yesterday"}, "date_of_birth"),
        ({"mrn": "x" * 65}, "mrn"),
        ({"sex": "Q"}, "sex"),
    ],
)
def test_invalid_fields_are_a_400_listing_each(clinician_api: Any, form: dict[str, str], field: str) -> None:
    response = clinician_api.post(
        "/api/v1/studies", study_form(files=[upload("kaggle_fractured_1.jpg")], **form), format="multipart"
    )
    body = assert_problem(response, 400, "validation_error")
    assert [e["field"] for e in body["errors"]] == [field]
    assert Study.objects.count() == 0


def test_no_files_is_a_400(clinician_api: Any) -> None:
    body = assert_problem(
        clinician_api.post("/api/v1/studies", study_form(), format="multipart"), 400, "validation_error"
    )
    assert body["errors"][0]["field"] == "files"


def test_too_many_files_is_refused(clinician_api: Any, settings: Any) -> None:
    settings.UPLOAD_MAX_FILES_PER_STUDY = 1
    response = clinician_api.post(
        "/api/v1/studies",
        study_form(files=[upload("a.png", png_bytes(10)), upload("b.png", png_bytes(20))]),
        format="multipart",
    )
    assert_problem(response, 422, "too_many_files")
    assert Study.objects.count() == 0


def test_an_oversized_file_is_refused_by_name(clinician_api: Any, settings: Any) -> None:
    settings.UPLOAD_MAX_FILE_BYTES = 2048
    big = png_bytes(size=512) + b"\0" * 4096
    response = clinician_api.post(
        "/api/v1/studies", study_form(files=[upload("big.png", big)]), format="multipart"
    )
    body = assert_problem(response, 422, "files_rejected")
    assert body["errors"][0]["file"] == "big.png"


def test_storage_failure_is_a_503_and_leaves_nothing(clinician_api: Any, monkeypatch: Any) -> None:
    from django.core.files.storage import FileSystemStorage

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileSystemStorage, "_save", refuse)
    response = clinician_api.post(
        "/api/v1/studies", study_form(files=[upload("kaggle_fractured_1.jpg")]), format="multipart"
    )
    body = assert_problem(response, 503, "storage_unavailable")
    assert "No space" not in body["detail"]
    assert Study.objects.count() == 0 and Radiograph.objects.count() == 0


# --- List and detail -----------------------------------------------------------------------------------


def test_list_is_in_queue_order_and_paginated(clinician_api: Any) -> None:
    low = StudyFactory.create(max_probability=0.2)
    high = StudyFactory.create(max_probability=0.9)
    none = StudyFactory.create(max_probability=None)
    body = clinician_api.get("/api/v1/studies").json()
    assert [s["id"] for s in body["results"]] == [high.pk, low.pk, none.pk]
    assert body["count"] == 3 and body["next"] is None

    page = clinician_api.get("/api/v1/studies?page_size=2&page=2").json()
    assert [s["id"] for s in page["results"]] == [none.pk]
    assert page["previous"]


def test_page_size_is_capped(clinician_api: Any, settings: Any) -> None:
    settings.API_MAX_PAGE_SIZE = 2
    StudyFactory.create_batch(3)
    assert len(clinician_api.get("/api/v1/studies?page_size=1000").json()["results"]) == 2


def test_a_page_past_the_end_is_a_404_problem(clinician_api: Any) -> None:
    assert_problem(clinician_api.get("/api/v1/studies?page=9"), 404, "not_found")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=awaiting_review", {"awaiting"}),
        ("state=reviewed", {"reviewed"}),
        ("reviewed=true", {"reviewed"}),
        ("reviewed=false", {"awaiting", "old_ankle"}),
        ("body_region=ankle", {"old_ankle"}),
        ("verdict=fractured", {"awaiting"}),
        ("verdict=not_fractured", {"reviewed"}),
        ("search=acc-awaiting", {"awaiting"}),
        ("search=MRN-R", {"reviewed"}),
        ("created_before=2020-01-31", {"old_ankle"}),
        ("created_after=2020-02-01", {"awaiting", "reviewed"}),
        ("study_date_after=2024-01-01&study_date_before=2024-12-31", {"reviewed"}),
    ],
)
def test_study_filters(clinician_api: Any, query: str, expected: set[str]) -> None:
    awaiting = StudyFactory.create(accession_number="ACC-AWAITING", state=Study.State.AWAITING_REVIEW)
    PredictionFactory.create(radiograph__study=awaiting, label=Label.FRACTURED)
    reviewed = StudyFactory.create(
        accession_number="ACC-R",
        state=Study.State.REVIEWED,
        patient__mrn="MRN-R",
        study_date=dt.date(2024, 5, 1),
    )
    PredictionFactory.create(radiograph__study=reviewed, label=Label.NOT_FRACTURED, probability=0.1)
    old = StudyFactory.create(accession_number="ACC-OLD", body_region="ankle")
    Study.objects.filter(pk=old.pk).update(created_at=timezone.make_aware(dt.datetime(2020, 1, 31, 23, 30)))
    names = {awaiting.pk: "awaiting", reviewed.pk: "reviewed", old.pk: "old_ankle"}

    response = clinician_api.get(f"/api/v1/studies?{query}")

    assert response.status_code == 200
    assert {names[s["id"]] for s in response.json()["results"]} == expected


def test_invalid_filters_are_a_400_naming_each_parameter(clinician_api: Any) -> None:
    body = assert_problem(
        clinician_api.get("/api/v1/studies?state=lost&created_after=soon&verdict=maybe"),
        400,
        "validation_error",
    )
    assert {e["field"] for e in body["errors"]} == {"state", "created_after", "verdict"}


def test_list_queries_are_bounded(clinician_api: Any, django_assert_max_num_queries: Any) -> None:
    for _ in range(30):
        PredictionFactory.create(radiograph__study__state=Study.State.AWAITING_REVIEW)
    with django_assert_max_num_queries(6):
        response = clinician_api.get("/api/v1/studies?verdict=fractured&page_size=50")
    assert response.json()["count"] == 30


def test_search_queries_are_bounded(clinician_api: Any, django_assert_max_num_queries: Any) -> None:
    predictions = [
        PredictionFactory.create(radiograph__study__state=Study.State.AWAITING_REVIEW) for _ in range(5)
    ]
    mrn = predictions[0].radiograph.study.patient.mrn
    # As the plain list (6), plus looking up the patients with that MRN.
    with django_assert_max_num_queries(7):
        response = clinician_api.get(f"/api/v1/studies?search={mrn.lower()}")
    assert response.json()["count"] == 1


def test_detail_has_radiographs_with_prediction_and_latest_review(
    clinician_api: Any, django_assert_max_num_queries: Any
) -> None:
    prediction = PredictionFactory.create()
    study = prediction.radiograph.study
    RadiographFactory.create(study=study, position=1)
    with django_assert_max_num_queries(8):
        body = clinician_api.get(f"/api/v1/studies/{study.pk}").json()
    assert body["patient"]["mrn"] == study.patient.mrn
    first, second = body["radiographs"]
    assert first["prediction"]["probability"] == prediction.probability
    assert first["prediction"]["heatmap_url"] is None
    assert second["prediction"] is None and second["status"] == "queued"


def test_unknown_study_is_a_404_problem(clinician_api: Any) -> None:
    assert_problem(clinician_api.get("/api/v1/studies/999999"), 404, "not_found")
    assert_problem(clinician_api.get("/api/v1/studies/99999999999999999999999"), 404, "not_found")
