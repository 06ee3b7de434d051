"""A DICOM study under a fault, with the real components: dcmtk's storescu as the modality, the
`manage.py dicom_listener` process, PostgreSQL, Redis and `celery worker` processes with the shipped model.

The worker is killed with SIGKILL (its pool children and itself, as the kernel's OOM killer would) while it
classifies the study, then a new worker is started: afterwards there is exactly one study and exactly one
prediction of the active model per instance; and the modality sending the same instances again creates
nothing. Run by `make test-e2e-services` (DATABASE_URL=PostgreSQL, CELERY_BROKER_URL=Redis).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from pydicom.uid import generate_uid

from radiology.dicomnet.models import DicomArrival, DicomInstance
from radiology.governance.registry import model_version_active
from radiology.models import Prediction, Radiograph, Study
from tests.dicomnet import factory
from tests.e2e.harness import WorkerProcess, free_port, start_worker, wait_for
from tests.e2e.test_orthanc import AE_TITLE, _start_listener, _stop

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

INSTANCES = 6
# A RUNNING claim goes stale after 8 s and the sweep runs every 2 s; a study is quiet after 1 s.
FAST = {
    "CLASSIFY_RUNNING_TIMEOUT_SECONDS": "8",
    "CLASSIFY_RESEND_AFTER_SECONDS": "30",
    "SWEEP_INTERVAL_SECONDS": "2",
    "DICOM_QUIET_PERIOD_SECONDS": "1",
    "DICOM_POLL_INTERVAL_SECONDS": "1",
    "DICOM_AE_TITLE": AE_TITLE,
    "DICOM_DESTINATION": "",
}


@pytest.fixture(autouse=True)
def _real_services_only() -> None:
    assert connection.vendor == "postgresql", "DICOM fault tests need DATABASE_URL pointing at PostgreSQL"
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "DICOM fault tests need Redis as the broker"


def _study_files(folder: Path, study_uid: str) -> list[Path]:
    paths = []
    for index in range(INSTANCES):
        path = folder / f"{index}.dcm"
        path.write_bytes(
            factory.radiograph(
                study_uid=study_uid,
                modality=("DX", "CR")[index % 2],
                syntax="jpeg_lossless_sv1",  # as a modality sends it (storescu -xs proposes it)
                accession=f"KILL-{study_uid[-8:]}",
                size=320 + 16 * index,  # distinct pixels: six radiographs, not one image six times
            )
        )
        paths.append(path)
    return paths


def _storescu(port: int, paths: Sequence[Path]) -> None:
    sent = subprocess.run(
        ["storescu", "-xs", "-aet", "MODALITY", "-aec", AE_TITLE, "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr


def _kill_hard(worker: WorkerProcess) -> list[int]:
    """SIGKILL the worker's pool children and the worker itself (its beat, a separate process, lives on)."""
    victims = [*worker.child_pids(), worker.pid]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    return victims


def test_a_worker_killed_mid_study_gives_one_study_and_one_prediction_per_instance(
    live_server: Any, worker_env: dict[str, str], tmp_path: Path
) -> None:
    listener_port = free_port()
    # Without warm-up the first task loads the model while its radiographs are RUNNING: a wide window.
    env = {**worker_env, **FAST, "DICOM_PORT": str(listener_port), "CLASSIFIER_WARM_UP": "0"}
    listener = _start_listener(env, listener_port)
    victim = start_worker(env, name="dicom-victim", beat=True)
    survivor: WorkerProcess | None = None
    try:
        study_uid = generate_uid()
        paths = _study_files(tmp_path, study_uid)
        _storescu(listener_port, paths)
        arrival = wait_for(
            lambda: DicomArrival.objects.filter(study_instance_uid=study_uid, state="filed").first(),
            timeout=60,
            message="the study to be filed",
        )
        study = arrival.study
        assert DicomInstance.objects.filter(arrival=arrival).count() == INSTANCES
        wait_for(
            lambda: Radiograph.objects.filter(study=study, status=Radiograph.Status.RUNNING).exists(),
            timeout=120,
            interval=0.02,
            message=f"classification to start; log:\n{victim.output()[-3000:]}",
        )
        assert victim.child_pids(), victim.output()
        _kill_hard(victim)
        unfinished = Radiograph.objects.filter(study=study).exclude(status=Radiograph.Status.PREDICTED)
        assert unfinished.exists(), "the kill came after the study was classified: not mid-study"

        survivor = start_worker(env, name="dicom-survivor")

        def all_predicted() -> bool:
            return (
                not Radiograph.objects.filter(study=study)
                .exclude(status=Radiograph.Status.PREDICTED)
                .exists()
            )

        wait_for(all_predicted, timeout=300, message=f"recovery; log:\n{survivor.output()[-3000:]}")

        # The modality sends the whole study again (a retry after the outage): nothing new anywhere.
        _storescu(listener_port, paths)
        time.sleep(4)  # several quiet periods and filing passes, for anything wrongly created to appear
    finally:
        _stop(listener)
        victim.stop()
        if survivor is not None:
            survivor.stop()

    assert Study.objects.count() == 1
    assert DicomArrival.objects.get().study == study
    assert DicomArrival.objects.get().state == DicomArrival.State.FILED
    instances = list(DicomInstance.objects.all())
    assert len(instances) == INSTANCES
    assert {i.state for i in instances} == {DicomInstance.State.FILED}
    radiographs = list(Radiograph.objects.filter(study=study))
    assert len(radiographs) == INSTANCES == Radiograph.objects.count()
    assert {i.radiograph_id for i in instances} == {r.pk for r in radiographs}
    active = model_version_active()
    assert active is not None
    for radiograph in radiographs:
        predictions = list(Prediction.objects.filter(radiograph=radiograph))
        assert len(predictions) == 1, f"radiograph {radiograph.pk} has {len(predictions)} predictions"
        assert predictions[0].model_version == active.version
        assert radiograph.current_prediction_id == predictions[0].pk
    assert Prediction.objects.count() == INSTANCES
    # At least one radiograph was claimed by the killed worker and finished by the new one.
    assert max(r.attempts for r in radiographs) >= 2
