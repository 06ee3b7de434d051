"""Governance on the worker: which model versions are served, the intended-use guardrails around the
active prediction, shadow predictions on their own queue, and the nightly monitoring and drift tasks.

The active version comes from the registry (radiology.governance.registry); on a fresh installation the
configured artifact is registered as the first active version. A running worker notices a promotion or a
rollback within ACTIVE_RECHECK_SECONDS and loads the new version.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError

from classifier.card import colour_share, ood_distances
from classifier.decoding import UnreadableImageError, decode_grayscale
from classifier.predict import Predictor
from radiology import dispatch, services
from radiology.governance import drift, guardrails, monitoring, registry
from radiology.governance import services as governance_services
from radiology.governance.comparison import comparison_refresh
from radiology.governance.guardrails import Refusal
from radiology.model_artifact import configured_model_path
from radiology.models import Radiograph
from worker.celery import app

logger = logging.getLogger(__name__)

ACTIVE_RECHECK_SECONDS = 10.0

_active_checked: dict[str, Any] = {"at": 0.0, "version": None, "shadows": ()}
_active_lock = threading.Lock()


def active_model_path() -> Path:
    """The active version's artifact (registering the configured one on a fresh installation)."""
    configured = configured_model_path()
    try:
        return Path(registry.model_version_ensure_active(path=configured).artifact_path)
    except (registry.RegistryError, DatabaseError) as exc:
        # No registry yet (a database not migrated) or an invalid artifact: serve what is configured,
        # whose own checks then tell the administrator what is wrong.
        logger.warning("model registry unavailable (%s); serving the configured model %s", exc, configured)
        return configured


def _refresh_active(now: float) -> None:
    if now - _active_checked["at"] < ACTIVE_RECHECK_SECONDS:
        return
    with _active_lock:
        active = registry.model_version_active()
        _active_checked["version"] = active.version if active else None
        _active_checked["shadows"] = tuple(v.version for v in registry.model_versions_shadow())
        _active_checked["at"] = now


def active_version_changed(serving: str) -> bool:
    """Has a promotion or rollback made another version active? (Asks the database every 10 s at most.)"""
    try:
        _refresh_active(time.monotonic())
    except DatabaseError:
        return False
    active = _active_checked["version"]
    return active is not None and active != serving


def shadow_versions() -> tuple[str, ...]:
    try:
        _refresh_active(time.monotonic())
    except DatabaseError:
        return ()
    return tuple(_active_checked["shadows"])


def forget_registry_for_tests() -> None:
    _active_checked.update({"at": 0.0, "version": None, "shadows": ()})
    _shadow_predictors.clear()


# --- Guardrails around the active prediction ----------------------------------------------------------


def card_of(predictor: Any) -> dict[str, Any]:
    card = getattr(predictor, "card", None)
    return card if isinstance(card, dict) else {}


def metadata_refusal(radiograph: Radiograph, card: dict[str, Any]) -> Refusal | None:
    study = radiograph.study
    return guardrails.check_metadata(
        modality=str((radiograph.dicom_attributes or {}).get("Modality", "")),
        body_region=study.body_region,
        date_of_birth=study.patient.date_of_birth,
        on=study.study_date or radiograph.created_at.date(),
        card=card,
    )


def colour_refusal(data: bytes, card: dict[str, Any]) -> Refusal | None:
    """A refusal when the original image is a colour picture (the card's colour check; a few ms)."""
    colour = guardrails.colour_reference(card)
    if colour is None:
        return None
    return guardrails.check_colour(colour_share(data), colour)


def embedding_request(predictor: Any) -> dict[str, bool]:
    """``{"embeddings": True}`` when the card has an OOD reference and the Predictor can return the
    embedding from the same forward pass (no second pass for the guardrail)."""
    if guardrails.ood_reference(card_of(predictor)) is None:
        return {}
    try:
        accepts = "embeddings" in inspect.signature(predictor.predict).parameters
    except (TypeError, ValueError):
        return {}
    return {"embeddings": True} if accepts else {}


def distribution_refusals(
    predictor: Any, images: Sequence[np.ndarray], results: Sequence[Any]
) -> list[Refusal | None]:
    """One entry per image: a refusal when its embedding lies beyond the card's OOD threshold.

    Uses the embedding the forward pass returned when the Predictor provides one, else ``embed()``;
    nothing when the card has no OOD reference (an older model) or the Predictor cannot embed."""
    ood = guardrails.ood_reference(card_of(predictor))
    if ood is None or not images:
        return [None] * len(images)
    embeddings = [getattr(result, "embedding", None) for result in results]
    if any(e is None for e in embeddings):
        if not hasattr(predictor, "embed"):
            return [None] * len(images)
        matrix = np.asarray(predictor.embed(list(images)))
    else:
        matrix = np.stack([np.asarray(e) for e in embeddings])
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        return [None] * len(images)  # the model exposes no embedding: nothing to compare
    try:
        distances = ood_distances(matrix, ood)
    except ValueError:
        # A card whose reference does not fit its own model: an artifact problem for the administrator,
        # not a reason to withhold every result.
        logger.exception(
            "the OOD reference of model %s does not fit its embeddings", getattr(predictor, "version", "?")
        )
        return [None] * len(images)
    return [guardrails.check_distribution(float(d), ood) for d in distances]


def after_active_store(radiograph_ids: Sequence[int], pixels: Sequence[tuple[int, np.ndarray]]) -> None:
    """Input statistics for the drift check, then the shadow versions' work on their own queue."""
    if pixels:
        governance_services.input_stats_store(stats=pixels)
    if radiograph_ids and shadow_versions():
        dispatch.send_shadow_predictions(list(radiograph_ids))


# --- Shadow versions ----------------------------------------------------------------------------------

_shadow_predictors: dict[str, Predictor] = {}
_shadow_lock = threading.Lock()


def get_shadow_predictor(version: str) -> Predictor | None:
    with _shadow_lock:
        if version in _shadow_predictors:
            return _shadow_predictors[version]
        model_version = registry.ModelVersion.objects.filter(version=version).first()
        if model_version is None:
            return None
        predictor = Predictor.load(model_version.artifact_path)
        predictor.warmup(batch_sizes=(1, 2))
        _shadow_predictors[version] = predictor
        logger.info("shadow model %s loaded from %s", version, model_version.artifact_path)
        return predictor


def _boxes(result: Any) -> list[dict[str, float]]:
    return [
        {"x0": float(b.x0), "y0": float(b.y0), "x1": float(b.x1), "y1": float(b.y1), "score": float(b.score)}
        for b in getattr(result, "boxes", ()) or ()
    ]


def shadow_predict_batch(version: str, predictor: Any, radiograph_ids: Sequence[int]) -> int:
    """Run one shadow version on the given radiographs and store what it said (never shown)."""
    images: list[tuple[int, np.ndarray]] = []
    refusals: list[tuple[int, Refusal]] = []
    card = card_of(predictor)
    done = set(
        governance_services.ShadowPrediction.objects.filter(
            model_version=version, radiograph_id__in=radiograph_ids
        ).values_list("radiograph_id", flat=True)
    )
    for radiograph in (
        Radiograph.objects.filter(pk__in=radiograph_ids).select_related("study__patient").order_by("pk")
    ):
        if radiograph.pk in done:
            continue
        refusal = metadata_refusal(radiograph, card)
        if refusal is not None:
            refusals.append((radiograph.pk, refusal))
            continue
        try:
            data = services.radiograph_read_image(radiograph=radiograph)
            refusal = colour_refusal(data, card)
            if refusal is not None:
                refusals.append((radiograph.pk, refusal))
                continue
            images.append((radiograph.pk, decode_grayscale(data, max_pixels=settings.UPLOAD_MAX_PIXELS)))
        except (FileNotFoundError, UnreadableImageError):
            continue  # the active path records why; a shadow has nothing to add
    results: list[governance_services.ShadowResult] = []
    if images:
        started = time.perf_counter()
        predictions = predictor.predict(
            [pixels for _, pixels in images], heatmaps=False, **embedding_request(predictor)
        )
        per_image_ms = (time.perf_counter() - started) * 1000 / len(images)
        ood = distribution_refusals(predictor, [pixels for _, pixels in images], predictions)
        for (pk, _), prediction, refusal in zip(images, predictions, ood, strict=True):
            if refusal is not None:
                refusals.append((pk, refusal))
                continue
            results.append(
                governance_services.ShadowResult(
                    pk,
                    prediction.probability,
                    prediction.label,
                    getattr(prediction, "band", "") or "",
                    _boxes(prediction),
                    per_image_ms,
                )
            )
    points = getattr(predictor, "thresholds", None)
    return governance_services.shadow_predictions_store(
        model_version=version,
        threshold=float(predictor.threshold),
        threshold_sensitive=getattr(points, "sensitive", None),
        threshold_specific=getattr(points, "specific", None),
        results=results,
        refusals=refusals,
    )


@app.task(
    name="worker.governance_tasks.shadow_predict",
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
)
def shadow_predict(radiograph_ids: list[int]) -> int:
    """Every shadow version reads the radiographs the active version has just read (own queue)."""
    stored = 0
    for version in shadow_versions():
        predictor = get_shadow_predictor(version)
        if predictor is None:
            continue
        stored += shadow_predict_batch(version, predictor, radiograph_ids)
    return stored


# --- Nightly: monitoring summary and drift ------------------------------------------------------------


@app.task(name="worker.governance_tasks.refresh_monitoring", ignore_result=True)
def refresh_monitoring() -> int:
    cells = monitoring.monitoring_refresh()
    logger.info("monitoring summary rebuilt: %d cells", cells)
    return cells


@app.task(name="worker.governance_tasks.refresh_comparisons", ignore_result=True)
def refresh_comparisons() -> int:
    """Recompute and store each active/shadow comparison whose evidence changed since it was stored (the
    Models page shows the stored one; its paired bootstrap takes seconds at scale). Routed to the shadow
    queue: the low-priority worker, never in the way of an active prediction. Returns how many it computed."""
    active = registry.model_version_active()
    if active is None:
        return 0
    computed = 0
    for shadow in registry.model_versions_shadow():
        started = time.perf_counter()
        comparison, fresh = comparison_refresh(active=active.version, shadow=shadow.version)
        if fresh:
            computed += 1
            logger.info(
                "comparison %s / %s: %d cases, computed in %.1f s",
                active.version,
                shadow.version,
                comparison.cases,
                time.perf_counter() - started,
            )
    return computed


@app.task(name="worker.governance_tasks.check_drift", ignore_result=True)
def check_drift() -> int:
    alerts = drift.drift_check(now=dt.datetime.now(dt.UTC))
    if alerts:
        logger.warning("drift check raised %d alert(s)", len(alerts))
    return len(alerts)
