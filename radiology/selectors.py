"""Every read of the clinical records that views, API views and the admin share.

Clinical data is visible to clinicians and admins only; `_require_clinical` scopes every queryset, so a
caller without the role gets an empty result rather than someone else's patients.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Exists, F, Max, Min, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import TruncDate
from django.utils import timezone

from radiology.models import Label, Patient, Prediction, Radiograph, Review, Study, queue_order
from radiology.roles import is_admin, is_clinician


def _require_clinical(user: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
    return queryset if is_clinician(user) else queryset.none()


def study_queue(
    *,
    user: Any,
    state: str | None = None,
    body_region: str | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    search: str | None = None,
) -> QuerySet[Study]:
    """Studies in review order: most suspicious first (highest fracture probability), then oldest."""
    studies = Study.objects.select_related("patient")
    if state:
        studies = studies.filter(state=state)
    if body_region:
        studies = studies.filter(body_region=body_region)
    if date_from:
        studies = studies.filter(created_at__gte=start_of_day(date_from))
    if date_to and date_to < dt.date.max:
        studies = studies.filter(created_at__lt=start_of_day(date_to + dt.timedelta(days=1)))
    if search:
        studies = studies.filter(study_search(search))
    studies = studies.order_by(queue_order(), "created_at", "pk")
    return _require_clinical(user, studies)


def start_of_day(day: dt.date) -> dt.datetime:
    """Midnight in the site's time zone: a date filter as a range on the indexed created_at column
    (created_at__date would convert every row)."""
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def study_search(term: str) -> Q:
    """Studies whose accession number or patient's MRN is `term`, case-insensitively.

    The matching patients are looked up first (one indexed query), so that the study side is an
    index lookup on each branch; one OR across the patient join would read every study.
    """
    term = term.strip()
    patients = list(Patient.objects.filter(mrn__iexact=term).values_list("pk", flat=True)[:100])
    return Q(patient_id__in=patients) | Q(accession_number__iexact=term)


def study_get(*, user: Any, pk: int) -> Study:
    """One study with its radiographs, their predictions and reviews; raises Study.DoesNotExist."""
    radiographs = Radiograph.objects.order_by("position", "pk").prefetch_related(
        Prefetch("predictions", queryset=Prediction.objects.order_by("-created_at", "-pk")),
        Prefetch(
            "reviews", queryset=Review.objects.select_related("reviewer").order_by("-created_at", "-pk")
        ),
    )
    queryset = Study.objects.select_related("patient", "uploaded_by").prefetch_related(
        Prefetch("radiographs", queryset=radiographs)
    )
    return _require_clinical(user, queryset).get(pk=pk)


def radiograph_get(*, user: Any, pk: int) -> Radiograph:
    return _require_clinical(user, Radiograph.objects.select_related("study")).get(pk=pk)


def radiograph_current_prediction(radiograph: Radiograph) -> Prediction | None:
    """The most recent prediction (uses a prefetched `predictions` ordered newest first when present)."""
    predictions = list(radiograph.predictions.all())
    if not predictions:
        return None
    return max(predictions, key=lambda p: (p.created_at, p.pk))


class HeatmapUnavailable(Exception):
    """The prediction has no heatmap, or its stored file is missing or unreadable (the message says)."""


def prediction_heatmap_overlay(*, user: Any, pk: int) -> bytes:
    """The RGBA overlay PNG of a prediction the user may see, drawn from its stored heatmap levels.

    Raises Prediction.DoesNotExist when the user may not see it, HeatmapUnavailable when there is none.
    """
    from classifier.explain import stored_to_overlay_png

    prediction = Prediction.objects.select_related("radiograph").get(
        pk=pk, radiograph__in=radiograph_queryset_for(user)
    )
    if not prediction.heatmap:
        raise HeatmapUnavailable("This prediction has no heatmap.")
    try:
        with prediction.heatmap.open("rb") as handle:
            stored = handle.read()
        radiograph = prediction.radiograph
        return stored_to_overlay_png(stored, radiograph.width, radiograph.height)
    except FileNotFoundError:
        raise HeatmapUnavailable("The stored heatmap is missing.") from None
    except ValueError:
        raise HeatmapUnavailable("The stored heatmap cannot be read.") from None


def radiograph_latest_review(radiograph: Radiograph) -> Review | None:
    reviews = list(radiograph.reviews.all())
    if not reviews:
        return None
    return max(reviews, key=lambda r: (r.created_at, r.pk))


def next_study_to_review(*, user: Any, after: Study | None = None) -> Study | None:
    """The next study awaiting review in queue order, skipping `after`."""
    queue = study_queue(user=user, state=Study.State.AWAITING_REVIEW)
    if after is not None:
        queue = queue.exclude(pk=after.pk)
    return queue.first()


def radiographs_awaiting_review(*, user: Any) -> QuerySet[Radiograph]:
    reviewed = Review.objects.filter(radiograph=OuterRef("pk"))
    return _require_clinical(
        user,
        Radiograph.objects.filter(status=Radiograph.Status.PREDICTED).filter(~Exists(reviewed)),
    )


def radiograph_queryset_for(user: Any) -> QuerySet[Radiograph]:
    return _require_clinical(user, Radiograph.objects.all())


# --- API ------------------------------------------------------------------------------------------------


def _radiographs_with_results() -> QuerySet[Radiograph]:
    """Radiographs with everything a result row shows, in a fixed number of queries however many rows."""
    return Radiograph.objects.select_related("study").prefetch_related(
        Prefetch("predictions", queryset=Prediction.objects.order_by("-created_at", "-pk")),
        Prefetch(
            "reviews", queryset=Review.objects.select_related("reviewer").order_by("-created_at", "-pk")
        ),
    )


def radiograph_list(*, user: Any) -> QuerySet[Radiograph]:
    """Radiographs newest first, with study, predictions and reviews prefetched (filter before slicing)."""
    return _require_clinical(user, _radiographs_with_results().order_by("-created_at", "-pk"))


def radiograph_get_with_results(*, user: Any, pk: int) -> Radiograph:
    return _require_clinical(user, _radiographs_with_results()).get(pk=pk)


def radiograph_reviews(*, radiograph: Radiograph) -> QuerySet[Review]:
    reviews = Review.objects.filter(radiograph=radiograph).select_related("reviewer")
    return reviews.order_by("-created_at", "-pk")


def export_radiographs(*, user: Any) -> QuerySet[Radiograph]:
    """What a results export reads: oldest first, so repeated exports line up."""
    return _require_clinical(user, _radiographs_with_results().order_by("created_at", "pk"))


def batch_get(*, user: Any, pk: Any) -> Any:
    """A batch with its items, studies and their radiographs' results. Visible to whoever submitted it
    and to admins; raises Batch.DoesNotExist otherwise."""
    from radiology.models import Batch, BatchItem
    from radiology.roles import is_admin

    items = BatchItem.objects.select_related("study").prefetch_related(
        Prefetch("study__radiographs", queryset=_radiographs_with_results().order_by("position", "pk"))
    )
    batches = Batch.objects.prefetch_related(Prefetch("items", queryset=items.order_by("index")))
    if not is_admin(user):
        batches = batches.filter(submitted_by=user)
    return _require_clinical(user, batches).get(pk=pk)


def batch_progress(*, batch: Any) -> dict[str, int]:
    """How many of the batch's radiographs are in each classification status (from batch_get's prefetch)."""
    counts = dict.fromkeys(Radiograph.Status.values, 0)
    for item in batch.items.all():
        if item.study is not None:
            for radiograph in item.study.radiographs.all():
                counts[radiograph.status] += 1
    return counts


# --- Review queue and review page (web UI) --------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The model's answer for a radiograph or a study, as a clinician reads it ("Fracture likely — 0.93")."""

    label: str
    probability: float
    threshold: float
    model_version: str

    @property
    def fracture_likely(self) -> bool:
        return self.label == Label.FRACTURED

    @property
    def headline(self) -> str:
        return "Fracture likely" if self.fracture_likely else "Fracture unlikely"

    @property
    def text(self) -> str:
        return f"{self.headline} — {self.probability:.2f}"

    @classmethod
    def of(cls, prediction: Prediction) -> Verdict:
        return cls(prediction.label, prediction.probability, prediction.threshold, prediction.model_version)


def study_queue_with_results(studies: QuerySet[Study]) -> QuerySet[Study]:
    """Prefetches what a queue row shows (verdict, review outcome) in three queries for the whole page."""
    radiographs = Radiograph.objects.only("pk", "study_id", "status", "position").order_by("position", "pk")
    return studies.prefetch_related(
        Prefetch("radiographs", queryset=radiographs),
        Prefetch(
            "radiographs__predictions",
            queryset=Prediction.objects.only(
                "pk", "radiograph_id", "label", "probability", "threshold", "model_version", "created_at"
            ),
        ),
        Prefetch(
            "radiographs__reviews",
            queryset=Review.objects.select_related("reviewer").only(
                "pk", "radiograph_id", "decision", "final_label", "created_at", "reviewer__username"
            ),
        ),
    )


def study_verdict(study: Study) -> Verdict | None:
    """The study's most suspicious current prediction (uses study_queue_with_results' or study_get's
    prefetch)."""
    predictions = [p for r in study.radiographs.all() if (p := radiograph_current_prediction(r)) is not None]
    if not predictions:
        return None
    return Verdict.of(max(predictions, key=lambda p: p.probability))


@dataclass(frozen=True)
class StudyOutcome:
    """What the clinicians decided for a study: its final label and whether anyone overrode the model."""

    final_label: str
    overridden: bool
    reviewers: tuple[str, ...]

    @property
    def final_label_display(self) -> str:
        return Label(self.final_label).label


def study_outcome(study: Study) -> StudyOutcome | None:
    """Fractured if any radiograph's standing review says so; None until a radiograph has been reviewed."""
    reviews = [r for g in study.radiographs.all() if (r := radiograph_latest_review(g)) is not None]
    if not reviews:
        return None
    fractured = any(r.final_label == Label.FRACTURED for r in reviews)
    return StudyOutcome(
        final_label=Label.FRACTURED if fractured else Label.NOT_FRACTURED,
        overridden=any(r.decision == Review.Decision.OVERRIDE for r in reviews),
        reviewers=tuple(sorted({r.reviewer.get_username() for r in reviews})),
    )


def study_queue_counts(
    *,
    user: Any,
    body_region: str | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    search: str | None = None,
) -> dict[str, int]:
    """How many studies each queue tab holds under the current filters (one GROUP BY query)."""
    studies = study_queue(
        user=user, body_region=body_region, date_from=date_from, date_to=date_to, search=search
    )
    counts = dict.fromkeys(Study.State.values, 0)
    for row in studies.order_by().values("state").annotate(n=Count("pk")):
        counts[row["state"]] = row["n"]
    return counts


def study_queue_neighbours(*, user: Any, study: Study) -> tuple[Study | None, Study | None]:
    """The studies before and after `study` in the awaiting-review queue's order (keyset, two queries).

    A study that is not in that queue (no probability yet, or already reviewed) sits at its place by
    probability when it has one; without one, "next" is the head of the queue and there is no "previous".
    """
    queue = study_queue(user=user, state=Study.State.AWAITING_REVIEW).exclude(pk=study.pk)
    p, created, pk = study.max_probability, study.created_at, study.pk
    if p is None:
        return None, queue.first()
    after = Q(max_probability__lt=p) | Q(max_probability=p, created_at__gt=created)
    after |= Q(max_probability=p, created_at=created, pk__gt=pk)
    before = Q(max_probability__gt=p) | Q(max_probability=p, created_at__lt=created)
    before |= Q(max_probability=p, created_at=created, pk__lt=pk)
    previous = queue.filter(before).order_by("max_probability", "-created_at", "-pk").first()
    return previous, queue.filter(after).first()


def radiograph_awaiting_review(radiograph: Radiograph) -> bool:
    """Predicted and never reviewed (uses study_get's prefetch)."""
    return (
        radiograph.status == Radiograph.Status.PREDICTED
        and radiograph_current_prediction(radiograph) is not None
        and radiograph_latest_review(radiograph) is None
    )


# --- Audit dashboard (admins) -----------------------------------------------------------------------------


def _require_admin(user: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
    return queryset if is_admin(user) else queryset.none()


@dataclass(frozen=True)
class Proportion:
    """k of n with a Wilson 95 % interval: on a few dozen reviews the interval matters as much as k/n."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        if not self.n:
            return None
        z = 1.959963984540054
        p = self.k / self.n
        denominator = 1 + z * z / self.n
        centre = (p + z * z / (2 * self.n)) / denominator
        half = z * math.sqrt(p * (1 - p) / self.n + z * z / (4 * self.n * self.n)) / denominator
        return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class ModelVersionAudit:
    """One model version against the clinicians. "Truth" is the standing (latest) review of a prediction."""

    model_version: str
    predictions: int = 0
    first_prediction: dt.datetime | None = None
    last_prediction: dt.datetime | None = None
    # confusion[final_label][model_label]: counts of reviewed predictions.
    confusion: dict[str, dict[str, int]] = field(
        default_factory=lambda: {t: dict.fromkeys(Label.values, 0) for t in Label.values}
    )
    override_reasons: list[tuple[str, str, int]] = field(default_factory=list)

    def _cell(self, truth: str, model: str) -> int:
        return self.confusion[truth][model]

    @property
    def true_positives(self) -> int:
        return self._cell(Label.FRACTURED, Label.FRACTURED)

    @property
    def false_negatives(self) -> int:
        return self._cell(Label.FRACTURED, Label.NOT_FRACTURED)

    @property
    def false_positives(self) -> int:
        return self._cell(Label.NOT_FRACTURED, Label.FRACTURED)

    @property
    def true_negatives(self) -> int:
        return self._cell(Label.NOT_FRACTURED, Label.NOT_FRACTURED)

    @property
    def reviewed(self) -> int:
        return self.true_positives + self.false_negatives + self.false_positives + self.true_negatives

    @property
    def agreement(self) -> Proportion:
        return Proportion(self.true_positives + self.true_negatives, self.reviewed)

    @property
    def sensitivity(self) -> Proportion:
        return Proportion(self.true_positives, self.true_positives + self.false_negatives)

    @property
    def specificity(self) -> Proportion:
        return Proportion(self.true_negatives, self.true_negatives + self.false_positives)

    @property
    def overrides(self) -> int:
        return sum(count for _, _, count in self.override_reasons)


def _standing_reviews() -> QuerySet[Review]:
    """Each prediction's latest review: the one that stands when a radiograph was reviewed twice."""
    latest = Review.objects.filter(prediction=OuterRef("prediction")).order_by("-created_at", "-pk")
    return Review.objects.filter(pk=Subquery(latest.values("pk")[:1]))


def _prediction_window(
    queryset: QuerySet[Any], prefix: str, date_from: dt.date | None, date_to: dt.date | None
) -> QuerySet[Any]:
    if date_from:
        queryset = queryset.filter(**{f"{prefix}created_at__date__gte": date_from})
    if date_to:
        queryset = queryset.filter(**{f"{prefix}created_at__date__lte": date_to})
    return queryset


def audit_model_versions(
    *, user: Any, date_from: dt.date | None = None, date_to: dt.date | None = None
) -> list[ModelVersionAudit]:
    """Per model version, newest first: predictions, the confusion matrix against the clinicians' final
    labels and the reasons for overrides. Two aggregate queries whatever the number of predictions."""
    latest_final = (
        Review.objects.filter(prediction=OuterRef("pk")).order_by("-created_at", "-pk").values("final_label")
    )
    predictions = _prediction_window(Prediction.objects.all(), "", date_from, date_to)
    rows = (
        _require_admin(user, predictions)
        .order_by()
        .annotate(final_label=Subquery(latest_final[:1]))
        .values("model_version", "label", "final_label")
        .annotate(n=Count("pk"), first=Min("created_at"), last=Max("created_at"))
    )
    audits: dict[str, ModelVersionAudit] = {}
    for row in rows:
        audit = audits.setdefault(row["model_version"], ModelVersionAudit(row["model_version"]))
        audit.predictions += row["n"]
        audit.first_prediction = min(filter(None, [audit.first_prediction, row["first"]]))
        audit.last_prediction = max(filter(None, [audit.last_prediction, row["last"]]))
        if row["final_label"] in Label.values and row["label"] in Label.values:
            audit.confusion[row["final_label"]][row["label"]] += row["n"]
    overrides = (
        _prediction_window(_standing_reviews(), "prediction__", date_from, date_to)
        .filter(decision=Review.Decision.OVERRIDE)
        .order_by()
        .values("prediction__model_version", "reason_code")
        .annotate(n=Count("pk"))
    )
    reasons = dict(Review.Reason.choices)
    for row in _require_admin(user, overrides):
        version = audits.get(row["prediction__model_version"])
        if version is not None:
            code = row["reason_code"]
            version.override_reasons.append((code, reasons.get(code, code or "No reason"), row["n"]))
    for audit in audits.values():
        audit.override_reasons.sort(key=lambda reason: (-reason[2], reason[1]))
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(audits.values(), key=lambda a: a.last_prediction or oldest, reverse=True)


@dataclass(frozen=True)
class AgreementPoint:
    model_version: str
    day: dt.date
    reviewed: int
    agreed: int

    @property
    def rate(self) -> float:
        return self.agreed / self.reviewed if self.reviewed else 0.0


def audit_agreement_by_day(
    *, user: Any, date_from: dt.date | None = None, date_to: dt.date | None = None
) -> list[AgreementPoint]:
    """Agreement of the model with the standing reviews, per model version and day of review."""
    rows = (
        _prediction_window(_standing_reviews(), "prediction__", date_from, date_to)
        .order_by()
        .annotate(day=TruncDate("created_at"))
        .values("prediction__model_version", "day")
        .annotate(
            reviewed=Count("pk"),
            agreed=Count("pk", filter=Q(final_label=F("prediction__label"))),
        )
        .order_by("day", "prediction__model_version")
    )
    return [
        AgreementPoint(row["prediction__model_version"], row["day"], row["reviewed"], row["agreed"])
        for row in _require_admin(user, rows)
    ]


def review_recent(*, user: Any, limit: int = 20) -> list[Review]:
    """The latest reviews with who made them and on which study (one query)."""
    reviews = Review.objects.select_related("reviewer", "prediction", "radiograph__study__patient").order_by(
        "-created_at", "-pk"
    )
    return list(_require_admin(user, reviews)[:limit])


def prediction_export_rows(
    *,
    user: Any,
    model_version: str | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    prediction_ids: Sequence[int] | QuerySet[Any] | None = None,
) -> QuerySet[Prediction]:
    """Predictions joined with their latest review (annotated `review_*`), oldest first, for CSV export."""
    latest = Review.objects.filter(prediction=OuterRef("pk")).order_by("-created_at", "-pk")
    predictions = _prediction_window(Prediction.objects.all(), "", date_from, date_to)
    if model_version:
        predictions = predictions.filter(model_version=model_version)
    if prediction_ids is not None:
        predictions = predictions.filter(pk__in=prediction_ids)
    predictions = (
        predictions.select_related("radiograph__study")
        .annotate(
            review_decision=Subquery(latest.values("decision")[:1]),
            review_final_label=Subquery(latest.values("final_label")[:1]),
            review_reason_code=Subquery(latest.values("reason_code")[:1]),
            review_reason_text=Subquery(latest.values("reason_text")[:1]),
            review_reviewer=Subquery(latest.values("reviewer__username")[:1]),
            review_created_at=Subquery(latest.values("created_at")[:1]),
            review_count=Subquery(
                Review.objects.filter(prediction=OuterRef("pk"))
                .order_by()
                .values("prediction")
                .annotate(n=Count("pk"))
                .values("n")[:1]
            ),
        )
        .order_by("created_at", "pk")
    )
    return _require_admin(user, predictions)
