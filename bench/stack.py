"""Start the whole application for a benchmark: web server, N celery workers, beat; PostgreSQL + Redis
or the embedded default. Each run gets a fresh database and a private scratch folder.

Used by the benchmark scripts beside this file; not imported by the application.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from worker.commands import (
    KEEP_ALIVE_SECONDS,
    LOWEST_PRIORITY,
    celery_beat_command,
    celery_worker_command,
    gunicorn_command,
    shadow_worker_command,
)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CLINICIAN = "clinician"  # a demo account; its password is read from create_demo_users' output


def manage(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    """Run one manage.py command in the given environment; its output, or RuntimeError with it."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def pump_lines(stream: Any, lines: Any) -> None:
    """Copy a child's output into `lines` (a list or deque), line by line, until it closes: in a thread."""
    for line in stream:
        lines.append(line.rstrip())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FreshAfterIdleSession(requests.Session):
    """A requests session that opens a new connection rather than send on one that has been quiet for half
    the server's keep-alive.

    gunicorn closes a kept-alive connection after KEEP_ALIVE_SECONDS of quiet. A request the client sends
    just as that happens (its check that the connection is still open passed a moment before) is dropped
    without a response, and a POST cannot be retried blindly (it may have been acted on). Under load the
    server's close lags its timer, which widens that moment: at gunicorn's default 2-s keep-alive, 8
    sessions left quiet 1.5-3 s and then uploading at once lost 3 of 320 uploads ("Remote end closed
    connection without response"; the e2e load test failed on one, its first upload riding the connection
    left by sign-in), and none with this session."""

    def __init__(self) -> None:
        super().__init__()
        self._last_used = time.monotonic()

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        if time.monotonic() - self._last_used > KEEP_ALIVE_SECONDS / 2:
            self.close()  # drops the pooled connections; the next request opens its own
        try:
            return super().request(*args, **kwargs)
        finally:
            self._last_used = time.monotonic()


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[str]
    log: deque[str] = field(default_factory=lambda: deque(maxlen=2000))

    def output(self) -> str:
        return "\n".join(self.log)


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    backend: str
    processes: list[Process] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)

    def workers(self) -> list[Process]:
        return [p for p in self.processes if p.name.startswith("worker")]

    def manage(self, *args: str, timeout: float = 600) -> str:
        return manage(self.env, *args, timeout=timeout)

    def session(self, username: str = CLINICIAN, password: str | None = None) -> requests.Session:
        """A signed-in browser-like session (CSRF token kept on it as .csrf)."""
        password = password or self.passwords[username]
        session = FreshAfterIdleSession()
        page = session.get(f"{self.base_url}/accounts/login/", timeout=30)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, page.text[:300]
        response = session.post(
            f"{self.base_url}/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)},
            headers={"Referer": f"{self.base_url}/accounts/login/"},
            timeout=30,
        )
        assert "/accounts/login/" not in response.url, "sign-in failed"
        session.csrf = session.cookies.get("csrftoken")  # type: ignore[attr-defined]
        return session

    def upload(
        self, session: Any, *, prefix: str, index: int, filename: str, data: bytes, **request: Any
    ) -> requests.Response:
        """Post the upload form as the browser does: a one-image wrist study named by prefix and index."""
        return session.post(
            f"{self.base_url}/studies/new/",
            data={
                "csrfmiddlewaretoken": session.csrf,
                "mrn": f"{prefix}-{index:05d}",
                "patient_name": f"{prefix.title()} {index}",
                "accession_number": f"{prefix}-ACC-{index:05d}",
                "body_region": "wrist",
            },
            files=[("files", (filename, data))],
            headers={"Referer": f"{self.base_url}/studies/new/"},
            **request,
        )


def _pump(process: Process, ready: threading.Event | None, marker: str | None) -> None:
    assert process.popen.stdout is not None
    for line in process.popen.stdout:
        process.log.append(line.rstrip())
        if ready is not None and marker and marker in line:
            ready.set()


def _spawn(
    name: str, command: list[str], env: dict[str, str], marker: str | None = None
) -> tuple[Process, threading.Event]:
    popen = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    process = Process(name, popen)
    ready = threading.Event()
    threading.Thread(target=_pump, args=(process, ready, marker), daemon=True).start()
    return process, ready


def _wait(event: threading.Event, process: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not event.is_set():
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.output()[-4000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} not ready after {timeout}s:\n{process.output()[-4000:]}")
        time.sleep(0.1)


def _create_database(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _purge_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


@contextlib.contextmanager
def running_stack(
    *,
    backend: str = "services",
    workers: int = 1,
    worker_concurrency: int = 1,
    web_workers: int = 2,
    extra_env: dict[str, str] | None = None,
    database: str | None = None,
    keep_database: bool = False,
    start_workers: bool = True,
    shadow_worker: bool = False,
    shadow_lowest_priority: bool = True,
) -> Iterator[Stack]:
    """Yield a running application. backend: "services" (PostgreSQL + Redis) or "embedded".
    ``shadow_worker``: also the shadow versions' worker, as ``manage.py runapp`` starts it (its own queue,
    the lowest CPU priority; ``shadow_lowest_priority=False``: at normal priority, for comparison); it loads
    a model only once a shadow version is registered."""
    scratch = Path(tempfile.mkdtemp(prefix="fracture-bench-"))
    database_name = database or f"fr_bench_{os.getpid()}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "SECURE_COOKIES": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "AXES_ENABLED": "0",
        "FRACTURE_REVIEW_VAR_DIR": str(scratch),
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "API_THROTTLE_USER": "100000/minute",
        "API_THROTTLE_SUBMIT": "100000/minute",
    }
    created_db = False
    if backend == "services":
        if database is None or not keep_database:
            env["DATABASE_URL"] = _create_database(database_name)
            created_db = True
        else:
            env["DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database_name}"
        env["CELERY_BROKER_URL"] = REDIS_URL
        _purge_redis(REDIS_URL)
    else:
        env.pop("DATABASE_URL", None)
        env.pop("CELERY_BROKER_URL", None)
    env.update(extra_env or {})
    port = free_port()
    stack = Stack(base_url=f"http://127.0.0.1:{port}", env=env, backend=backend)
    try:
        stack.manage("migrate", "--no-input")
        for line in stack.manage("create_demo_users").splitlines():
            if found := re.search(r"user: (\S+)\s+password: (\S+)", line):
                stack.passwords[found.group(1)] = found.group(2)
        stack.manage("collectstatic", "--no-input")
        web, web_ready = _spawn(
            "web",
            gunicorn_command(bind=f"127.0.0.1:{port}", workers=web_workers),
            env,
            marker="Booting worker",
        )
        stack.processes.append(web)
        worker_ready = []
        if start_workers:
            for index in range(workers):
                worker, ready = _spawn(
                    f"worker{index}",
                    celery_worker_command(
                        concurrency=worker_concurrency, node_name=f"bench{index}-{os.getpid()}@%h"
                    ),
                    env,
                    marker=" loaded from ",  # the model is loaded and warmed up
                )
                stack.processes.append(worker)
                worker_ready.append((ready, worker))
            if shadow_worker:
                command = shadow_worker_command(node_name=f"shadow-{os.getpid()}@%h")
                if not shadow_lowest_priority:
                    command = command[len(LOWEST_PRIORITY) :]
                shadow, _ = _spawn(
                    "shadow",
                    command,
                    {**env, "CLASSIFIER_WARM_UP": "0"},
                    marker=" ready.",
                )
                # Not waited for: at the lowest priority it starts when the machine has idle CPU.
                stack.processes.append(shadow)
            beat, _ = _spawn(
                "beat",
                celery_beat_command(scratch / "beat-schedule", loglevel="WARNING"),
                env,
            )
            stack.processes.append(beat)
        _wait(web_ready, web, 120)
        for _ in range(300):
            try:
                if requests.get(f"{stack.base_url}/accounts/login/", timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        for ready, worker in worker_ready:
            _wait(ready, worker, 300)
        yield stack
    finally:
        for process in reversed(stack.processes):
            if process.popen.poll() is None:
                process.popen.terminate()
        for process in stack.processes:
            try:
                process.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.popen.kill()
        if created_db and not keep_database:
            with contextlib.suppress(Exception):
                _drop_database(database_name)
        shutil.rmtree(scratch, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows (the benchmarks print these so they can go straight into the README)."""
    if not rows:
        return "(no rows)"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(h)) for h in headers) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
