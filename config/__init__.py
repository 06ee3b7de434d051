# Importing the Celery app here makes it the current app in every Django process,
# so radiology.dispatch publishes through the configured broker.
from worker.celery import app as celery_app

__all__ = ["celery_app"]
