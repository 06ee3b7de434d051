"""Run the whole application on one machine: migrate, create the demo accounts on the first start, then
run the web server, a Celery worker, Celery beat (the sweep) and the DICOM listener under a supervisor
that restarts any of them that dies (worker/supervisor.py) until Ctrl+C."""

from __future__ import annotations

import ipaddress
import os
import select
import stat
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from worker.commands import (
    celery_beat_command,
    celery_worker_command,
    dicom_listener_command,
    gunicorn_command,
    shadow_worker_command,
)
from worker.supervisor import Service, Supervisor


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Command(BaseCommand):
    help = "Start web, worker, beat and the DICOM listener, supervised; create the demo accounts once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--worker-concurrency", type=int, default=1)
        parser.add_argument("--no-worker", action="store_true", help="start the web server only")
        parser.add_argument("--no-dicom", action="store_true", help="do not start the DICOM listener")
        parser.add_argument(
            "--shadow-model",
            type=Path,
            default=None,
            help="a model artifact to register as a shadow version (an admin's later decision stands)",
        )
        parser.add_argument(
            "--demo-users",
            action="store_true",
            help="create the demo accounts even when listening beyond this machine (--host)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        if options["shadow_model"] is not None:
            # Idempotent: a version registered before keeps the status an admin gave it (promoted, retired).
            call_command(
                "register_model",
                str(options["shadow_model"]),
                status="shadow",
                reason="demo: a second model reads every new radiograph in shadow",
            )
        if is_loopback(options["host"]) or options["demo_users"]:
            call_command("create_demo_users")
        else:
            self.stdout.write(
                "No demo accounts: the server listens beyond this machine. Create accounts with "
                "`python manage.py createsuperuser` (or pass --demo-users)."
            )

        # The embedded server speaks plain HTTP: cookies marked Secure would never come back to it. Behind
        # a TLS proxy, set SECURE_COOKIES=1 (and BEHIND_TLS_PROXY=1).
        env = {**os.environ, "SECURE_COOKIES": os.environ.get("SECURE_COOKIES", "0"), "PYTHONUNBUFFERED": "1"}
        bind = f"{options['host']}:{options['port']}"
        services = [
            Service("web", gunicorn_command(bind=bind, workers=options["web_workers"], access_log=True), env)
        ]
        if not options["no_worker"]:
            # Beat runs beside the worker, not inside it (`worker --beat`): a worker killed with -9 would
            # leave an embedded beat behind, orphaned and still sending.
            services += [
                Service("worker", celery_worker_command(concurrency=options["worker_concurrency"]), env),
                Service("beat", celery_beat_command(Path(settings.CELERY_BEAT_SCHEDULE_FILENAME)), env),
                # Shadow model versions (manage.py register_model PATH --status shadow) on their own queue;
                # it loads a model only once a shadow version is registered.
                Service("shadow", shadow_worker_command(), {**env, "CLASSIFIER_WARM_UP": "0"}),
            ]
        if not options["no_dicom"]:
            # The DICOM listener (C-STORE SCP); it prints its AE title and port once it listens.
            services.append(Service("dicom", dicom_listener_command(), env))

        self.stdout.write(
            self.style.SUCCESS(f"\nFracture Review is running at http://{bind}/  (Ctrl+C stops it)\n")
        )
        if not options["no_dicom"]:
            self.stdout.write(
                f"DICOM in: storescu -aec {settings.DICOM_AE_TITLE} {settings.DICOM_BIND_ADDRESS} "
                f"{settings.DICOM_PORT} FILE.dcm   or STOW-RS: POST http://{bind}/dicomweb/studies\n"
            )
        sys.stdout.flush()

        output = _Output(self.stdout)
        Supervisor(
            services, on_event=lambda event: output.line(f"[runapp] {event}"), stop_when=output.gone
        ).run()
        output.line("Stopped.")


class _Output:
    """runapp's own output, and whether anyone still reads it. When the reader goes away (`make run | head`,
    a dead `tee`, a benchmark that was killed), runapp stops everything it started, as any producer in a
    pipeline does, instead of running on blind (a write would raise BrokenPipeError, and a supervisor
    that never writes would never notice)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.broken = False
        try:
            self.fd: int | None = sys.stdout.fileno()
            mode = os.fstat(self.fd).st_mode
        except (OSError, ValueError, AttributeError):  # no real file behind stdout (call_command in tests)
            self.fd = None
        else:
            # A pipe or a socket tells its writer that the reader is gone (POLLERR / POLLHUP); a file or a
            # terminal keeps no reader to lose (a terminal that hangs up sends SIGHUP).
            if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
                self.fd = None

    def line(self, text: str) -> None:
        if self.broken:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
            sys.stdout.flush()
        except (BrokenPipeError, ConnectionResetError):
            self._lost()

    def gone(self) -> bool:
        if not self.broken and self.fd is not None:
            poller = select.poll()
            poller.register(self.fd, select.POLLERR | select.POLLHUP)
            if poller.poll(0):
                self._lost()
        return self.broken

    def _lost(self) -> None:
        self.broken = True
        # Later writes (and the interpreter's flush at exit) go nowhere instead of raising again.
        try:
            out, err = os.fstat(1), os.fstat(2)
        except OSError:
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        if (err.st_dev, err.st_ino) == (out.st_dev, out.st_ino):  # 2>&1: the same lost reader
            os.dup2(devnull, 2)
        os.close(devnull)
