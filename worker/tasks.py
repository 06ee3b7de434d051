"""Celery tasks: thin wrappers that claim work, run the classifier and store results through services.

The Keras model is loaded lazily, once per worker child process, after the fork (TensorFlow does not
survive a fork); a background thread starts that load as soon as the child exists, so the first
radiograph does not wait for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from celery import signals
from celery.contrib.django.task import DjangoTask
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError

from classifier.decoding import UnreadableImageError, decode_grayscale
from classifier.explain import heatmap_to_stored_png
from classifier.predict import Predictor
from radiology import services
from radiology.governance import services as governance_services
from radiology.model_artifact import check_model_artifact
from radiology.models import Radiograph
from worker import governance_tasks
from worker.celery import app

logger = logging.getLogger(__name__)

# Errors worth retrying: the database or storage may be back in a moment.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
)
MAX_RETRIES = 5


class ModelUnavailableError(RuntimeError):
    """The model artifact could not be loaded; the message is shown to clinicians and admins."""


_predictor: Predictor | None = None
_predictor_error: str | None = None
_predictor_lock = threading.Lock()


def get_predictor() -> Predictor:
    """The process-wide Predictor, loaded on first use (by the warm-up thread or the first task)."""
    global _predictor, _predictor_error
    with _predictor_lock:
        if _predictor is not None:
            if not governance_tasks.active_version_changed(_predictor.version):
                return _predictor
            # A promotion or rollback: load the version that is active now.
            logger.info("model %s is no longer active; loading the active version", _predictor.version)
            _predictor = None
        if _predictor_error is not None:
            raise ModelUnavailableError(_predictor_error)
        path = governance_tasks.active_model_path()
        status = check_model_artifact(path)
        if not status.ok:
            _predictor_error = f"The classification model is unavailable: {status.problem}"
            raise ModelUnavailableError(_predictor_error)
        try:
            # Imported here, in the child: it imports TensorFlow, which must not load before the fork.
            from worker.accelerator import configure_accelerator

            started = time.perf_counter()
            device = configure_accelerator(cpu_threads=settings.CLASSIFIER_CPU_THREADS)
            predictor = Predictor.load(path)
            # Trace and allocate now, not on a patient: two batch sizes make the traced forward pass
            # batch-size agnostic (one size only, and the first batch of another size retraces, ~1 s).
            predictor.warmup(batch_sizes=(1, 2))
            predictor.predict([_warmup_image()], heatmaps=True)
        except Exception as exc:  # a broken artifact fails in many ways; each means "cannot classify"
            logger.exception("could not load the model from %s", path)
            _predictor_error = "The classification model could not be loaded; an administrator must check it."
            raise ModelUnavailableError(_predictor_error) from exc
        logger.info(
            "model %s loaded from %s on %s in %.1f s",
            predictor.version,
            path,
            device,
            time.perf_counter() - started,
        )
        _predictor = predictor
        return predictor


def _warmup_image() -> np.ndarray:
    return np.zeros((256, 256), dtype=np.uint8)


def reset_predictor_for_tests() -> None:
    global _predictor, _predictor_error
    with _predictor_lock:
        _predictor = None
        _predictor_error = None
    _predicted_here.clear()


@signals.worker_init.connect
def _check_model_before_start(**_: Any) -> None:
    """Refuse to start a worker whose model artifact is missing or corrupt: better no worker than a
    worker that fails every radiograph. (Runs in the parent, before the fork: no TensorFlow here.)"""
    status = check_model_artifact()
    if not status.ok:
        logger.critical("refusing to start: %s", status.problem)
        raise SystemExit(f"Fracture Review worker cannot start: {status.problem}")
    logger.info("worker starting with model %s (%s)", status.version, status.path)


@signals.worker_process_init.connect
def _warm_up_in_background(**_: Any) -> None:
    if not settings.CLASSIFIER_WARM_UP:
        return

    def load() -> None:
        # A failure is logged by get_predictor; tasks then fail with a readable message.
        with contextlib.suppress(ModelUnavailableError):
            get_predictor()

    threading.Thread(target=load, name="model-warmup", daemon=True).start()


class ClassifierTask(DjangoTask):
    """Base for tasks that need the model: the predictor is a per-process singleton."""

    @property
    def predictor(self) -> Predictor:
        return get_predictor()


@dataclass
class _Work:
    radiograph_id: int
    pixels: Any


@app.task(
    base=ClassifierTask,
    bind=True,
    name="worker.tasks.classify_radiograph",
    acks_late=True,  # safe: claiming and storing are idempotent
    reject_on_worker_lost=True,
    max_retries=MAX_RETRIES,
)
def classify_radiograph(self: ClassifierTask, radiograph_id: int) -> None:
    """Classify one radiograph (and, to fill the batch, other queued ones)."""
    if _predicted_here.discard(radiograph_id):
        return  # this process stored its prediction in another message's batch: nothing to ask the database
    clock = _PhaseClock()
    try:
        with clock("claim"):
            claimed = services.radiograph_claim_batch(
                radiograph_id=radiograph_id, max_batch=settings.CLASSIFIER_MAX_BATCH
            )
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from None
    if not claimed:
        return  # another worker has it, or it is already done
    model_was_loaded = _predictor is not None
    try:
        _classify(self, claimed, clock)
    except SoftTimeLimitExceeded:
        if not model_was_loaded and self.request.retries < MAX_RETRIES:
            # The time went on loading the model in a fresh pool process (after a restart, on a busy
            # machine), not on these radiographs: the load goes on, and they are tried again.
            logger.warning("time limit reached while the model loaded; retrying radiographs %s", claimed)
            _release_quietly(claimed)
            raise self.retry(countdown=_backoff(self.request.retries)) from None
        for pk in claimed:
            services.radiograph_fail(
                radiograph_id=pk, message="Classification took too long and was stopped. Try again later."
            )
    except TRANSIENT_ERRORS as exc:
        logger.warning("transient %s on radiographs %s; retrying", exc.__class__.__name__, claimed)
        if self.request.retries >= MAX_RETRIES:
            _fail_quietly(
                claimed, "The radiograph could not be classified because a service was unavailable."
            )
            return
        _release_quietly(claimed)
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from None
    except services.ServiceError as exc:
        # The image store refused the heatmap (full, unmounted): worth a few retries, then a readable
        # failure. Uncaught, it left the rows RUNNING, re-sent by the sweep every few minutes for ever.
        logger.warning("%s on radiographs %s", exc.code, claimed)
        if exc.code != "storage_unavailable" or self.request.retries >= MAX_RETRIES:
            _fail_quietly(claimed, f"The result could not be saved: {exc.message}")
            return
        _release_quietly(claimed)
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from None


def _classify(task: ClassifierTask, radiograph_ids: list[int], clock: _PhaseClock) -> None:
    try:
        predictor = task.predictor
    except ModelUnavailableError as exc:
        for pk in radiograph_ids:
            services.radiograph_fail(radiograph_id=pk, message=str(exc))
        return

    work: list[_Work] = []
    card = governance_tasks.card_of(predictor)
    radiographs = Radiograph.objects.filter(pk__in=radiograph_ids).select_related("study__patient")
    for radiograph in radiographs.order_by("pk"):
        refusal = governance_tasks.metadata_refusal(radiograph, card)
        if refusal is not None:  # outside the intended use: no verdict, the reason instead
            governance_services.radiograph_mark_not_analysed(
                radiograph_id=radiograph.pk, model_version=predictor.version, refusal=refusal
            )
            continue
        try:
            with clock("read"):
                data = services.radiograph_read_image(radiograph=radiograph)
        except FileNotFoundError:
            services.radiograph_fail(
                radiograph_id=radiograph.pk, message="The stored image file is missing; upload it again."
            )
            continue
        with clock("guardrails"):  # a colour picture is not a radiograph, however its grey version looks
            refusal = governance_tasks.colour_refusal(data, card)
        if refusal is not None:
            governance_services.radiograph_mark_not_analysed(
                radiograph_id=radiograph.pk, model_version=predictor.version, refusal=refusal
            )
            continue
        try:
            with clock("decode"):
                pixels = decode_grayscale(data, max_pixels=settings.UPLOAD_MAX_PIXELS)
        except UnreadableImageError as exc:
            services.radiograph_fail(radiograph_id=radiograph.pk, message=str(exc))
            continue
        work.append(_Work(radiograph.pk, pixels))
    if not work:
        return

    with clock("model"):  # letterbox, one forward pass for the batch, maps back onto each image
        results = predictor.predict(
            [item.pixels for item in work], heatmaps=True, **governance_tasks.embedding_request(predictor)
        )
    per_image_ms = clock.ms["model"] / len(work)
    with clock("guardrails"):  # far from the training images: not analysed, whatever the score
        unlike = governance_tasks.distribution_refusals(predictor, [item.pixels for item in work], results)
    stored = []
    for item, result, refusal in zip(work, results, unlike, strict=True):
        if refusal is not None:
            governance_services.radiograph_mark_not_analysed(
                radiograph_id=item.radiograph_id, model_version=predictor.version, refusal=refusal
            )
            continue
        heatmap_png = None
        if result.heatmap is not None:
            with clock("heatmap"):  # its levels only: coloured when viewed
                heatmap_png = heatmap_to_stored_png(result.heatmap)
        stored.append(
            services.PredictionResult(
                radiograph_id=item.radiograph_id,
                probability=result.probability,
                label=result.label,
                band=result.band,
                boxes=result.boxes,
                heatmap_png=heatmap_png,
                inference_ms=per_image_ms,
            )
        )
    operating_points = predictor.thresholds
    if stored:
        with clock("store"):  # one transaction for the batch
            services.prediction_store_batch(
                model_version=predictor.version,
                threshold=predictor.threshold,
                threshold_sensitive=operating_points.sensitive,
                threshold_specific=operating_points.specific,
                results=stored,
            )
    with clock("governance"):  # input statistics for the drift check; shadow versions on their own queue
        governance_tasks.after_active_store(
            [r.radiograph_id for r in stored], [(item.radiograph_id, item.pixels) for item in work]
        )
    # Their own messages will follow (the first one's is this task's): answer those without a query.
    _predicted_here.add_all(r.radiograph_id for r in stored if r.radiograph_id != radiograph_ids[0])
    # One line per batch: bench/inference.py adds these up to show where a worker's time goes.
    logger.info("classified %d radiograph(s) in %s", len(work), clock)


class _RecentIds:
    """Radiographs this process has predicted, until their own message comes (bounded, oldest dropped).

    A micro-batch takes other queued radiographs; their messages follow and would each cost a
    database round trip to learn they are done. A predicted radiograph never goes back to the queue
    (only failed ones are retried), so the process can answer those messages itself.
    """

    def __init__(self, *, limit: int = 10_000, ttl_seconds: float = 300.0) -> None:
        self.limit = limit
        self.ttl = ttl_seconds  # the redundant messages come right behind the batch; later, ask the database
        self._added: dict[int, float] = {}  # insertion-ordered: the first key is the oldest
        self._lock = threading.Lock()

    def add_all(self, ids: Iterable[int]) -> None:
        now = time.monotonic()
        with self._lock:
            for pk in ids:
                self._added.pop(pk, None)
                self._added[pk] = now
            while len(self._added) > self.limit:
                del self._added[next(iter(self._added))]

    def discard(self, pk: int) -> bool:
        """Forget pk; True if it was added here less than the time-to-live ago."""
        with self._lock:
            added = self._added.pop(pk, None)
        return added is not None and time.monotonic() - added < self.ttl

    def clear(self) -> None:
        with self._lock:
            self._added.clear()


_predicted_here = _RecentIds()


class _PhaseClock:
    """Milliseconds spent in each named phase of a batch, for the per-batch log line."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.ms: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.ms[phase] = self.ms.get(phase, 0.0) + (time.perf_counter() - started) * 1000

    def __str__(self) -> str:
        total = (time.perf_counter() - self.started) * 1000
        phases = ", ".join(f"{name} {ms:.1f}" for name, ms in self.ms.items())
        return f"{total:.1f} ms: {phases}"


def _backoff(retries: int) -> int:
    return int(min(60, 2 ** (retries + 1)))


def _release_quietly(radiograph_ids: list[int]) -> None:
    try:
        for pk in radiograph_ids:
            services.radiograph_release(radiograph_id=pk)
    except DatabaseError:
        # The database is still away; the retry can take over the rows once the claim goes stale.
        logger.warning("could not release radiographs %s; the sweep will recover them", radiograph_ids)


def _fail_quietly(radiograph_ids: list[int], message: str) -> None:
    try:
        for pk in radiograph_ids:
            services.radiograph_fail(radiograph_id=pk, message=message)
    except DatabaseError:
        logger.error("could not mark radiographs %s failed; the sweep will recover them", radiograph_ids)


@app.task(name="worker.tasks.sweep_stale_radiographs", ignore_result=True)
def sweep_stale_radiographs() -> int:
    """Send again radiographs that the broker never received or a dead worker never finished."""
    resent = services.radiographs_resend_stale()
    if resent:
        logger.info("sweep re-sent %d radiograph(s)", len(resent))
    return len(resent)


@app.task(name="worker.tasks.purge_expired_idempotency_records", ignore_result=True)
def purge_expired_idempotency_records() -> int:
    """Forget API idempotency keys older than API_IDEMPOTENCY_TTL_HOURS."""
    purged = services.idempotency_purge_expired()
    if purged:
        logger.info("purged %d expired idempotency record(s)", purged)
    return purged


@app.task(name="worker.tasks.reconcile_storage", ignore_result=True)
def reconcile_storage() -> int:
    """Remove what a killed web process left: files no row points at, idempotency keys left in progress."""
    result = services.storage_reconcile()
    return result.orphan_files_removed + result.idempotency_records_expired
