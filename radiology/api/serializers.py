"""Explicit input and output shapes for the API. Inputs validate syntax only; services decide meaning.

Output serializers read prefetched relations (see radiology.selectors), so serializing a page of rows
costs no query per row. URLs are absolute, built from the request in the serializer context.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from typing import Any, cast

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from radiology import selectors
from radiology.models import (
    Adjudication,
    Band,
    BodyRegion,
    Label,
    Prediction,
    Radiograph,
    Review,
    Sex,
    Study,
)

MANIFEST_MAX_BYTES = 1024 * 1024


def _absolute(context: Mapping[str, Any], name: str, *args: Any) -> str:
    path = reverse(name, args=args)
    request = context.get("request")
    return request.build_absolute_uri(path) if request is not None else path


# --- Errors inside successful responses ----------------------------------------------------------------


class FileErrorOut(serializers.Serializer):
    """A file refused at ingest: which file, a stable code, and a message for people."""

    file = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()


class ItemErrorOut(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    field = serializers.CharField(required=False, help_text="The manifest field concerned, if any.")
    file = serializers.CharField(required=False, help_text="The file concerned, if any.")


# --- Results -----------------------------------------------------------------------------------------


class BoxOut(serializers.Serializer):
    """A region where the model localised a fracture, in original-image pixels (EXIF orientation applied,
    the frame of `width` x `height`), with the model's score for it."""

    x0 = serializers.FloatField()
    y0 = serializers.FloatField()
    x1 = serializers.FloatField()
    y1 = serializers.FloatField()
    score = serializers.FloatField(help_text="0-1.")


class PredictionOut(serializers.Serializer):
    id = serializers.IntegerField()
    probability = serializers.FloatField(help_text="Calibrated probability of a fracture, 0-1.")
    # The stubs give Field a `label` attribute; DRF itself takes declared fields off the class.
    label = serializers.ChoiceField(  # type: ignore[assignment]
        choices=Label.choices, help_text="The label at the model's threshold."
    )
    band = serializers.ChoiceField(
        choices=Band.choices,
        help_text="The model's band: fracture at or above threshold_specific, no_fracture below "
        "threshold_sensitive, doubt between them.",
    )
    boxes = BoxOut(many=True, help_text="The model's boxes, most confident first (may be empty).")
    threshold = serializers.FloatField(help_text="The model's operating threshold.")
    threshold_sensitive = serializers.FloatField(
        allow_null=True, help_text="The sensitive operating point (null for predictions made before bands)."
    )
    threshold_specific = serializers.FloatField(
        allow_null=True, help_text="The specific operating point (null for predictions made before bands)."
    )
    model_version = serializers.CharField()
    created_at = serializers.DateTimeField()
    heatmap_url = serializers.SerializerMethodField()

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_heatmap_url(self, prediction: Prediction) -> str | None:
        if not prediction.heatmap:
            return None
        return _absolute(self.context, "api:prediction_heatmap", prediction.pk)


class ReviewOut(serializers.Serializer):
    id = serializers.IntegerField()
    decision = serializers.ChoiceField(choices=Review.Decision.choices)
    final_label = serializers.ChoiceField(choices=Label.choices)
    unaided_label = serializers.ChoiceField(
        choices=[("", "Not blinded"), *Label.choices],
        help_text="The reviewer's own call made before the model was shown (blinded reads); empty otherwise.",
    )
    reason_code = serializers.CharField(help_text="Empty for a confirmation; a Review reason otherwise.")
    reason_text = serializers.CharField()
    reviewer = serializers.CharField(source="reviewer.username")
    prediction = serializers.IntegerField(source="prediction_id", help_text="The prediction reviewed.")
    created_at = serializers.DateTimeField()


class RadiographOut(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.SerializerMethodField()
    study = serializers.IntegerField(source="study_id")
    accession_number = serializers.CharField(source="study.accession_number")
    body_region = serializers.ChoiceField(source="study.body_region", choices=BodyRegion.choices)
    position = serializers.IntegerField()
    original_filename = serializers.CharField()
    format = serializers.ChoiceField(choices=Radiograph.Format.choices)
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Radiograph.Status.choices)
    failure_message = serializers.CharField(help_text="Why classification failed (status failed only).")
    created_at = serializers.DateTimeField()
    image_url = serializers.SerializerMethodField()
    prediction = serializers.SerializerMethodField()
    review = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, radiograph: Radiograph) -> str:
        return _absolute(self.context, "api:radiograph_detail", radiograph.pk)

    @extend_schema_field(OpenApiTypes.URI)
    def get_image_url(self, radiograph: Radiograph) -> str:
        return _absolute(self.context, "api:radiograph_image", radiograph.pk)

    @extend_schema_field(PredictionOut(allow_null=True, help_text="The current prediction, if any."))
    def get_prediction(self, radiograph: Radiograph) -> dict[str, Any] | None:
        prediction = selectors.radiograph_current_prediction(radiograph)
        return self._nested(PredictionOut).to_representation(prediction) if prediction else None

    @extend_schema_field(ReviewOut(allow_null=True, help_text="The latest review, if any (it stands)."))
    def get_review(self, radiograph: Radiograph) -> dict[str, Any] | None:
        review = selectors.radiograph_latest_review(radiograph)
        return self._nested(ReviewOut).to_representation(review) if review else None

    def _nested(self, serializer: type[serializers.Serializer]) -> serializers.Serializer:
        """One instance of a nested output serializer for all the rows of a list: building one per row
        deep-copies its fields every time, which was half the CPU of a 50-row page."""
        cache: dict[type[serializers.Serializer], serializers.Serializer] = self.__dict__.setdefault(
            "_nested_serializers", {}
        )
        if serializer not in cache:
            cache[serializer] = serializer(context=self.context)
        return cache[serializer]


class RadiographDetailOut(RadiographOut):
    sha256 = serializers.CharField()
    byte_size = serializers.IntegerField()
    attempts = serializers.IntegerField(help_text="Classification attempts so far.")
    dicom_attributes = serializers.DictField(
        child=serializers.CharField(), help_text="Selected DICOM attributes (DICOM files only)."
    )


class PatientOut(serializers.Serializer):
    id = serializers.IntegerField()
    mrn = serializers.CharField()
    name = serializers.CharField()
    date_of_birth = serializers.DateField(allow_null=True)
    sex = serializers.ChoiceField(choices=Sex.choices)


class StudyOut(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.SerializerMethodField()
    accession_number = serializers.CharField()
    patient = PatientOut()
    body_region = serializers.ChoiceField(choices=BodyRegion.choices)
    study_date = serializers.DateField(allow_null=True)
    clinical_notes = serializers.CharField()
    state = serializers.ChoiceField(choices=Study.State.choices)
    max_probability = serializers.FloatField(
        allow_null=True, help_text="Highest current fracture probability among its radiographs."
    )
    band = serializers.ChoiceField(
        choices=[("", "None yet"), *Band.choices],
        help_text="The highest band among its radiographs' current predictions; empty until one is "
        "predicted.",
    )
    radiograph_count = serializers.IntegerField()
    failed_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    reviewed_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, study: Study) -> str:
        return _absolute(self.context, "api:study_detail", study.pk)


class StudyDetailOut(StudyOut):
    uploaded_by = serializers.CharField(source="uploaded_by.username")
    radiographs = RadiographOut(many=True)


class StudyCreateOut(serializers.Serializer):
    study = StudyDetailOut()
    rejected = FileErrorOut(many=True, help_text="Files refused at ingest (the others were kept).")


# --- Batches -----------------------------------------------------------------------------------------


class BatchItemOut(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position in the manifest's studies, from 0.")
    accession_number = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["created", "failed"])
    study = serializers.IntegerField(source="study_id", allow_null=True)
    study_url = serializers.SerializerMethodField()
    # Declared fields leave the class body, so this does not shadow Serializer.errors at run time.
    errors = ItemErrorOut(  # type: ignore[assignment]
        many=True, help_text="Why nothing was created, or which files were refused."
    )
    radiographs = serializers.SerializerMethodField()

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_study_url(self, item: Any) -> str | None:
        return _absolute(self.context, "api:study_detail", item.study_id) if item.study_id else None

    @extend_schema_field(RadiographOut(many=True))
    def get_radiographs(self, item: Any) -> list[dict[str, Any]]:
        if item.study is None:
            return []
        return cast(
            list[dict[str, Any]],
            RadiographOut(item.study.radiographs.all(), many=True, context=self.context).data,
        )


class BatchItemCountsOut(serializers.Serializer):
    total = serializers.IntegerField()
    created = serializers.IntegerField()
    failed = serializers.IntegerField()


class BatchRadiographCountsOut(serializers.Serializer):
    total = serializers.IntegerField()
    queued = serializers.IntegerField()
    running = serializers.IntegerField()
    predicted = serializers.IntegerField()
    failed = serializers.IntegerField()


class BatchOut(serializers.Serializer):
    id = serializers.UUIDField()
    status_url = serializers.SerializerMethodField()
    reference = serializers.CharField()
    created_at = serializers.DateTimeField()
    state = serializers.SerializerMethodField()
    items = serializers.SerializerMethodField()
    radiographs = serializers.SerializerMethodField()
    results = BatchItemOut(many=True, source="items.all")

    @extend_schema_field(OpenApiTypes.URI)
    def get_status_url(self, batch: Any) -> str:
        return _absolute(self.context, "api:batch_detail", batch.pk)

    @extend_schema_field(
        serializers.ChoiceField(
            choices=["processing", "complete"],
            help_text="complete: no radiograph is queued or running any more.",
        )
    )
    def get_state(self, batch: Any) -> str:
        counts = selectors.batch_progress(batch=batch)
        in_flight = counts[Radiograph.Status.QUEUED] + counts[Radiograph.Status.RUNNING]
        return "processing" if in_flight else "complete"

    @extend_schema_field(BatchItemCountsOut)
    def get_items(self, batch: Any) -> dict[str, int]:
        items = list(batch.items.all())
        created = sum(1 for item in items if item.study_id)
        return {"total": len(items), "created": created, "failed": len(items) - created}

    @extend_schema_field(BatchRadiographCountsOut)
    def get_radiographs(self, batch: Any) -> dict[str, int]:
        counts = selectors.batch_progress(batch=batch)
        return {"total": sum(counts.values()), **counts}


# --- Inputs ------------------------------------------------------------------------------------------


class _StudyFieldsIn(serializers.Serializer):
    """What a clinician types about a study. Blank fields are filled from DICOM attributes where present."""

    mrn = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    patient_name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    date_of_birth = serializers.DateField(required=False, allow_null=True, default=None)
    sex = serializers.ChoiceField(choices=Sex.choices, required=False, allow_blank=True, default="")
    accession_number = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    body_region = serializers.ChoiceField(
        choices=BodyRegion.choices, required=False, allow_blank=True, default=""
    )
    clinical_notes = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    study_date = serializers.DateField(required=False, allow_null=True, default=None)
    confirm_patient_mismatch = serializers.BooleanField(
        required=False,
        default=False,
        help_text="File the study under the given MRN/name although a DICOM file's PatientID/PatientName "
        "differs (audited). Without it such a study is refused with patient_details_differ.",
    )


class StudyCreateIn(_StudyFieldsIn):
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),  # ingest names an empty file itself
        min_length=1,
        help_text="The radiographs: PNG, JPEG or DICOM, checked by content.",
    )


def sanitize_file_name(name: str) -> str:
    """The name as Django's multipart parser stores it: the last path segment, printable characters only."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in unicodedata.normalize("NFC", name) if ch.isprintable())


class BatchStudyIn(_StudyFieldsIn):
    files = serializers.ListField(
        child=serializers.CharField(max_length=255),
        min_length=1,
        help_text="Names of this study's files among the uploaded `files` parts.",
    )


class BatchManifestIn(serializers.Serializer):
    reference = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default="", help_text="Your own label."
    )
    studies = BatchStudyIn(many=True, allow_empty=False)


@extend_schema_field(BatchManifestIn)
class ManifestField(serializers.Field):
    """The batch manifest: JSON text in a form field, or an uploaded .json file part."""

    default_error_messages = {
        "invalid": "The manifest must be a JSON document.",
        "too_large": "The manifest must be smaller than 1 MiB.",
    }

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, UploadedFile):
            if data.size is not None and data.size > MANIFEST_MAX_BYTES:
                self.fail("too_large")
            data = data.read(MANIFEST_MAX_BYTES + 1)
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                self.fail("invalid")
        if isinstance(data, str):
            if len(data) > MANIFEST_MAX_BYTES:
                self.fail("too_large")
            try:
                data = json.loads(data)
            except ValueError:
                self.fail("invalid")
        if not isinstance(data, dict):
            self.fail("invalid")
        manifest = BatchManifestIn(data=data)
        manifest.is_valid(raise_exception=True)
        return manifest.validated_data

    def to_representation(self, value: Any) -> Any:
        return value


class BatchSubmitIn(serializers.Serializer):
    manifest = ManifestField(
        help_text="JSON: {reference?, studies: [{accession_number, ..., files: [name]}]}."
    )
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),
        min_length=1,
        help_text="Every file the manifest names, one part each, matched by file name.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Match manifest names to uploaded parts: every reference resolves, every part is used once."""
        uploads: dict[str, UploadedFile] = {}
        errors: dict[str, Any] = {}
        for upload in attrs["files"]:
            name = sanitize_file_name(upload.name or "")
            if name in uploads:
                errors.setdefault("files", []).append(f"Two uploaded files are named {name!r}.")
            uploads[name] = upload
        if len(attrs["files"]) > settings.API_BATCH_MAX_FILES:
            errors.setdefault("files", []).append(
                f"A batch holds at most {settings.API_BATCH_MAX_FILES} files; "
                f"{len(attrs['files'])} were sent."
            )
        studies = attrs["manifest"]["studies"]
        if len(studies) > settings.API_BATCH_MAX_STUDIES:
            errors["manifest"] = {
                "studies": [
                    f"A batch holds at most {settings.API_BATCH_MAX_STUDIES} studies; "
                    f"{len(studies)} were sent."
                ]
            }
        used: set[str] = set()
        study_errors: dict[str, Any] = {}
        for index, study in enumerate(studies):
            missing = {}
            for position, reference in enumerate(study["files"]):
                name = sanitize_file_name(reference)
                if name not in uploads:
                    missing[str(position)] = [f"No uploaded file is named {name!r}."]
                elif name in used:
                    missing[str(position)] = [f"{name!r} is already used by another study or position."]
                used.add(name)
            if missing:
                study_errors[str(index)] = {"files": missing}
        if study_errors:
            errors.setdefault("manifest", {}).setdefault("studies", study_errors)
        unused = sorted(set(uploads) - used)
        if unused:
            errors.setdefault("files", []).append(
                f"Uploaded but not named in the manifest: {', '.join(unused)}."
            )
        if errors:
            raise serializers.ValidationError(errors)
        attrs["uploads"] = uploads
        return attrs


class ReviewCreateIn(serializers.Serializer):
    decision = serializers.ChoiceField(choices=Review.Decision.choices)
    final_label = serializers.ChoiceField(
        choices=Label.choices,
        required=False,
        allow_null=True,
        default=None,
        help_text="Override only: the label you record (defaults to the other label).",
    )
    reason_code = serializers.ChoiceField(
        choices=Review.Reason.choices,
        required=False,
        allow_blank=True,
        default="",
        help_text="Required to override.",
    )
    reason_text = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, default="", help_text="Required for reason other."
    )


# --- Reading workflow: blinded reads, study confirmation, adjudication ------------------------------------


class UnaidedReadIn(serializers.Serializer):
    # The stubs give Field a `label` attribute; DRF itself takes declared fields off the class.
    label = serializers.ChoiceField(  # type: ignore[assignment]
        choices=Label.choices, help_text="Your own call, made before the model's."
    )


class UnaidedReadOut(serializers.Serializer):
    id = serializers.IntegerField()
    radiograph = serializers.IntegerField(source="radiograph_id")
    # The stubs give Field a `label` attribute; DRF itself takes declared fields off the class.
    label = serializers.ChoiceField(choices=Label.choices)  # type: ignore[assignment]
    reader = serializers.CharField(source="reader.username")
    created_at = serializers.DateTimeField()


class AdjudicationOut(serializers.Serializer):
    id = serializers.IntegerField()
    radiograph = serializers.IntegerField(source="radiograph_id")
    study = serializers.IntegerField(source="radiograph.study_id")
    review = ReviewOut(help_text="The review that sent the case to a second reader.")
    trigger = serializers.ChoiceField(choices=Adjudication.Trigger.choices)
    state = serializers.ChoiceField(choices=Adjudication.State.choices)
    label = serializers.ChoiceField(  # type: ignore[assignment]
        choices=[("", "Not decided"), *Label.choices],
        help_text="The adjudicated label (the reference standard).",
    )
    adjudicator = serializers.CharField(source="adjudicator.username", allow_null=True, default=None)
    notes = serializers.CharField()
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)


class AdjudicationDecideIn(serializers.Serializer):
    label = serializers.ChoiceField(choices=Label.choices)  # type: ignore[assignment]
    notes = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


# --- Exports and problem types ---------------------------------------------------------------------------


class ExportRowOut(serializers.Serializer):
    """One radiograph: its current prediction joined with its latest review (null where there is none)."""

    radiograph_id = serializers.IntegerField()
    study_id = serializers.IntegerField()
    accession_number = serializers.CharField()
    body_region = serializers.ChoiceField(choices=BodyRegion.choices)
    radiograph_status = serializers.ChoiceField(choices=Radiograph.Status.choices)
    original_filename = serializers.CharField()
    uploaded_at = serializers.DateTimeField()
    prediction_id = serializers.IntegerField(allow_null=True)
    model_version = serializers.CharField(allow_null=True)
    probability = serializers.FloatField(allow_null=True)
    model_label = serializers.ChoiceField(choices=Label.choices, allow_null=True)
    threshold = serializers.FloatField(allow_null=True)
    predicted_at = serializers.DateTimeField(allow_null=True)
    review_decision = serializers.ChoiceField(choices=Review.Decision.choices, allow_null=True)
    review_final_label = serializers.ChoiceField(choices=Label.choices, allow_null=True)
    review_reason_code = serializers.ChoiceField(choices=Review.Reason.choices, allow_null=True)
    reviewer = serializers.CharField(allow_null=True)
    reviewed_at = serializers.DateTimeField(allow_null=True)


class ExportOut(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    count = serializers.IntegerField()
    results = ExportRowOut(many=True)


class ProblemTypeOut(serializers.Serializer):
    code = serializers.CharField()
    status = serializers.IntegerField()
    title = serializers.CharField()
    description = serializers.CharField()
