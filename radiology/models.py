"""Clinical records: patients, studies, radiographs, predictions, reviews and the audit trail.

Clinical rows are protected from deletion (on_delete=PROTECT) and duplicates are made impossible by
constraints rather than by code paths. Writes go through radiology.services, reads through selectors.

Longer than 400 lines on purpose: the app's schema in the one module Django and its migrations read. The
records reference each other both ways (Radiograph.current_prediction and Prediction.radiograph, Review,
Adjudication, AuditEvent's targets), so a split by topic would cut through those references; the
classes are in the order a radiograph meets them, with the audit trail and batches last.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, ClassVar

from django.conf import settings
from django.db import models, transaction
from django.db.models import F, OrderBy, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce, Upper


class Sex(models.TextChoices):
    FEMALE = "F", "Female"
    MALE = "M", "Male"
    OTHER = "O", "Other"
    UNKNOWN = "U", "Unknown"


class BodyRegion(models.TextChoices):
    HAND = "hand", "Hand"
    WRIST = "wrist", "Wrist"
    FOREARM = "forearm", "Forearm"
    ELBOW = "elbow", "Elbow"
    HUMERUS = "humerus", "Humerus"
    SHOULDER = "shoulder", "Shoulder"
    HIP = "hip", "Hip"
    PELVIS = "pelvis", "Pelvis"
    FEMUR = "femur", "Femur"
    KNEE = "knee", "Knee"
    LEG = "leg", "Leg"
    ANKLE = "ankle", "Ankle"
    FOOT = "foot", "Foot"
    SPINE = "spine", "Spine"
    OTHER = "other", "Other"


class Label(models.TextChoices):
    FRACTURED = "fractured", "Fractured"
    NOT_FRACTURED = "not_fractured", "Not fractured"

    @classmethod
    def opposite(cls, label: str) -> Label:
        """The other label: what an override of `label` records unless the reviewer says otherwise."""
        return cls.NOT_FRACTURED if label == cls.FRACTURED else cls.FRACTURED


class Band(models.TextChoices):
    """The model's call in three bands, from the card's two operating points: at or above the specific
    point "Fracture", below the sensitive point "No fracture", between them "Doubt"."""

    FRACTURE = "fracture", "Fracture"
    DOUBT = "doubt", "Doubt"
    NO_FRACTURE = "no_fracture", "No fracture"


# Most to least suspicious: a study's band is the highest of its images'.
BAND_ORDER: tuple[str, ...] = (Band.FRACTURE, Band.DOUBT, Band.NO_FRACTURE)


def band_rank(band: str) -> int:
    """0 for the most suspicious band; unknown or empty bands rank last."""
    return BAND_ORDER.index(band) if band in BAND_ORDER else len(BAND_ORDER)


class Patient(models.Model):
    mrn = models.CharField("medical record number", max_length=64, unique=True)
    name = models.CharField(max_length=200)
    date_of_birth = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=1, choices=Sex.choices, default=Sex.UNKNOWN)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        indexes: ClassVar[list[models.Index]] = [
            # The queue's search matches an MRN case-insensitively (UPPER(mrn) = UPPER(term)).
            models.Index(Upper("mrn"), name="patient_mrn_upper_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.mrn})"


def queue_order() -> OrderBy:
    """Most suspicious first, studies without a probability yet last: selectors.study_queue's order and
    the leading column of the queue indexes, which must be the same expression to be used."""
    # Probabilities lie in [0, 1] (a constraint), so -1 sorts after all of them.
    return Coalesce("max_probability", Value(-1.0)).desc()


class Study(models.Model):
    class State(models.TextChoices):
        """Where the study stands in the clinicians' work, kept in step by radiology.services.

        Stored rather than computed so the queue (tens of thousands of studies) is one indexed query.
        """

        PROCESSING = "processing", "Processing"
        AWAITING_REVIEW = "awaiting_review", "Awaiting review"
        REVIEWED = "reviewed", "Reviewed"
        FAILED = "failed", "Failed"
        # The model declined every image (outside its intended use) and none failed: nothing went wrong and
        # nothing will come; the images are read without the model. Kept apart from FAILED, which an
        # administrator has to look at.
        NOT_ANALYSED = "not_analysed", "Not analysed"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    accession_number = models.CharField(max_length=64, unique=True)
    body_region = models.CharField(max_length=16, choices=BodyRegion.choices)
    clinical_notes = models.TextField(blank=True)
    study_date = models.DateField(null=True, blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Triage summary, maintained by services.study_refresh_triage.
    state = models.CharField(max_length=16, choices=State.choices, default=State.PROCESSING)
    max_probability = models.FloatField(null=True, blank=True)
    # The highest band among the radiographs' current predictions ("" until one is predicted).
    band = models.CharField(max_length=12, choices=Band.choices, blank=True, default="")
    radiograph_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # The model's verdict on the study: "fractured" when some radiograph's current prediction says so,
    # "not_fractured" when some have one and none says so, "" before any; the API's verdict filter.
    verdict = models.CharField(max_length=16, choices=Label.choices, blank=True, default="")
    # "Being read by": set when a clinician opens the study, until reading_until (refreshed while open).
    reading_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reading_until = models.DateTimeField(null=True, blank=True)
    # A study the model declined entirely is read without it (in the PACS); the clinician who did so takes
    # it off the Not analysed worklist here. Covers the radiographs that had arrived by then only.
    read_without_model_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    read_without_model_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-created_at"]
        indexes: ClassVar[list[models.Index]] = [
            # The review queue, in the order selectors.study_queue reads it (most suspicious first,
            # no probability last, then oldest), within one tab and across all of them: a page is read
            # straight off the index instead of sorting every study. (COALESCE rather than NULLS LAST,
            # which SQLite indexes cannot express.)
            # max_probability INCLUDEd (PostgreSQL): the index holds every column its expression reads, so
            # a deep page's ids come from the index alone (radiology.paging; 353 -> 26 ms at page 6,666).
            models.Index(
                F("state"),
                queue_order(),
                F("created_at"),
                F("id"),
                name="study_queue_idx",
                include=["max_probability"],
            ),
            models.Index(
                queue_order(),
                F("created_at"),
                F("id"),
                name="study_queue_all_idx",
                include=["max_probability"],
            ),
            # The Reviewed tab: most recently reviewed first.
            models.Index(fields=["state", "-reviewed_at", "-id"], name="study_reviewed_idx"),
            models.Index(Upper("accession_number"), name="study_accession_upper_idx"),
            models.Index(fields=["created_at"], name="study_created_idx"),
            models.Index(fields=["body_region", "created_at"], name="study_region_idx"),
            # The queue's tab counts (COUNT(*) GROUP BY state) from the index alone, at 333,000 studies.
            models.Index(fields=["state"], name="study_state_idx"),
            # The API's verdict filter, in queue order (its page count from the index alone).
            models.Index(
                F("verdict"),
                queue_order(),
                F("created_at"),
                F("id"),
                name="study_verdict_idx",
                include=["max_probability"],
            ),
        ]

    def __str__(self) -> str:
        return self.accession_number

    @property
    def read_without_model_stands(self) -> bool:
        """Declined entirely and since read without the model: reviewed, with no model verdict."""
        read = self.read_without_model_at is not None
        return read and self.state == self.State.REVIEWED and not self.verdict


def radiograph_storage_name(instance: Radiograph, filename: str) -> str:
    """A generated name: never the uploader's file name, which may hold identifiers or path tricks."""
    extension = {"PNG": "png", "JPEG": "jpg", "DICOM": "dcm"}.get(instance.format, "bin")
    return f"radiographs/{uuid.uuid4().hex}.{extension}"


def heatmap_storage_name(instance: Prediction, filename: str) -> str:
    return f"heatmaps/{uuid.uuid4().hex}.png"


class Radiograph(models.Model):
    class Format(models.TextChoices):
        PNG = "PNG", "PNG"
        JPEG = "JPEG", "JPEG"
        DICOM = "DICOM", "DICOM"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PREDICTED = "predicted", "Predicted"
        FAILED = "failed", "Failed"
        # Outside the model's intended use (radiology.governance.guardrails): the reason is shown instead
        # of a verdict (GuardrailRefusal).
        NOT_ANALYSED = "not_analysed", "Not analysed"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="radiographs")
    position = models.PositiveSmallIntegerField(default=0)
    image = models.FileField(upload_to=radiograph_storage_name, max_length=200)
    original_filename = models.CharField(max_length=255)
    format = models.CharField(max_length=8, choices=Format.choices)
    sha256 = models.CharField(max_length=64, db_index=True)
    byte_size = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    dicom_attributes = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    failure_message = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The prediction clinicians see: the newest one stored (the latest model version to read the image).
    # Kept by services.prediction_store_batch, like the study's triage columns; every reader uses it.
    current_prediction = models.ForeignKey(
        "Prediction", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Its label and band, copied with it ("" without one): the API's verdict and band filters read them
    # from an index instead of joining every radiograph with its prediction (1 s at 1,000,000).
    current_label = models.CharField(max_length=16, choices=Label.choices, blank=True, default="")
    current_band = models.CharField(max_length=12, choices=Band.choices, blank=True, default="")
    # Whether any review of it was recorded (set by the review service; reviews are never deleted): the
    # API's `reviewed` filter without an anti-join against every review.
    has_review = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["study", "position", "id"]
        constraints: ClassVar[list[Any]] = [
            # The same image twice in one study is a mistake, never two findings.
            models.UniqueConstraint(fields=["study", "sha256"], name="radiograph_unique_image_per_study"),
            models.CheckConstraint(
                condition=Q(status="failed") | Q(failure_message=""),
                name="radiograph_failure_message_only_when_failed",
            ),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["status", "dispatched_at"], name="radiograph_sweep_idx"),
            # The API's radiograph list: newest first (created_at, then id), read backwards.
            models.Index(fields=["created_at", "id"], name="radiograph_newest_idx"),
            # The API's verdict and band filters, newest first.
            models.Index(fields=["current_label", "created_at", "id"], name="radiograph_label_idx"),
            models.Index(fields=["current_band", "created_at", "id"], name="radiograph_band_idx"),
            # The page count of `reviewed`, alone or with a verdict, from the index alone.
            models.Index(fields=["has_review", "current_label"], name="radiograph_reviewed_idx"),
        ]

    def __str__(self) -> str:
        return f"Radiograph {self.pk} of {self.study_id}"

    # What set_current_prediction changes (for save(update_fields=...) and bulk_update).
    CURRENT_FIELDS: ClassVar[tuple[str, ...]] = ("current_prediction", "current_label", "current_band")

    def set_current_prediction(self, prediction: Prediction | None) -> None:
        """Point at `prediction` and copy its label and band: the one way current_prediction is set."""
        self.current_prediction = prediction
        self.current_label = prediction.label if prediction is not None else ""
        self.current_band = prediction.band if prediction is not None else ""


class Prediction(models.Model):
    Band = Band

    radiograph = models.ForeignKey(Radiograph, on_delete=models.PROTECT, related_name="predictions")
    model_version = models.CharField(max_length=100)
    probability = models.FloatField()
    label = models.CharField(max_length=16, choices=Label.choices)
    threshold = models.FloatField()
    band = models.CharField(max_length=12, choices=Band.choices)
    # [{"x0", "y0", "x1", "y1", "score"}]: where the model localised a fracture, in original-image pixels
    # (the frame the viewer shows: EXIF orientation applied), most confident first.
    boxes = models.JSONField(default=list, blank=True)
    # The card's two operating points that drew the band (null on predictions stored before bands).
    threshold_sensitive = models.FloatField(null=True, blank=True)
    threshold_specific = models.FloatField(null=True, blank=True)
    heatmap = models.FileField(upload_to=heatmap_storage_name, max_length=200, blank=True)
    inference_ms = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(
                fields=["radiograph", "model_version"], name="prediction_one_per_radiograph_and_model"
            ),
            models.CheckConstraint(
                condition=Q(probability__gte=0.0) & Q(probability__lte=1.0),
                name="prediction_probability_in_unit_interval",
            ),
            models.CheckConstraint(
                condition=Q(threshold__gte=0.0) & Q(threshold__lte=1.0),
                name="prediction_threshold_in_unit_interval",
            ),
            models.CheckConstraint(condition=Q(band__in=Band.values), name="prediction_band_valid"),
            models.CheckConstraint(
                condition=Q(threshold_sensitive__isnull=True)
                | Q(threshold_specific__isnull=True)
                | Q(threshold_sensitive__lte=F("threshold_specific")),
                name="prediction_operating_points_ordered",
            ),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["model_version", "created_at"], name="prediction_version_idx"),
            # A radiograph's current (newest) prediction and its label, from the index alone: the API's
            # verdict filters look it up for every radiograph they consider.
            models.Index(fields=["radiograph", "-created_at", "-id", "label"], name="prediction_current_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_label_display()} {self.probability:.2f} ({self.model_version})"


class ReviewQuerySet(models.QuerySet["Review"]):
    """The latest review, defined once: newest first by creation time, then id (two reviews can share a
    timestamp). Review.latest() applies the same order to reviews already in memory (a prefetch)."""

    def newest_first(self) -> ReviewQuerySet:
        return self.order_by("-created_at", "-pk")

    def latest_value(self, field: str, **lookups: Any) -> Subquery:
        """`field` of the latest review matching `lookups`, as a subquery to annotate with:
        Review.objects.latest_value("final_label", prediction=OuterRef("pk"))."""
        return Subquery(self.filter(**lookups).newest_first().values(field)[:1])

    def standing(self) -> ReviewQuerySet:
        """Each prediction's latest review: the one that stands when a radiograph was reviewed twice."""
        return self.filter(pk=Review.objects.latest_value("pk", prediction=OuterRef("prediction")))


class Review(models.Model):
    class Decision(models.TextChoices):
        CONFIRM = "confirm", "Confirm"
        OVERRIDE = "override", "Override"

    class Reason(models.TextChoices):
        MISSED_FRACTURE = "missed_fracture", "Model missed a fracture"
        FALSE_ALARM = "false_alarm", "No fracture where the model saw one"
        OLD_FRACTURE = "old_fracture", "Old or healed fracture"
        HARDWARE = "hardware", "Orthopaedic hardware misled the model"
        IMAGE_QUALITY = "image_quality", "Image quality too poor to judge"
        WRONG_REGION = "wrong_region", "Wrong body region or view"
        OTHER = "other", "Other"

    # Which reasons can explain an override to each final label: "missed a fracture" cannot explain
    # recording *not fractured*, nor "old fracture" recording *fractured* (services enforce this).
    REASONS_FOR_LABEL: ClassVar[dict[str, tuple[str, ...]]] = {
        Label.FRACTURED: (
            Reason.MISSED_FRACTURE,
            Reason.HARDWARE,
            Reason.IMAGE_QUALITY,
            Reason.WRONG_REGION,
            Reason.OTHER,
        ),
        Label.NOT_FRACTURED: (
            Reason.FALSE_ALARM,
            Reason.OLD_FRACTURE,
            Reason.HARDWARE,
            Reason.IMAGE_QUALITY,
            Reason.WRONG_REGION,
            Reason.OTHER,
        ),
    }

    radiograph = models.ForeignKey(Radiograph, on_delete=models.PROTECT, related_name="reviews")
    prediction = models.ForeignKey(Prediction, on_delete=models.PROTECT, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    final_label = models.CharField(max_length=16, choices=Label.choices)
    reason_code = models.CharField(max_length=20, choices=Reason.choices, blank=True)
    reason_text = models.TextField(blank=True)
    # Blinded reading: the reader's own call made before the model was shown ("" when not blinded).
    unaided_label = models.CharField(max_length=16, choices=Label.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ReviewQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints: ClassVar[list[Any]] = [
            models.CheckConstraint(
                condition=Q(decision="confirm") | ~Q(reason_code=""),
                name="review_override_requires_reason",
            ),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["radiograph", "-created_at"], name="review_latest_idx"),
            # A prediction's standing (latest) review, looked up for every prediction by the audit dashboard.
            models.Index(fields=["prediction", "-created_at", "-id"], name="review_prediction_latest_idx"),
            # The audit dashboard's latest reviews (a sort of every review without it: 230 ms at 700,000).
            models.Index(fields=["-created_at", "-id"], name="review_newest_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_decision_display()} → {self.get_final_label_display()}"

    @staticmethod
    def latest(reviews: Iterable[Review]) -> Review | None:
        """The latest of reviews already fetched (a prefetch), in ReviewQuerySet.newest_first's order."""
        return max(reviews, key=lambda review: (review.created_at, review.pk), default=None)


class SiteSettings(models.Model):
    """Settings an administrator chooses in the application (one row, pk 1; audited on every change).

    `blinded_read_default`: whether a reader who never chose reads blinded. Its first value comes from the
    BLINDED_READ_DEFAULT environment setting; after that only an administrator changes it.
    """

    SINGLETON_PK = 1

    blinded_read_default = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        verbose_name = "site settings"
        verbose_name_plural = "site settings"
        constraints: ClassVar[list[Any]] = [
            models.CheckConstraint(condition=Q(pk=1), name="site_settings_singleton"),
        ]

    def __str__(self) -> str:
        return "Site settings"


class ReaderProfile(models.Model):
    """A clinician's reading preferences; `blinded` None follows the site default (SiteSettings)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reader_profile"
    )
    blinded = models.BooleanField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Reading preferences of {self.user}"


class UnaidedRead(models.Model):
    """A reader's call on a radiograph before the model's answer was shown to them (blinded reading).

    One per reader and radiograph, never changed: the point is what the reader thought unaided.
    """

    radiograph = models.ForeignKey(Radiograph, on_delete=models.PROTECT, related_name="unaided_reads")
    reader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    label = models.CharField(max_length=16, choices=Label.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["radiograph", "reader"], name="unaided_read_one_per_reader"),
        ]

    def __str__(self) -> str:
        return f"Unaided {self.get_label_display()} by {self.reader} on {self.radiograph_id}"


class Adjudication(models.Model):
    """A second clinician's call on a radiograph whose review disagreed with a confident model band or with
    the reader's own unaided read. Once decided it is locked and is the reference standard."""

    class Trigger(models.TextChoices):
        MODEL_DISAGREES = "model_disagrees", "Final call against a confident model band"
        READER_CHANGED = "reader_changed", "Final call differs from the unaided read"

    class State(models.TextChoices):
        OPEN = "open", "Awaiting a second reader"
        DECIDED = "decided", "Decided"

    radiograph = models.ForeignKey(Radiograph, on_delete=models.PROTECT, related_name="adjudications")
    review = models.ForeignKey(Review, on_delete=models.PROTECT, related_name="adjudications")
    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    state = models.CharField(max_length=8, choices=State.choices, default=State.OPEN)
    adjudicator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    label = models.CharField(max_length=16, choices=Label.choices, blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints: ClassVar[list[Any]] = [
            # At most one adjudication per radiograph is open at a time.
            models.UniqueConstraint(
                fields=["radiograph"], condition=Q(state="open"), name="adjudication_one_open_per_radiograph"
            ),
            models.CheckConstraint(
                condition=Q(state="open", label="", adjudicator__isnull=True, decided_at__isnull=True)
                | (Q(state="decided", adjudicator__isnull=False, decided_at__isnull=False) & ~Q(label="")),
                name="adjudication_decided_has_label",
            ),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["state", "created_at"], name="adjudication_queue_idx"),
        ]

    def __str__(self) -> str:
        return f"Adjudication of {self.radiograph_id} ({self.state})"


class AppendOnlyError(Exception):
    """Raised on any attempt to change or delete an audit event."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("Audit events cannot be changed")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("Audit events cannot be deleted")

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        raise AppendOnlyError("Audit events cannot be changed")

    def update_or_create(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnlyError("Audit events cannot be changed")

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> Any:
        events = list(objs)
        with transaction.atomic(using=self.db):
            seal_audit_events(events)
            return super().bulk_create(events, *args, **kwargs)


class AuditEvent(models.Model):
    class Action(models.TextChoices):
        STUDY_UPLOADED = "study.uploaded", "Study uploaded"
        FILE_REJECTED = "file.rejected", "File rejected"
        PREDICTION_STORED = "prediction.stored", "Prediction stored"
        RADIOGRAPH_FAILED = "radiograph.failed", "Radiograph failed"
        RADIOGRAPH_RESENT = "radiograph.resent", "Radiograph sent again"
        REVIEW_SUBMITTED = "review.submitted", "Review submitted"
        UNAIDED_READ = "read.unaided", "Unaided read recorded"
        ADJUDICATION_OPENED = "adjudication.opened", "Sent to a second reader"
        ADJUDICATION_DECIDED = "adjudication.decided", "Adjudicated"
        PATIENT_DETAILS_DIFFER = "patient.details_differ", "Typed patient details differ from DICOM"
        READER_SETTING = "reader.setting", "Reading preference changed"
        SITE_SETTING = "site.setting", "Site setting changed"
        EXPORT = "export", "Export"
        ACCESS_DENIED = "access.denied", "Access denied"
        LOGIN_FAILED = "login.failed", "Login failed"
        RECORD_EDITED = "record.edited", "Record edited in the admin"
        TOKEN_CREATED = "token.created", "API token created"
        BATCH_SUBMITTED = "batch.submitted", "Batch submitted"
        MODEL_REGISTERED = "model.registered", "Model version registered"
        MODEL_STATUS_CHANGED = "model.status_changed", "Model version status changed"
        MODEL_PROMOTION_REFUSED = "model.promotion_refused", "Model promotion refused"
        RADIOGRAPH_NOT_ANALYSED = "radiograph.not_analysed", "Radiograph not analysed"
        STUDY_READ_WITHOUT_MODEL = "study.read_without_model", "Study read without the model"
        DRIFT_ALERT = "drift.alert", "Drift alert raised"
        AUDIT_VERIFIED = "audit.verified", "Audit trail verified"

    # Nullable: the worker and the sweep act as "the system"; anonymous requests are denied access.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    # Set when the event is sealed into the hash chain (not auto_now_add: the hash covers it).
    created_at = models.DateTimeField(default=None, db_index=True)
    # The hash chain (radiology.governance.audit_chain): position, predecessor's hash, own hash.
    sequence = models.PositiveBigIntegerField(unique=True, null=True, editable=False)
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    hash = models.CharField(max_length=64, blank=True, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name or 'system'} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("Audit events cannot be changed")
        with transaction.atomic(using=kwargs.get("using")):
            seal_audit_events([self])
            super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("Audit events cannot be deleted")


# --- REST API bookkeeping --------------------------------------------------------------------------------


class Batch(models.Model):
    """Many studies submitted in one API request; its items say what became of each one."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reference = models.CharField(max_length=200, blank=True, help_text="The integrator's own label.")
    # The request's Idempotency-Key: a retry after the web process died mid-batch resumes this batch.
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "batches"
        ordering = ["-created_at"]
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(
                fields=["submitted_by", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="batch_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"Batch {self.pk}"


class BatchItem(models.Model):
    """One study of a batch: either created (with its study) or failed (with its errors, nothing written)."""

    class Outcome(models.TextChoices):
        CREATED = "created", "Created"
        FAILED = "failed", "Failed"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField()
    accession_number = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    study = models.OneToOneField(
        Study, null=True, blank=True, on_delete=models.PROTECT, related_name="batch_item"
    )
    # [{"code", "message", "field"?, "file"?}]: files refused at ingest, or why nothing was created.
    errors = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["batch", "index"]
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["batch", "index"], name="batch_item_unique_index"),
            models.CheckConstraint(
                condition=Q(outcome="failed", study__isnull=True) | Q(outcome="created", study__isnull=False),
                name="batch_item_study_only_when_created",
            ),
        ]

    def __str__(self) -> str:
        return f"Item {self.index} of {self.batch_id}"


class IdempotencyRecord(models.Model):
    """The first response to a creating API request sent with an Idempotency-Key.

    The unique (user, key) constraint is what makes a retry race-safe: of two concurrent requests with
    the same key only one can insert its record and do the work; the other sees the record.
    """

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # SHA-256 of method, path and the parsed body (file contents by digest): "the same request".
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=12, choices=State.choices, default=State.IN_PROGRESS)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    response_location = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_unique_key_per_user"),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["created_at"], name="idempotency_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"


def seal_audit_events(events: list[AuditEvent]) -> None:
    # Imported here: the chain's head is a governance model, whose module imports this one.
    from radiology.governance.audit_chain import seal

    seal(events)


# Governance models (model registry, shadow predictions, monitoring, drift, audit chain head) are defined in
# their own module; importing it here registers them with the radiology app.
from radiology.governance.models import *  # noqa: E402, F403, I001


# Hospital integration (DICOM arrivals, results sent to the PACS): radiology/dicomnet/models.py.
from radiology.dicomnet.models import DicomArrival, DicomInstance, ResultDelivery  # noqa: E402, F401


# Running totals for the queue's tab counts and the audit dashboard: radiology/tallies.py.
from radiology.tallies import PredictionTally, RadiographTally, ReviewTally, StudyTally  # noqa: E402, F401
