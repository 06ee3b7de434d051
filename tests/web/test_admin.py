"""The Django admin: open to the admin role (the group), evidence read-only, refusals audited, CSV export."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import reverse

from radiology.models import AuditEvent, Patient, Prediction, Radiograph, Review, Study
from tests.factories import PredictionFactory, UserFactory
from tests.web.conftest import MakeStudy

pytestmark = pytest.mark.django_db

READ_ONLY = [AuditEvent, Prediction, Review, Radiograph]


def test_an_admin_group_member_who_is_not_staff_can_use_the_admin(roles: None) -> None:
    user = UserFactory.create(username="group.admin", groups=["admin"], is_staff=False)
    client = Client()
    client.force_login(user)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    for model in (Patient, Study, Radiograph, Prediction, Review, AuditEvent):
        assert f"/admin/radiology/{model._meta.model_name}/" in response.content.decode()


def test_staff_flag_alone_does_not_open_the_admin(roles: None) -> None:
    user = UserFactory.create(username="staff.only", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(reverse("admin:index")).status_code == 403
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ACCESS_DENIED, actor=user).exists()


def test_clinicians_are_refused_with_an_audit_event(clinician_client: Client, clinician: Any) -> None:
    response = clinician_client.get(reverse("admin:radiology_prediction_changelist"))
    assert response.status_code == 403
    event = AuditEvent.objects.get(action=AuditEvent.Action.ACCESS_DENIED, actor=clinician)
    assert event.details["path"] == "/admin/radiology/prediction/"


def test_anonymous_visitors_go_to_the_one_sign_in_page(client: Client) -> None:
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert client.get(reverse("admin:login"))["Location"].startswith(reverse("login"))


@pytest.fixture
def records(make_study: MakeStudy) -> dict[str, Any]:
    study = make_study(probabilities=[0.9], reviews=[("override", "not_fractured", "hardware")])
    radiograph = study.radiographs.get()
    return {
        "study": study,
        "radiograph": radiograph,
        "prediction": Prediction.objects.get(radiograph=radiograph),
        "review": Review.objects.get(radiograph=radiograph),
        "auditevent": AuditEvent.objects.first(),
    }


@pytest.mark.parametrize("model", READ_ONLY, ids=lambda m: m.__name__)
def test_evidence_is_read_only_and_every_attempt_is_refused_and_audited(
    admin_client_: Client, admin: Any, records: dict[str, Any], model: Any
) -> None:
    name = model._meta.model_name
    obj = records[name]
    before = {m: m._default_manager.count() for m in READ_ONLY}
    snapshot = model.objects.filter(pk=obj.pk).values().get()

    assert admin_client_.get(reverse(f"admin:radiology_{name}_change", args=[obj.pk])).status_code == 200
    attempts = [
        ("get", reverse(f"admin:radiology_{name}_add")),
        ("post", reverse(f"admin:radiology_{name}_add")),
        ("post", reverse(f"admin:radiology_{name}_change", args=[obj.pk])),
        ("get", reverse(f"admin:radiology_{name}_delete", args=[obj.pk])),
        ("post", reverse(f"admin:radiology_{name}_delete", args=[obj.pk])),
    ]
    for method, url in attempts:
        refused_before = AuditEvent.objects.filter(
            action=AuditEvent.Action.ACCESS_DENIED, actor=admin, details__path=url
        ).count()
        response = getattr(admin_client_, method)(url, {"post": "yes"})
        assert response.status_code == 403, f"{method} {url}"
        assert (
            AuditEvent.objects.filter(
                action=AuditEvent.Action.ACCESS_DENIED, actor=admin, details__path=url
            ).count()
            == refused_before + 1
        )
    # A bulk delete through the changelist action is not offered either.
    changelist = admin_client_.get(reverse(f"admin:radiology_{name}_changelist")).content.decode()
    assert "delete_selected" not in changelist
    response = admin_client_.post(
        reverse(f"admin:radiology_{name}_changelist"),
        {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
    )
    assert model.objects.filter(pk=obj.pk).values().get() == snapshot
    assert {m: m._default_manager.count() for m in READ_ONLY if m is not AuditEvent} == {
        m: c for m, c in before.items() if m is not AuditEvent
    }


def test_patients_and_studies_accept_corrections_but_no_deletion(
    admin_client_: Client, records: dict[str, Any]
) -> None:
    study = records["study"]
    url = reverse("admin:radiology_study_change", args=[study.pk])
    response = admin_client_.post(
        url,
        {
            "body_region": "ankle",
            "clinical_notes": "Fell on ice",
            "study_date": "",
            "radiographs-TOTAL_FORMS": "1",
            "radiographs-INITIAL_FORMS": "1",
            "radiographs-MIN_NUM_FORMS": "0",
            "radiographs-MAX_NUM_FORMS": "1000",
            "radiographs-0-id": records["radiograph"].pk,
            "radiographs-0-study": study.pk,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    study.refresh_from_db()
    assert (study.body_region, study.clinical_notes) == ("ankle", "Fell on ice")
    assert study.state == Study.State.REVIEWED  # the triage summary is not editable
    assert admin_client_.post(reverse("admin:radiology_study_delete", args=[study.pk])).status_code == 403
    assert admin_client_.get(reverse("admin:radiology_patient_add")).status_code == 403


@pytest.mark.parametrize(
    ("model", "query"),
    [
        ("study", {"q": "ACC", "state__exact": "reviewed", "body_region__exact": "wrist"}),
        ("patient", {"q": "MRN", "sex__exact": "U"}),
        ("radiograph", {"q": "image", "status__exact": "predicted"}),
        ("prediction", {"q": "ACC", "model_version": "test-model-1", "label__exact": "fractured"}),
        ("review", {"q": "dr.ada", "decision__exact": "override", "reason_code__exact": "hardware"}),
        ("auditevent", {"q": "dr.ada", "action__exact": "review.submitted"}),
    ],
)
def test_changelists_search_and_filter(
    admin_client_: Client, records: dict[str, Any], model: str, query: dict[str, str]
) -> None:
    response = admin_client_.get(reverse(f"admin:radiology_{model}_changelist"), query)
    assert response.status_code == 200
    assert "0 results" not in response.content.decode(), f"{model} {query}"


def test_csv_export_action_writes_predictions_with_their_latest_review(
    admin_client_: Client, admin: Any, records: dict[str, Any]
) -> None:
    prediction = records["prediction"]
    response = admin_client_.post(
        reverse("admin:radiology_prediction_changelist"),
        {"action": "export_csv", "_selected_action": [prediction.pk]},
    )
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["prediction_id"], r["review_decision"], r["review_reason_code"]) for r in rows] == [
        (str(prediction.pk), "override", "hardware")
    ]
    event = AuditEvent.objects.get(action=AuditEvent.Action.EXPORT)
    assert event.actor == admin and event.details["rows"] == 1


def test_failed_radiographs_can_be_sent_again_from_the_admin(
    admin_client_: Client, make_study: MakeStudy, django_capture_on_commit_callbacks: Any, dispatched: Any
) -> None:
    study = make_study(probabilities=[0.4], failed=1)
    failed = study.radiographs.get(status="failed")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_.post(
            reverse("admin:radiology_radiograph_changelist"),
            {"action": "retry_failed", "_selected_action": [r.pk for r in study.radiographs.all()]},
        )
    failed.refresh_from_db()
    assert failed.status == "queued" and dispatched.sent == [failed.pk]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.RADIOGRAPH_RESENT).count() == 1


def test_admins_manage_accounts_and_lockouts_through_the_same_role(
    admin_client_: Client, outsider: Any
) -> None:
    assert admin_client_.get(reverse("admin:auth_user_change", args=[outsider.pk])).status_code == 200
    assert admin_client_.get(reverse("admin:auth_user_add")).status_code == 200
    assert admin_client_.get(reverse("admin:auth_group_changelist")).status_code == 200
    assert admin_client_.get(reverse("admin:axes_accessattempt_changelist")).status_code == 200
    assert admin_client_.get(reverse("admin:axes_accesslog_add")).status_code == 403


def test_the_predictions_list_shows_the_band_and_both_operating_points(admin_client_: Client) -> None:
    banded = PredictionFactory.create(probability=0.5, threshold_sensitive=0.0696, threshold_specific=0.5829)
    before_bands = PredictionFactory.create(
        probability=0.9, threshold=0.26, threshold_sensitive=None, threshold_specific=None
    )
    page = admin_client_.get(reverse("admin:radiology_prediction_changelist")).content.decode()
    row = page[page.index(f">{banded.pk}</a>") :]
    row = " ".join(re.sub(r"<[^>]+>", " ", row[: row.index("</tr>")]).split())
    assert "Doubt" in row and "0.070 / 0.583" in row
    row = page[page.index(f">{before_bands.pk}</a>") :]
    assert "0.260" in row[: row.index("</tr>")]
    doubt_only = admin_client_.get(reverse("admin:radiology_prediction_changelist"), {"band": "doubt"})
    assert f">{banded.pk}</a>" in doubt_only.content.decode()
    assert f">{before_bands.pk}</a>" not in doubt_only.content.decode()
