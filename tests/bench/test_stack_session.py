"""The benchmark client's session does not send on a connection the server may be closing (bench/stack.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.stack import FreshAfterIdleSession
from worker.commands import KEEP_ALIVE_SECONDS, gunicorn_command


class _PeerEcho(BaseHTTPRequestHandler):
    """Answers every GET with the client's port: a new port is a new connection."""

    protocol_version = "HTTP/1.1"  # keeps connections alive, as gunicorn does

    def do_GET(self) -> None:
        body = str(self.client_address[1]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PeerEcho)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_back_to_back_requests_share_a_connection_and_a_quiet_one_is_not_reused(server_url: str) -> None:
    session = FreshAfterIdleSession()
    first = session.get(server_url, timeout=5).text
    assert session.get(server_url, timeout=5).text == first  # kept alive while busy
    time.sleep(KEEP_ALIVE_SECONDS / 2 + 0.2)  # quiet for over half the server's keep-alive
    third = session.get(server_url, timeout=5).text
    assert third != first
    assert session.get(server_url, timeout=5).text == third


def test_the_web_server_is_started_with_the_keep_alive_the_client_stays_under() -> None:
    command = gunicorn_command(bind="127.0.0.1:8000")
    assert command[command.index("--keep-alive") + 1] == str(KEEP_ALIVE_SECONDS)
