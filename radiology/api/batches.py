"""Batch operations: submit many studies in one multipart request, and a batch's status; with their
serializers (only batches use them), schema and one example each."""

from __future__ import annotations

import json
import unicodedata
from typing import Any, cast

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from radiology import selectors, services
from radiology.access import client_ip
from radiology.api import schema
from radiology.api import serializers as s
from radiology.api.idempotency import idempotency_key, run_idempotently
from radiology.api.problems import Problem
from radiology.api.radiographs import QUEUED_RADIOGRAPH
from radiology.api.schema import EXAMPLE_HOST as HOST
from radiology.api.serializers import absolute_url
from radiology.api.views import ApiView
from radiology.models import Batch, Radiograph

MANIFEST_MAX_BYTES = 1024 * 1024

# --- Serializers -----------------------------------------------------------------------------------------


class ItemErrorOut(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    field = serializers.CharField(required=False, help_text="The manifest field concerned, if any.")
    file = serializers.CharField(required=False, help_text="The file concerned, if any.")


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
        return absolute_url(self.context, "api:study_detail", item.study_id) if item.study_id else None

    @extend_schema_field(s.RadiographOut(many=True))
    def get_radiographs(self, item: Any) -> list[dict[str, Any]]:
        if item.study is None:
            return []
        return cast(
            list[dict[str, Any]],
            s.RadiographOut(item.study.radiographs.all(), many=True, context=self.context).data,
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
        return absolute_url(self.context, "api:batch_detail", batch.pk)

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


def sanitize_file_name(name: str) -> str:
    """The name as Django's multipart parser stores it: the last path segment, printable characters only."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in unicodedata.normalize("NFC", name) if ch.isprintable())


class BatchStudyIn(s.StudyFieldsIn):
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


# --- Operations ------------------------------------------------------------------------------------------

BATCH_ID = "6f1c2b7e-3a4d-4e5f-9a8b-7c6d5e4f3a2b"
BATCH: dict[str, Any] = {
    "id": BATCH_ID,
    "status_url": f"{HOST}/api/v1/batches/{BATCH_ID}",
    "reference": "night-run-2025-06-02",
    "created_at": "2025-06-02T09:14:05.001Z",
    "state": "processing",
    "items": {"total": 1, "created": 1, "failed": 0},
    "radiographs": {"total": 1, "queued": 1, "running": 0, "predicted": 0, "failed": 0},
    "results": [
        {
            "index": 0,
            "accession_number": "ACC-2025-000123",
            "outcome": "created",
            "study": 1377,
            "study_url": f"{HOST}/api/v1/studies/1377",
            "errors": [],
            "radiographs": [QUEUED_RADIOGRAPH],
        }
    ],
}


class BatchSubmitApi(ApiView):
    parser_classes = [MultiPartParser]

    @schema.operation(
        operation_id="batches_create",
        tag="batches",
        summary="Submit many studies in one request",
        description=(
            "Multipart: a `manifest` part (JSON, as text or as a file) listing the studies and, for each, "
            "the names of its files; and one `files` part per file, matched by file name. The manifest and "
            "file references are checked first (400 and nothing stored if they do not match). Then every "
            "study is created on its own, in its own transaction: one that fails (duplicate accession, "
            "every file refused, ...) leaves nothing behind and is reported in `results[].errors`. Answered "
            "with 202 and the batch's status URL (also in `Location`); classification runs asynchronously, "
            "so poll that URL until `state` is `complete`. If no study at all could be created: 422 "
            "`batch_rejected`."
        ),
        parameters=[schema.IDEMPOTENCY_KEY],
        request=BatchSubmitIn,
        request_media_type="multipart/form-data",
        request_encoding={"manifest": {"contentType": "application/json"}},
        request_example={
            "manifest": {
                "reference": "night-run-2025-06-02",
                "studies": [
                    {
                        "accession_number": "ACC-2025-000123",
                        "mrn": "MRN-0042",
                        "patient_name": "Jane Doe",
                        "body_region": "wrist",
                        "files": ["wrist_pa.jpg"],
                    }
                ],
            },
            "files": ["wrist_pa.jpg"],
        },
        status=202,
        response=BatchOut,
        response_example=BATCH,
        # services.batch_submit: no study created (why: in `errors`), or the image store refused a write
        problems=(*schema.BODY, *schema.IDEMPOTENT, "batch_rejected", "storage_unavailable"),
    )
    def post(self, request: Request) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._submit(request))

    def _submit(self, request: Request) -> Response:
        serializer = BatchSubmitIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        manifest = serializer.validated_data["manifest"]
        uploads = serializer.validated_data["uploads"]
        items = []
        for study in manifest["studies"]:
            files = [uploads[sanitize_file_name(name)] for name in study["files"]]
            items.append(
                services.BatchItemInput(
                    details=services.StudyDetails.from_fields(study),
                    files=[services.UploadedImage.from_upload(f) for f in files],
                )
            )
        result = services.batch_submit(
            submitted_by=request.user,
            items=items,
            reference=manifest["reference"],
            client_ip=client_ip(request),
            idempotency_key=idempotency_key(request) or "",
        )
        if result.batch is None:
            if any(e["code"] == "storage_unavailable" for r in result.items for e in r.item.errors):
                # Not the batch's fault: a 5xx, which clients retry (with the same Idempotency-Key).
                raise Problem(
                    "storage_unavailable",
                    "The image store is not accepting files right now; nothing was saved. Try again later.",
                    headers={"Retry-After": "30"},
                )
            raise Problem(
                "batch_rejected",
                "No study of the batch could be created; nothing was stored.",
                errors=[
                    {
                        **error,
                        "field": f"manifest.studies.{r.index}"
                        + (f".{error['field']}" if "field" in error else ""),
                    }
                    for r in result.items
                    for error in r.item.errors
                ],
            )
        batch = selectors.batch_get(user=request.user, pk=result.batch.pk)
        body = BatchOut(batch, context={"request": request}).data
        return Response(body, status=202, headers={"Location": body["status_url"]})


class BatchDetailApi(ApiView):
    @schema.operation(
        operation_id="batches_retrieve",
        tag="batches",
        summary="A batch's status and per-study results",
        description="Visible to whoever submitted it, and to admins. `state` is `complete` once no "
        "radiograph of the batch is queued or running; `radiographs` counts them by status.",
        parameters=[
            OpenApiParameter(
                name="id", location=OpenApiParameter.PATH, type=OpenApiTypes.UUID, description="Batch id."
            )
        ],
        response=BatchOut,
        response_example=BATCH,
        problems=schema.FOUND,
    )
    def get(self, request: Request, pk: Any) -> Response:
        try:
            batch = selectors.batch_get(user=request.user, pk=pk)
        except Batch.DoesNotExist:
            raise Problem("not_found", "No such batch (or it is not yours).", status_code=404) from None
        return Response(BatchOut(batch, context={"request": request}).data)
