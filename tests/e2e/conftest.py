from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    WorkerProcess,
    purge_queues,
    shipped_model,
    start_worker,
    worker_environment,
)


@pytest.fixture
def e2e_model_path() -> Path:
    return shipped_model()


@pytest.fixture
def worker_env(live_server: Any, e2e_model_path: Path) -> dict[str, str]:
    """Environment for worker subprocesses; depends on live_server so the test database exists."""
    purge_queues()
    return worker_environment(e2e_model_path)


@pytest.fixture
def celery_worker(worker_env: dict[str, str]) -> Iterator[WorkerProcess]:
    worker = start_worker(worker_env)
    try:
        yield worker
    finally:
        worker.stop()
