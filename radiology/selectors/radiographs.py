"""Radiographs with their predictions and reviews, as pages and the API show them."""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, Prefetch, QuerySet

from radiology.governance.models import GuardrailRefusal
from radiology.models import Prediction, Radiograph, RadiographTally, Review
from radiology.selectors.scoping import require_clinical


def radiograph_get(*, user: Any, pk: int) -> Radiograph:
    return require_clinical(user, Radiograph.objects.select_related("study", "current_prediction")).get(pk=pk)


def radiograph_current_prediction(radiograph: Radiograph) -> Prediction | None:
    """The prediction clinicians see (Radiograph.current_prediction; select it with the radiograph)."""
    return radiograph.current_prediction


def prediction_get(*, user: Any, pk: int) -> Prediction:
    """A prediction of a radiograph the user may see, with its radiograph; raises Prediction.DoesNotExist."""
    return Prediction.objects.select_related("radiograph").get(
        pk=pk, radiograph__in=radiograph_queryset_for(user)
    )


def radiograph_latest_review(radiograph: Radiograph) -> Review | None:
    """The review that stands (uses a prefetched `reviews` when there is one)."""
    return Review.latest(radiograph.reviews.all())


def radiographs_awaiting_review(*, user: Any) -> QuerySet[Radiograph]:
    reviewed = Review.objects.filter(radiograph=OuterRef("pk"))
    return require_clinical(
        user,
        Radiograph.objects.filter(status=Radiograph.Status.PREDICTED).filter(~Exists(reviewed)),
    )


def radiograph_queryset_for(user: Any) -> QuerySet[Radiograph]:
    return require_clinical(user, Radiograph.objects.all())


def refusals_oldest_first() -> Prefetch:
    """A radiograph's refusals, oldest first: radiograph_refusal takes the first, which declined it."""
    return Prefetch("refusals", queryset=GuardrailRefusal.objects.order_by("created_at", "pk"))


def radiographs_with_results() -> QuerySet[Radiograph]:
    """Radiographs with everything a result row shows, in a fixed number of queries however many rows."""
    return Radiograph.objects.select_related("study", "current_prediction").prefetch_related(
        Prefetch("reviews", queryset=Review.objects.select_related("reviewer").newest_first()),
        # Why a not-analysed radiograph has no verdict (radiograph_refusal): one query per page.
        refusals_oldest_first(),
    )


def radiograph_refusal(radiograph: Radiograph) -> GuardrailRefusal | None:
    """Why a NOT_ANALYSED radiograph has no verdict: the first guardrail refusal, the one that set its
    status (a shadow version's later refusal does not); None for any other status. Uses the prefetch
    refusals_oldest_first (radiographs_with_results and study_get have it)."""
    if radiograph.status != Radiograph.Status.NOT_ANALYSED:
        return None
    # min() rather than the prefetch's order: right with or without the prefetch.
    return min(radiograph.refusals.all(), key=lambda r: (r.created_at, r.pk), default=None)


def radiograph_list(*, user: Any) -> QuerySet[Radiograph]:
    """Radiographs newest first, with study, predictions and reviews prefetched (filter before slicing)."""
    return require_clinical(user, radiographs_with_results().order_by("-created_at", "-pk"))


def radiograph_tallied_count(*, user: Any) -> int:
    """How many radiographs `radiograph_list(user=user)` holds, without counting them (RadiographTally, kept
    by database triggers): one row instead of 1,000,000 index entries."""
    tally = require_clinical(user, RadiographTally.objects.filter(pk=1))
    return tally.values_list("radiographs", flat=True).first() or 0


def radiograph_get_with_results(*, user: Any, pk: int) -> Radiograph:
    return require_clinical(user, radiographs_with_results()).get(pk=pk)


def radiograph_reviews(*, radiograph: Radiograph) -> QuerySet[Review]:
    return Review.objects.filter(radiograph=radiograph).select_related("reviewer").newest_first()


def export_radiographs(*, user: Any) -> QuerySet[Radiograph]:
    """What a results export reads: oldest first, so repeated exports line up."""
    return require_clinical(user, radiographs_with_results().order_by("created_at", "pk"))


def radiograph_awaiting_review(radiograph: Radiograph) -> bool:
    """Predicted and never reviewed (uses study_get's prefetch)."""
    return (
        radiograph.status == Radiograph.Status.PREDICTED
        and radiograph_current_prediction(radiograph) is not None
        and radiograph_latest_review(radiograph) is None
    )
