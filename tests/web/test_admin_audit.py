"""Admin corrections of clinical records are audited: who changed which field, from what to what."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.admin.sites import site
from django.test import Client
from django.urls import reverse

from radiology.admin import AuditEventAdmin
from radiology.models import AuditEvent
from tests.web.conftest import MakeStudy

pytestmark = pytest.mark.django_db


def _edits() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AuditEvent.Action.RECORD_EDITED).order_by("pk"))


def test_correcting_a_patient_is_audited_with_before_and_after(
    admin_client_: Client, admin: Any, make_study: MakeStudy
) -> None:
    patient = make_study(probabilities=[0.5]).patient
    patient.date_of_birth = dt.date(1950, 1, 2)
    patient.save()
    response = admin_client_.post(
        reverse("admin:radiology_patient_change", args=[patient.pk]),
        {"name": "Corrected Name", "date_of_birth": "1950-02-01", "sex": patient.sex},
        REMOTE_ADDR="10.9.8.7",
    )
    assert response.status_code == 302, response.content.decode()[:1000]
    [event] = _edits()
    assert event.actor == admin
    assert (event.target_type, event.target_id) == ("patient", str(patient.pk))
    assert event.client_ip == "10.9.8.7"
    assert event.details["model"] == "radiology.Patient"
    assert event.details["changes"]["date_of_birth"] == {"from": "1950-01-02", "to": "1950-02-01"}
    assert event.details["changes"]["name"]["to"] == "Corrected Name"
    assert set(event.details["changes"]) == {"name", "date_of_birth"}


def test_editing_a_study_is_audited_and_saving_unchanged_is_not(
    admin_client_: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.5])
    radiograph = study.radiographs.get()
    url = reverse("admin:radiology_study_change", args=[study.pk])
    form = {
        "body_region": study.body_region,
        "clinical_notes": study.clinical_notes,
        "study_date": "",
        "radiographs-TOTAL_FORMS": "1",
        "radiographs-INITIAL_FORMS": "1",
        "radiographs-MIN_NUM_FORMS": "0",
        "radiographs-MAX_NUM_FORMS": "1000",
        "radiographs-0-id": radiograph.pk,
        "radiographs-0-study": study.pk,
    }
    assert admin_client_.post(url, form).status_code == 302
    assert _edits() == []

    assert admin_client_.post(url, {**form, "body_region": "ankle"}).status_code == 302
    [event] = _edits()
    assert event.details["changes"] == {"body_region": {"from": study.body_region, "to": "ankle"}}


def test_the_audit_lists_details_as_their_json_reads() -> None:
    event = AuditEvent(
        details={"before": None, "blinded": True, "changes": {"name": {"to": "Zoë"}}, "why": "x"}
    )
    summary = AuditEventAdmin(AuditEvent, site).summary(event)

    assert summary == 'before=null, blinded=true, changes={"name": {"to": "Zoë"}}, why=x'
