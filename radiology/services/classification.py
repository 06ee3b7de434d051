"""The worker's side: claiming radiographs, storing predictions, failures, retries and the sweep."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from radiology import dispatch
from radiology.models import AuditEvent, Band, Label, Prediction, Radiograph
from radiology.services.audit import audit_event, audit_record
from radiology.services.errors import ServiceError
from radiology.services.storage import cleanup_files_on_error, save_file
from radiology.services.tallies import tally_predictions
from radiology.services.triage import studies_refresh_triage, study_refresh_triage


def _claimable(now: dt.datetime) -> Q:
    stale_before = now - dt.timedelta(seconds=settings.CLASSIFY_RUNNING_TIMEOUT_SECONDS)
    return Q(status=Radiograph.Status.QUEUED) | Q(
        status=Radiograph.Status.RUNNING, claimed_at__lt=stale_before
    )


def radiograph_claim(*, radiograph_id: int) -> bool:
    """QUEUED -> RUNNING as one conditional UPDATE: of two workers given the same radiograph, one wins.

    A RUNNING row whose claim is older than the running timeout is taken over: its worker died.
    """
    now = timezone.now()
    claimed = Radiograph.objects.filter(_claimable(now), pk=radiograph_id).update(
        status=Radiograph.Status.RUNNING, claimed_at=now, attempts=F("attempts") + 1
    )
    return claimed == 1


def radiograph_claim_batch(*, radiograph_id: int, max_batch: int) -> list[int]:
    """Claim the given radiograph and, to fill one forward pass, up to max_batch - 1 other queued ones.

    One transaction (one commit): the given row's conditional UPDATE, then the others, oldest
    dispatched first, in one locked SELECT (rows another worker is claiming right now are skipped, not
    waited for) and one UPDATE. Their own messages arrive later, find them claimed or predicted, and
    do nothing.
    """
    with transaction.atomic():
        if not radiograph_claim(radiograph_id=radiograph_id):
            return []
        candidates: list[int] = []
        if max_batch > 1:
            candidates = list(
                Radiograph.objects.select_for_update(skip_locked=True)
                .filter(status=Radiograph.Status.QUEUED, dispatched_at__isnull=False)
                .exclude(pk=radiograph_id)
                .order_by("dispatched_at", "pk")
                .values_list("pk", flat=True)[: max_batch - 1]
            )
        if candidates:
            # Locked above (PostgreSQL) or inside the one writer's transaction (SQLite): all still QUEUED.
            Radiograph.objects.filter(pk__in=candidates, status=Radiograph.Status.QUEUED).update(
                status=Radiograph.Status.RUNNING, claimed_at=timezone.now(), attempts=F("attempts") + 1
            )
    return [radiograph_id, *candidates]


def radiograph_release(*, radiograph_id: int) -> None:
    """RUNNING -> QUEUED, so a retried task can claim the row again. The claim is given back, not lost:
    it no longer counts among the attempts CLASSIFY_MAX_ATTEMPTS caps (a few retries through a database
    or storage blip, then one worker death, failed the radiograph as "never finished")."""
    Radiograph.objects.filter(pk=radiograph_id, status=Radiograph.Status.RUNNING).update(
        status=Radiograph.Status.QUEUED, claimed_at=None, attempts=F("attempts") - 1
    )


def radiograph_read_image(*, radiograph: Radiograph) -> bytes:
    with radiograph.image.open("rb") as handle:
        return handle.read()


@dataclass(frozen=True)
class PredictionResult:
    """One radiograph's result from a forward pass, as prediction_store_batch stores it.

    ``band``: "fracture" | "doubt" | "no_fracture". ``boxes``: the model's boxes in original-image pixels,
    as ``classifier.predict.Box`` (x0, y0, x1, y1, score attributes) or mappings with those keys.
    """

    radiograph_id: int
    probability: float
    label: str
    heatmap_png: bytes | None
    inference_ms: float
    band: str
    boxes: Sequence[Any] = ()


def prediction_store(
    *,
    radiograph_id: int,
    model_version: str,
    probability: float,
    label: str,
    band: str,
    threshold: float,
    heatmap_png: bytes | None,
    inference_ms: float,
    boxes: Sequence[Any] = (),
    threshold_sensitive: float | None = None,
    threshold_specific: float | None = None,
) -> Prediction:
    """Store the model's result and mark the radiograph PREDICTED.

    Idempotent: a second call for the same radiograph and model version returns the first prediction.
    """
    result = PredictionResult(radiograph_id, probability, label, heatmap_png, inference_ms, band, boxes)
    return prediction_store_batch(
        model_version=model_version,
        threshold=threshold,
        threshold_sensitive=threshold_sensitive,
        threshold_specific=threshold_specific,
        results=[result],
    )[0]


_BOX_KEYS = ("x0", "y0", "x1", "y1", "score")


def _box_dict(box: Any, width: int, height: int) -> dict[str, float]:
    """One model box as stored: floats, corners inside the image, a score in [0, 1].

    A box outside the image or with a score out of range is a model fault, refused rather than clipped
    into something the model did not say (half a pixel of slack for rounding on the model's grid).
    """
    values = {key: box[key] if isinstance(box, Mapping) else getattr(box, key) for key in _BOX_KEYS}
    try:
        x0, y0, x1, y1, score = (float(values[key]) for key in _BOX_KEYS)
    except (TypeError, ValueError):
        raise ValueError(f"box {values!r} has a value that is not a number") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1, score)):
        raise ValueError(f"box {values!r} has a value that is not finite")
    if not (-0.5 <= x0 < x1 <= width + 0.5 and -0.5 <= y0 < y1 <= height + 0.5):
        raise ValueError(f"box {values!r} is not inside the {width}x{height} image")
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"box {values!r} has a score outside [0, 1]")

    def inside(value: float, high: int) -> float:
        return round(min(max(value, 0.0), float(high)), 2)

    return {
        "x0": inside(x0, width),
        "y0": inside(y0, height),
        "x1": inside(x1, width),
        "y1": inside(y1, height),
        "score": round(score, 4),
    }


def _operating_point(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} {value!r} is not a probability")
    return value


def prediction_store_batch(
    *,
    model_version: str,
    threshold: float,
    results: Sequence[PredictionResult],
    threshold_sensitive: float | None = None,
    threshold_specific: float | None = None,
) -> list[Prediction]:
    """Store one forward pass's results and mark their radiographs PREDICTED, in one transaction.

    A fixed number of queries however many results (one commit instead of one per radiograph: the
    worker stores a whole micro-batch at once). Idempotent per radiograph, as prediction_store.
    Rows are locked radiographs first, then studies, each in id order, so two workers storing
    radiographs of the same studies cannot deadlock. Returns the predictions in the order given.
    A result the model cannot have meant (unknown label or band, a box outside the image, operating
    points out of order) raises ValueError and stores nothing.
    """
    sensitive = _operating_point(threshold_sensitive, "threshold_sensitive")
    specific = _operating_point(threshold_specific, "threshold_specific")
    if sensitive is not None and specific is not None and sensitive > specific:
        raise ValueError(f"the sensitive operating point {sensitive} is above the specific one {specific}")
    for result in results:
        if result.label not in Label.values:
            raise ValueError(f"unknown label {result.label!r}")
        if result.band not in Band.values:
            raise ValueError(f"unknown band {result.band!r}")
    ids = sorted({r.radiograph_id for r in results})
    with cleanup_files_on_error() as written, transaction.atomic():
        radiographs = {
            r.pk: r for r in Radiograph.objects.select_for_update().filter(pk__in=ids).order_by("pk")
        }
        missing = set(ids) - set(radiographs)
        if missing:
            raise Radiograph.DoesNotExist(f"radiographs {sorted(missing)} do not exist")
        stored = {
            p.radiograph_id: p
            for p in Prediction.objects.filter(radiograph_id__in=ids, model_version=model_version)
        }
        new: list[Prediction] = []
        for result in results:
            if result.radiograph_id in stored:
                continue
            radiograph = radiographs[result.radiograph_id]
            prediction = Prediction(
                radiograph=radiograph,
                model_version=model_version,
                probability=float(result.probability),
                label=result.label,
                band=result.band,
                # Strongest first, whatever order the model gave: the viewer, the API and the PACS copy
                # number the boxes in this order.
                boxes=sorted(
                    (_box_dict(box, radiograph.width, radiograph.height) for box in result.boxes),
                    key=lambda b: -b["score"],
                ),
                threshold=float(threshold),
                threshold_sensitive=sensitive,
                threshold_specific=specific,
                inference_ms=float(result.inference_ms),
            )
            if result.heatmap_png:
                save_file(prediction.heatmap, "heatmap.png", result.heatmap_png, written)
            new.append(prediction)
            stored[result.radiograph_id] = prediction
        if new:
            Prediction.objects.bulk_create(new)
            AuditEvent.objects.bulk_create(
                [
                    audit_event(
                        action=AuditEvent.Action.PREDICTION_STORED,
                        target=prediction,
                        details={
                            "radiograph": prediction.radiograph_id,
                            "model_version": model_version,
                            "probability": round(prediction.probability, 4),
                            "label": prediction.label,
                            "band": prediction.band,
                            "boxes": len(prediction.boxes),
                        },
                    )
                    for prediction in new
                ]
            )
            tally_predictions(new)
        # One UPDATE for the whole batch; a new prediction becomes its radiograph's current one.
        now = timezone.now()
        for prediction in new:
            radiographs[prediction.radiograph_id].set_current_prediction(prediction)
        for radiograph in radiographs.values():
            radiograph.status, radiograph.failure_message, radiograph.updated_at = (
                Radiograph.Status.PREDICTED,
                "",
                now,
            )
        Radiograph.objects.bulk_update(
            radiographs.values(), ["status", "failure_message", "updated_at", *Radiograph.CURRENT_FIELDS]
        )
        studies_refresh_triage(study_ids=[r.study_id for r in radiographs.values()])
    return [stored[r.radiograph_id] for r in results]


def radiographs_set_current_prediction(*, radiograph_ids: Sequence[int]) -> None:
    """Point each radiograph at its newest stored prediction, in one UPDATE: for predictions written in
    bulk with their own timestamps (the scale-data generator); prediction_store_batch keeps it otherwise."""
    newest = Prediction.objects.filter(radiograph=OuterRef("pk")).order_by("-created_at", "-pk")
    Radiograph.objects.filter(pk__in=radiograph_ids).update(
        current_prediction=Subquery(newest.values("pk")[:1]),
        current_label=Coalesce(Subquery(newest.values("label")[:1]), Value("")),
        current_band=Coalesce(Subquery(newest.values("band")[:1]), Value("")),
    )


def radiograph_fail(*, radiograph_id: int, message: str) -> None:
    """Mark a radiograph FAILED with a message a clinician can read (never a stack trace)."""
    with transaction.atomic():
        radiograph = Radiograph.objects.select_for_update().get(pk=radiograph_id)
        if radiograph.status == Radiograph.Status.PREDICTED:
            return  # another worker finished it; a late failure must not undo a stored result
        radiograph.status = Radiograph.Status.FAILED
        radiograph.failure_message = message or "The radiograph could not be classified."
        radiograph.save(update_fields=["status", "failure_message", "updated_at"])
        audit_record(
            action=AuditEvent.Action.RADIOGRAPH_FAILED,
            target=radiograph,
            details={"message": radiograph.failure_message, "attempts": radiograph.attempts},
        )
        study_refresh_triage(study_id=radiograph.study_id)


def radiograph_retry(*, radiograph_id: int, actor: Any, client_ip: str | None = None) -> Radiograph:
    """Send a FAILED radiograph back to the queue (e.g. after an administrator fixed the model)."""
    with transaction.atomic():
        radiograph = Radiograph.objects.select_for_update().get(pk=radiograph_id)
        if radiograph.status != Radiograph.Status.FAILED:
            raise ServiceError("not_failed", "Only a failed radiograph can be sent again.")
        radiograph.status = Radiograph.Status.QUEUED
        radiograph.failure_message = ""
        radiograph.dispatched_at = None
        radiograph.claimed_at = None
        radiograph.save(
            update_fields=["status", "failure_message", "dispatched_at", "claimed_at", "updated_at"]
        )
        audit_record(
            action=AuditEvent.Action.RADIOGRAPH_RESENT, actor=actor, target=radiograph, client_ip=client_ip
        )
        study_refresh_triage(study_id=radiograph.study_id)
        transaction.on_commit(lambda: dispatch.send_classification([radiograph_id]))
    return radiograph


ATTEMPTS_EXHAUSTED_MESSAGE = (
    "Classification was started several times and never finished, so it was stopped. "
    "An administrator can send the radiograph again once the cause is fixed."
)


def radiographs_resend_stale(*, now: dt.datetime | None = None) -> list[int]:
    """The sweep: send again what the broker never got or a dead worker never finished.

    - RUNNING for longer than the running timeout: its worker is presumed dead; back to QUEUED, or
      FAILED with a readable reason once CLASSIFY_MAX_ATTEMPTS claims have all been lost.
    - QUEUED and never sent (the broker was down at upload), or sent long ago and still unclaimed.
    Re-sending is safe because classification claims the row first and stores idempotently.
    """
    now = now or timezone.now()
    stale_running = now - dt.timedelta(seconds=settings.CLASSIFY_RUNNING_TIMEOUT_SECONDS)
    resend_before = now - dt.timedelta(seconds=settings.CLASSIFY_RESEND_AFTER_SECONDS)
    # Fresh uploads are dispatched by their own on-commit hook; leave them a moment.
    grace = now - dt.timedelta(seconds=5)
    with transaction.atomic():
        lost = Radiograph.objects.filter(status=Radiograph.Status.RUNNING, claimed_at__lt=stale_running)
        # A radiograph whose every attempt was lost (its worker died on it each time) is not sent again:
        # without a cap it looped for ever, RUNNING, with nothing shown to anyone.
        exhausted = list(
            lost.filter(attempts__gte=settings.CLASSIFY_MAX_ATTEMPTS).values_list("pk", flat=True)[:1000]
        )
        lost.filter(attempts__lt=settings.CLASSIFY_MAX_ATTEMPTS).update(
            status=Radiograph.Status.QUEUED, claimed_at=None, dispatched_at=None
        )
    for pk in exhausted:
        radiograph_fail(radiograph_id=pk, message=ATTEMPTS_EXHAUSTED_MESSAGE)
    with transaction.atomic():
        ids = list(
            Radiograph.objects.filter(status=Radiograph.Status.QUEUED, created_at__lt=grace)
            .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=resend_before))
            .order_by("created_at")
            .values_list("pk", flat=True)[:1000]
        )
    if ids:
        dispatch.send_classification(ids)
    return ids
