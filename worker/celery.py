"""The Celery application, configured from Django settings (CELERY_* names)."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("fracture_review")
# The default app in every thread (not only the importing one): radiology.dispatch sends through
# celery.current_app, which in a web server's request threads would otherwise be an unconfigured app.
app.set_default()
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["worker"], related_name="tasks")
app.autodiscover_tasks(["worker"], related_name="dicom_tasks")  # DICOM arrivals and PACS delivery
app.autodiscover_tasks(["worker"], related_name="governance_tasks")  # shadow versions, monitoring, drift


def _ensure_embedded_broker_folders() -> None:
    """The file-based embedded broker needs its folders before the first message is sent."""
    options = app.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = options.get(key)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)


if str(app.conf.broker_url or "").startswith("filesystem://"):
    _ensure_embedded_broker_folders()
