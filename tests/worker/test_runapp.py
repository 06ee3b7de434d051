"""`make run` (manage.py runapp) for real: debug off, demo accounts that sign in, search terms kept out of the
access log, and every process supervised: a kill -9 of the worker or the web server is recovered from,
and stopping leaves nothing running."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from tests.e2e.harness import free_port

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


class RunApp:
    def __init__(self, var_dir: Path) -> None:
        self.tag = uuid.uuid4().hex
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "SECRET_KEY", "DJANGO_DEBUG"}
        }
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            FRACTURE_REVIEW_VAR_DIR=str(var_dir),
            CLASSIFIER_WARM_UP="0",  # the model is not needed here; the worker starts in seconds
            DICOM_PORT=str(free_port()),
            RUNAPP_TEST_TAG=self.tag,  # finds every process it started, however deep
            PYTHONUNBUFFERED="1",
        )
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runapp", "--port", str(self.port), "--web-workers", "1"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # a test may close the pipe under it
            for line in self.process.stdout:
                self.lines.append(line.rstrip())

    def output(self) -> str:
        return "\n".join(self.lines)

    def processes(self) -> dict[int, str]:
        """pid -> command line of every live process carrying this run's tag."""
        found = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if f"RUNAPP_TEST_TAG={self.tag}".encode() not in (proc / "environ").read_bytes():
                    continue
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
        return found

    def main_pid(self, marker: str) -> int | None:
        """The service's main process: the one whose parent is runapp itself."""
        for pid, cmdline in self.processes().items():
            try:
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == self.process.pid and marker in cmdline:
                return pid
        return None

    def wait(self, predicate: Callable[[], T], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(f"runapp exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()}")

    def up(self) -> bool:
        try:
            return requests.get(f"{self.url}/accounts/login/", timeout=5).status_code == 200
        except requests.RequestException:
            return False


@pytest.fixture
def runapp(tmp_path: Path) -> Iterator[RunApp]:
    app = RunApp(tmp_path)
    try:
        yield app
    finally:
        if app.process.poll() is None:
            app.process.kill()
            app.process.wait(timeout=30)
        for pid in app.processes():
            os.kill(pid, signal.SIGKILL)


def _sign_in(app: RunApp, username: str, password: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{app.url}/accounts/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token
    response = session.post(
        f"{app.url}/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)},
        headers={"Referer": f"{app.url}/accounts/login/"},
        timeout=30,
    )
    assert "/accounts/login/" not in response.url, "sign-in failed"
    return session


def test_make_run_is_safe_and_survives_kill_9_of_its_children(runapp: RunApp) -> None:
    runapp.wait(runapp.up, 240, "the web server")
    passwords = dict(re.findall(r"user: (\S+)\s+password: (\S+)", runapp.output()))
    assert set(passwords) == {"clinician", "clinician2", "admin"}

    # Debug is off: an unknown URL gets the plain 404 page, not Django's list of every URL pattern.
    missing = requests.get(f"{runapp.url}/no-such-page/", timeout=30)
    assert missing.status_code == 404
    assert "URLconf" not in missing.text and "urlpatterns" not in missing.text

    # A new user signs in straight away; a search term never reaches the access log.
    session = _sign_in(runapp, "clinician", passwords["clinician"])
    assert session.get(f"{runapp.url}/queue/?q=MRN-SECRET-4242", timeout=30).status_code == 200
    runapp.wait(lambda: any('"GET /queue/ ' in line for line in runapp.lines), 30, "the access log line")
    assert "MRN-SECRET-4242" not in runapp.output()

    # kill -9 the worker: it comes back, and its pool child does not outlive it.
    worker = runapp.wait(lambda: runapp.main_pid(" worker -Q "), 120, "the worker")
    assert isinstance(worker, int)
    pool = runapp.wait(lambda: _children(worker), 120, "the worker's pool child")
    os.kill(worker, signal.SIGKILL)
    runapp.wait(lambda: runapp.main_pid(" worker -Q ") not in (None, worker), 60, "a new worker")
    assert "worker exited (killed by SIGKILL)" in runapp.output()
    assert not set(pool) & set(runapp.processes())

    # kill -9 the web server's master: the web comes back.
    web = runapp.main_pid("gunicorn")
    assert web is not None
    os.kill(web, signal.SIGKILL)
    runapp.wait(lambda: runapp.main_pid("gunicorn") not in (None, web), 60, "a new web server")
    runapp.wait(runapp.up, 120, "the web server after the restart")

    # Stop: everything it started ends, nothing is orphaned.
    runapp.process.send_signal(signal.SIGINT)
    assert runapp.process.wait(timeout=60) == 0
    deadline = time.monotonic() + 30
    while runapp.processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert runapp.processes() == {}
    assert "beat exited" not in runapp.output()  # beat ran its own process throughout
    # ... sending DICOM housekeeping every 2 s: Celery's three lines a run stay out of the log.
    # (the worker's banner still lists the task).
    assert "beat: Starting" in runapp.output()
    assert not re.search(r"dicom_housekeeping\[|Sending due task dicom-housekeeping", runapp.output())


def _children(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def test_runapp_stops_every_child_when_its_output_pipe_breaks(runapp: RunApp) -> None:
    """`make run | head`, a dead `tee`, a benchmark killed while it read runapp's output: the reader goes
    away. runapp must stop everything it started (it ran on blind before, the worker group with it, until
    it next had something to say), and leave nothing behind."""
    runapp.wait(lambda: runapp.main_pid(" worker -Q "), 120, "the worker")
    runapp.wait(lambda: runapp.main_pid("gunicorn"), 120, "the web server")
    assert runapp.process.stdout is not None
    runapp.process.stdout.close()  # the reader goes away; nothing else happens
    assert runapp.process.wait(timeout=90) == 0  # a clean stop, not a BrokenPipeError half-way
    deadline = time.monotonic() + 30
    while runapp.processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert runapp.processes() == {}
