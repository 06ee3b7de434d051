"""Governance records: model versions, shadow predictions, guardrail refusals, input statistics,
monitoring summaries, drift alerts and the audit chain's head.

Shadow predictions have a table of their own: nothing that shows a clinician a result reads it, so a
shadow version's output cannot reach a clinical page by a forgotten filter.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q

from radiology.models import Label, Radiograph

__all__ = [
    "AuditChainHead",
    "DriftAlert",
    "GuardrailRefusal",
    "ModelVersion",
    "MonitoringBin",
    "MonitoringBuild",
    "MonitoringCell",
    "RadiographInputStats",
    "ShadowPrediction",
]


class ModelVersion(models.Model):
    """A registered model artifact and its place in the deployment: exactly one is active."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        SHADOW = "shadow", "Shadow"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"

    version = models.CharField(max_length=100, unique=True)
    artifact_path = models.CharField(max_length=500)
    artifact_sha256 = models.CharField(max_length=64)
    card = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CANDIDATE)
    status_changed_at = models.DateTimeField()
    status_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status_reason = models.TextField(blank=True)
    # When it last became active / stopped being active: rollback goes back to the latest one retired.
    activated_at = models.DateTimeField(null=True, blank=True)
    deactivated_at = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-registered_at"]
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="active"), name="model_version_one_active"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version} ({self.get_status_display()})"


class ShadowPrediction(models.Model):
    """A shadow version's result: stored for the comparison, never shown to clinicians."""

    radiograph = models.ForeignKey(Radiograph, on_delete=models.PROTECT, related_name="shadow_predictions")
    model_version = models.CharField(max_length=100)
    probability = models.FloatField()
    label = models.CharField(max_length=16, choices=Label.choices)
    band = models.CharField(max_length=12, blank=True)
    threshold = models.FloatField()
    threshold_sensitive = models.FloatField(null=True, blank=True)
    threshold_specific = models.FloatField(null=True, blank=True)
    boxes = models.JSONField(default=list, blank=True)
    inference_ms = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(
                fields=["radiograph", "model_version"], name="shadow_prediction_one_per_radiograph_and_model"
            ),
            models.CheckConstraint(
                condition=Q(probability__gte=0.0) & Q(probability__lte=1.0),
                name="shadow_prediction_probability_in_unit_interval",
            ),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["model_version", "radiograph"], name="shadow_version_idx"),
        ]

    def __str__(self) -> str:
        return f"shadow {self.model_version} {self.probability:.2f} on {self.radiograph_id}"


class GuardrailRefusal(models.Model):
    """Why a radiograph was not analysed: outside the model's intended use."""

    class Code(models.TextChoices):
        MODALITY = "modality", "Not a plain radiograph"
        BODY_REGION = "body_region", "Body region outside the model's training"
        AGE = "age", "Patient younger than the model's minimum age"
        OUT_OF_DISTRIBUTION = "out_of_distribution", "Image unlike the model's training images"

    radiograph = models.ForeignKey(Radiograph, on_delete=models.PROTECT, related_name="refusals")
    model_version = models.CharField(max_length=100)
    code = models.CharField(max_length=24, choices=Code.choices)
    reason = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["radiograph", "model_version"], name="refusal_one_per_model"),
        ]

    def __str__(self) -> str:
        return f"{self.get_code_display()} ({self.radiograph_id})"


class RadiographInputStats(models.Model):
    """Label-free statistics of what the model was given, for the drift check."""

    HISTOGRAM_BINS = 16

    radiograph = models.OneToOneField(Radiograph, on_delete=models.PROTECT, related_name="input_stats")
    long_side = models.PositiveIntegerField()
    mean_intensity = models.FloatField()
    # Fractions of the decoded 8-bit pixels in 16 equal bins (0-15, 16-31, ..., 240-255).
    intensity_histogram = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"input stats of {self.radiograph_id}"


class MonitoringCell(models.Model):
    """Counts for one model version x body region x age band x sex x site/device x month.

    Rebuilt by the nightly task (and `refresh_monitoring`); the monitoring page sums cells with
    aggregate queries, so it costs the same at 30,000 radiographs as at 300.
    """

    model_version = models.CharField(max_length=100)
    body_region = models.CharField(max_length=16)
    age_band = models.CharField(max_length=8)
    sex = models.CharField(max_length=1)
    manufacturer = models.CharField(max_length=64, blank=True)
    device_model = models.CharField(max_length=64, blank=True)
    station = models.CharField(max_length=64, blank=True)
    month = models.DateField()
    predictions = models.PositiveIntegerField(default=0)
    reviewed = models.PositiveIntegerField(default=0)
    tp = models.PositiveIntegerField(default=0)
    fp = models.PositiveIntegerField(default=0)
    tn = models.PositiveIntegerField(default=0)
    fn = models.PositiveIntegerField(default=0)
    # Reviewed cases whose reference standard is an adjudicated label (the rest: the final call).
    adjudicated = models.PositiveIntegerField(default=0)

    class Meta:
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["model_version", "month"], name="monitoring_version_month_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.model_version} {self.body_region} {self.month:%Y-%m}"


class MonitoringBin(models.Model):
    """One reliability-diagram bin of a cell: reviewed cases with a probability in [bin/10, (bin+1)/10)."""

    cell = models.ForeignKey(MonitoringCell, on_delete=models.CASCADE, related_name="bins")
    bin = models.PositiveSmallIntegerField()
    n = models.PositiveIntegerField()
    sum_probability = models.FloatField()
    positives = models.PositiveIntegerField()

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["cell", "bin"], name="monitoring_bin_unique"),
        ]

    def __str__(self) -> str:
        return f"bin {self.bin} of {self.cell_id}"


class MonitoringBuild(models.Model):
    """One rebuild of the monitoring summary, written in the rebuild's own transaction, so the page can say
    how current the summary it shows is."""

    built_at = models.DateTimeField(auto_now_add=True)
    cells = models.PositiveIntegerField()
    predictions = models.PositiveIntegerField()
    seconds = models.FloatField()

    def __str__(self) -> str:
        return f"monitoring summary of {self.built_at:%Y-%m-%d %H:%M}"


class DriftAlert(models.Model):
    """A label-free drift check that crossed its threshold for one site/device."""

    model_version = models.CharField(max_length=100)
    site = models.CharField(max_length=200, help_text="manufacturer / model / station")
    statistic = models.CharField(max_length=32)
    value = models.FloatField()
    threshold = models.FloatField()
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    sample_size = models.PositiveIntegerField()
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.statistic} {self.value:.3f} at {self.site}"


class AuditChainHead(models.Model):
    """The last link of the audit hash chain (one row): locked to append, so links are never forked."""

    sequence = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return f"audit chain at {self.sequence}"
