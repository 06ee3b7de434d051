"""The process supervisor behind `make run`, with real processes: restarts with back-off, leaves no orphans."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.supervisor import Service, Supervisor

pytestmark = pytest.mark.slow

# A service shaped like gunicorn or a Celery worker: it starts a child of its own and, on SIGTERM, stops
# that child before leaving. It records both pids in a file named after its own pid.
SERVICE = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    def stop(*_):
        child.terminate(); child.wait(); sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    with open(os.path.join(sys.argv[1], f"{os.getpid()}"), "w") as f:
        f.write(str(child.pid))
    while True:
        time.sleep(1)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(
    predicate: Callable[[], object], timeout: float, what: str, tick: Callable[[], None] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick is not None:
            tick()
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _grandchild(folder: Path, pid: int) -> int:
    _wait(
        lambda: (folder / str(pid)).is_file() and (folder / str(pid)).read_text(), 20, "the service to start"
    )
    return int((folder / str(pid)).read_text())


def _restarted_since(service: Service, restarts: int) -> Callable[[], bool]:
    return lambda: service.restarts > restarts


def _service(folder: Path, name: str = "web") -> Service:
    return Service(name, [sys.executable, "-c", SERVICE, str(folder)])


def test_a_killed_service_is_restarted_and_what_it_left_behind_is_killed(tmp_path: Path) -> None:
    events: list[str] = []
    web = _service(tmp_path)
    supervisor = Supervisor([web], initial_backoff=0.2, on_event=events.append)
    supervisor.start()
    try:
        first = web.pid
        assert first is not None
        assert first is not None
        orphan = _grandchild(tmp_path, first)
        os.kill(first, signal.SIGKILL)  # the service's own child survives a kill -9 of its parent

        _wait(lambda: web.pid not in (None, first), 10, "the restart", tick=supervisor.check)
        assert not _alive(first)
        _wait(lambda: not _alive(orphan), 5, "the orphan to be killed")
        assert web.pid is not None
        assert _alive(_grandchild(tmp_path, web.pid))
        assert web.restarts == 1
        assert any("web exited (killed by SIGKILL)" in event for event in events)
    finally:
        supervisor.stop()


def test_quick_failures_back_off_and_a_stable_run_resets_the_back_off(tmp_path: Path) -> None:
    failing = Service("worker", [sys.executable, "-c", "import sys; sys.exit(3)"])
    supervisor = Supervisor([failing], initial_backoff=0.1, max_backoff=0.4, stable_after=30)
    supervisor.start()
    backoffs: list[float] = []
    try:
        while len(backoffs) < 4:
            restarts = failing.restarts
            _wait(_restarted_since(failing, restarts), 10, "the failure", tick=supervisor.check)
            backoffs.append(failing.backoff)
    finally:
        supervisor.stop()
    assert backoffs == [0.1, 0.2, 0.4, 0.4]


def test_stop_ends_every_service_and_its_children(tmp_path: Path) -> None:
    services = [_service(tmp_path, "web"), _service(tmp_path, "worker")]
    supervisor = Supervisor(services, stop_timeout=10)
    supervisor.start()
    pids = []
    for service in services:
        assert service.pid is not None
        pids += [service.pid, _grandchild(tmp_path, service.pid)]
    supervisor.stop()
    assert not [pid for pid in pids if _alive(pid)]


def test_a_kill_9_of_the_supervisor_leaves_no_service_running(tmp_path: Path) -> None:
    runner = textwrap.dedent(
        f"""
        import sys
        from worker.supervisor import Service, Supervisor
        Supervisor([Service("web", [sys.executable, "-c", {SERVICE!r}, {str(tmp_path)!r}])]).run()
        """
    )
    root = Path(__file__).resolve().parents[2]
    supervisor = subprocess.Popen(
        [sys.executable, "-c", runner], cwd=root, env={**os.environ, "PYTHONPATH": str(root)}
    )
    try:
        _wait(lambda: any(p.name.isdigit() and p.read_text() for p in tmp_path.iterdir()), 30, "the service")
        [record] = [p for p in tmp_path.iterdir() if p.name.isdigit()]
        service, child = int(record.name), int(record.read_text())
        supervisor.kill()
        supervisor.wait(timeout=10)
        _wait(lambda: not _alive(service) and not _alive(child), 10, "the service and its child to stop")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


def test_a_failing_report_while_stopping_does_not_leave_a_service_running(tmp_path: Path) -> None:
    """runapp reports on its own output; when that breaks (BrokenPipeError) while a service is slow to stop,
    the stop must still end every service and its children, not give up half-way."""
    stubborn = textwrap.dedent(
        """
        import os, signal, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # slow to stop: a worker finishing its batch
        with open(os.path.join(sys.argv[1], f"{os.getpid()}"), "w") as f:
            f.write(str(child.pid))
        while True:
            time.sleep(1)
        """
    )

    def broken_pipe(event: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    services = [
        Service("worker", [sys.executable, "-c", stubborn, str(tmp_path)]),
        _service(tmp_path, "beat"),
    ]
    supervisor = Supervisor(services, stop_timeout=2, on_event=lambda event: None)
    supervisor.start()
    pids = []
    for service in services:
        assert service.pid is not None
        pids += [service.pid, _grandchild(tmp_path, service.pid)]
    supervisor.on_event = broken_pipe
    try:
        supervisor.stop()
        with contextlib.suppress(AssertionError):  # a SIGKILL takes a moment to land
            _wait(lambda: not any(_alive(pid) for pid in pids), 5, "every process to end")
    finally:
        left = [pid for pid in pids if _alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert not left
