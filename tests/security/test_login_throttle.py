"""Sign-in throttling: lockout per username + address pair, a capped per-account back-off, failures audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from radiology import login_throttle
from radiology.models import AuditEvent
from tests.factories import ClinicianFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"  # the factories' password


@pytest.fixture(autouse=True)
def _axes_on(settings: Any, roles: None) -> None:
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    settings.LOGIN_ACCOUNT_BACKOFF_AFTER = 6
    settings.LOGIN_ACCOUNT_BACKOFF_MAX_SECONDS = 60
    cache.clear()


def _login(username: str, password: str, address: str) -> Any:
    client = Client(REMOTE_ADDR=address)
    # Any: the test's own attribute (signed in or not) rides on the response.
    response: Any = client.post("/accounts/login/", {"username": username, "password": password})
    response.signed_in = "_auth_user_id" in client.session
    return response


def test_typos_by_one_user_behind_a_proxy_do_not_lock_out_the_others() -> None:
    ClinicianFactory.create(username="careless")
    ClinicianFactory.create(username="colleague")
    for _ in range(5):
        _login("careless", "typo", "10.0.0.1")
    assert _login("careless", PASSWORD, "10.0.0.1").status_code == 429  # the pair is locked
    assert _login("colleague", PASSWORD, "10.0.0.1").signed_in  # the same proxy address is not


def test_guessing_at_a_named_account_does_not_lock_its_owner_out() -> None:
    ClinicianFactory.create(username="target")
    for _ in range(5):
        _login("target", "guess", "203.0.113.9")
    assert _login("target", PASSWORD, "10.0.0.2").signed_in


def test_guessing_from_many_addresses_pauses_the_account_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    ClinicianFactory.create(username="target")
    clock = [1_000_000.0]
    monkeypatch.setattr(login_throttle, "_now", lambda: clock[0])
    for attempt in range(8):  # 2 past the back-off threshold: a 4 s pause
        _login("target", "guess", f"198.51.100.{attempt}")
        clock[0] += 10  # each after the last one's pause (attempts during a pause are not even checked)
    clock[0] -= 10

    paused = _login("target", PASSWORD, "10.0.0.3")
    assert paused.status_code == 429
    assert paused["Retry-After"] == "4"
    assert "paused for 4 seconds" in paused.content.decode()
    assert not paused.signed_in

    clock[0] += 5
    assert _login("target", PASSWORD, "10.0.0.3").signed_in
    assert login_throttle.login_backoff_remaining(username="target") == 0  # a sign-in clears it


def test_the_account_pause_is_capped(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(login_throttle, "_now", lambda: clock[0])
    for _ in range(40):
        login_throttle.login_failure_record(username="target")
    assert (
        login_throttle.login_backoff_remaining(username="target")
        == settings.LOGIN_ACCOUNT_BACKOFF_MAX_SECONDS
    )


def test_failed_sign_ins_stay_in_the_audit_trail_after_a_successful_one() -> None:
    ClinicianFactory.create(username="forgetful")
    _login("forgetful", "nope", "10.0.0.4")
    _login("forgetful", "still-nope", "10.0.0.4")
    assert _login("forgetful", PASSWORD, "10.0.0.4").signed_in
    failures = AuditEvent.objects.filter(action=AuditEvent.Action.LOGIN_FAILED)
    assert failures.count() == 2
    assert {event.details["username"] for event in failures} == {"forgetful"}
    assert {event.client_ip for event in failures} == {"10.0.0.4"}
