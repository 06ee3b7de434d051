"""Running totals that keep the queue's tab counts and the audit dashboard off the big tables.

At 1,000,000 radiographs, counting studies per queue tab read 333,000 index entries a page, and the audit
dashboard aggregated every prediction against its standing review on each request (6-134 s). These tables
hold the same figures, kept in step as the rows change:

- StudyTally: studies per state and body region, kept by database triggers on radiology_study (migration
  0018), so that every writer (services, the admin, the COPY of generate_scale_data, test factories) is
  counted without having to remember to.
- RadiographTally: how many radiographs there are, kept the same way by triggers on radiology_radiograph
  (migration 0022): the API's unfiltered radiograph list gives its count without counting 1,000,000 index
  entries (~50 ms a page).
- PredictionTally and ReviewTally: predictions per model version and day, and standing reviews per model
  version, days and labels, kept by the services that store predictions, reviews and adjudications
  (radiology.services.tallies); `manage.py rebuild_tallies` recomputes them from the records.

Days are dates in the site's time zone (settings.TIME_ZONE), as the dashboard's date filter reads them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models


class StudyTally(models.Model):
    state = models.CharField(max_length=16)
    body_region = models.CharField(max_length=16)
    studies = models.IntegerField(default=0)

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["state", "body_region"], name="study_tally_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.studies} {self.state} {self.body_region}"


class RadiographTally(models.Model):
    """One row: every radiograph stored. Only inserts and deletes move it (never a change of status), so the
    worker's claim and store never touch it."""

    radiographs = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.radiographs} radiographs"


class PredictionTally(models.Model):
    """Predictions of one model version stored on one day, with the first and last of them."""

    model_version = models.CharField(max_length=100)
    day = models.DateField()
    predictions = models.IntegerField(default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["model_version", "day"], name="prediction_tally_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.predictions} predictions by {self.model_version} on {self.day}"


class ReviewTally(models.Model):
    """Standing (latest) reviews of predictions, counted by everything the dashboard splits them by: the
    prediction's model version, day, label and band; the review's day, final label, decision, override reason
    and the reader's unaided call; and the reference label where the radiograph was adjudicated."""

    model_version = models.CharField(max_length=100)
    prediction_day = models.DateField()
    review_day = models.DateField()
    model_label = models.CharField(max_length=16)
    model_band = models.CharField(max_length=12)
    final_label = models.CharField(max_length=16)
    decision = models.CharField(max_length=8)
    reason_code = models.CharField(max_length=20, blank=True)
    unaided_label = models.CharField(max_length=16, blank=True)
    # The decided adjudication's label ("" when the radiograph was not adjudicated).
    reference_label = models.CharField(max_length=16, blank=True)
    reviews = models.IntegerField(default=0)

    KEY: ClassVar[tuple[str, ...]] = (
        "model_version",
        "prediction_day",
        "review_day",
        "model_label",
        "model_band",
        "final_label",
        "decision",
        "reason_code",
        "unaided_label",
        "reference_label",
    )

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(
                fields=[
                    "model_version",
                    "prediction_day",
                    "review_day",
                    "model_label",
                    "model_band",
                    "final_label",
                    "decision",
                    "reason_code",
                    "unaided_label",
                    "reference_label",
                ],
                name="review_tally_unique",
            ),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["prediction_day"], name="review_tally_day_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.reviews} reviews of {self.model_version} ({self.prediction_day})"
