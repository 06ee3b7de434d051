"""The shadow versions' worker runs apart from the active one and at the lowest CPU priority, so a shadow
version can read every new radiograph without slowing the active prediction (bench/shadow.py measures the
effect; these check the mechanism: the command lines, the priority a started process really gets, and
that `make run` starts its shadow worker that way)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker import lowpriority
from worker.commands import QUEUES, SHADOW_QUEUE, celery_worker_command, shadow_worker_command

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_shadow_worker_consumes_only_its_queue_one_task_at_a_time_at_the_lowest_priority() -> None:
    command = shadow_worker_command()
    assert command[:3] == [sys.executable, "-m", "worker.lowpriority"]
    assert command[3:][:5] == [sys.executable, "-m", "celery", "-A", "worker"]
    assert _option(command, "-Q") == SHADOW_QUEUE == "shadow"
    assert _option(command, "--concurrency") == "1"
    assert _option(command, "--prefetch-multiplier") == "1"


def test_the_active_worker_never_consumes_the_shadow_queue_and_keeps_its_priority() -> None:
    command = celery_worker_command(concurrency=2)
    assert SHADOW_QUEUE not in _option(command, "-Q").split(",")
    assert _option(command, "-Q") == QUEUES
    assert "worker.lowpriority" not in command


@linux_only
def test_a_command_started_through_the_launcher_runs_at_nice_19_under_sched_idle() -> None:
    probe = (
        "import os, threading\n"
        "child = []\n"
        "t = threading.Thread(target=lambda: child.append(os.sched_getscheduler(0)))\n"
        "t.start(); t.join()\n"
        "print(os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0) == os.SCHED_IDLE,"
        " child[0] == os.SCHED_IDLE, os.getpid())\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-m", "worker.lowpriority", sys.executable, "-c", probe],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, err
    nice, idle, thread_idle, pid = out.split()
    # Exec, not a child: the command is the launcher's own process, so its pid is the one a supervisor
    # signals, and every thread it starts (TensorFlow's pools) inherits the policy.
    assert (nice, idle, thread_idle, int(pid)) == ("19", "True", "True", launcher.pid)
    assert "lowest CPU priority (nice 19, SCHED_IDLE" in err


def test_the_autogroup_is_lowered_only_when_the_process_leads_its_own_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CFS autogroups on, a session competes at its group's weight: the launcher lowers its own
    session's group, never one it shares (that would lower the active worker started beside it)."""
    autogroup = tmp_path / "autogroup"
    autogroup.write_text("/autogroup-7 nice 0\n")
    monkeypatch.setattr(lowpriority, "AUTOGROUP_SELF", autogroup)
    monkeypatch.setattr(lowpriority, "autogroups_enabled", lambda: True)
    monkeypatch.setattr(os, "nice", lambda increment: 0)  # this test process keeps its priority
    monkeypatch.setattr(os, "sched_setscheduler", lambda *args: None)

    monkeypatch.setattr(lowpriority, "leads_own_session", lambda: False)
    assert "autogroup shared or not settable: left alone" in lowpriority.lower_priority()
    assert autogroup.read_text() == "/autogroup-7 nice 0\n"

    monkeypatch.setattr(lowpriority, "leads_own_session", lambda: True)
    assert "autogroup nice 19" in lowpriority.lower_priority()
    assert autogroup.read_text() == "19\n"


def test_autogroups_enabled_reads_the_kernel_switch(tmp_path: Path) -> None:
    flag = tmp_path / "sched_autogroup_enabled"
    flag.write_text("1\n")
    assert lowpriority.autogroups_enabled(flag)
    flag.write_text("0\n")
    assert not lowpriority.autogroups_enabled(flag)
    assert not lowpriority.autogroups_enabled(tmp_path / "missing")


@linux_only
@pytest.mark.slow
def test_make_run_starts_its_shadow_worker_at_the_lowest_priority(tmp_path: Path) -> None:
    from tests.worker.test_runapp import RunApp

    app = RunApp(tmp_path)
    try:
        shadow = app.wait(lambda: app.main_pid(" -Q shadow "), 180, "the shadow worker")
        assert isinstance(shadow, int)
        # Celery itself, once the launcher has lowered its priority and exec'd it (the same pid).
        app.wait(lambda: "worker.lowpriority" not in app.processes().get(shadow, ""), 60, "the exec")
        worker = app.wait(lambda: app.main_pid(" worker -Q "), 180, "the active worker")
        assert isinstance(shadow, int) and isinstance(worker, int)
        # Set before exec: the shadow worker's main process has it from its first instruction (its pool
        # child and threads inherit it: test_a_command_started_through_the_launcher_...). Not waited for
        # here: at this priority its start-up runs on idle CPU only, slow on a machine busy elsewhere.
        assert os.getpriority(os.PRIO_PROCESS, shadow) == 19
        assert os.sched_getscheduler(shadow) == os.SCHED_IDLE
        # The active worker keeps the priority it was started at (this test's own, 0 unless run under nice).
        assert os.getpriority(os.PRIO_PROCESS, worker) == os.getpriority(os.PRIO_PROCESS, 0)
        assert os.sched_getscheduler(worker) == os.SCHED_OTHER
    finally:
        if app.process.poll() is None:
            app.process.send_signal(signal.SIGINT)
            try:
                app.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                app.process.kill()
        deadline = time.monotonic() + 30
        while app.processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in app.processes():
            os.kill(pid, signal.SIGKILL)
