"""Explicit input and output shapes the API's operations share (studies, radiographs, predictions,
reviews, the reading workflow). The batch and export shapes live with their views (api/batches.py,
api/exports.py). Inputs validate syntax only; services decide meaning.

Output serializers read prefetched relations (see radiology.selectors), so serializing a page of rows
costs no query per row. URLs are absolute, built from the request in the serializer context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from radiology import selectors
from radiology.governance.models import GuardrailRefusal
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


def absolute_url(context: Mapping[str, Any], name: str, *args: Any) -> str:
    path = reverse(name, args=args)
    request = context.get("request")
    return request.build_absolute_uri(path) if request is not None else path


# --- Errors inside successful responses ----------------------------------------------------------------


class FileErrorOut(serializers.Serializer):
    """A file refused at ingest: which file, a stable code, and a message for people."""

    file = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()


# --- Results -----------------------------------------------------------------------------------------


class BoxOut(serializers.Serializer):
    """A region where the model localised a fracture, in original-image pixels (EXIF orientation applied,
    the frame of `width` x `height`), with the model's score for it."""

    x0 = serializers.FloatField()
    y0 = serializers.FloatField()
    x1 = serializers.FloatField()
    y1 = serializers.FloatField()
    score = serializers.FloatField(
        help_text="0-1: the strength of the box's best cell, for ranking the boxes of one radiograph "
        "(highest first). Not calibrated, so not a probability of fracture: that is the prediction's "
        "`probability`."
    )


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
        return absolute_url(self.context, "api:prediction_heatmap", prediction.pk)


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


class NotAnalysedOut(serializers.Serializer):
    """Why the model gave no verdict: the radiograph is outside its intended use."""

    code = serializers.ChoiceField(choices=GuardrailRefusal.Code.choices)
    reason = serializers.CharField(help_text="The reason, as the review page shows it.")
    model_version = serializers.CharField(help_text="The model version that declined it.")


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
    not_analysed = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    image_url = serializers.SerializerMethodField()
    prediction = serializers.SerializerMethodField()
    review = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, radiograph: Radiograph) -> str:
        return absolute_url(self.context, "api:radiograph_detail", radiograph.pk)

    @extend_schema_field(OpenApiTypes.URI)
    def get_image_url(self, radiograph: Radiograph) -> str:
        return absolute_url(self.context, "api:radiograph_image", radiograph.pk)

    @extend_schema_field(
        NotAnalysedOut(allow_null=True, help_text="Why the model gave no verdict (status not_analysed only).")
    )
    def get_not_analysed(self, radiograph: Radiograph) -> dict[str, Any] | None:
        refusal = selectors.radiograph_refusal(radiograph)
        return self._nested(NotAnalysedOut).to_representation(refusal) if refusal else None

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
        return absolute_url(self.context, "api:study_detail", study.pk)


class StudyDetailOut(StudyOut):
    uploaded_by = serializers.CharField(source="uploaded_by.username")
    read_without_model_by = serializers.CharField(
        source="read_without_model_by.username",
        allow_null=True,
        help_text="A study the model declined entirely (state not_analysed) that a clinician has read "
        "without it, taking it off the worklist (the study is then reviewed): who; null otherwise.",
    )
    read_without_model_at = serializers.DateTimeField(allow_null=True, help_text="And when.")
    radiographs = RadiographOut(many=True)


class StudyCreateOut(serializers.Serializer):
    study = StudyDetailOut()
    rejected = FileErrorOut(many=True, help_text="Files refused at ingest (the others were kept).")


# --- Inputs ------------------------------------------------------------------------------------------


class StudyFieldsIn(serializers.Serializer):
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


class StudyCreateIn(StudyFieldsIn):
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),  # ingest names an empty file itself
        min_length=1,
        help_text="The radiographs: PNG, JPEG or DICOM, checked by content.",
    )


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


# --- Problem types ------------------------------------------------------------------------------------


class ProblemTypeOut(serializers.Serializer):
    code = serializers.CharField()
    status = serializers.IntegerField()
    title = serializers.CharField()
    description = serializers.CharField()
