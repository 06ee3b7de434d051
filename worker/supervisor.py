"""A small process supervisor for ``manage.py runapp``: keeps the web server, the worker and beat running.

Each service runs in its own session (process group), so that everything it started (gunicorn's workers,
Celery's pool children) can be signalled as one. A service that exits on its own is restarted after a
back-off that doubles on each quick failure (1 s, 2 s, 4 s ... 30 s) and resets once it has run for a
while; before the restart, whatever is left of its process group (an orphaned pool child, say) is killed,
so nothing runs twice and nothing is left behind. Ctrl+C or SIGTERM stops every service (SIGTERM to its
main process, which stops its own children in order; SIGKILL to whatever is left of the group after the
grace period). Each child also gets SIGTERM from the kernel
if the supervisor itself dies (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the supervisor orphans nothing.

No third-party supervisor (supervisord, honcho) is needed: the embedded default must run with Python only.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Service:
    """A long-running process the supervisor keeps alive."""

    name: str
    command: Sequence[str]
    env: Mapping[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False if nothing is left in it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


class Supervisor:
    def __init__(
        self,
        services: Sequence[Service],
        *,
        initial_backoff: float = 1.0,
        max_backoff: float = 30.0,
        stable_after: float = 60.0,
        stop_timeout: float = 20.0,
        poll_interval: float = 0.5,
        on_event: Callable[[str], None] | None = None,
        stop_when: Callable[[], bool] | None = None,
    ) -> None:
        self.services = list(services)
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.on_event = on_event or logger.info
        # Asked once per round: True stops every service (runapp: its own output is gone).
        self.stop_when = stop_when
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Start every service and keep them running until SIGINT or SIGTERM; then stop them all."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._request_stop)
        try:
            self.start()
            while not self._stopping:
                self.check()
                if self.stop_when is not None and self.stop_when():
                    break
                time.sleep(self.poll_interval)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self) -> None:
        for service in self.services:
            self._start(service)

    def _request_stop(self, *_: Any) -> None:
        self._stopping = True

    def check(self) -> None:
        """One round: notice services that exited, clean up after them, restart those whose time has come."""
        now = time.monotonic()
        for service in self.services:
            process = service.process
            if process is not None and process.poll() is not None:
                self._reap(service, process, now)
            if service.process is None and service.restart_at is not None and now >= service.restart_at:
                self._start(service)

    def stop(self) -> None:
        self._stopping = True
        running = [s for s in self.services if s.process is not None]
        for service in running:
            assert service.process is not None
            # The leader only: gunicorn and Celery stop their own children in order on SIGTERM.
            if service.process.poll() is None:
                service.process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for service in running:
            assert service.process is not None
            pgid = service.process.pid
            try:
                service.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._event(f"{service.name} did not stop within {self.stop_timeout:.0f} s; killing it")
            # Whatever is left of the group (the leader gone, a child not yet): no survivors.
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=5)  # reaped: no zombie left in the process table
            service.process = None
            service.restart_at = None

    def _event(self, message: str) -> None:
        """Report while stopping: a failing report (the output's reader gone: BrokenPipeError) must not
        cut the stop short and leave a service's group running."""
        try:
            self.on_event(message)
        except Exception:  # whatever the reporter raises, the stop goes on
            logger.warning("could not report: %s", message)

    # --- one service -------------------------------------------------------------------------------
    def _start(self, service: Service) -> None:
        env = dict(os.environ if service.env is None else service.env)
        service.process = subprocess.Popen(
            list(service.command),
            env=env,
            start_new_session=True,  # its own process group: signalled, and cleaned up, as one
            preexec_fn=_die_with_parent,  # safe: the supervisor runs no threads
        )
        service.started_at = time.monotonic()
        service.restart_at = None
        self.on_event(f"{service.name} started (pid {service.process.pid})")

    def _reap(self, service: Service, process: subprocess.Popen[bytes], now: float) -> None:
        pgid = process.pid
        # The leader is gone; its children may not be (an embedded beat, a pool child): end them now,
        # before a new copy of the service starts beside them.
        _signal_group(pgid, signal.SIGKILL)
        ran_for = now - service.started_at
        if ran_for >= self.stable_after or service.backoff == 0.0:
            service.backoff = self.initial_backoff
        else:
            service.backoff = min(self.max_backoff, service.backoff * 2)
        service.process = None
        service.restarts += 1
        service.restart_at = now + service.backoff
        self.on_event(
            f"{service.name} exited ({_describe(process.returncode)}) after {ran_for:.0f} s; "
            f"restarting in {service.backoff:.0f} s"
        )


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
