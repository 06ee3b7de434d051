"""Demo accounts: passwords made for this installation, printed once, never reset; none published."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from worker.management.commands.runapp import is_loopback

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def _run() -> str:
    out = io.StringIO()
    call_command("create_demo_users", stdout=out)
    return out.getvalue()


def _passwords(output: str) -> dict[str, str]:
    return dict(re.findall(r"user: (\S+)\s+password: (\S+)", output))


def test_the_first_start_creates_the_accounts_with_fresh_passwords_that_sign_in() -> None:
    passwords = _passwords(_run())
    assert set(passwords) == {"clinician", "clinician2", "admin"}
    assert len(set(passwords.values())) == 3
    assert authenticate(username="clinician2", password=passwords["clinician2"]) is not None
    assert get_user_model().objects.get(username="clinician2").groups.get().name == "clinician"
    assert len(passwords["clinician"]) >= 16
    assert authenticate(username="clinician", password=passwords["clinician"]) is not None
    assert get_user_model().objects.get(username="admin").is_superuser


def test_a_restart_neither_prints_nor_resets_a_password() -> None:
    first = _passwords(_run())
    clinician = get_user_model().objects.get(username="clinician")
    clinician.set_password("changed-by-its-owner-42")
    clinician.save()

    again = _run()
    assert _passwords(again) == {}
    assert "exists; password unchanged" in again
    assert authenticate(username="clinician", password="changed-by-its-owner-42") is not None
    assert authenticate(username="clinician", password=first["clinician"]) is None


def test_two_installations_get_different_passwords() -> None:
    first = _passwords(_run())
    get_user_model().objects.all().delete()
    assert set(_passwords(_run()).values()).isdisjoint(first.values())


def test_no_password_is_published_in_the_docs_or_the_source() -> None:
    published = ["review-fractures-1", "audit-fractures-1"]
    texts = [(ROOT / "README.md").read_text(), *(p.read_text() for p in (ROOT / "docs").glob("*.md"))]
    texts.append((ROOT / "radiology/management/commands/create_demo_users.py").read_text())
    assert not [p for p in published if any(p in text for text in texts)]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("10.1.2.3", False)],
)
def test_runapp_makes_demo_accounts_only_for_a_loopback_bind(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
