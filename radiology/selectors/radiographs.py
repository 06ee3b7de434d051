"""Radiographs with their predictions and reviews, as pages and the API show them."""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, Prefetch, QuerySet

from radiology.models import Prediction, Radiograph, Review
from radiology.selectors.scoping import require_clinical


def radiograph_get(*, user: Any, pk: int) -> Radiograph:
    return require_clinical(user, Radiograph.objects.select_related("study")).get(pk=pk)


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


def radiographs_awaiting_review(*, user: Any) -> QuerySet[Radiograph]:
    reviewed = Review.objects.filter(radiograph=OuterRef("pk"))
    return require_clinical(
        user,
        Radiograph.objects.filter(status=Radiograph.Status.PREDICTED).filter(~Exists(reviewed)),
    )


def radiograph_queryset_for(user: Any) -> QuerySet[Radiograph]:
    return require_clinical(user, Radiograph.objects.all())


def radiographs_with_results() -> QuerySet[Radiograph]:
    """Radiographs with everything a result row shows, in a fixed number of queries however many rows."""
    return Radiograph.objects.select_related("study").prefetch_related(
        Prefetch("predictions", queryset=Prediction.objects.order_by("-created_at", "-pk")),
        Prefetch(
            "reviews", queryset=Review.objects.select_related("reviewer").order_by("-created_at", "-pk")
        ),
    )


def radiograph_list(*, user: Any) -> QuerySet[Radiograph]:
    """Radiographs newest first, with study, predictions and reviews prefetched (filter before slicing)."""
    return require_clinical(user, radiographs_with_results().order_by("-created_at", "-pk"))


def radiograph_get_with_results(*, user: Any, pk: int) -> Radiograph:
    return require_clinical(user, radiographs_with_results()).get(pk=pk)


def radiograph_reviews(*, radiograph: Radiograph) -> QuerySet[Review]:
    reviews = Review.objects.filter(radiograph=radiograph).select_related("reviewer")
    return reviews.order_by("-created_at", "-pk")


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
