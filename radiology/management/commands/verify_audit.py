"""Recompute the audit trail's hash chain and name the first broken link."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from radiology.governance.audit_chain import verify_chain


class Command(BaseCommand):
    help = "Verify the hash chain of every audit event; exits 1 and names the first broken link if any."

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.perf_counter()
        report = verify_chain()
        seconds = time.perf_counter() - started
        if not report.ok:
            where = f"sequence {report.broken_sequence}" if report.broken_sequence else "the chain"
            event = f", event id {report.broken_event_id}" if report.broken_event_id else ""
            raise CommandError(
                f"audit chain BROKEN at {where}{event}: {report.problem} "
                f"({report.checked} events verified before it, {seconds:.1f} s)"
            )
        self.stdout.write(
            f"audit chain intact: {report.checked} events, head {report.head_sequence} "
            f"{report.head_hash} ({seconds:.1f} s)"
        )
