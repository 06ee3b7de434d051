"""A study the model declined entirely: the clinician reads it without the model and takes it off the
Not analysed worklist; audited; a declined image arriving later puts it back."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from radiology.models import AuditEvent, Radiograph, Study
from radiology.services.triage import study_refresh_triage
from tests.factories import PredictionFactory, RadiographFactory, decline
from tests.web.conftest import MakeStudy

pytestmark = pytest.mark.django_db

QUEUE = reverse("radiology:queue")


def _declined_study(make_study: MakeStudy, accession: str = "DECLINED") -> Study:
    study = make_study(probabilities=[], accession_number=accession)
    decline(RadiographFactory.create(study=study, position=0))
    study.refresh_from_db()
    assert study.state == Study.State.NOT_ANALYSED
    return study


def _read(client: Client, study: Study) -> Any:
    return client.post(reverse("radiology:study_read_without_model", args=[study.pk]), follow=True)


def _tab_count(page: str, state: str) -> str:
    found = re.search(rf'data-state="{state}"[^>]*>[^<]*<span class="count"[^>]*>(\d+)</span>', page)
    return found.group(1) if found else "none"


def test_a_declined_study_read_without_the_model_leaves_the_worklist(
    clinician_client: Client, clinician: Any, make_study: MakeStudy
) -> None:
    study = _declined_study(make_study)
    page = clinician_client.get(reverse("radiology:study_detail", args=[study.pk])).content.decode()
    assert "The model did not analyse this study" in page
    assert reverse("radiology:study_read_without_model", args=[study.pk]) in page

    response = _read(clinician_client, study)
    assert response.status_code == 200
    assert f"Study {study.accession_number}: read without the model." in response.content.decode()
    study.refresh_from_db()
    assert study.state == Study.State.REVIEWED
    assert study.read_without_model_by == clinician
    assert study.reviewed_at == study.read_without_model_at is not None
    event = AuditEvent.objects.get(action=AuditEvent.Action.STUDY_READ_WITHOUT_MODEL)
    assert event.actor == clinician and event.target_id == str(study.pk)

    tabs = clinician_client.get(QUEUE).content.decode()
    assert _tab_count(tabs, "not_analysed") == "0" and _tab_count(tabs, "reviewed") == "1"
    reviewed = clinician_client.get(QUEUE, {"state": "reviewed"}).content.decode()
    row = reviewed.split(f'id="study-row-{study.pk}"', 1)[1].split("</tr>", 1)[0]
    text = lambda cell: " ".join(re.sub(r"<[^>]+>", " ", cell).split())  # noqa: E731
    status = text(row.split('col-status">', 1)[1])
    assert status == f"Reviewed read without the model · {clinician.get_username()}"
    assert text(row.split('col-model">', 1)[1].split("</td>", 1)[0]) == "No verdict"  # not "yet"
    page = clinician_client.get(reverse("radiology:study_detail", args=[study.pk])).content.decode()
    assert "The model did not analyse this study" not in page
    assert f"read without it by <strong>{clinician.get_username()}</strong>" in page


def test_only_a_declined_study_can_be_read_without_the_model(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    awaiting = make_study(probabilities=[0.9], accession_number="AWAITING")
    response = _read(clinician_client, awaiting)
    assert "Only a study the model did not analyse can be marked as read without it." in (
        response.content.decode()
    )
    awaiting.refresh_from_db()
    assert awaiting.state == Study.State.AWAITING_REVIEW and awaiting.read_without_model_at is None
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.STUDY_READ_WITHOUT_MODEL).exists()
    # Twice is refused too: the first read stands.
    study = _declined_study(make_study)
    _read(clinician_client, study)
    first = Study.objects.get(pk=study.pk).read_without_model_at
    assert "Only a study the model did not analyse" in _read(clinician_client, study).content.decode()
    assert Study.objects.get(pk=study.pk).read_without_model_at == first


def test_a_non_clinician_cannot_take_a_study_off_the_worklist(
    outsider_client: Client, make_study: MakeStudy
) -> None:
    study = _declined_study(make_study)
    response = outsider_client.post(reverse("radiology:study_read_without_model", args=[study.pk]))
    assert response.status_code == 403
    study.refresh_from_db()
    assert study.state == Study.State.NOT_ANALYSED and study.read_without_model_at is None


def test_an_image_arriving_after_the_read_puts_the_study_back_in_the_work(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    declined_later = _declined_study(make_study, "LATE-DECLINED")
    _read(clinician_client, declined_later)
    decline(RadiographFactory.create(study=declined_later, position=1))
    declined_later.refresh_from_db()
    # The read covered the first image only: the new one has not been read.
    assert declined_later.state == Study.State.NOT_ANALYSED and declined_later.reviewed_at is None

    predicted_later = _declined_study(make_study, "LATE-PREDICTED")
    _read(clinician_client, predicted_later)
    radiograph = RadiographFactory.create(
        study=predicted_later, position=1, status=Radiograph.Status.PREDICTED
    )
    PredictionFactory.create(radiograph=radiograph, probability=0.8)
    study_refresh_triage(study_id=predicted_later.pk)
    predicted_later.refresh_from_db()
    assert predicted_later.state == Study.State.AWAITING_REVIEW
    # Its row and page show the new verdict, not the earlier "read without the model".
    awaiting = clinician_client.get(QUEUE, {"state": "awaiting_review"}).content.decode()
    row = awaiting.split(f'id="study-row-{predicted_later.pk}"', 1)[1].split("</tr>", 1)[0]
    assert ">Fracture · 80 %<" in row and "No verdict" not in row
    page = clinician_client.get(reverse("radiology:study_detail", args=[predicted_later.pk])).content.decode()
    assert 'id="read-without-model"' not in page


def test_the_api_says_who_read_a_declined_study_without_the_model(
    clinician_client: Client, clinician: Any, make_study: MakeStudy
) -> None:
    study = _declined_study(make_study)
    url = reverse("api:study_detail", args=[study.pk])
    before = clinician_client.get(url).json()
    assert before["state"] == "not_analysed"
    assert before["read_without_model_by"] is None and before["read_without_model_at"] is None
    _read(clinician_client, study)
    after = clinician_client.get(url).json()
    assert after["state"] == "reviewed" and after["read_without_model_by"] == clinician.get_username()
    assert after["read_without_model_at"] == after["reviewed_at"] is not None


def test_an_integrator_records_the_read_through_the_api(
    clinician_client: Client, clinician: Any, make_study: MakeStudy
) -> None:
    study = _declined_study(make_study)
    url = reverse("api:study_read_without_model", args=[study.pk])
    response = clinician_client.post(url)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == study.pk and body["state"] == "reviewed"
    assert body["read_without_model_by"] == clinician.get_username()
    again = clinician_client.post(url)
    assert again.status_code == 422 and again.json()["code"] == "not_declined"
    assert AuditEvent.objects.filter(action=AuditEvent.Action.STUDY_READ_WITHOUT_MODEL).count() == 1
