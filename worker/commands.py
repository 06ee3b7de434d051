"""The command lines that start this project's Celery processes, written once.

Used by ``manage.py runapp`` and the end-to-end test harness, so the queues a worker consumes and the way
it is started cannot drift apart between them. (bench/stack.py keeps its own copy: the benchmark driver
does not import the application, whose import configures Django.)
"""

from __future__ import annotations

import sys
from pathlib import Path

QUEUES = "inference,maintenance"
_CELERY = (sys.executable, "-m", "celery", "-A", "worker")


def celery_worker_command(
    *,
    concurrency: int = 1,
    node_name: str | None = None,
    beat_schedule: Path | None = None,
    loglevel: str = "INFO",
) -> list[str]:
    """``celery worker`` on both queues; ``node_name`` also turns off gossip and mingle (test and bench
    stacks start many short-lived workers that need not know each other); ``beat_schedule`` embeds beat."""
    command = [*_CELERY, "worker"]
    if beat_schedule is not None:
        command += ["--beat", "--schedule", str(beat_schedule)]
    command += ["-Q", QUEUES, "--concurrency", str(concurrency), "--loglevel", loglevel]
    if node_name is not None:
        command += ["-n", node_name, "--without-gossip", "--without-mingle"]
    return command


def celery_beat_command(schedule: Path, *, loglevel: str = "INFO") -> list[str]:
    """A separate ``celery beat`` (exactly one per deployment: it runs the sweep)."""
    return [*_CELERY, "beat", "--loglevel", loglevel, "--schedule", str(schedule)]
