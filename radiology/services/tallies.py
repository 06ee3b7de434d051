"""Keeping the audit dashboard's running totals (radiology.tallies) in step, and rebuilding them (those and
the ones the database's triggers keep).

The services that store predictions, reviews and adjudications call these inside their transaction, after
their audit event: every audited write holds the audit chain's head row until it commits, so tallies are
always changed under that one lock and two writers cannot deadlock on them. Each change is an UPDATE of a
counter (or the INSERT of a new one), however many records there are.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.apps import apps as django_apps
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, DateTimeField, F, Max, Min, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, Greatest, Least, TruncDate
from django.utils import timezone

from radiology.models import (
    Adjudication,
    Prediction,
    PredictionTally,
    Radiograph,
    RadiographTally,
    Review,
    ReviewTally,
    Study,
    StudyTally,
)

# A standing review's place in ReviewTally: its values in ReviewTally.KEY order.
ReviewKey = tuple[str, dt.date, dt.date, str, str, str, str, str, str, str]


def tally_predictions(predictions: Sequence[Prediction]) -> None:
    """Count predictions just stored, per model version and day."""
    days: dict[tuple[str, dt.date], list[dt.datetime]] = {}
    for prediction in predictions:
        key = (prediction.model_version, timezone.localdate(prediction.created_at))
        days.setdefault(key, []).append(prediction.created_at)
    for (version, day), times in sorted(days.items()):
        first, last = Value(min(times), DateTimeField()), Value(max(times), DateTimeField())
        _add(
            PredictionTally,
            {"model_version": version, "day": day},
            {"predictions": F("predictions") + len(times), "first_at": Least("first_at", first)}
            | {"last_at": Greatest("last_at", last)},
            {"predictions": len(times), "first_at": min(times), "last_at": max(times)},
        )


@contextmanager
def standing_reviews_change(prediction_ids: Iterable[int]) -> Iterator[None]:
    """Wrap a change to these predictions' reviews or their radiographs' adjudications: each prediction
    whose standing review (or reference label) changed moves from its old count to its new one."""
    ids = sorted(set(prediction_ids))
    before = _standing_keys(ids)
    yield
    after = _standing_keys(ids)
    moves: Counter[ReviewKey] = Counter()
    for pk in ids:
        old, new = before.get(pk), after.get(pk)
        if old != new:
            if old is not None:
                moves[old] -= 1
            if new is not None:
                moves[new] += 1
    for key, n in sorted(moves.items()):
        if n:
            _add(
                ReviewTally,
                dict(zip(ReviewTally.KEY, key, strict=True)),
                {"reviews": F("reviews") + n},
                {"reviews": n},
            )


def _standing_keys(prediction_ids: Sequence[int]) -> dict[int, ReviewKey]:
    """Each prediction's standing review as its ReviewTally key (one query)."""
    if not prediction_ids:
        return {}
    rows = (
        Review.objects.standing()
        .filter(prediction_id__in=prediction_ids)
        .annotate(reference=Coalesce(Subquery(_reference_label(Adjudication)), Value("")))
        .values_list(
            "prediction_id",
            "prediction__model_version",
            "prediction__created_at",
            "created_at",
            "prediction__label",
            "prediction__band",
            "final_label",
            "decision",
            "reason_code",
            "unaided_label",
            "reference",
        )
    )
    return {
        pk: (version, timezone.localdate(predicted), timezone.localdate(reviewed), *labels)
        for pk, version, predicted, reviewed, *labels in rows
    }


def _reference_label(adjudications: Any) -> Any:
    """The label of the radiograph's latest decided adjudication (the reference standard), as a subquery."""
    decided = adjudications.objects.filter(radiograph_id=OuterRef("radiograph_id"), state="decided")
    return decided.order_by("-decided_at", "-pk").values("label")[:1]


def _add(model: Any, key: dict[str, Any], changes: dict[str, Any], new: dict[str, Any]) -> None:
    """Apply `changes` to the counter row `key`, or create it with `new`."""
    rows = model.objects.filter(**key)
    if rows.update(**changes):
        return
    try:
        with transaction.atomic():
            model.objects.create(**key, **new)
    except IntegrityError:  # another transaction created it since: count on it
        rows.update(**changes)


def tallies_rebuild(*, apps: Any = None) -> tuple[int, int]:
    """Recompute PredictionTally and ReviewTally from the records (the backfill; any time they are in
    doubt). Returns how many rows each holds. `apps`: a migration's historical models."""
    registry = apps or django_apps
    predictions: Any = registry.get_model("radiology", "Prediction")
    reviews: Any = registry.get_model("radiology", "Review")
    adjudications: Any = registry.get_model("radiology", "Adjudication")
    prediction_tally: Any = registry.get_model("radiology", "PredictionTally")
    review_tally: Any = registry.get_model("radiology", "ReviewTally")
    with transaction.atomic():
        prediction_tally.objects.all().delete()
        review_tally.objects.all().delete()
        per_day = (
            predictions.objects.order_by()
            .annotate(day=TruncDate("created_at"))
            .values("model_version", "day")
            .annotate(n=Count("*"), first=Min("created_at"), last=Max("created_at"))
        )
        prediction_tally.objects.bulk_create(
            (
                prediction_tally(
                    model_version=row["model_version"],
                    day=row["day"],
                    predictions=row["n"],
                    first_at=row["first"],
                    last_at=row["last"],
                )
                for row in per_day
            ),
            batch_size=1000,
        )
        latest = reviews.objects.filter(prediction_id=OuterRef("prediction_id")).order_by(
            "-created_at", "-pk"
        )
        standing = (
            reviews.objects.filter(pk=Subquery(latest.values("pk")[:1]))
            .order_by()
            .annotate(
                model_version=F("prediction__model_version"),
                prediction_day=TruncDate("prediction__created_at"),
                review_day=TruncDate("created_at"),
                model_label=F("prediction__label"),
                model_band=F("prediction__band"),
                reference_label=Coalesce(Subquery(_reference_label(adjudications)), Value("")),
            )
            .values(*ReviewTally.KEY)  # named as ReviewTally's columns: each row is one counter's key
            .annotate(n=Count("*"))
        )
        review_tally.objects.bulk_create(
            (
                review_tally(**{name: row[name] for name in ReviewTally.KEY}, reviews=row["n"])
                for row in standing
            ),
            batch_size=1000,
        )
        return prediction_tally.objects.count(), review_tally.objects.count()


def trigger_tallies_recount() -> tuple[int, int]:
    """Recount the totals the database's triggers keep (StudyTally, RadiographTally) from the rows.

    The triggers count every writer, but not a load that bypassed them (`pg_restore --disable-triggers`,
    `session_replication_role = replica`). Writers wait while this runs (SHARE locks on both tables), so
    no change falls between the count and the write. Returns (studies, radiographs)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE radiology_study, radiology_radiograph IN SHARE MODE")
        per_state = list(Study.objects.order_by().values("state", "body_region").annotate(n=Count("*")))
        StudyTally.objects.all().delete()
        StudyTally.objects.bulk_create(
            StudyTally(state=row["state"], body_region=row["body_region"], studies=row["n"])
            for row in per_state
        )
        radiographs = Radiograph.objects.count()
        RadiographTally.objects.update_or_create(pk=1, defaults={"radiographs": radiographs})
        return sum(row["n"] for row in per_state), radiographs
