"""The Celery tasks of the integration: housekeeping files arrivals and creates deliveries; a delivery task
retries a down PACS and ends FAILED with the reason after the configured attempts."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pydicom.uid import generate_uid

from radiology.dicomnet import inbox
from radiology.dicomnet.models import DicomArrival, DicomInstance, ResultDelivery
from radiology.models import Study
from tests.dicomnet import factory
from tests.dicomnet.test_delivery import predicted_study
from worker.dicom_tasks import deliver_results, dicom_housekeeping

pytestmark = pytest.mark.django_db


def test_housekeeping_files_quiet_arrivals(
    settings: Any, dispatched: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.DICOM_QUIET_PERIOD_SECONDS = 0
    settings.DICOM_DESTINATION = ""
    inbox.dicom_instance_receive(
        data=factory.radiograph(study_uid=generate_uid()), source=DicomInstance.Source.C_STORE
    )
    with django_capture_on_commit_callbacks(execute=True):
        counts = dicom_housekeeping.apply().get()
    assert counts == {"filed": 1, "created": 0, "resent": 0}
    assert DicomArrival.objects.get().state == DicomArrival.State.FILED
    assert len(dispatched.sent) == Study.objects.get().radiographs.count() == 1


def test_a_delivery_to_a_pacs_that_is_down_ends_failed_with_the_reason(settings: Any, file_due: Any) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        settings.DICOM_DESTINATION = f"DOWNPACS@127.0.0.1:{closed.getsockname()[1]}"
    settings.DICOM_DELIVERY_MAX_ATTEMPTS = 3
    settings.DICOM_DELIVERY_TIMEOUT_SECONDS = 2
    predicted_study(file_due)
    created = dicom_housekeeping.apply().get()["created"]
    assert created == 1
    item = ResultDelivery.objects.get()

    # Run eagerly, each retry runs at once (the countdown only matters to a real worker).
    deliver_results.apply(args=[item.pk])

    item.refresh_from_db()
    assert item.status == ResultDelivery.Status.FAILED
    assert item.attempts == 3
    assert "DOWNPACS" in item.last_error and "association" in item.last_error
    assert [d["role"] for d in item.documents] == ["sr", "sc", "sc"]  # built once, ready for a retry
