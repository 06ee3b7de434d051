"""The Django admin: every clinical model with useful columns, filters and search, for the admin role.

Predictions, reviews and the audit trail are evidence: read-only here (an attempt to add, change or delete
one is refused and audited). Patients and studies allow the few corrections an administrator needs; the
records the worker and the clinicians produce change only through radiology.services.

Just over 400 lines: one ModelAdmin per record, in one registry that reads as the admin site's list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.html import format_html

from radiology import exports, selectors, services
from radiology.access import client_ip
from radiology.models import (
    AuditEvent,
    Batch,
    BatchItem,
    IdempotencyRecord,
    Patient,
    Prediction,
    Radiograph,
    Review,
    Study,
)
from radiology.roles import is_admin
from radiology.wording import counted


class RoleAccess:
    """Admin permissions from the admin role (a group) rather than per-model Django permissions.

    What the role may do to a model is declared on the class (`role_can_*`); nothing else is possible,
    whatever permissions a user was given by hand.
    """

    role_can_add = False
    role_can_change = False
    role_can_delete = False

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_admin(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_admin(request.user)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self.role_can_add and is_admin(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.role_can_change and is_admin(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.role_can_delete and is_admin(request.user)


class RoleModelAdmin(RoleAccess, admin.ModelAdmin):
    """Refused writes leave an audit event: someone tried to alter the record, and an auditor asks who."""

    def _refused(self, request: HttpRequest, what: str, object_id: str | None) -> None:
        services.audit_record(
            action=AuditEvent.Action.ACCESS_DENIED,
            actor=request.user,
            details={
                "path": request.path[:300],
                "method": request.method,
                "reason": f"admin_{what}_refused",
                "model": self.opts.label,
                "object": object_id or "",
            },
            client_ip=client_ip(request),
        )

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except PermissionDenied:
            self._refused(request, "change" if object_id else "add", object_id)
            raise

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except PermissionDenied:
            self._refused(request, "delete", object_id)
            raise

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """An edit of a clinical record (a patient's name or birth date, a study's region) is audited with
        what each changed field held before and after, in the admin's own transaction."""
        super().save_model(request, obj, form, change)
        if change and form.changed_data:
            services.audit_record(
                action=AuditEvent.Action.RECORD_EDITED,
                actor=request.user,
                target=obj,
                details={
                    "model": self.opts.label,
                    "changes": {field: _change(form, field) for field in form.changed_data},
                },
                client_ip=client_ip(request),
            )


def _change(form: Any, field: str) -> dict[str, str]:
    before, after = form.initial.get(field), form.cleaned_data.get(field)
    return {
        "from": "" if before is None else str(before)[:500],
        "to": "" if after is None else str(after)[:500],
    }


def _study_link(study: Study) -> str:
    return format_html(
        '<a href="{}">{}</a>', reverse("radiology:study_detail", args=[study.pk]), study.accession_number
    )


@admin.register(Patient)
class PatientAdmin(RoleModelAdmin):
    role_can_change = True  # corrections of name, date of birth, sex; the MRN identifies and stays
    list_display = ("mrn", "name", "date_of_birth", "sex", "study_count", "created_at")
    list_filter = ("sex", "created_at")
    search_fields = ("mrn", "name")
    readonly_fields = ("mrn", "created_at")
    fields = ("mrn", "name", "date_of_birth", "sex", "created_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Patient]:
        return super().get_queryset(request).annotate(study_total=Count("studies"))

    @admin.display(description="studies", ordering="study_total")
    def study_count(self, patient: Any) -> int:
        return int(patient.study_total)


class RadiographInline(RoleAccess, admin.TabularInline):
    model = Radiograph
    extra = 0
    fields = ("position", "original_filename", "format", "status", "width", "height", "failure_message")
    readonly_fields = fields
    show_change_link = True


@admin.register(Study)
class StudyAdmin(RoleModelAdmin):
    role_can_change = True  # clinical notes, region and date; the triage summary is the services' job
    list_display = (
        "accession_number",
        "patient",
        "body_region",
        "state",
        "max_probability_display",
        "radiograph_count",
        "failed_count",
        "uploaded_by",
        "created_at",
    )
    list_filter = ("state", "body_region", "created_at")
    search_fields = ("accession_number", "patient__mrn", "patient__name")
    list_select_related = ("patient", "uploaded_by")
    date_hierarchy = "created_at"
    readonly_fields = (
        "patient",
        "accession_number",
        "uploaded_by",
        "created_at",
        "state",
        "max_probability",
        "radiograph_count",
        "failed_count",
        "reviewed_at",
        "review_page",
    )
    fields = (
        "accession_number",
        "patient",
        "body_region",
        "study_date",
        "clinical_notes",
        "state",
        "max_probability",
        "radiograph_count",
        "failed_count",
        "reviewed_at",
        "uploaded_by",
        "created_at",
        "review_page",
    )
    inlines = (RadiographInline,)

    @admin.display(description="max p(fracture)", ordering="max_probability")
    def max_probability_display(self, study: Study) -> str:
        return "—" if study.max_probability is None else f"{study.max_probability:.2f}"

    @admin.display(description="review page")
    def review_page(self, study: Study) -> str:
        return _study_link(study) if study.pk else ""


@admin.register(Radiograph)
class RadiographAdmin(RoleModelAdmin):
    list_display = (
        "id",
        "study_link",
        "position",
        "original_filename",
        "format",
        "status",
        "attempts",
        "size",
        "created_at",
    )
    list_filter = ("status", "format", "created_at")
    search_fields = ("study__accession_number", "original_filename", "sha256")
    list_select_related = ("study",)
    date_hierarchy = "created_at"
    actions = ("retry_failed",)
    exclude = ("image",)

    @admin.display(description="study", ordering="study__accession_number")
    def study_link(self, radiograph: Radiograph) -> str:
        return _study_link(radiograph.study)

    @admin.display(description="pixels")
    def size(self, radiograph: Radiograph) -> str:
        return f"{radiograph.width}×{radiograph.height}"

    @admin.action(description="Send the selected failed radiographs to the classifier again")
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Radiograph]) -> None:
        sent = 0
        for radiograph in queryset.filter(status=Radiograph.Status.FAILED):
            services.radiograph_retry(
                radiograph_id=radiograph.pk, actor=request.user, client_ip=client_ip(request)
            )
            sent += 1
        skipped = queryset.count() - sent
        self.message_user(
            request,
            f"{counted(sent, 'radiograph')} sent again; {counted(skipped, 'other')} not failed, left alone.",
            messages.SUCCESS if sent else messages.WARNING,
        )


@admin.register(Prediction)
class PredictionAdmin(RoleModelAdmin):
    list_display = (
        "id",
        "study_link",
        "model_version",
        "probability_display",
        "band",
        "label",
        "operating_points",
        "review_total",
        "created_at",
    )
    list_filter = ("model_version", "band", "label", "created_at")
    search_fields = ("radiograph__study__accession_number", "model_version")
    list_select_related = ("radiograph__study",)
    date_hierarchy = "created_at"
    actions = ("export_csv",)
    exclude = ("heatmap",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Prediction]:
        return super().get_queryset(request).annotate(reviews_n=Count("reviews"))

    @admin.display(description="study", ordering="radiograph__study__accession_number")
    def study_link(self, prediction: Prediction) -> str:
        return _study_link(prediction.radiograph.study)

    @admin.display(description="p(fracture)", ordering="probability")
    def probability_display(self, prediction: Prediction) -> str:
        return f"{prediction.probability:.3f}"

    @admin.display(description="operating points (sensitive / specific)")
    def operating_points(self, prediction: Prediction) -> str:
        """The two points that drew the band; the one threshold for a prediction made before bands."""
        if prediction.threshold_sensitive is None or prediction.threshold_specific is None:
            return f"{prediction.threshold:.3f}"
        return f"{prediction.threshold_sensitive:.3f} / {prediction.threshold_specific:.3f}"

    @admin.display(description="reviews", ordering="reviews_n")
    def review_total(self, prediction: Any) -> int:
        return int(prediction.reviews_n)

    @admin.action(description="Export the selected predictions with their latest review (CSV)")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Prediction]) -> StreamingHttpResponse:
        rows = selectors.prediction_export_rows(user=request.user, prediction_ids=queryset.values("pk"))
        return exports.prediction_csv_response(
            request=request, rows=rows, filters={"source": "admin action", "selected": queryset.count()}
        )


@admin.register(Review)
class ReviewAdmin(RoleModelAdmin):
    list_display = (
        "id",
        "created_at",
        "reviewer",
        "study_link",
        "model_label",
        "decision",
        "final_label",
        "reason_code",
    )
    list_filter = ("decision", "final_label", "reason_code", "prediction__model_version", "created_at")
    search_fields = ("radiograph__study__accession_number", "reviewer__username", "reason_text")
    list_select_related = ("reviewer", "radiograph__study", "prediction")
    date_hierarchy = "created_at"

    @admin.display(description="study", ordering="radiograph__study__accession_number")
    def study_link(self, review: Review) -> str:
        return _study_link(review.radiograph.study)

    @admin.display(description="model said", ordering="prediction__label")
    def model_label(self, review: Review) -> str:
        return f"{review.prediction.get_label_display()} ({review.prediction.probability:.2f})"


class NamedBlankValuesFilter(admin.AllValuesFieldListFilter):
    """Django's filter by each value of a field, with a name for the blank value: its link had no text (read
    out as an empty link; axe: link-name)."""

    def choices(self, changelist: Any) -> Iterator[Any]:
        for choice in super().choices(changelist):
            yield {**choice, "display": "(none)"} if choice["display"] == "" else choice


@admin.register(AuditEvent)
class AuditEventAdmin(RoleModelAdmin):
    list_display = ("created_at", "action", "actor_name", "target_type", "target_id", "client_ip", "summary")
    list_filter = ("action", ("target_type", NamedBlankValuesFilter), "created_at")
    search_fields = ("actor_name", "target_id", "client_ip")
    date_hierarchy = "created_at"

    @admin.display(description="details")
    def summary(self, event: AuditEvent) -> str:
        # Values as the stored JSON reads them (null, true, {"from": …}), not Python's None and quotes.
        text = ", ".join(
            f"{key}={value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
            for key, value in sorted(event.details.items())
        )
        return text if len(text) <= 120 else text[:119] + "…"


class BatchItemInline(RoleAccess, admin.TabularInline):
    model = BatchItem
    extra = 0
    fields = ("index", "accession_number", "outcome", "study", "errors")
    readonly_fields = fields


@admin.register(Batch)
class BatchAdmin(RoleModelAdmin):
    """API batch submissions: what each item became (read-only: the API writes them)."""

    list_display = ("id", "submitted_by", "reference", "item_total", "created_at")
    list_filter = ("created_at",)
    search_fields = ("reference", "submitted_by__username", "items__accession_number")
    list_select_related = ("submitted_by",)
    date_hierarchy = "created_at"
    inlines = (BatchItemInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Batch]:
        return super().get_queryset(request).annotate(items_n=Count("items"))

    @admin.display(description="items", ordering="items_n")
    def item_total(self, batch: Any) -> int:
        return int(batch.items_n)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(RoleModelAdmin):
    """Stored first responses to API requests sent with an Idempotency-Key (read-only)."""

    list_display = ("key", "user", "state", "response_status", "created_at")
    list_filter = ("state", "response_status", "created_at")
    search_fields = ("key", "user__username")
    list_select_related = ("user",)
    exclude = ("response_body",)


# --- Accounts and third-party records: the same role rules --------------------------------------------

# (app_label.model_name): (add, change, delete) for the admin role.
_THIRD_PARTY_RIGHTS = {
    "auth.user": (True, True, True),
    "auth.group": (True, True, True),
    "authtoken.tokenproxy": (True, False, True),
    "axes.accessattempt": (False, False, True),  # deleting an attempt lifts a lockout
    "axes.accesslog": (False, False, False),
    "axes.accessfailurelog": (False, False, False),
}


def _apply_role_rights() -> None:
    """Re-register the admins other apps registered, under the role rules (they ship with Django's
    per-model permissions, which the admin group does not use)."""
    for model, model_admin in list(admin.site._registry.items()):
        if model._meta.app_label == "radiology" or isinstance(model_admin, RoleAccess):
            continue
        add, change, delete = _THIRD_PARTY_RIGHTS.get(model._meta.label_lower, (False, False, False))
        role_admin = type(
            f"Role{type(model_admin).__name__}",
            (RoleAccess, type(model_admin)),
            {"role_can_add": add, "role_can_change": change, "role_can_delete": delete},
        )
        admin.site.unregister(model)
        admin.site.register(model, role_admin)


_apply_role_rights()

# The hospital integration's pages (DICOM arrivals, deliveries to the PACS) register themselves.
from radiology.dicomnet import admin as _dicomnet_admin  # noqa: E402, F401
