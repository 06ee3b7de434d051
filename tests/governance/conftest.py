"""Governance fixtures: registered model versions (real tiny artifacts); the root conftest empties the
registry cache and the Django cache before each test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


@pytest.fixture(scope="session")
def shadow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from classifier.testing import write_tiny_artifact

    return write_tiny_artifact(tmp_path_factory.mktemp("tiny-shadow"), version="tiny-shadow")
