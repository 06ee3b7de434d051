"""Faults with the real components: PostgreSQL, Redis and `celery worker` subprocesses.

Each test breaks something for real (kill -9, a stopped broker, a dropped database connection, a
duplicate delivery, a broken model file) and checks that nothing is lost and nothing is done twice.
Run by `make test-e2e-services` (DATABASE_URL=PostgreSQL, CELERY_BROKER_URL=Redis).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from radiology import dispatch
from radiology.models import Prediction, Radiograph
from tests.e2e.harness import (
    TcpProxy,
    celery_app_broker,
    private_redis,
    start_worker,
    upload_distinct_study,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Fast recovery for tests: a RUNNING claim goes stale after 8 s, the sweep runs every 2 s.
FAST_RECOVERY = {
    "CLASSIFY_RUNNING_TIMEOUT_SECONDS": "8",
    "CLASSIFY_RESEND_AFTER_SECONDS": "30",
    "SWEEP_INTERVAL_SECONDS": "2",
}


@pytest.fixture(autouse=True)
def _real_services_only() -> None:
    assert connection.vendor == "postgresql", "fault tests need DATABASE_URL pointing at PostgreSQL"
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "fault tests need CELERY_BROKER_URL on Redis"


def _all_predicted(ids: Sequence[int]) -> bool:
    return Radiograph.objects.filter(pk__in=ids, status=Radiograph.Status.PREDICTED).count() == len(ids)


def _assert_predicted_exactly_once(ids: Sequence[int]) -> None:
    for pk in ids:
        predictions = list(Prediction.objects.filter(radiograph_id=pk))
        assert len(predictions) == 1, f"radiograph {pk} has {len(predictions)} predictions"
        assert predictions[0].heatmap and predictions[0].heatmap.storage.exists(
            predictions[0].heatmap.name or ""
        )


def test_a_worker_killed_mid_inference_still_predicts_exactly_once(worker_env: dict[str, str]) -> None:
    # Without warm-up the first task loads the model while its radiograph is RUNNING: a wide window.
    env = {**worker_env, **FAST_RECOVERY, "CLASSIFIER_WARM_UP": "0"}
    worker = start_worker(env, name="victim", beat=True)
    try:
        [pk] = upload_distinct_study("KILL-1", 1)
        wait_for(
            lambda: Radiograph.objects.filter(pk=pk, status=Radiograph.Status.RUNNING).exists(),
            timeout=60,
            interval=0.02,
            message="the task to start",
        )
        children = worker.child_pids()
        assert children, worker.output()
        for child in children:
            os.kill(child, signal.SIGKILL)
        wait_for(lambda: _all_predicted([pk]), timeout=120, message=f"recovery; log:\n{worker.output()}")
    finally:
        worker.stop()
    _assert_predicted_exactly_once([pk])
    assert Radiograph.objects.get(pk=pk).attempts >= 2  # the killed attempt, then the one that finished


def test_uploads_survive_a_broker_outage_and_are_sent_by_the_sweep(worker_env: dict[str, str]) -> None:
    with private_redis() as (broker_url, redis), celery_app_broker(broker_url):
        redis.stop()
        started = time.monotonic()
        ids = upload_distinct_study("BROKER-1", 5)
        assert time.monotonic() - started < 15, "an upload must not hang while the broker is down"
        queued = Radiograph.objects.filter(pk__in=ids)
        assert [r.status for r in queued] == [Radiograph.Status.QUEUED] * 5
        assert all(r.dispatched_at is None for r in queued)  # nothing reached a broker

        redis.start()
        env = {**worker_env, **FAST_RECOVERY, "CELERY_BROKER_URL": broker_url}
        worker = start_worker(env, name="after-outage", beat=True)
        try:
            wait_for(lambda: _all_predicted(ids), timeout=180, message=f"the sweep; log:\n{worker.output()}")
        finally:
            worker.stop()
    _assert_predicted_exactly_once(ids)


def test_a_worker_rides_out_a_broker_restart(worker_env: dict[str, str]) -> None:
    """Redis restarted under a running worker: the worker keeps its process (and its loaded model), waits
    for the broker and goes on. It exited before ("Unrecoverable error"), twice over: kombu's Redis
    channel, closed after the lost connection, built a client from the closed connection (AttributeError),
    and with CELERY_BROKER_CONNECTION_MAX_RETRIES = 0 a worker started while Redis was down gave up at
    once; the supervisor's back-off then grew with every failed start."""
    with private_redis() as (broker_url, redis), celery_app_broker(broker_url):
        env = {**worker_env, **FAST_RECOVERY, "CELERY_BROKER_URL": broker_url}
        worker = start_worker(env, name="broker-restart", beat=True)
        try:
            [before] = upload_distinct_study("REDIS-RESTART-1", 1)
            wait_for(
                lambda: _all_predicted([before]),
                timeout=180,
                message=f"a prediction; log:\n{worker.output()}",
            )
            redis.stop()
            time.sleep(6)
            assert worker.process.poll() is None, (
                f"the worker exited with the broker:\n{worker.output()[-3000:]}"
            )
            redis.start()
            # Sent by the upload or, if it met no broker, by the sweep.
            [after] = upload_distinct_study("REDIS-RESTART-2", 1)
            wait_for(
                lambda: _all_predicted([after]), timeout=180, message=f"recovery; log:\n{worker.output()}"
            )
            assert worker.process.poll() is None, worker.output()[-3000:]
        finally:
            worker.stop()
    _assert_predicted_exactly_once([before, after])


def test_a_database_outage_during_a_task_never_half_writes(
    worker_env: dict[str, str], e2e_model_path: Path
) -> None:
    params = connection.settings_dict
    proxy = TcpProxy(params.get("HOST") or "127.0.0.1", int(params.get("PORT") or 5432))
    proxy.start()
    user = params.get("USER") or "postgres"
    proxied_url = f"postgresql://{user}@127.0.0.1:{proxy.port}/{params['NAME']}"
    env = {**worker_env, **FAST_RECOVERY, "DATABASE_URL": proxied_url, "CLASSIFIER_WARM_UP": "0"}
    worker = start_worker(env, name="db-outage", beat=True)
    try:
        [pk] = upload_distinct_study("DB-1", 1)
        wait_for(
            lambda: Radiograph.objects.filter(pk=pk, status=Radiograph.Status.RUNNING).exists(),
            timeout=60,
            interval=0.02,
            message="the task to start",
        )
        proxy.cut()  # the worker loses its database while it loads the model and classifies
        time.sleep(4)
        proxy.restore()

        def settled() -> bool:
            return Radiograph.objects.filter(
                pk=pk, status__in=[Radiograph.Status.PREDICTED, Radiograph.Status.FAILED]
            ).exists()

        wait_for(settled, timeout=180, message=f"the task to settle; log:\n{worker.output()}")
    finally:
        worker.stop()
        proxy.cut()
    radiograph = Radiograph.objects.get(pk=pk)
    if radiograph.status == Radiograph.Status.PREDICTED:
        _assert_predicted_exactly_once([pk])
    else:
        assert radiograph.failure_message
        assert not Prediction.objects.filter(radiograph_id=pk).exists()
    # The worker met the outage: a task retried, or (when the cut falls while the model loads) the model
    # registry lookup failed and the configured model was served; either way nothing was half-written.
    output = worker.output().lower()
    assert "retry" in output or "model registry unavailable" in output, output[-3000:]


def test_duplicate_delivery_to_two_workers_predicts_once(worker_env: dict[str, str]) -> None:
    first = start_worker(worker_env, name="twin-a")
    second = start_worker(worker_env, name="twin-b")
    try:
        ids = upload_distinct_study("TWIN-1", 8)
        dispatch.send_classification(ids)  # every radiograph now has three messages in the queue
        dispatch.send_classification(ids)
        wait_for(lambda: _all_predicted(ids), timeout=180, message="predictions")
        time.sleep(2)  # let the duplicate messages drain: they must not add anything
    finally:
        first.stop()
        second.stop()
    _assert_predicted_exactly_once(ids)
    assert Prediction.objects.count() == 8


@pytest.mark.parametrize("breakage", ["missing", "corrupt"])
def test_a_worker_refuses_to_start_without_a_usable_model(
    worker_env: dict[str, str], tmp_path: Path, e2e_model_path: Path, breakage: str
) -> None:
    model_dir = tmp_path / "broken-model"
    if breakage == "corrupt":
        model_dir.mkdir()
        (model_dir / "card.json").write_text((e2e_model_path / "card.json").read_text())
        (model_dir / "model.keras").write_bytes(b"PK\x03\x04 this is not a keras archive")
    worker = start_worker(
        {**worker_env, "CLASSIFIER_MODEL": str(model_dir)}, name=f"broken-{breakage}", wait=False
    )
    try:
        worker.process.wait(timeout=120)
    finally:
        worker.stop()
    time.sleep(0.5)  # let the log pump read the last lines
    assert worker.process.returncode != 0
    output = worker.output()
    assert "cannot start" in output
    assert ("does not exist" in output) if breakage == "missing" else ("corrupt" in output)


def test_the_web_application_tells_an_admin_about_a_broken_model(
    live_server: Any, settings: Any, tmp_path: Path, admin_client_: Any, clinician_client: Any
) -> None:
    settings.CLASSIFIER_MODEL = str(tmp_path / "gone")
    page = admin_client_.get("/queue/")
    assert page.status_code == 200
    assert "classification model is unavailable" in page.content.decode()
    assert "does not exist" in page.content.decode()
    # Clinicians keep working; the technical detail is for administrators.
    clinical = clinician_client.get("/queue/")
    assert clinical.status_code == 200
    assert "does not exist" not in clinical.content.decode()
