"""Query-string filters for the list and export endpoints (django-filter, documented by drf-spectacular).

The model verdict is the label of each radiograph's current prediction (Radiograph.current_prediction,
whose label and band are copied onto the radiograph, and a study's into Study.verdict), matching what the
web UI shows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import django_filters as filters
from django import forms
from django.db.models import Exists, OuterRef, QuerySet
from drf_spectacular.utils import extend_schema_field

from radiology.models import Band, BodyRegion, Label, Prediction, Radiograph, Study
from radiology.selectors import start_of_day, study_search

_MAX_ID = 2**63 - 1


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": _MAX_ID})
class IdFilter(filters.NumberFilter):
    """A whole, positive database id: a decimal or out-of-range number is a 400, not a database error."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, min_value=1, max_value=_MAX_ID, **kwargs)


class _CreatedRange(filters.FilterSet):
    def filter_created_after(self, queryset: QuerySet[Any], name: str, value: dt.date) -> QuerySet[Any]:
        return queryset.filter(created_at__gte=start_of_day(value))

    def filter_created_before(self, queryset: QuerySet[Any], name: str, value: dt.date) -> QuerySet[Any]:
        if value >= dt.date.max - dt.timedelta(days=1):
            return queryset  # the end of the calendar bounds nothing (and the next day would overflow)
        return queryset.filter(created_at__lt=start_of_day(value + dt.timedelta(days=1)))


class StudyFilter(_CreatedRange):
    state = filters.ChoiceFilter(choices=Study.State.choices, help_text="Where the study stands.")
    body_region = filters.ChoiceFilter(choices=BodyRegion.choices)
    created_after = filters.DateFilter(method="filter_created_after", help_text="Uploaded on or after.")
    created_before = filters.DateFilter(method="filter_created_before", help_text="Uploaded on or before.")
    study_date_after = filters.DateFilter(field_name="study_date", lookup_expr="gte")
    study_date_before = filters.DateFilter(field_name="study_date", lookup_expr="lte")
    verdict = filters.ChoiceFilter(
        choices=Label.choices,
        method="filter_verdict",
        help_text="fractured: some radiograph's current prediction is fractured; "
        "not_fractured: predicted, and none is.",
    )
    band = filters.ChoiceFilter(
        choices=Band.choices,
        field_name="band",
        help_text="The study's band: the highest band among its radiographs' current predictions.",
    )
    reviewed = filters.BooleanFilter(
        method="filter_reviewed", help_text="true: every prediction reviewed (state reviewed)."
    )
    search = filters.CharFilter(
        method="filter_search", max_length=64, help_text="Exact MRN or accession number."
    )

    class Meta:
        model = Study
        fields: list[str] = []

    def filter_verdict(self, queryset: QuerySet[Study], name: str, value: str) -> QuerySet[Study]:
        # Fractured: a radiograph's current prediction says so. Not fractured: predicted, and none says so.
        # Study.verdict, kept with the triage summary (an index in queue order, not a join per radiograph).
        return queryset.filter(verdict=value)

    def filter_reviewed(self, queryset: QuerySet[Study], name: str, value: bool | None) -> QuerySet[Study]:
        if value is None:
            return queryset
        if value:
            return queryset.filter(state=Study.State.REVIEWED)
        return queryset.exclude(state=Study.State.REVIEWED)

    def filter_search(self, queryset: QuerySet[Study], name: str, value: str) -> QuerySet[Study]:
        return queryset.filter(study_search(value))


class RadiographFilter(_CreatedRange):
    status = filters.ChoiceFilter(choices=Radiograph.Status.choices, help_text="Classification status.")
    body_region = filters.ChoiceFilter(field_name="study__body_region", choices=BodyRegion.choices)
    created_after = filters.DateFilter(method="filter_created_after", help_text="Uploaded on or after.")
    created_before = filters.DateFilter(method="filter_created_before", help_text="Uploaded on or before.")
    verdict = filters.ChoiceFilter(
        choices=Label.choices, method="filter_verdict", help_text="The current prediction's label."
    )
    band = filters.ChoiceFilter(
        choices=Band.choices, method="filter_band", help_text="The current prediction's band."
    )
    reviewed = filters.BooleanFilter(method="filter_reviewed", help_text="Has at least one review.")
    study = IdFilter(field_name="study_id", help_text="Radiographs of one study.")
    batch = filters.UUIDFilter(
        field_name="study__batch_item__batch_id", help_text="Radiographs of one batch."
    )
    model_version = filters.CharFilter(
        method="filter_model_version", max_length=100, help_text="Has a prediction by this model version."
    )

    class Meta:
        model = Radiograph
        fields: list[str] = []

    # The current prediction's label and band as copied onto the radiograph (indexed, newest first).
    def filter_verdict(self, queryset: QuerySet[Radiograph], name: str, value: str) -> QuerySet[Radiograph]:
        return queryset.filter(current_label=value)

    def filter_band(self, queryset: QuerySet[Radiograph], name: str, value: str) -> QuerySet[Radiograph]:
        return queryset.filter(current_band=value)

    def filter_reviewed(
        self, queryset: QuerySet[Radiograph], name: str, value: bool | None
    ) -> QuerySet[Radiograph]:
        if value is None:
            return queryset
        return queryset.filter(has_review=value)  # kept by the review service

    def filter_model_version(
        self, queryset: QuerySet[Radiograph], name: str, value: str
    ) -> QuerySet[Radiograph]:
        return queryset.filter(
            Exists(Prediction.objects.filter(radiograph=OuterRef("pk"), model_version=value))
        )
