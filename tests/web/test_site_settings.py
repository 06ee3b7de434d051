"""The blinded-first-read default is the site's, chosen by an administrator in the application (audit
dashboard): audited with who, when, the old and the new value; a reader's own choice overrides it, and a
reader who never chose follows it. BLINDED_READ_DEFAULT is only the installation's initial value."""

from __future__ import annotations

from typing import Any

from django.test import Client
from django.urls import reverse

from radiology import services
from radiology.models import AuditEvent, ReaderProfile, SiteSettings, Study
from tests.web.conftest import MakeStudy

SETTINGS_URL = reverse("radiology:site_settings")
DASHBOARD = reverse("radiology:audit_dashboard")


def _data(client: Client, study: Study) -> dict[str, Any]:
    response = client.get(reverse("radiology:study_status", args=[study.pk]))
    assert response.status_code == 200
    return response.json()


def test_the_environment_gives_only_the_initial_value(settings: Any, clinician: Any, admin: Any) -> None:
    settings.BLINDED_READ_DEFAULT = True
    assert services.reader_is_blinded(clinician)  # the first use creates the site's row from it
    assert SiteSettings.objects.get().blinded_read_default is True
    settings.BLINDED_READ_DEFAULT = False  # the environment changing later changes nothing
    assert services.reader_is_blinded(clinician)
    services.site_blinded_default_update(actor=admin, blinded=False)
    assert not services.reader_is_blinded(clinician)


def test_an_admin_switches_the_default_and_a_reader_who_never_chose_reads_blinded(
    admin_client_: Client, clinician_client: Client, clinician: Any, admin: Any, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.93])
    before = _data(clinician_client, study)
    assert not before["blinded"] and before["blinded_by"] == "site"
    assert before["images"][0]["prediction"]["band"] == "fracture"

    response = admin_client_.post(SETTINGS_URL, {"blinded_read_default": "on"})
    assert response.status_code == 302 and response["Location"].endswith("#site-settings")

    site = SiteSettings.objects.get()
    assert site.blinded_read_default is True and site.updated_by == admin
    event = AuditEvent.objects.get(action=AuditEvent.Action.SITE_SETTING)
    assert event.actor == admin and event.target_type == "sitesettings"
    assert event.details == {"setting": "blinded_read_default", "before": False, "after": True}
    assert event.created_at is not None

    after = _data(clinician_client, study)
    assert after["blinded"] and after["blinded_by"] == "site"
    assert after["images"][0]["hidden"] and after["images"][0]["prediction"] is None
    assert after["summary"] is None


def test_a_readers_own_choice_overrides_the_site_default(
    admin_client_: Client, clinician_client: Client, clinician: Any, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.93])
    clinician_client.post(reverse("radiology:reader_settings"), {"blinded": "off"})
    admin_client_.post(SETTINGS_URL, {"blinded_read_default": "on"})
    data = _data(clinician_client, study)
    assert not data["blinded"] and data["blinded_by"] == "reader"
    assert data["images"][0]["prediction"] is not None
    # Back to the site default: now blinded.
    clinician_client.post(reverse("radiology:reader_settings"), {"blinded": "default"})
    assert ReaderProfile.objects.get(user=clinician).blinded is None
    data = _data(clinician_client, study)
    assert data["blinded"] and data["blinded_by"] == "site"


def test_a_bad_value_changes_nothing_and_clinicians_cannot_change_it(
    admin_client_: Client, clinician_client: Client, clinician: Any
) -> None:
    response = admin_client_.post(SETTINGS_URL, {"blinded_read_default": "maybe"}, follow=True)
    assert "Choose on or off" in response.content.decode()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.SITE_SETTING).exists()
    assert clinician_client.post(SETTINGS_URL, {"blinded_read_default": "on"}).status_code == 403
    assert not services.reader_is_blinded(clinician)
    assert not SiteSettings.objects.filter(blinded_read_default=True).exists()


def test_the_dashboard_shows_the_setting_who_changed_it_and_who_is_not_affected(
    admin_client_: Client, clinician: Any
) -> None:
    page = admin_client_.get(DASHBOARD).content.decode()
    assert 'action="/audit/settings/"' in page
    assert "the installation&#x27;s initial value" in page or "the installation's initial value" in page
    services.reader_setting_update(user=clinician, blinded=True)
    admin_client_.post(SETTINGS_URL, {"blinded_read_default": "on"})
    page = admin_client_.get(DASHBOARD).content.decode()
    assert 'value="on" checked' in page
    assert "changed by audit.admin" in page
    assert "1 reader chose for themselves" in page
