"""Celery tasks of the hospital integration: filing DICOM arrivals and delivering results to the PACS.

Thin wrappers over radiology.dicomnet services. Housekeeping runs on beat (DICOM_POLL_INTERVAL_SECONDS);
a delivery runs on its own, so a slow or absent PACS never holds up classification.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.celery import app

logger = logging.getLogger(__name__)


@app.task(name="worker.dicom_tasks.dicom_housekeeping", ignore_result=True)
def dicom_housekeeping() -> dict[str, int]:
    """File quiet DICOM arrivals, create the deliveries that are due, and re-send lost ones."""
    from radiology.dicomnet import delivery, inbox

    filed = inbox.dicom_arrivals_file_due()
    created = delivery.result_deliveries_create_due()
    resent = delivery.result_deliveries_resend_stale()
    if filed or created or resent:
        logger.info(
            "DICOM housekeeping: %d arrival(s) filed, %d delivery(ies) created, %d re-sent",
            len(filed),
            len(created),
            len(resent),
        )
    return {"filed": len(filed), "created": len(created), "resent": len(resent)}


@app.task(
    bind=True,
    name="worker.dicom_tasks.deliver_results",
    acks_late=True,  # safe: the documents are built once and re-sending overwrites the same instances
    reject_on_worker_lost=True,
    max_retries=None,  # bounded by DICOM_DELIVERY_MAX_ATTEMPTS, counted on the delivery itself
    ignore_result=True,
)
def deliver_results(self: Any, delivery_id: int) -> str:
    """Build (once) and send one delivery; on failure retry with backoff, then mark it FAILED."""
    from radiology.dicomnet import delivery as service
    from radiology.dicomnet.models import ResultDelivery

    try:
        sent = service.result_delivery_send(delivery_id=delivery_id)
    except service.DeliveryError as exc:
        failed = service.result_delivery_record_failure(delivery_id=delivery_id, message=str(exc))
        logger.warning("delivery %d attempt %d failed: %s", delivery_id, failed.attempts, exc)
        if failed.status == ResultDelivery.Status.PENDING:
            raise self.retry(countdown=min(300, 2 ** (failed.attempts + 1))) from None
        return str(failed.status)
    except Exception as exc:
        # Anything else (a bug, a corrupt stored image) is counted like a failed attempt, without details.
        logger.exception("delivery %d failed unexpectedly", delivery_id)
        failed = service.result_delivery_record_failure(
            delivery_id=delivery_id,
            message=f"The result could not be built or sent ({exc.__class__.__name__}).",
        )
        if failed.status == ResultDelivery.Status.PENDING:
            raise self.retry(countdown=min(300, 2 ** (failed.attempts + 1))) from None
        return str(failed.status)
    return str(sent.status)
