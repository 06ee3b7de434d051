"""Hostile or unlucky requests get a 4xx or a 503 problem, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest

from radiology.models import IdempotencyRecord, Radiograph, Study
from tests.api.conftest import assert_problem, png_bytes, upload
from tests.factories import PredictionFactory

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000 + "]" * 100_000  # Python's JSON parser recurses once per level


def _study(accession: str, files: list[str]) -> dict[str, Any]:
    return {
        "accession_number": accession,
        "mrn": f"M-{accession}",
        "patient_name": "Ada Lovelace",
        "body_region": "wrist",
        "files": files,
    }


def test_a_deeply_nested_manifest_is_a_400(clinician_api: Any) -> None:
    manifest = '{"studies": ' + DEEP + "}"
    response = clinician_api.post(
        "/api/v1/batches", {"manifest": manifest, "files": [upload("a.png", png_bytes())]}, format="multipart"
    )
    assert_problem(response, 400, "bad_request")
    assert Study.objects.count() == 0


def test_a_deeply_nested_json_body_is_a_400(clinician_api: Any, clinician: Any) -> None:
    prediction = PredictionFactory.create(radiograph__study__uploaded_by=clinician)
    response = clinician_api.post(
        f"/api/v1/radiographs/{prediction.radiograph.pk}/reviews",
        data='{"decision": ' + DEEP + "}",
        content_type="application/json",
    )
    assert_problem(response, 400, "bad_request")


def test_more_files_than_django_reads_is_a_422_too_many_files(clinician_api: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    files = [upload(f"r{i}.png", png_bytes(i)) for i in range(4)]
    manifest = json.dumps({"studies": [_study("MANY", [f"r{i}.png" for i in range(4)])]})
    response = clinician_api.post(
        "/api/v1/batches", {"manifest": manifest, "files": files}, format="multipart"
    )
    assert_problem(response, 422, "too_many_files")
    assert Study.objects.count() == 0


def test_a_batch_while_storage_is_down_is_a_503_to_retry_with_the_same_key(
    clinician_api: Any, monkeypatch: Any
) -> None:
    from django.core.files.storage import FileSystemStorage

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileSystemStorage, "_save", refuse)
    manifest = json.dumps({"studies": [_study("S-1", ["a.png"]), _study("S-2", ["b.png"])]})
    files = [upload("a.png", png_bytes(10)), upload("b.png", png_bytes(20))]
    response = clinician_api.post(
        "/api/v1/batches",
        {"manifest": manifest, "files": files},
        format="multipart",
        HTTP_IDEMPOTENCY_KEY="retry-after-storage-is-back",
    )
    body = assert_problem(response, 503, "storage_unavailable")
    assert response["Retry-After"] == "30"
    assert "No space" not in body["detail"]
    assert Study.objects.count() == 0 and Radiograph.objects.count() == 0
    assert not IdempotencyRecord.objects.exists()  # the key is free for the retry


def _database_gone(*args: Any, **kwargs: Any) -> Any:
    from django.db import OperationalError

    raise OperationalError("server closed the connection unexpectedly")


def test_the_database_out_of_reach_is_a_503_to_retry_not_a_500(clinician_api: Any, monkeypatch: Any) -> None:
    """A PostgreSQL restart under the API (bench/chaos.py, "database down"): clients retry a 503 with
    Retry-After; a 500 says the request itself broke something."""
    from radiology import selectors

    monkeypatch.setattr(selectors, "study_queue", _database_gone)
    response = clinician_api.get("/api/v1/studies")
    assert_problem(response, 503, "database_unavailable")
    assert response["Retry-After"]


def test_a_page_while_the_database_is_out_of_reach_is_a_503(clinician_client: Any, monkeypatch: Any) -> None:
    from radiology import selectors

    monkeypatch.setattr(selectors, "study_queue", _database_gone)
    clinician_client.raise_request_exception = False  # answered by handler500, as in production
    response = clinician_client.get("/queue/")
    assert response.status_code == 503
    assert response["Retry-After"]
    assert b"Temporarily unavailable" in response.content
