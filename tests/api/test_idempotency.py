"""Idempotency-Key: a retry replays the first response; a reused key with another body is refused."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest
from django.db import IntegrityError, connection
from django.test.client import encode_multipart
from django.utils import timezone
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from radiology.api.idempotency import _claim, idempotency_purge_expired, request_fingerprint
from radiology.api.problems import Problem
from radiology.models import AuditEvent, Batch, IdempotencyRecord, Label, Review, Study
from tests.api.conftest import assert_problem, png_bytes, study_form, token_client, upload
from tests.factories import ClinicianFactory, PredictionFactory

KEY = "6c8f2d0e-9a1b-4c3d-8e7f-0a1b2c3d4e5f"


def _create(client: Any, key: str = KEY, **form: Any) -> Any:
    files = form.pop("files", None) or [upload("kaggle_fractured_1.jpg")]
    return client.post(
        "/api/v1/studies", study_form(files=files, **form), format="multipart", HTTP_IDEMPOTENCY_KEY=key
    )


@pytest.mark.django_db
def test_a_retried_upload_replays_the_first_response(
    clinician_api: Any, dispatched: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        first = _create(clinician_api)
        second = _create(clinician_api)

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Location"] == first["Location"]
    assert second["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert Study.objects.count() == 1
    assert len(dispatched.sent) == 1, "the retry must not send the radiograph again"


@pytest.mark.django_db
def test_the_multipart_boundary_does_not_change_the_request(clinician_api: Any) -> None:
    data = study_form(files=[upload("kaggle_fractured_1.jpg")])
    responses = []
    for boundary in ("boundary-one", "another-boundary-0123456789"):
        for part in data["files"]:
            part.seek(0)
        responses.append(
            clinician_api.post(
                "/api/v1/studies",
                encode_multipart(boundary, data),
                content_type=f"multipart/form-data; boundary={boundary}",
                HTTP_IDEMPOTENCY_KEY=KEY,
            )
        )
    assert [r.status_code for r in responses] == [201, 201]
    assert responses[1]["Idempotent-Replayed"] == "true"
    assert Study.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_a_422(clinician_api: Any) -> None:
    assert _create(clinician_api).status_code == 201
    response = _create(clinician_api, accession_number="ACC-OTHER")
    assert_problem(response, 422, "idempotency_key_reused")
    other_file = _create(clinician_api, files=[upload("kaggle_fractured_2.jpg")])
    assert_problem(other_file, 422, "idempotency_key_reused")
    assert list(Study.objects.values_list("accession_number", flat=True)) == ["ACC-100"]


@pytest.mark.django_db
def test_the_same_key_on_another_endpoint_is_a_422(clinician_api: Any) -> None:
    assert _create(clinician_api).status_code == 201
    radiograph = PredictionFactory.create().radiograph
    response = clinician_api.post(
        f"/api/v1/radiographs/{radiograph.pk}/reviews",
        {"decision": "confirm"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=KEY,
    )
    assert_problem(response, 422, "idempotency_key_reused")
    assert Review.objects.count() == 0


@pytest.mark.django_db
def test_keys_belong_to_their_caller(clinician_api: Any, roles: None) -> None:
    assert _create(clinician_api).status_code == 201
    other = token_client(ClinicianFactory.create(username="dr.other"))
    assert_problem(_create(other), 409, "duplicate_accession")  # did the work: not a replay of ours
    assert _create(other, accession_number="ACC-200").status_code == 201  # errors are not kept: key free


@pytest.mark.django_db
def test_an_error_is_not_stored_so_the_key_can_be_retried(clinician_api: Any) -> None:
    assert_problem(_create(clinician_api, files=[upload("bad.png", b"not an image")]), 422, "files_rejected")
    assert IdempotencyRecord.objects.count() == 0
    response = _create(clinician_api)
    assert response.status_code == 201 and "Idempotent-Replayed" not in response


@pytest.mark.django_db
def test_review_and_batch_submissions_are_idempotent(clinician_api: Any) -> None:
    radiograph = PredictionFactory.create(label=Label.FRACTURED).radiograph
    url = f"/api/v1/radiographs/{radiograph.pk}/reviews"
    reviews = [
        clinician_api.post(url, {"decision": "confirm"}, format="json", HTTP_IDEMPOTENCY_KEY="review-1")
        for _ in range(2)
    ]
    assert [r.status_code for r in reviews] == [201, 201] and reviews[0].json() == reviews[1].json()
    assert Review.objects.count() == 1

    manifest = json.dumps(
        {
            "studies": [
                {
                    "accession_number": "B-1",
                    "mrn": "M-1",
                    "patient_name": "A B",
                    "body_region": "hand",
                    "files": ["a.png"],
                }
            ]
        }
    )
    batches = [
        clinician_api.post(
            "/api/v1/batches",
            {"manifest": manifest, "files": [upload("a.png", png_bytes())]},
            format="multipart",
            HTTP_IDEMPOTENCY_KEY="batch-1",
        )
        for _ in range(2)
    ]
    assert [r.status_code for r in batches] == [202, 202] and batches[0].json() == batches[1].json()
    assert Batch.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "naïve-key", "tab\tkey"])
def test_a_malformed_key_is_a_400(clinician_api: Any, key: str) -> None:
    assert_problem(_create(clinician_api, key=key), 400, "invalid_idempotency_key")
    assert Study.objects.count() == 0


def _review_request(user: Any, radiograph_id: int, key: str) -> tuple[str, Request]:
    path = f"/api/v1/radiographs/{radiograph_id}/reviews"
    wsgi = APIRequestFactory().post(path, {"decision": "confirm"}, format="json")
    return path, Request(wsgi, parsers=[JSONParser()])


@pytest.mark.django_db
def test_a_request_still_in_progress_is_a_409_until_it_goes_stale(clinician_api: Any, clinician: Any) -> None:
    radiograph = PredictionFactory.create().radiograph
    path, request = _review_request(clinician, radiograph.pk, "busy")
    record = IdempotencyRecord.objects.create(
        user=clinician, key="busy", fingerprint=request_fingerprint(request)
    )

    response = clinician_api.post(path, {"decision": "confirm"}, format="json", HTTP_IDEMPOTENCY_KEY="busy")
    assert_problem(response, 409, "idempotency_in_progress")
    assert response["Retry-After"] == "1"
    assert Review.objects.count() == 0

    # Its process died: after the stale timeout a retry takes the record over and does the work once.
    IdempotencyRecord.objects.filter(pk=record.pk).update(updated_at=timezone.now() - dt.timedelta(hours=1))
    response = clinician_api.post(path, {"decision": "confirm"}, format="json", HTTP_IDEMPOTENCY_KEY="busy")
    assert response.status_code == 201
    assert Review.objects.count() == 1
    record.refresh_from_db()
    assert record.state == IdempotencyRecord.State.COMPLETED and record.response_status == 201


@pytest.mark.django_db
def test_an_expired_key_may_be_used_afresh_and_is_purged(clinician_api: Any, clinician: Any) -> None:
    assert _create(clinician_api).status_code == 201
    IdempotencyRecord.objects.update(created_at=timezone.now() - dt.timedelta(days=2))
    response = _create(clinician_api, accession_number="ACC-NEW")
    assert response.status_code == 201 and "Idempotent-Replayed" not in response
    IdempotencyRecord.objects.update(created_at=timezone.now() - dt.timedelta(days=2))
    assert idempotency_purge_expired() == 1
    assert IdempotencyRecord.objects.count() == 0


@pytest.mark.django_db
def test_the_database_allows_one_record_per_user_and_key(clinician: Any) -> None:
    IdempotencyRecord.objects.create(user=clinician, key="k", fingerprint="a")
    with pytest.raises(IntegrityError):
        IdempotencyRecord.objects.create(user=clinician, key="k", fingerprint="a")


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_do_the_work_once(clinician: Any) -> None:
    """Eight threads claim one key at once, each on its own connection: exactly one may proceed."""
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        try:
            barrier.wait()
            record, _replay = _claim(user=clinician, key="race", fingerprint="f" * 64)
            outcomes.append("claimed" if record is not None else "replayed")
        except Problem as problem:
            outcomes.append(problem.problem_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["claimed"] + ["idempotency_in_progress"] * 7
    assert IdempotencyRecord.objects.filter(key="race").count() == 1


class _ProcessKilled(BaseException):
    """The web process dying (kill -9, the OOM killer) at a given point of a request."""


@pytest.mark.django_db(transaction=True)
def test_a_process_killed_after_the_upload_committed_replays_it_on_retry(
    clinician_api: Any, dispatched: Any, monkeypatch: Any, settings: Any
) -> None:
    """bench/chaos.py ("web killed mid-upload", embedded): killed after the study's commit but before its
    Idempotency-Key was marked completed, the key stayed "in progress"; the retry took it over when stale
    and created the study again: 409 duplicate_accession for ever (and a second study without an
    accession number). The key is now completed in the study's own transaction."""
    from django.db import transaction

    from radiology.api import idempotency

    complete = idempotency._complete

    def dies_after_commit(record: Any, response: Any) -> None:
        if not transaction.get_connection().in_atomic_block:
            raise _ProcessKilled  # the work has committed; the process dies before the key is completed
        complete(record, response)

    monkeypatch.setattr(idempotency, "_complete", dies_after_commit)
    with pytest.raises(_ProcessKilled):
        _create(clinician_api)
    assert Study.objects.count() == 1

    monkeypatch.setattr(idempotency, "_complete", complete)
    settings.API_IDEMPOTENCY_STALE_SECONDS = 0  # the client retries after the key went stale
    retry = _create(clinician_api)
    assert retry.status_code == 201, retry.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert Study.objects.count() == 1


def _two_study_batch(client: Any, key: str, prefix: str = "K") -> Any:
    manifest = {
        "studies": [
            {
                "accession_number": f"{prefix}-{n}",
                "mrn": f"M-{n}",
                "patient_name": "A B",
                "body_region": "hand",
                "files": [f"{n}.png"],
            }
            for n in (1, 2)
        ]
    }
    return client.post(
        "/api/v1/batches",
        {
            "manifest": json.dumps(manifest),
            "files": [upload("1.png", png_bytes()), upload("2.png", png_bytes())],
        },
        format="multipart",
        HTTP_IDEMPOTENCY_KEY=key,
    )


@pytest.mark.django_db(transaction=True)
def test_a_batch_cut_short_by_a_dead_process_is_resumed_by_its_retry(
    clinician_api: Any, dispatched: Any, monkeypatch: Any, settings: Any
) -> None:
    """The web process dies after the batch's first study committed (each study commits on its own): the
    retry with the same Idempotency-Key, once the key went stale, completes that batch with the second
    study. It used to start a second batch whose first study failed as a duplicate accession number."""
    from radiology.services import batches

    create_item = batches._batch_item_create
    calls = []

    def dies_before_the_second_study(*args: Any) -> Any:
        calls.append(args[1])
        if args[1] == 1:
            raise _ProcessKilled
        return create_item(*args)

    monkeypatch.setattr(batches, "_batch_item_create", dies_before_the_second_study)
    with pytest.raises(_ProcessKilled):
        _two_study_batch(clinician_api, "batch-cut")
    assert list(Study.objects.values_list("accession_number", flat=True)) == ["K-1"]

    monkeypatch.setattr(batches, "_batch_item_create", create_item)
    settings.API_IDEMPOTENCY_STALE_SECONDS = 0  # the client retries after the key went stale
    retry = _two_study_batch(clinician_api, "batch-cut")
    assert retry.status_code == 202, retry.json()
    body = retry.json()
    assert body["items"] == {"total": 2, "created": 2, "failed": 0}
    assert Batch.objects.count() == 1 and str(Batch.objects.get().pk) == body["id"]
    assert sorted(Study.objects.values_list("accession_number", flat=True)) == ["K-1", "K-2"]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.BATCH_SUBMITTED).count() == 1
    again = _two_study_batch(clinician_api, "batch-cut")  # completed now: replayed
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true" and again.json() == body


@pytest.mark.django_db
def test_an_expired_key_starts_a_new_batch_and_the_old_one_gives_the_key_up(
    clinician_api: Any, clinician: Any, settings: Any
) -> None:
    first = _two_study_batch(clinician_api, "batch-old")
    assert first.status_code == 202
    Batch.objects.update(
        created_at=timezone.now() - dt.timedelta(hours=settings.API_IDEMPOTENCY_TTL_HOURS + 1)
    )
    IdempotencyRecord.objects.update(
        created_at=timezone.now() - dt.timedelta(hours=settings.API_IDEMPOTENCY_TTL_HOURS + 1)
    )
    second = _two_study_batch(clinician_api, "batch-old", prefix="L")
    assert second.status_code == 202 and second.json()["id"] != first.json()["id"]
    assert Batch.objects.get(pk=first.json()["id"]).idempotency_key == ""
    assert Batch.objects.get(pk=second.json()["id"]).idempotency_key == "batch-old"
