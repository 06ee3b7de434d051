"""The periodic sweep does not pile up while the worker is away or busy.

Seen in bench/chaos.py (whole worker killed, PostgreSQL + Redis, the machine loaded): the restarted
worker's prefetch slots were all held by classify messages waiting for the model to load, beat kept
sending a sweep every interval, and 186 of them queued in 6 minutes; each one, once run, re-sent the
QUEUED rows it found. An expiry of one interval drops the stale ones (Celery acknowledges an expired
message without running it).
"""

from __future__ import annotations

from typing import cast

from celery.beat import ScheduleEntry
from django.conf import settings

from worker.celery import app


def test_a_sweep_message_expires_before_the_next_one_is_sent() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["sweep-stale-radiographs"]
    # As beat builds the entry: the options it publishes each sweep with.
    scheduled = ScheduleEntry(name="sweep-stale-radiographs", app=app, **entry)
    expires = scheduled.options.get("expires")
    assert expires is not None, "without an expiry every sweep waits for the worker, however many pile up"
    assert 0 < float(expires) <= float(cast(float, entry["schedule"]))
