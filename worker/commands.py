"""The command lines that start this project's processes (Celery worker and beat, gunicorn), written once.

Used by ``manage.py runapp``, the end-to-end test harness and bench/stack.py, so the queues a worker
consumes and the way each process is started cannot drift apart between them. This module imports
nothing of the application (importing it configures neither Django nor Celery).
"""

from __future__ import annotations

import sys
from pathlib import Path

QUEUES = "inference,maintenance"
# gunicorn's default access line holds the query string and the referrer, where the queue's search puts
# MRNs and accession numbers: the path (%(U)s) only, and no referrer.
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
_CELERY = (sys.executable, "-m", "celery", "-A", "worker")
# gunicorn closes a kept-alive connection after this many quiet seconds. A request sent on a connection as
# the server closes it is dropped without a response, so it is longer than clients' usual pauses (the
# README's client polls every 2 s; gunicorn's default is 2) and within the 1-5 s gunicorn advises for
# clients connected directly; bench/stack.py's client stays under it.
KEEP_ALIVE_SECONDS = 5


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


SHADOW_QUEUE = "shadow"
# Started through this, every process of the shadow worker runs at the lowest CPU priority (nice 19,
# SCHED_IDLE, and its session's autogroup where CFS autogroups are on): worker/lowpriority.py.
LOWEST_PRIORITY = (sys.executable, "-m", "worker.lowpriority")


def shadow_worker_command(*, node_name: str = "shadow@%h", loglevel: str = "INFO") -> list[str]:
    """``celery worker`` on the shadow queue only, at the lowest CPU priority: shadow model versions (and
    the comparison's bootstrap) read every new radiograph in their own process, with CPU time the active
    worker leaves idle, so they neither hold up nor slow down the active version's prediction; they catch
    up whenever the active queue is empty. One task at a time and one message prefetched: what it has not
    started stays in the broker, where a restarted shadow worker finds it."""
    # The node name first: tests and operators find the main worker by " worker -Q ".
    return [
        *LOWEST_PRIORITY,
        *_CELERY,
        "worker",
        "-n",
        node_name,
        "-Q",
        SHADOW_QUEUE,
        "--concurrency",
        "1",
        "--prefetch-multiplier",
        "1",
        "--loglevel",
        loglevel,
    ]


def celery_beat_command(schedule: Path, *, loglevel: str = "INFO") -> list[str]:
    """A separate ``celery beat`` (exactly one per deployment: it runs the sweep)."""
    return [*_CELERY, "beat", "--loglevel", loglevel, "--schedule", str(schedule)]


def gunicorn_command(
    *, bind: str, workers: int = 2, threads: int = 4, timeout: int = 120, access_log: bool = False
) -> list[str]:
    """The web server: gunicorn serving config.wsgi (``access_log`` writes one line per request to stdout)."""
    command = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", bind]
    command += ["--workers", str(workers), "--threads", str(threads), "--timeout", str(timeout)]
    command += ["--keep-alive", str(KEEP_ALIVE_SECONDS)]
    if access_log:
        command += ["--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT]
    return command


def dicom_listener_command(*, port: int | None = None) -> list[str]:
    """``manage.py dicom_listener``: the C-STORE SCP, which also files quiet studies for classification."""
    manage = Path(__file__).resolve().parent.parent / "manage.py"
    command = [sys.executable, str(manage), "dicom_listener"]
    if port is not None:
        command += ["--port", str(port)]
    return command
