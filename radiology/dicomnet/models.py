"""Records of DICOM arrivals and of results sent back to the PACS.

Imported at the bottom of radiology.models, so they belong to the radiology app (and its migrations).
An instance arrives (C-STORE or STOW-RS), is acknowledged once its bytes and its row are committed, and
waits in its DicomArrival (one per StudyInstanceUID) until the sender has been quiet for a while; the arrival
is then filed into a Study through the same service as an upload. SOPInstanceUID is unique: a re-sent
instance finds its row and creates nothing.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q


def dicom_instance_storage_name(instance: DicomInstance, filename: str) -> str:
    return f"dicom-inbox/{uuid.uuid4().hex}.dcm"


def result_document_storage_name(instance: Any, filename: str) -> str:
    return f"dicom-results/{uuid.uuid4().hex}.dcm"


class DicomArrival(models.Model):
    """The instances of one DICOM study received over the network, and what became of them."""

    class State(models.TextChoices):
        OPEN = "open", "Receiving"  # instances waiting for the quiet period to end
        FILED = "filed", "Filed"  # every instance received so far is in the study (or refused with a reason)
        FAILED = "failed", "Failed"  # the study could not be created; failure_message says why

    study_instance_uid = models.CharField("Study Instance UID", max_length=64, unique=True)
    study = models.ForeignKey(
        "radiology.Study", null=True, blank=True, on_delete=models.PROTECT, related_name="dicom_arrivals"
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.OPEN)
    failure_message = models.TextField(blank=True)
    last_received_at = models.DateTimeField()
    filed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "radiology"
        ordering = ["-last_received_at"]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["state", "last_received_at"], name="dicom_arrival_due_idx"),
        ]

    def __str__(self) -> str:
        return f"Arrival {self.study_instance_uid} ({self.state})"


class DicomInstance(models.Model):
    """One received SOP instance: its file waits in the inbox until it is filed as a radiograph. A DICOM
    file uploaded through the form or the API is recorded too (source "upload", filed at once, no inbox
    file), so every arrival path shares one SOPInstanceUID uniqueness."""

    class Source(models.TextChoices):
        C_STORE = "c-store", "DICOM C-STORE"
        STOW_RS = "stow-rs", "DICOMweb STOW-RS"
        UPLOAD = "upload", "Upload (form or API)"

    class State(models.TextChoices):
        RECEIVED = "received", "Received"
        FILED = "filed", "Filed"
        REFUSED = "refused", "Refused when filed"

    arrival = models.ForeignKey(DicomArrival, on_delete=models.PROTECT, related_name="instances")
    sop_instance_uid = models.CharField("SOP Instance UID", max_length=64, unique=True)
    sop_class_uid = models.CharField(max_length=64)
    series_instance_uid = models.CharField(max_length=64, blank=True)
    transfer_syntax_uid = models.CharField(max_length=64, blank=True)
    file = models.FileField(upload_to=dicom_instance_storage_name, max_length=200, blank=True)
    sha256 = models.CharField(max_length=64)
    byte_size = models.PositiveBigIntegerField()
    source = models.CharField(max_length=8, choices=Source.choices)
    calling_ae_title = models.CharField(max_length=16, blank=True)
    received_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.RECEIVED)
    failure_message = models.TextField(blank=True)
    radiograph = models.OneToOneField(
        "radiology.Radiograph", null=True, blank=True, on_delete=models.PROTECT, related_name="dicom_instance"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "radiology"
        ordering = ["arrival", "created_at", "id"]
        constraints: ClassVar[list[Any]] = [
            models.CheckConstraint(
                condition=Q(state="filed", radiograph__isnull=False) | ~Q(state="filed"),
                name="dicom_instance_filed_has_radiograph",
            ),
        ]

    def __str__(self) -> str:
        return self.sop_instance_uid


class ResultDelivery(models.Model):
    """One set of DICOM result objects for a study (an SR, with Secondary Captures for the model's result)
    and its delivery to the configured PACS. `key` fingerprints what it reports (the predictions or the
    reviews), so the same result is never built or sent as two different documents."""

    class Kind(models.TextChoices):
        MODEL_RESULT = "model_result", "Model result (SR + Secondary Capture)"
        FINAL_CALL = "final_call", "Clinician's final call (SR)"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    study = models.ForeignKey("radiology.Study", on_delete=models.PROTECT, related_name="result_deliveries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    key = models.CharField(max_length=64)
    destination = models.CharField(max_length=300)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # [{"role": "sr" | "sc", "sop_class_uid", "sop_instance_uid", "file": storage name}], built once.
    documents = models.JSONField(default=list, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "radiology"
        verbose_name_plural = "result deliveries"
        ordering = ["-created_at", "-id"]
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["study", "kind", "key"], name="result_delivery_unique_content"),
            models.CheckConstraint(
                condition=Q(status="failed") | Q(status="sent") | Q(status="pending"),
                name="result_delivery_status_valid",
            ),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["status", "updated_at"], name="result_delivery_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.study_id}: {self.status}"

    @property
    def sr_sop_instance_uid(self) -> str:
        return next((d["sop_instance_uid"] for d in self.documents if d.get("role") == "sr"), "")
