"""Governance fixtures: the broker requests the pages make, recorded instead of sent. The tiny model
artifacts are the root conftest's, which also empties the registry cache and the Django cache before each
test."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@pytest.fixture(autouse=True)
def comparison_requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the Models page's requests to recompute the comparison instead of sending them."""
    sent: list[str] = []

    def record() -> bool:
        sent.append("refresh_comparisons")
        return True

    monkeypatch.setattr("radiology.dispatch.send_comparison_refresh", record)
    return sent


@dataclass
class RefreshRequests:
    """What the monitoring page asked the broker for: ``attempts`` sends; ``broker_down`` fails them."""

    attempts: int = 0
    broker_down: bool = False


@pytest.fixture(autouse=True)
def monitoring_requests(monkeypatch: pytest.MonkeyPatch) -> RefreshRequests:
    """Records the monitoring page's requests for a rebuild instead of sending them."""
    requests = RefreshRequests()

    def send() -> bool:
        requests.attempts += 1
        return not requests.broker_down

    monkeypatch.setattr("radiology.dispatch.send_monitoring_refresh", send)
    return requests
