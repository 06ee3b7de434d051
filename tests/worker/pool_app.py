"""A minimal Celery app on the embedded file broker, for pool tests with real worker processes.

It runs the pool the project configures (settings.CELERY_WORKER_POOL, passed in POOL_TEST_POOL) without
Django or the model, so a test can kill pool children and count what still gets done in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

FOLDER = Path(os.environ["POOL_TEST_DIR"])

app = Celery("pool_test", broker="filesystem://")
app.conf.broker_transport_options = {
    "data_folder_in": str(FOLDER / "queue"),
    "data_folder_out": str(FOLDER / "queue"),
    "control_folder": str(FOLDER / "control"),
    "polling_interval": 0.1,
}
app.conf.worker_hijack_root_logger = False
app.conf.worker_pool = os.environ.get("POOL_TEST_POOL", "prefork")
app.conf.task_acks_late = True
app.conf.task_reject_on_worker_lost = True
app.conf.worker_prefetch_multiplier = 1
for folder in ("queue", "control"):
    (FOLDER / folder).mkdir(parents=True, exist_ok=True)


@app.task(name="pool_test.record")
def record(name: str, seconds: float = 0.0) -> None:
    """Sleep (to be killed while busy), then leave a file saying who did the work."""
    import time

    time.sleep(seconds)
    (FOLDER / f"done-{name}").write_text(str(os.getpid()))
