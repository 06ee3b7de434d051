"""The audit dashboard (admins): model versions against the clinicians' standing reviews."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.db.models import Count, F, Max, Min, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from radiology.governance.models import ModelVersion
from radiology.governance.stats import wilson
from radiology.models import Band, Label, Prediction, PredictionTally, Review, ReviewTally
from radiology.selectors.scoping import require_admin


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
        return wilson(self.k, self.n)


# The model cards' test sources as the README and the model report name them.
SOURCE_NAMES = {"fracatlas": "FracAtlas", "kaggle": "Kaggle", "boxes": "Boxes source"}


@dataclass(frozen=True)
class CardBand:
    """What the model card measured for one band on one source's test split."""

    source: str
    share: float  # of the source's test images in this band
    fractured: int  # of those images, how many were fractured
    images: int
    prevalence: float  # fractured share of the source's whole test split

    @property
    def source_name(self) -> str:
        return SOURCE_NAMES.get(self.source, self.source)

    @property
    def fractured_share(self) -> float | None:
        return self.fractured / self.images if self.images else None


def card_bands(test_sources: dict[str, Any] | None) -> dict[str, list[CardBand]]:
    """Per band, the per-image test figures for each source, from a card's ``metrics.test.sources`` ({} for
    a card without bands)."""
    out: dict[str, list[CardBand]] = {}
    for source, figures in sorted((test_sources or {}).items()):
        images = figures.get("images") or {}
        if not images.get("bands") or not images.get("n"):
            continue
        prevalence = images.get("positives", 0) / images["n"]
        for band, counts in images["bands"].items():
            n = counts["fractured"] + counts["not_fractured"]
            out.setdefault(band, []).append(
                CardBand(source, counts["share"], counts["fractured"], n, prevalence)
            )
    return out


@dataclass(frozen=True)
class BandRow:
    """One band of a model version against the clinicians' final calls, beside what its card promised."""

    band: str
    name: str
    reviewed: int
    of_reviewed: Proportion  # this band's share of the version's reviewed predictions
    called_fractured: Proportion  # the clinicians' final call was "fractured"
    card: list[CardBand]


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
    # by_band[band][final_label]: counts of reviewed predictions per band of the prediction.
    by_band: dict[str, dict[str, int]] = field(
        default_factory=lambda: {b: dict.fromkeys(Label.values, 0) for b in Band.values}
    )
    card_bands: dict[str, list[CardBand]] = field(default_factory=dict)

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

    @cached_property  # the template reads it twice (the table, then the prevalence note)
    def band_rows(self) -> list[BandRow]:
        """Fracture, Doubt, No fracture: how many reviewed, and how often the clinicians found a fracture."""
        total = sum(sum(finals.values()) for finals in self.by_band.values())
        rows = []
        for band, name in Band.choices:
            finals = self.by_band[band]
            reviewed = sum(finals.values())
            rows.append(
                BandRow(
                    band,
                    str(name),
                    reviewed,
                    Proportion(reviewed, total),
                    Proportion(finals[Label.FRACTURED], reviewed),
                    self.card_bands.get(band, []),
                )
            )
        return rows


def _prediction_window(
    queryset: QuerySet[Any], prefix: str, date_from: dt.date | None, date_to: dt.date | None
) -> QuerySet[Any]:
    if date_from:
        queryset = queryset.filter(**{f"{prefix}created_at__date__gte": date_from})
    if date_to:
        queryset = queryset.filter(**{f"{prefix}created_at__date__lte": date_to})
    return queryset


def _days(queryset: QuerySet[Any], field: str, date_from: dt.date | None, date_to: dt.date | None) -> Any:
    if date_from:
        queryset = queryset.filter(**{f"{field}__gte": date_from})
    if date_to:
        queryset = queryset.filter(**{f"{field}__lte": date_to})
    return queryset


def audit_model_versions(
    *, user: Any, date_from: dt.date | None = None, date_to: dt.date | None = None
) -> list[ModelVersionAudit]:
    """Per model version, newest first: predictions, the confusion matrix against the clinicians' final
    labels, the same per band with the card's test figures beside them, and the reasons for overrides.
    Three queries: two over the running totals (radiology.tallies), not over the predictions, so the same
    figures at 1,000,000 radiographs as at ten, and one for the versions' cards."""
    per_version = (
        _days(require_admin(user, PredictionTally.objects.all()), "day", date_from, date_to)
        .order_by()
        .values("model_version")
        .annotate(n=Sum("predictions"), first=Min("first_at"), last=Max("last_at"))
    )
    audits: dict[str, ModelVersionAudit] = {}
    for row in per_version:
        if row["n"]:
            audits[row["model_version"]] = ModelVersionAudit(
                row["model_version"], row["n"], row["first"], row["last"]
            )
    standing = (
        _days(require_admin(user, ReviewTally.objects.all()), "prediction_day", date_from, date_to)
        .order_by()
        .values("model_version", "model_label", "model_band", "final_label", "decision", "reason_code")
        .annotate(n=Sum("reviews"))
    )
    reasons = dict(Review.Reason.choices)
    overrides: dict[tuple[str, str], int] = {}
    for row in standing:
        audit = audits.get(row["model_version"])
        if audit is None or not row["n"]:
            continue
        if row["final_label"] in Label.values and row["model_label"] in Label.values:
            audit.confusion[row["final_label"]][row["model_label"]] += row["n"]
        if row["final_label"] in Label.values and row["model_band"] in Band.values:
            audit.by_band[row["model_band"]][row["final_label"]] += row["n"]
        if row["decision"] == Review.Decision.OVERRIDE:
            key = (row["model_version"], row["reason_code"])
            overrides[key] = overrides.get(key, 0) + row["n"]
    for (version, code), n in overrides.items():
        audits[version].override_reasons.append((code, reasons.get(code, code or "No reason"), n))
    for audit in audits.values():
        audit.override_reasons.sort(key=lambda reason: (-reason[2], reason[1]))
    # Only the cards' test figures per source (about 8 kB of a 1.6 MB card), read out by the database.
    cards = ModelVersion.objects.filter(version__in=list(audits)).values_list(
        "version", "card__metrics__test__sources"
    )
    for version, test_sources in cards:
        audits[version].card_bands = card_bands(test_sources)
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
    """Agreement of the model with the standing reviews, per model version and day of review (read from
    the running totals)."""
    rows = (
        _days(ReviewTally.objects.all(), "prediction_day", date_from, date_to)
        .order_by()
        .values("model_version", "review_day")
        .annotate(
            reviewed=Sum("reviews"),
            agreed=Coalesce(Sum("reviews", filter=Q(final_label=F("model_label"))), 0),
        )
        .filter(reviewed__gt=0)
        .order_by("review_day", "model_version")
    )
    return [
        AgreementPoint(row["model_version"], row["review_day"], row["reviewed"], row["agreed"])
        for row in require_admin(user, rows)
    ]


def review_recent(*, user: Any, limit: int = 20) -> list[Review]:
    """The latest reviews with who made them and on which study (one query)."""
    reviews = Review.objects.select_related("reviewer", "prediction", "radiograph__study__patient").order_by(
        "-created_at", "-pk"
    )
    return list(require_admin(user, reviews)[:limit])


def prediction_export_rows(
    *,
    user: Any,
    model_version: str | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    prediction_ids: Sequence[int] | QuerySet[Any] | None = None,
) -> QuerySet[Prediction]:
    """Predictions joined with their latest review (annotated `review_*`), oldest first, for CSV export."""
    predictions = _prediction_window(Prediction.objects.all(), "", date_from, date_to)
    if model_version:
        predictions = predictions.filter(model_version=model_version)
    if prediction_ids is not None:
        predictions = predictions.filter(pk__in=prediction_ids)
    predictions = (
        predictions.select_related("radiograph__study")
        .annotate(
            review_decision=Review.objects.latest_value("decision", prediction=OuterRef("pk")),
            review_final_label=Review.objects.latest_value("final_label", prediction=OuterRef("pk")),
            review_reason_code=Review.objects.latest_value("reason_code", prediction=OuterRef("pk")),
            review_reason_text=Review.objects.latest_value("reason_text", prediction=OuterRef("pk")),
            review_reviewer=Review.objects.latest_value("reviewer__username", prediction=OuterRef("pk")),
            review_created_at=Review.objects.latest_value("created_at", prediction=OuterRef("pk")),
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
    return require_admin(user, predictions)
