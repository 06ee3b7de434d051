"""Governance fixtures: registered model versions (real tiny artifacts) and a clean registry cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from worker import governance_tasks


@pytest.fixture(autouse=True)
def _fresh_registry_cache() -> Iterator[None]:
    from django.core.cache import cache

    governance_tasks.forget_registry_for_tests()
    cache.clear()  # the comparison is cached per pair of versions, whose names every test reuses
    yield
    governance_tasks.forget_registry_for_tests()


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
