"""The review queue and single studies."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from radiology.models import Patient, Prediction, Radiograph, Review, Study, StudyTally, queue_order
from radiology.selectors.radiographs import refusals_oldest_first
from radiology.selectors.scoping import require_clinical


def study_queue(
    *,
    user: Any,
    state: str | None = None,
    body_region: str | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    search: str | None = None,
    band: str | None = None,
) -> QuerySet[Study]:
    """Studies in review order: most suspicious first (highest fracture probability), then oldest.
    `search`: MRN or accession number (exact) or a patient name prefix; `band`: the study's highest band."""
    studies = Study.objects.select_related("patient", "reading_by", "read_without_model_by")
    if state:
        studies = studies.filter(state=state)
    if band:
        studies = studies.filter(band=band)
    if body_region:
        studies = studies.filter(body_region=body_region)
    if date_from:
        studies = studies.filter(created_at__gte=start_of_day(date_from))
    if date_to and date_to < dt.date.max:
        studies = studies.filter(created_at__lt=start_of_day(date_to + dt.timedelta(days=1)))
    if search:
        studies = studies.filter(study_search(search))
    studies = studies.order_by(queue_order(), "created_at", "pk")
    return require_clinical(user, studies)


def start_of_day(day: dt.date) -> dt.datetime:
    """Midnight in the site's time zone: a date filter as a range on the indexed created_at column
    (created_at__date would convert every row)."""
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


# At most this many patients match a name search (a very short prefix may need more letters).
NAME_SEARCH_LIMIT = 500


def study_search(term: str) -> Q:
    """Studies whose accession number or patient's MRN is `term`, or whose patient's name (any of its
    words) starts with `term`, all case-insensitively.

    The matching patients are looked up first (one query), so that the study side is an index lookup on
    each branch; one OR across the patient join would read every study.
    """
    term = term.strip()
    matching = Q(mrn__iexact=term)
    if term:
        matching |= Q(name__istartswith=term) | Q(name__icontains=f" {term}")
    patients = list(Patient.objects.filter(matching).values_list("pk", flat=True)[:NAME_SEARCH_LIMIT])
    return Q(patient_id__in=patients) | Q(accession_number__iexact=term)


def study_get(*, user: Any, pk: int) -> Study:
    """One study with its radiographs, their predictions, reviews and refusals; raises Study.DoesNotExist."""
    radiographs = (
        Radiograph.objects.order_by("position", "pk")
        .select_related("current_prediction")
        .prefetch_related(
            Prefetch("reviews", queryset=Review.objects.select_related("reviewer").newest_first()),
            refusals_oldest_first(),
        )
    )
    queryset = Study.objects.select_related(
        "patient", "uploaded_by", "read_without_model_by"
    ).prefetch_related(Prefetch("radiographs", queryset=radiographs))
    return require_clinical(user, queryset).get(pk=pk)


def next_study_to_review(*, user: Any, after: Study | None = None) -> Study | None:
    """The next study awaiting review in queue order, skipping `after`."""
    queue = study_queue(user=user, state=Study.State.AWAITING_REVIEW)
    if after is not None:
        queue = queue.exclude(pk=after.pk)
    return queue.first()


def study_queue_with_results(studies: QuerySet[Study]) -> QuerySet[Study]:
    """Prefetches what a queue row shows (verdict, review outcome) in four queries for the whole page."""
    radiographs = Radiograph.objects.only(
        "pk", "study_id", "status", "position", "current_prediction", "dicom_attributes"
    )
    radiographs = radiographs.order_by("position", "pk")
    return studies.prefetch_related(
        Prefetch("radiographs", queryset=radiographs),
        Prefetch(
            "radiographs__current_prediction",
            queryset=Prediction.objects.only(
                "pk",
                "radiograph_id",
                "label",
                "band",
                "probability",
                "threshold",
                "threshold_sensitive",
                "threshold_specific",
                "model_version",
                "created_at",
            ),
        ),
        Prefetch(
            "radiographs__reviews",
            queryset=Review.objects.select_related("reviewer").only(
                "pk", "radiograph_id", "decision", "final_label", "created_at", "reviewer__username"
            ),
        ),
    )


def study_queue_counts(
    *,
    user: Any,
    body_region: str | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    search: str | None = None,
    band: str | None = None,
) -> dict[str, int]:
    """How many studies each queue tab holds under the current filters (one GROUP BY query).

    Without a date, search or band filter they are read from the running totals per state and body
    region (radiology.tallies.StudyTally, kept by database triggers): a few dozen rows instead of
    counting every study's index entry (65 ms a page at 333,000 studies)."""
    counts = dict.fromkeys(Study.State.values, 0)
    if not (date_from or date_to or search or band):
        for state, n in _tallied(user=user, body_region=body_region).items():
            if state in counts:
                counts[state] = n
        return counts
    studies = study_queue(
        user=user, body_region=body_region, date_from=date_from, date_to=date_to, search=search, band=band
    )
    # COUNT(*), not COUNT(id): counted from the state index alone, without reading the table.
    for row in studies.order_by().values("state").annotate(n=Count("*")):
        counts[row["state"]] = row["n"]
    return counts


def _tallied(*, user: Any, body_region: str | None) -> dict[str, int]:
    """Studies per state (in one body region), from radiology.tallies.StudyTally."""
    tallies = StudyTally.objects.filter(body_region=body_region) if body_region else StudyTally.objects.all()
    rows = require_clinical(user, tallies.order_by().values("state").annotate(n=Sum("studies")))
    return {row["state"]: row["n"] for row in rows}


def study_tallied_count(*, user: Any, state: str | None = None, body_region: str | None = None) -> int:
    """How many studies `study_queue(user=user, state=state, body_region=body_region)` holds, without
    counting them (StudyTally)."""
    counts = _tallied(user=user, body_region=body_region)
    return counts.get(state, 0) if state else sum(counts.values())


def study_queue_neighbours(*, user: Any, study: Study) -> tuple[Study | None, Study | None]:
    """The studies before and after `study` in the awaiting-review queue's order (keyset, two queries).

    A study that is not in that queue (no probability yet, or already reviewed) sits at its place by
    probability when it has one; without one, "next" is the head of the queue and there is no "previous".
    """
    queue = study_queue(user=user, state=Study.State.AWAITING_REVIEW).exclude(pk=study.pk)
    p, created, pk = study.max_probability, study.created_at, study.pk
    if p is None:
        return None, queue.first()
    # Compared on the queue index's own expression, so that each side starts reading the index at the
    # study's place (on the bare column, it read every awaiting study up to it: 70 ms at 333,000 studies).
    queue = queue.alias(queue_p=Coalesce("max_probability", Value(-1.0)))
    after = Q(queue_p__lt=p) | Q(queue_p=p, created_at__gt=created)
    after |= Q(queue_p=p, created_at=created, pk__gt=pk)
    before = Q(queue_p__gt=p) | Q(queue_p=p, created_at__lt=created)
    before |= Q(queue_p=p, created_at=created, pk__lt=pk)
    # The queue's order reversed (the index read backwards).
    backwards = Coalesce("max_probability", Value(-1.0)).asc()
    previous = queue.filter(Q(queue_p__gte=p) & before).order_by(backwards, "-created_at", "-pk").first()
    return previous, queue.filter(Q(queue_p__lte=p) & after).first()
