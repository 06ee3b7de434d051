"""The fire-and-forget sends (shadow work, comparison and monitoring refreshes): each names its task, and
an unreachable broker is a False and a log line, never an error on the page that asked."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from radiology import dispatch


class FakeApp:
    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.sent: list[tuple[str, list[Any]]] = []

    def send_task(self, name: str, *, args: list[Any], retry: bool) -> None:
        assert retry is False  # a lost message is replaced by the next request or by beat
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        self.sent.append((name, args))


SENDS = [
    (lambda: dispatch.send_shadow_predictions([4, 7]), "worker.governance_tasks.shadow_predict", [[4, 7]]),
    (dispatch.send_comparison_refresh, "worker.governance_tasks.refresh_comparisons", []),
    (dispatch.send_monitoring_refresh, "worker.governance_tasks.refresh_monitoring", []),
]


@pytest.mark.parametrize(("send", "task", "args"), SENDS, ids=["shadow", "comparison", "monitoring"])
def test_each_send_names_its_task(
    send: Any, task: str, args: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = FakeApp()
    monkeypatch.setattr(dispatch, "current_app", app)
    assert send() is True
    assert app.sent == [(task, args)]


@pytest.mark.parametrize(("send", "task", "args"), SENDS, ids=["shadow", "comparison", "monitoring"])
def test_an_unreachable_broker_is_false_and_logged(
    send: Any, task: str, args: list[Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(dispatch, "current_app", FakeApp(down=True))
    with caplog.at_level(logging.WARNING, logger="radiology.dispatch"):
        assert send() is False
    assert "not sent: ConnectionRefusedError" in caplog.text


def test_the_workers_register_the_monitoring_task_the_page_sends() -> None:
    from worker.celery import app

    app.loader.import_default_modules()
    assert dispatch.MONITORING_REFRESH_TASK in app.tasks
