"""Recompute the audit dashboard's running totals from the predictions and reviews.

Migration 0017 fills them once and the services keep them in step; run this after writing predictions
or reviews around the services (generate_scale_data does), or after changing TIME_ZONE (their days are
dates in the site's time zone).
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand

from radiology.services import tallies_rebuild


class Command(BaseCommand):
    help = "Recompute the audit dashboard's prediction and review tallies from the records."

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.perf_counter()
        predictions, reviews = tallies_rebuild()
        seconds = time.perf_counter() - started
        self.stdout.write(f"{predictions} prediction tallies, {reviews} review tallies in {seconds:.1f} s")
