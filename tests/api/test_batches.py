"""Batch submission: a manifest plus files, per-study outcomes, status polling, nothing half-written."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from radiology.models import AuditEvent, Batch, BatchItem, Patient, Radiograph, Study
from radiology.services import prediction_store
from tests.api.conftest import assert_problem, png_bytes, upload
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db


def _study(accession: str, files: list[str], **fields: str) -> dict[str, Any]:
    return {
        "accession_number": accession,
        "mrn": f"MRN-{accession}",
        "patient_name": "Ada Lovelace",
        "body_region": "wrist",
        "files": files,
        **fields,
    }


def _submit(client: Any, manifest: dict[str, Any], files: list[Any], **headers: str) -> Any:
    return client.post(
        "/api/v1/batches", {"manifest": json.dumps(manifest), "files": files}, format="multipart", **headers
    )


def _stored_files() -> list[str]:
    return default_storage.listdir("radiographs")[1] if default_storage.exists("radiographs") else []


def test_each_study_succeeds_or_fails_on_its_own(
    clinician_api: Any, dispatched: Any, django_capture_on_commit_callbacks: Any
) -> None:
    StudyFactory.create(accession_number="DUP")
    manifest = {
        "reference": "night run",
        "studies": [
            _study("B-1", ["a.jpg", "bad.jpg"]),
            _study("DUP", ["b.png"]),  # the accession number exists
            _study("B-3", ["c.png"], body_region=""),  # no body region and no DICOM to supply one
            _study("B-4", ["d.png"]),
        ],
    }
    files = [
        upload("a.jpg", upload("kaggle_fractured_1.jpg").read()),
        upload("bad.jpg", upload("kaggle_truncated.jpg").read()),
        upload("b.png", png_bytes(30)),
        upload("c.png", png_bytes(60)),
        upload("d.png", png_bytes(120)),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = _submit(clinician_api, manifest, files)

    assert response.status_code == 202, response.content
    body = response.json()
    batch = Batch.objects.get()
    assert body["id"] == str(batch.pk) and batch.reference == "night run"
    assert response["Location"] == body["status_url"] == f"http://testserver/api/v1/batches/{batch.pk}"
    assert body["items"] == {"total": 4, "created": 2, "failed": 2}
    assert body["radiographs"] == {
        "total": 2,
        "queued": 2,
        "running": 0,
        "predicted": 0,
        "failed": 0,
        "not_analysed": 0,
    }
    assert body["state"] == "processing"
    results = body["results"]
    assert [r["outcome"] for r in results] == ["created", "failed", "failed", "created"]
    assert results[0]["errors"] == [
        {"file": "bad.jpg", "code": "unreadable_image", "message": results[0]["errors"][0]["message"]}
    ]
    assert results[1]["errors"][0]["code"] == "duplicate_accession"
    assert results[2]["errors"][0] == {
        "code": "missing_field",
        "message": results[2]["errors"][0]["message"],
        "field": "body_region",
    }
    assert results[3]["errors"] == [] and len(results[3]["radiographs"]) == 1
    # Failed items left nothing: only the two new studies (and the existing one) exist.
    assert set(Study.objects.values_list("accession_number", flat=True)) == {"DUP", "B-1", "B-4"}
    assert Radiograph.objects.count() == 2 and len(_stored_files()) == 2
    assert not Patient.objects.filter(mrn__in=["MRN-DUP", "MRN-B-3"]).exists()
    assert sorted(dispatched.sent) == sorted(Radiograph.objects.values_list("pk", flat=True))
    event = AuditEvent.objects.get(action=AuditEvent.Action.BATCH_SUBMITTED)
    assert event.details["created"] == 2 and event.details["failed"] == 2


def test_status_reports_progress_until_complete(clinician_api: Any) -> None:
    response = _submit(
        clinician_api,
        {"studies": [_study("S-1", ["a.png", "b.png"])]},
        [upload("a.png", png_bytes(40)), upload("b.png", png_bytes(80))],
    )
    url = response.json()["status_url"]
    first, second = Radiograph.objects.order_by("pk")
    prediction_store(
        radiograph_id=first.pk,
        model_version="m1",
        probability=0.7,
        label="fractured",
        band="fracture",
        threshold=0.5,
        heatmap_png=None,
        inference_ms=3.0,
    )
    body = clinician_api.get(url).json()
    assert body["state"] == "processing"
    assert body["radiographs"] == {
        "total": 2,
        "queued": 1,
        "running": 0,
        "predicted": 1,
        "failed": 0,
        "not_analysed": 0,
    }

    prediction_store(
        radiograph_id=second.pk,
        model_version="m1",
        probability=0.2,
        label="not_fractured",
        band="no_fracture",
        threshold=0.5,
        heatmap_png=None,
        inference_ms=3.0,
    )
    body = clinician_api.get(url).json()
    assert body["state"] == "complete"
    labels = [r["prediction"]["label"] for r in body["results"][0]["radiographs"]]
    assert labels == ["fractured", "not_fractured"]


def test_the_manifest_may_be_a_file_part(clinician_api: Any) -> None:
    manifest = SimpleUploadedFile(
        "manifest.json", json.dumps({"studies": [_study("F-1", ["a.png"])]}).encode(), "application/json"
    )
    response = clinician_api.post(
        "/api/v1/batches", {"manifest": manifest, "files": [upload("a.png", png_bytes())]}, format="multipart"
    )
    assert response.status_code == 202
    assert Study.objects.filter(accession_number="F-1").exists()


def test_when_no_study_can_be_created_nothing_is_stored(clinician_api: Any) -> None:
    StudyFactory.create(accession_number="DUP")
    response = _submit(
        clinician_api,
        {"studies": [_study("DUP", ["a.png"]), _study("N-2", ["b.png"])]},
        [upload("a.png", png_bytes()), upload("b.png", b"not an image")],
    )
    body = assert_problem(response, 422, "batch_rejected")
    assert body["errors"] == [
        {
            "code": "duplicate_accession",
            "message": body["errors"][0]["message"],
            "field": "manifest.studies.0.accession_number",
        },
        {
            "file": "b.png",
            "code": "unsupported_format",
            "message": body["errors"][1]["message"],
            "field": "manifest.studies.1",
        },
    ]
    assert Batch.objects.count() == 0 and BatchItem.objects.count() == 0
    assert Study.objects.count() == 1 and Radiograph.objects.count() == 0 and _stored_files() == []


@pytest.mark.parametrize(
    ("manifest", "files", "fields"),
    [
        ("{not json", ["a.png"], {"manifest"}),
        (json.dumps({"studies": []}), ["a.png"], {"manifest.studies"}),
        (
            json.dumps({"studies": [_study("X", ["a.png"], body_region="elbw")]}),
            ["a.png"],
            {"manifest.studies.0.body_region"},
        ),
        (
            json.dumps({"studies": [_study("X", ["missing.png"])]}),
            ["a.png"],
            {"manifest.studies.0.files.0", "files"},
        ),
        (
            json.dumps({"studies": [_study("X", ["a.png"]), _study("Y", ["a.png"])]}),
            ["a.png"],
            {"manifest.studies.1.files.0"},
        ),
        (json.dumps({"studies": [_study("X", ["a.png"])]}), ["a.png", "a.png"], {"files"}),
        (json.dumps([1, 2]), ["a.png"], {"manifest"}),
    ],
)
def test_a_manifest_that_does_not_match_the_files_is_a_400_and_stores_nothing(
    clinician_api: Any, manifest: str, files: list[str], fields: set[str]
) -> None:
    parts = [upload(name, png_bytes(10 + i)) for i, name in enumerate(files)]
    response = clinician_api.post(
        "/api/v1/batches", {"manifest": manifest, "files": parts}, format="multipart"
    )
    body = assert_problem(response, 400, "validation_error")
    assert {e["field"] for e in body["errors"]} == fields
    assert Batch.objects.count() == 0 and Study.objects.count() == 0


def test_batch_limits_come_from_settings(clinician_api: Any, settings: Any) -> None:
    settings.API_BATCH_MAX_STUDIES = 1
    settings.API_BATCH_MAX_FILES = 1
    response = _submit(
        clinician_api,
        {"studies": [_study("L-1", ["a.png"]), _study("L-2", ["b.png"])]},
        [upload("a.png", png_bytes(1)), upload("b.png", png_bytes(2))],
    )
    body = assert_problem(response, 400, "validation_error")
    assert {e["field"] for e in body["errors"]} == {"files", "manifest.studies"}
    assert Batch.objects.count() == 0


def test_an_oversized_request_is_refused_before_reading_it(clinician_api: Any, settings: Any) -> None:
    settings.API_MAX_REQUEST_BYTES = 200
    response = _submit(clinician_api, {"studies": [_study("Z", ["a.png"])]}, [upload("a.png", png_bytes())])
    assert_problem(response, 413, "request_too_large")
    assert Batch.objects.count() == 0


def test_an_admin_sees_any_batch(clinician_api: Any, admin_api: Any) -> None:
    url = _submit(
        clinician_api, {"studies": [_study("V-1", ["a.png"])]}, [upload("a.png", png_bytes())]
    ).json()["status_url"]
    assert admin_api.get(url).status_code == 200


def test_an_unknown_batch_is_a_404(clinician_api: Any) -> None:
    assert_problem(
        clinician_api.get("/api/v1/batches/00000000-0000-0000-0000-000000000000"), 404, "not_found"
    )
    assert_problem(clinician_api.get("/api/v1/batches/not-a-uuid"), 404, "not_found")
