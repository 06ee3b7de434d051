"""The embedded worker's pool survives a pool child killed while idle or busy (real worker processes).

Celery's stock prefork pool on the file broker freezes for good when an idle child is killed: the child
died holding the shared task queue's lock (worker/prefork.py explains it). With the stock pool the first
test gets 0 of 5 tasks done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from worker.prefork import BlockingPool

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


class PoolWorker:
    def __init__(self, folder: Path) -> None:
        env = {
            **os.environ,
            "POOL_TEST_DIR": str(folder),
            "POOL_TEST_POOL": settings.CELERY_WORKER_POOL,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        self.folder = folder
        self.log: deque[str] = deque(maxlen=200)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.worker.pool_app",
                "worker",
                "--concurrency",
                "1",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"pool-test-{os.getpid()}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line.rstrip())
            if " ready." in line:
                self.ready.set()

    def children(self) -> list[int]:
        """Live pool children (from every thread of the main process: the pool forks replacements from
        its supervisor thread)."""
        pids = []
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
        return sorted(pid for pid in pids if _alive(pid))

    def done(self) -> set[str]:
        return {p.name.removeprefix("done-") for p in self.folder.glob("done-*")}

    def stop(self) -> None:
        children = self.children()
        self.process.kill()
        self.process.wait(timeout=20)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait(predicate: object, timeout: float, what: str, worker: PoolWorker) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n" + "\n".join(worker.log))


@pytest.fixture
def pool_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PoolWorker]:
    monkeypatch.setenv("POOL_TEST_DIR", str(tmp_path))
    worker = PoolWorker(tmp_path)
    try:
        _wait(worker.ready.is_set, 60, "the worker to be ready", worker)
        _wait(lambda: len(worker.children()) == 1, 30, "the pool child", worker)
        yield worker
    finally:
        worker.stop()


def _send(name: str, seconds: float = 0.0) -> None:
    import importlib

    from tests.worker import pool_app

    if Path(os.environ["POOL_TEST_DIR"]) != pool_app.FOLDER:  # this test's broker folder, not the last one's
        importlib.reload(pool_app)
    pool_app.record.delay(name, seconds)


def test_the_embedded_pool_keeps_consuming_after_an_idle_child_is_killed(pool_worker: PoolWorker) -> None:
    _send("before")
    _wait(lambda: "before" in pool_worker.done(), 30, "the first task", pool_worker)
    [child] = pool_worker.children()
    os.kill(child, signal.SIGKILL)  # idle: blocked waiting for the next task
    _wait(lambda: pool_worker.children() not in ([], [child]), 30, "a replacement child", pool_worker)

    names = [f"after-{i}" for i in range(5)]
    for name in names:
        _send(name)
    _wait(lambda: set(names) <= pool_worker.done(), 30, "the 5 tasks sent after the kill", pool_worker)
    assert pool_worker.process.poll() is None


def test_the_embedded_pool_keeps_consuming_after_a_busy_child_is_killed(pool_worker: PoolWorker) -> None:
    _send("slow", 60.0)
    [child] = pool_worker.children()
    _wait(
        lambda: any("pool_test.record" in line and "received" in line for line in pool_worker.log),
        30,
        "the slow task to start",
        pool_worker,
    )
    time.sleep(1.0)
    os.kill(child, signal.SIGKILL)  # busy: in the middle of the slow task

    names = [f"after-{i}" for i in range(3)]
    for name in names:
        _send(name)
    _wait(lambda: set(names) <= pool_worker.done(), 60, "the tasks sent after the kill", pool_worker)


def _pid() -> int:
    return os.getpid()


def test_a_queue_lock_left_held_by_a_dead_child_is_released() -> None:
    """A child killed in the microseconds it holds the task queue's lock must not freeze the pool."""
    pool = BlockingPool(processes=1)
    try:
        [child] = pool._pool
        pool._inqueue._rlock.acquire()  # held, as by a child killed while reading a task
        os.kill(child.pid, signal.SIGKILL)
        result = pool.apply_async(_pid)
        assert result.get(timeout=30) not in (os.getpid(), child.pid)
    finally:
        pool.terminate()
