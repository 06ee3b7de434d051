"""Run the whole application on one machine: migrate, create the demo users, then start the web server
and a Celery worker (with the sweep's beat schedule embedded) and keep them running until Ctrl+C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from worker.commands import celery_worker_command, gunicorn_command


class Command(BaseCommand):
    help = "Start web + worker with embedded defaults and print the demo logins."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--worker-concurrency", type=int, default=1)
        parser.add_argument("--no-worker", action="store_true", help="start the web server only")

    def handle(self, *args: Any, **options: Any) -> None:
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        self.stdout.write("Demo accounts:")
        call_command("create_demo_users")

        processes: list[subprocess.Popen[bytes]] = []
        if not options["no_worker"]:
            processes.append(
                subprocess.Popen(
                    celery_worker_command(
                        concurrency=options["worker_concurrency"],
                        beat_schedule=Path(settings.CELERY_BEAT_SCHEDULE_FILENAME),
                    )
                )
            )
        bind = f"{options['host']}:{options['port']}"
        processes.append(
            subprocess.Popen(gunicorn_command(bind=bind, workers=options["web_workers"], access_log=True))
        )
        self.stdout.write(
            self.style.SUCCESS(f"\nFracture Review is running at http://{bind}/  (Ctrl+C stops it)\n")
        )

        def stop(*_: Any) -> None:
            for process in processes:
                if process.poll() is None:
                    process.terminate()

        signal.signal(signal.SIGTERM, stop)
        try:
            while all(process.poll() is None for process in processes):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            stop()
            for process in processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        failed = [
            p.args[2] if isinstance(p.args, list) else p.args
            for p in processes
            if p.returncode not in (0, -15, None)
        ]
        if failed:
            self.stderr.write(f"Stopped because a process exited: {failed}")
            sys.exit(1)
