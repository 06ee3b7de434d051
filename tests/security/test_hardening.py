"""Security settings and behaviour that hold for the whole application."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from radiology import dispatch, services
from radiology.models import AuditEvent, Radiograph
from tests.conftest import FIXTURES as FIXTURES_DIR
from tests.conftest import FakePredictor, fixture_bytes
from tests.factories import AuditEventFactory, ClinicianFactory
from worker import tasks

ROOT = Path(__file__).resolve().parents[2]


def _production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SECURE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="fracture.example.org",
        SECURE_SSL_REDIRECT="1",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1",
    )
    env.update(extra)
    return env


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_production_env(FRACTURE_REVIEW_VAR_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    # With a database server: the embedded default (SQLite) makes its own key instead.
    env = _production_env(
        FRACTURE_REVIEW_VAR_DIR=str(tmp_path),
        DATABASE_URL="postgresql://app@db.example.org:5432/fracture_review",
    )
    env.pop("SECRET_KEY")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("UPLOAD_MAX_FILE_BYTES", "lots", "UPLOAD_MAX_FILE_BYTES must be an integer"),
        ("DJANGO_DEBUG", "maybe", "DJANGO_DEBUG must be a boolean"),
        ("DATABASE_URL", "nonsense://x", "DATABASE_URL"),
        ("SESSION_IDLE_TIMEOUT_SECONDS", "5", "SESSION_IDLE_TIMEOUT_SECONDS must be at least 60"),
    ],
)
def test_a_bad_setting_fails_at_start_naming_the_variable(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    env = _production_env(FRACTURE_REVIEW_VAR_DIR=str(tmp_path), **{variable: value})
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.django_db
def test_pages_carry_the_security_headers(client: Client) -> None:
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_templates_hold_no_inline_script_style_or_handlers() -> None:
    """The CSP forbids them; a template that used one would silently break in the browser."""
    offenders = []
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        if re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text):
            offenders.append(f"{template}: inline <script>")
        if re.search(r"\son[a-z]+\s*=", text):
            offenders.append(f"{template}: inline event handler")
        if re.search(r"\sstyle\s*=", text) or "<style" in text:
            offenders.append(f"{template}: inline style")
    assert offenders == []


@pytest.mark.django_db
def test_login_is_throttled_after_repeated_failures(settings: Any, roles: None) -> None:
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    ClinicianFactory.create(username="target")
    client = Client()
    for _ in range(3):
        client.post("/accounts/login/", {"username": "target", "password": "wrong-guess"})
    locked = client.post("/accounts/login/", {"username": "target", "password": "correct-horse-battery"})
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LOGIN_FAILED).count() >= 3


@pytest.mark.django_db
def test_sessions_expire_after_inactivity(
    settings: Any, roles: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle for longer than SESSION_COOKIE_AGE: signed out; active within it: the session goes on (each
    request saves it again). A frozen clock moved forward, not a sleep."""
    from django.utils import timezone

    ClinicianFactory.create(username="idle")
    client = Client()
    assert client.login(username="idle", password="correct-horse-battery")
    age = dt.timedelta(seconds=settings.SESSION_COOKIE_AGE)
    start = timezone.now()

    def clock_at(moment: dt.datetime) -> None:
        monkeypatch.setattr(timezone, "now", lambda: moment)

    clock_at(start + age - dt.timedelta(minutes=1))
    assert client.get("/queue/").status_code == 200  # still active: the idle time starts again
    clock_at(start + 2 * age - dt.timedelta(minutes=2))
    assert client.get("/queue/").status_code == 200
    clock_at(start + 3 * age)  # idle for longer than the timeout
    response = client.get("/queue/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.django_db
def test_passwords_are_validated(roles: None) -> None:
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    for weak in ("short", "password123", "1234567890123"):
        with pytest.raises(ValidationError):
            validate_password(weak)


@pytest.mark.django_db
@pytest.mark.real_dispatch
def test_celery_messages_carry_radiograph_ids_only(
    monkeypatch: pytest.MonkeyPatch, clinician: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from worker.celery import app

    sent: list[tuple[str, Any, Any]] = []
    monkeypatch.setattr(
        app, "send_task", lambda name, args=None, kwargs=None, **_: sent.append((name, args, kwargs))
    )
    with django_capture_on_commit_callbacks(execute=True):
        result = services.study_create(
            uploaded_by=clinician,
            details=services.StudyDetails(
                mrn="SECRET-MRN-77",
                patient_name="Florence Nightingale",
                accession_number="ACC-77",
                body_region="hand",
            ),
            files=[services.UploadedImage("a.jpg", fixture_bytes("images/kaggle_fractured_1.jpg"))],
        )
    assert sent == [(dispatch.CLASSIFY_TASK, [result.accepted[0].pk], None)]


@pytest.mark.django_db
def test_no_patient_identifiers_reach_the_logs(
    caplog: pytest.LogCaptureFixture,
    clinician: Any,
    fake_predictor: FakePredictor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(
        "radiology.dispatch.send_classification", dispatch.send_classification
    )  # real, broker down
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    result = services.study_create(
        uploaded_by=clinician,
        details=services.StudyDetails(
            mrn="SECRET-MRN-88",
            patient_name="Mary Seacole",
            accession_number="ACC-SECRET-88",
            body_region="hand",
        ),
        files=[
            services.UploadedImage("Seacole_Mary.jpg", fixture_bytes("images/kaggle_fractured_1.jpg")),
            services.UploadedImage("broken.jpg", b"\xff\xd8\xff broken"),
        ],
    )
    tasks.classify_radiograph.apply(args=[result.accepted[0].pk]).get()
    assert Radiograph.objects.get(pk=result.accepted[0].pk).status == "predicted"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for identifier in ("SECRET-MRN-88", "Mary Seacole", "Seacole", "ACC-SECRET-88"):
        assert identifier not in logged


@pytest.mark.django_db
def test_audit_events_cannot_be_changed_or_deleted_through_the_orm() -> None:
    from django.db import connection

    event = AuditEventFactory.create()
    event.details = {"tampered": True}
    with pytest.raises(Exception, match="cannot be changed"):
        event.save()
    with pytest.raises(Exception, match="cannot be deleted"):
        event.delete()
    with pytest.raises(Exception, match="cannot be changed"):
        AuditEvent.objects.filter(pk=event.pk).update(action="export")
    with pytest.raises(Exception, match="cannot be deleted"):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(Exception, match="append-only"), connection.cursor() as cursor:
        cursor.execute("UPDATE radiology_auditevent SET action = 'export' WHERE id = %s", [event.pk])
    event.refresh_from_db()
    assert event.details == {}


@pytest.mark.django_db
def test_malformed_dicom_values_are_not_quoted_into_the_logs(
    caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    """pydicom quotes malformed values in its warnings, and DICOM values include patient identifiers."""
    import pydicom

    from radiology.ingest import IngestError, IngestLimits, ingest_file

    dataset = pydicom.dcmread(FIXTURES_DIR / "dicom" / "monochrome2_8bit.dcm")
    dataset.PatientName = "Seacole^Mary^" + "x" * 80  # longer than PN allows: a validation warning
    dataset.StudyInstanceUID = "1.2.invalid-uid-Seacole"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    caplog.set_level(logging.DEBUG)
    limits = IngestLimits(max_bytes=10**7, max_pixels=10**7, min_side=32)
    for data in (buffer.getvalue(), (FIXTURES_DIR / "bad" / "dicom_damaged_element.dcm").read_bytes()):
        with contextlib.suppress(IngestError):
            ingest_file("scan.dcm", data, limits)
    logged = "\n".join(r.getMessage() for r in caplog.records) + "\n".join(str(w.message) for w in recwarn)
    assert "Seacole" not in logged
    assert "DCM-0001" not in logged and "Doe^Jane" not in logged
