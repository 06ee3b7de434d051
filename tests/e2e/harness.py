"""Real processes for end-to-end tests: a `celery worker` subprocess that shares the test database,
the broker and the media folder with the live server running in the test process."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from django.conf import settings
from django.db import connection

from worker.commands import celery_beat_command, celery_worker_command

ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT = 180.0


def database_url() -> str:
    """The URL of the database this test runs against (the test database, not the configured one)."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    if connection.vendor == "postgresql":
        user = params.get("USER") or "postgres"
        password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
        host = params.get("HOST") or "127.0.0.1"
        port = params.get("PORT") or 5432
        return f"postgresql://{user}{password}@{host}:{port}/{params['NAME']}"
    raise RuntimeError(f"unsupported database vendor {connection.vendor}")


def shipped_model() -> Path:
    """The model in models/ that the application serves: the end-to-end tests run the real one."""
    from classifier.predict import default_model_path

    shipped = default_model_path()
    if not (shipped / "model.keras").is_file():
        raise AssertionError(
            f"the shipped model is missing: {shipped}/model.keras (see models/*/reproduce.sh)"
        )
    return shipped


def worker_environment(model_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "e2e-secret-key-for-tests-only-0123456789-abcdefghijklmnop",
        "DJANGO_DEBUG": "0",
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "FRACTURE_REVIEW_VAR_DIR": str(settings.VAR_DIR),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "CLASSIFIER_MODEL": str(model_path),
        "CLASSIFIER_CPU_THREADS": "2",
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.update(overrides)
    return env


@dataclass
class WorkerProcess:
    process: subprocess.Popen[str]
    name: str
    log: deque[str] = field(default_factory=lambda: deque(maxlen=20000))
    beat: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return "\n".join(self.log)

    def child_pids(self) -> list[int]:
        """PIDs of the prefork pool's children (the processes that run tasks)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def stop(self, timeout: float = 20.0) -> None:
        for process in (self.process, self.beat):
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)


def purge_queues() -> None:
    """Drop messages a previous run may have left in a shared broker."""
    from worker.celery import app

    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in ("inference", "maintenance"):
            try:
                channel.queue_purge(queue)
            except Exception:  # the queue may not exist yet; nothing to purge then
                continue


def start_worker(
    env: dict[str, str], *, name: str = "e2e", concurrency: int = 1, beat: bool = False, wait: bool = True
) -> WorkerProcess:
    command = celery_worker_command(concurrency=concurrency, node_name=f"{name}-{os.getpid()}@%h")
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    worker = WorkerProcess(process, name)
    if beat:
        # A separate beat process (not `worker --beat`), so the worker's children are only the pool's.
        worker.beat = subprocess.Popen(
            celery_beat_command(Path(env["FRACTURE_REVIEW_VAR_DIR"]) / f"beat-{name}-{os.getpid()}"),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            worker.log.append(line.rstrip())
            if " ready." in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if wait:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while not ready.is_set():
            if process.poll() is not None:
                raise RuntimeError(f"celery worker exited with {process.returncode}:\n{worker.output()}")
            if time.monotonic() > deadline:
                worker.stop()
                raise RuntimeError(
                    f"celery worker not ready after {WORKER_READY_TIMEOUT}s:\n{worker.output()}"
                )
            time.sleep(0.2)
    return worker


@contextmanager
def running_worker(env: dict[str, str], **kwargs: Any) -> Iterator[WorkerProcess]:
    worker = start_worker(env, **kwargs)
    try:
        yield worker
    finally:
        worker.stop()


def wait_for(predicate: Any, *, timeout: float, interval: float = 0.5, message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """A TCP relay that a test can cut and restore, to make a server 'unavailable for a moment'."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: Any = None
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self.up = False

    def start(self) -> None:
        import socket

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self.up = True
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: Any) -> None:
        import socket

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a database restart would."""
        import socket

        self.up = False
        if self._listener is not None:
            # close() alone does not wake a thread blocked in accept() on Linux: the socket would keep
            # listening (and accepting) until then, so the "outage" would not be one and restore() could
            # not bind the port again. shutdown() stops the listening and wakes the accept.
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
            self._connections.clear()

    def restore(self) -> None:
        self.start()


@contextmanager
def private_redis() -> Iterator[tuple[str, Any]]:
    """A redis-server owned by the test (so stopping it disturbs nobody else); yields (url, controls)."""
    port = free_port()

    class Controls:
        process: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.process = subprocess.Popen(  # our own binary and arguments
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for(lambda: _redis_ping(port), timeout=10, interval=0.1, message="private redis")

        def stop(self) -> None:
            if self.process is not None:
                self.process.kill()
                self.process.wait(timeout=10)
                self.process = None

    controls = Controls()
    controls.start()
    try:
        yield f"redis://127.0.0.1:{port}/0", controls
    finally:
        controls.stop()


def _redis_ping(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def celery_app_broker(url: str) -> Iterator[None]:
    """Point this process's Celery app (used by the live server to dispatch) at another broker."""
    from worker.celery import app

    def forget_connections() -> None:
        # Both pools hold connections to the old broker.
        app._pool = None
        app.amqp._producer_pool = None

    # Celery reads CELERY_BROKER_URL from the environment before its configuration.
    previous_env = os.environ.get("CELERY_BROKER_URL")
    previous = app.conf.broker_url
    os.environ["CELERY_BROKER_URL"] = url
    app.conf.broker_url = url
    forget_connections()
    try:
        yield
    finally:
        app.conf.broker_url = previous
        if previous_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = previous_env
        forget_connections()


def upload_distinct_study(accession: str, count: int) -> list[int]:
    """A study of ``count`` distinct real-looking radiographs (the fixture radiograph, a different marker on
    each, so each has its own SHA-256), uploaded through the service; the accepted radiographs' ids."""
    from radiology import services
    from tests.conftest import fixture_bytes
    from tests.factories import ClinicianFactory

    base = cv2.imdecode(
        np.frombuffer(fixture_bytes("images/kaggle_fractured_1.jpg"), np.uint8), cv2.IMREAD_GRAYSCALE
    )
    assert base is not None
    images = []
    for index in range(count):
        marked = base.copy()
        marked[:4, :4] = index + 1
        images.append(
            services.UploadedImage(f"{accession}-{index}.png", cv2.imencode(".png", marked)[1].tobytes())
        )
    result = services.study_create(
        uploaded_by=ClinicianFactory.create(username=f"u-{accession}"),
        details=services.StudyDetails(
            mrn=f"M-{accession}", patient_name="Worker Test", accession_number=accession, body_region="wrist"
        ),
        files=images,
    )
    assert result.study is not None and not result.rejected
    return [r.pk for r in result.accepted]
