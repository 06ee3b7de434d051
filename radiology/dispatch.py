"""Sending classification work to the Celery workers, by task name and radiograph id only.

The one place radiology reaches Celery: it sends by name through the current app (the one config/
installs from worker/), so the web side never imports the worker's code (a lint contract checks this).

Called from transaction.on_commit hooks, so a worker never sees a row that is not committed yet.
If the broker cannot be reached the upload still succeeds: the rows stay QUEUED without a dispatch
time, and the periodic sweep sends them once the broker is back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import current_app
from django.utils import timezone

from radiology.models import Radiograph

logger = logging.getLogger(__name__)

CLASSIFY_TASK = "worker.tasks.classify_radiograph"


def send_classification(radiograph_ids: Sequence[int]) -> list[int]:
    """Publish one message per radiograph; returns the ids that reached the broker."""
    app = current_app
    sent: list[int] = []
    try:
        with app.producer_or_acquire() as producer:
            for radiograph_id in radiograph_ids:
                app.send_task(CLASSIFY_TASK, args=[radiograph_id], producer=producer, retry=False)
                sent.append(radiograph_id)
    except Exception as exc:  # kombu raises several connection error types; all mean "not sent"
        logger.warning(
            "broker unavailable (%s): %d radiograph(s) stay queued for the sweep",
            exc.__class__.__name__,
            len(radiograph_ids) - len(sent),
        )
    if sent:
        Radiograph.objects.filter(pk__in=sent, status=Radiograph.Status.QUEUED).update(
            dispatched_at=timezone.now()
        )
    return sent


SHADOW_TASK = "worker.governance_tasks.shadow_predict"


def _send_unretried(task: str, args: list[object], what: str) -> bool:
    """Publish one message that is not worth a retry: False, logged, when the broker could not be reached."""
    try:
        current_app.send_task(task, args=args, retry=False)
    except Exception as exc:  # kombu raises several connection error types; all mean "not sent"
        logger.warning("%s not sent: %s", what, exc.__class__.__name__)
        return False
    return True


def send_shadow_predictions(radiograph_ids: Sequence[int]) -> bool:
    """One message for the shadow versions' queue (routed by settings.CELERY_TASK_ROUTES); a lost message
    costs only shadow evidence, never a clinical result, so it is not retried."""
    return _send_unretried(
        SHADOW_TASK, [list(radiograph_ids)], f"shadow work for {len(radiograph_ids)} radiograph(s)"
    )


COMPARISON_REFRESH_TASK = "worker.governance_tasks.refresh_comparisons"


def send_comparison_refresh() -> bool:
    """Ask for the active/shadow comparisons to be recomputed (routed to the shadow versions' low-priority
    worker); a lost message only leaves the page showing the previous comparison until beat asks again."""
    return _send_unretried(COMPARISON_REFRESH_TASK, [], "comparison refresh request")


MONITORING_REFRESH_TASK = "worker.governance_tasks.refresh_monitoring"


def send_monitoring_refresh() -> bool:
    """Ask a worker to rebuild the monitoring summary now (an admin's request; beat rebuilds it nightly);
    a lost message only leaves the previous summary in place."""
    return _send_unretried(MONITORING_REFRESH_TASK, [], "monitoring refresh request")


DELIVER_RESULTS_TASK = "worker.dicom_tasks.deliver_results"


def send_result_delivery(delivery_id: int) -> bool:
    """Publish one delivery of DICOM results to the PACS; False when the broker could not be reached
    (the delivery stays PENDING without a dispatch time and the housekeeping task sends it again)."""
    from radiology.models import ResultDelivery

    try:
        current_app.send_task(DELIVER_RESULTS_TASK, args=[delivery_id], retry=False)
    except Exception as exc:  # kombu raises several connection error types; all mean "not sent"
        logger.warning(
            "broker unavailable (%s): delivery %d stays pending", exc.__class__.__name__, delivery_id
        )
        return False
    now = timezone.now()
    ResultDelivery.objects.filter(pk=delivery_id, status=ResultDelivery.Status.PENDING).update(
        dispatched_at=now, updated_at=now
    )
    return True
