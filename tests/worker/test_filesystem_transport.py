"""The embedded broker's file transport: a message is read whole or not at all, and an unreadable message file
is skipped instead of stopping the worker (worker/filesystem_transport.py; kombu issue #1551)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection
from kombu.transport import filesystem as kombu_filesystem

from worker import filesystem_transport


def _channel(folder: Path, transport: Any) -> Any:
    connection = Connection(
        transport=transport,
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "store_processed": False,
        },
    )
    return connection.default_channel


@pytest.fixture
def slow_dumps(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Serialising a message waits until released: the writer's window, held open."""
    writing, release = threading.Event(), threading.Event()
    real = kombu_filesystem.dumps

    def held(payload: Any) -> str:
        writing.set()
        assert release.wait(10)
        return str(real(payload))

    monkeypatch.setattr(kombu_filesystem, "dumps", held)
    monkeypatch.setattr(filesystem_transport, "dumps", held)
    yield writing, release
    release.set()


def _read_while_writing(channel: Any, events: tuple[threading.Event, threading.Event]) -> Any:
    writing, release = events
    writer = threading.Thread(target=channel._put, args=("classify", {"task": "x"}))
    writer.start()
    assert writing.wait(10)
    try:
        return channel._get("classify")
    finally:
        release.set()
        writer.join(10)


def test_stock_kombu_reads_a_message_half_written(tmp_path: Path, slow_dumps) -> None:
    # The fault the transport fixes, shown on kombu's own: the reader finds the empty file and fails.
    channel = _channel(tmp_path, kombu_filesystem.Transport)
    with pytest.raises(ValueError):
        _read_while_writing(channel, slow_dumps)


def test_a_message_being_written_is_not_visible_until_whole(tmp_path: Path, slow_dumps) -> None:
    channel = _channel(tmp_path, filesystem_transport.Transport)
    with pytest.raises(Empty):
        _read_while_writing(channel, slow_dumps)
    assert channel._get("classify") == {"task": "x"}  # complete now, read whole
    assert not list(tmp_path.iterdir())  # the hidden part file was renamed, nothing left behind


def test_an_unreadable_message_file_is_skipped_and_the_next_one_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    channel = _channel(tmp_path, filesystem_transport.Transport)
    # Names start with the monotonic clock in ms (never a leading 0): "0_" sorts first, so it is read first.
    (tmp_path / "0_broken.classify.msg").write_bytes(b"")
    channel._put("classify", {"task": "next"})
    assert channel._get("classify") == {"task": "next"}
    assert "unreadable message file" in caplog.text
    with pytest.raises(Empty):
        channel._get("classify")


def test_each_broker_is_served_by_its_fixed_transport() -> None:
    from worker import redis_transport
    from worker.celery import app

    scheme = str(app.conf.broker_url).split("://", 1)[0]
    expected = {"filesystem": filesystem_transport.Transport, "redis": redis_transport.Transport}[scheme]
    with app.connection_for_write() as connection:
        assert type(connection.transport) is expected
