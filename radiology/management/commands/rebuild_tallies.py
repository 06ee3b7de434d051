"""Recompute the running totals from the records: the audit dashboard's (predictions and reviews) and the
studies and radiographs counted by database triggers.

Migration 0017 fills the first and the services keep them in step; run this after writing predictions
or reviews around the services (generate_scale_data does), or after changing TIME_ZONE (their days are
dates in the site's time zone). The triggers count every writer, save a load that bypassed them (a
`pg_restore --disable-triggers`), which this recounts.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand

from radiology.services import tallies_rebuild, trigger_tallies_recount


class Command(BaseCommand):
    help = "Recompute the audit dashboard's tallies and the study and radiograph counts from the records."

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.perf_counter()
        predictions, reviews = tallies_rebuild()
        studies, radiographs = trigger_tallies_recount()
        seconds = time.perf_counter() - started
        self.stdout.write(
            f"{predictions} prediction tallies, {reviews} review tallies; {studies} studies, "
            f"{radiographs} radiographs counted; in {seconds:.1f} s"
        )
