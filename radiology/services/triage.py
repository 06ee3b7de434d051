"""A study's queue summary (state, verdict, highest probability and band, counts), kept by every service
that changes its radiographs, inside the same transaction; and each radiograph's current prediction."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone

from radiology.models import Label, Prediction, Radiograph, Review, Study, band_rank


def study_refresh_triage(*, study_id: int) -> None:
    """Recompute a study's queue summary from its radiographs, inside the transaction that changed them."""
    studies_refresh_triage(study_ids=[study_id])


def studies_refresh_triage(*, study_ids: Sequence[int]) -> None:
    """study_refresh_triage for several studies in five queries (locked in id order)."""
    studies = list(Study.objects.select_for_update().filter(pk__in=set(study_ids)).order_by("pk"))
    if not studies:
        raise Study.DoesNotExist(f"studies {sorted(set(study_ids))} do not exist")
    by_study: dict[int, list[Radiograph]] = {study.pk: [] for study in studies}
    current: dict[int, Prediction] = {}
    rows = Radiograph.objects.filter(study_id__in=by_study).select_related("current_prediction")
    for radiograph in rows.order_by("position", "pk"):
        by_study[radiograph.study_id].append(radiograph)
        if radiograph.current_prediction is not None:
            current[radiograph.pk] = radiograph.current_prediction
    reviewed = set(
        Review.objects.filter(radiograph__study_id__in=by_study)
        .values_list("radiograph_id", flat=True)
        .distinct()
    )
    for study in studies:
        radiographs = by_study[study.pk]
        statuses = [r.status for r in radiographs]
        in_flight = any(s in (Radiograph.Status.QUEUED, Radiograph.Status.RUNNING) for s in statuses)
        predicted = [r.pk for r in radiographs if r.status == Radiograph.Status.PREDICTED and r.pk in current]
        failed = statuses.count(Radiograph.Status.FAILED)
        if in_flight:
            state = Study.State.PROCESSING
        elif any(pk not in reviewed for pk in predicted):
            state = Study.State.AWAITING_REVIEW
        elif not predicted:
            # Declined images are not failures: only a study with none failed and some declined is "not
            # analysed" (an empty study, which no path creates, stays FAILED); once read without the model,
            # reviewed, unless a declined image arrived after that read.
            declined = [r for r in radiographs if r.status == Radiograph.Status.NOT_ANALYSED]
            if not declined or failed:
                state = Study.State.FAILED
            elif _read_without_model(study, declined):
                state = Study.State.REVIEWED
            else:
                state = Study.State.NOT_ANALYSED
        else:
            state = Study.State.REVIEWED
        probabilities = [current[pk].probability for pk in predicted]
        bands = sorted((current[pk].band for pk in predicted), key=band_rank)
        study.state = state
        study.verdict = study_verdict_of([current[r.pk].label for r in radiographs if r.pk in current])
        study.max_probability = max(probabilities) if probabilities else None
        study.band = bands[0] if bands else ""
        study.radiograph_count = len(radiographs)
        study.failed_count = failed
        if state == Study.State.REVIEWED and study.reviewed_at is None:
            study.reviewed_at = study.read_without_model_at if not predicted else timezone.now()
        elif state != Study.State.REVIEWED:
            study.reviewed_at = None
    fields = [
        "state",
        "verdict",
        "max_probability",
        "band",
        "radiograph_count",
        "failed_count",
        "reviewed_at",
    ]
    if len(studies) == 1:
        studies[0].save(update_fields=fields)
    else:
        Study.objects.bulk_update(studies, fields)


def _read_without_model(study: Study, declined: Sequence[Radiograph]) -> bool:
    read_at = study.read_without_model_at
    return read_at is not None and all(r.created_at <= read_at for r in declined)


def study_verdict_of(labels: Sequence[str]) -> str:
    """A study's verdict from its radiographs' current labels: fractured if one is, not fractured if some
    are predicted and none is, "" before any prediction (Study.verdict)."""
    if Label.FRACTURED in labels:
        return Label.FRACTURED
    return Label.NOT_FRACTURED if any(labels) else ""


def current_predictions(radiograph_ids: Sequence[int]) -> dict[int, Prediction]:
    """Each radiograph's current prediction (Radiograph.current_prediction), by radiograph id; one query."""
    predictions = Prediction.objects.filter(
        pk__in=Radiograph.objects.filter(pk__in=radiograph_ids).values("current_prediction")
    )
    return {prediction.radiograph_id: prediction for prediction in predictions}
