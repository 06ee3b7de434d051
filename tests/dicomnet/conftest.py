"""Fixtures of the hospital-integration tests: recorded delivery dispatch and a configured quiet period."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from tests.dicomnet import factory


@pytest.fixture(autouse=True)
def deliveries_dispatched(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> list[int]:
    """Result deliveries that would be sent to the broker (e2e tests use the real one)."""
    sent: list[int] = []
    if request.node.get_closest_marker("e2e"):
        return sent

    def record(delivery_id: int) -> bool:
        sent.append(delivery_id)
        return True

    monkeypatch.setattr("radiology.dispatch.send_result_delivery", record)
    return sent


@pytest.fixture
def quiet(settings: Any) -> dt.timedelta:
    settings.DICOM_QUIET_PERIOD_SECONDS = 10.0
    return dt.timedelta(seconds=10)


def later(seconds: float = 11.0) -> dt.datetime:
    return timezone.now() + dt.timedelta(seconds=seconds)


@pytest.fixture
def make_radiograph() -> Any:
    return factory.radiograph


@pytest.fixture
def file_due(django_capture_on_commit_callbacks: Any) -> Any:
    """inbox.dicom_arrivals_file_due, with the on-commit callbacks (dispatch, inbox clean-up) run."""
    from radiology.dicomnet import inbox

    def run(now: dt.datetime | None = None) -> list[int]:
        with django_capture_on_commit_callbacks(execute=True):
            return inbox.dicom_arrivals_file_due(now=now or later())

    return run


from tests.api.conftest import api_for  # noqa: E402, F401 - the API's role clients, for the STOW role matrix
