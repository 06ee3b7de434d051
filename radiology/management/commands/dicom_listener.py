"""Run the DICOM listener (C-STORE SCP) and file quiet studies for classification until stopped."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from radiology.dicomnet.listener import DicomListener, FilingLoop, ListenerConfig


class Command(BaseCommand):
    help = "Receive radiographs over DICOM (C-STORE) from modalities and the PACS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", help=f"address to listen on (default {settings.DICOM_BIND_ADDRESS})")
        parser.add_argument(
            "--port", type=int, help=f"port (default {settings.DICOM_PORT}; 0: any free port)"
        )
        parser.add_argument("--ae-title", help=f"this node's AE title (default {settings.DICOM_AE_TITLE})")
        parser.add_argument(
            "--no-filing", action="store_true", help="receive only; leave filing to the beat task"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = ListenerConfig.from_settings(
            host=options["host"], port=options["port"], ae_title=options["ae_title"]
        )
        listener = DicomListener(config)
        listener.start()
        filing = None if options["no_filing"] else FilingLoop(settings.DICOM_POLL_INTERVAL_SECONDS)
        if filing is not None:
            filing.start()
        allowed = ", ".join(config.allowed_calling_ae_titles) or "any"
        self.stdout.write(
            self.style.SUCCESS(
                f"DICOM listener {config.ae_title} on {config.host}:{listener.port} "
                f"(calling AE titles: {allowed}; studies filed after "
                f"{settings.DICOM_QUIET_PERIOD_SECONDS:g} s of quiet)"
            )
        )
        self.stdout.flush()
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        signal.signal(signal.SIGINT, lambda *_: done.set())
        done.wait()
        if filing is not None:
            filing.stop()
        listener.stop()
