"""Rebuild the monitoring summary now (the nightly task does the same)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from radiology.governance.monitoring import monitoring_refresh


class Command(BaseCommand):
    help = "Rebuild the per-subgroup and per-site monitoring summary."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"{monitoring_refresh()} monitoring cells")
