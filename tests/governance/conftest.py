"""Governance fixtures: registered model versions (real tiny artifacts); the root conftest empties the
registry cache and the Django cache before each test."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def shadow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from classifier.testing import write_tiny_artifact

    return write_tiny_artifact(tmp_path_factory.mktemp("tiny-shadow"), version="tiny-shadow")
