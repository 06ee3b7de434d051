"""Admin pages of the hospital integration: DICOM arrivals and instances, and deliveries to the PACS with
their status (pending / sent / failed and why). Read-only evidence; a failed delivery can be sent again."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from radiology.admin import RoleModelAdmin, _study_link
from radiology.dicomnet import delivery
from radiology.dicomnet.models import DicomArrival, DicomInstance, ResultDelivery


@admin.register(DicomArrival)
class DicomArrivalAdmin(RoleModelAdmin):
    list_display = ("id", "study_instance_uid", "state", "study_link", "instance_count", "last_received_at")
    list_filter = ("state", "last_received_at")
    search_fields = ("study_instance_uid", "study__accession_number")
    list_select_related = ("study",)

    @admin.display(description="study")
    def study_link(self, arrival: DicomArrival) -> str:
        return _study_link(arrival.study) if arrival.study else "—"

    @admin.display(description="instances")
    def instance_count(self, arrival: DicomArrival) -> int:
        return arrival.instances.count()


@admin.register(DicomInstance)
class DicomInstanceAdmin(RoleModelAdmin):
    list_display = (
        "id",
        "sop_instance_uid",
        "state",
        "source",
        "calling_ae_title",
        "transfer_syntax_uid",
        "created_at",
    )
    list_filter = ("state", "source", "transfer_syntax_uid", "created_at")
    search_fields = ("sop_instance_uid", "arrival__study_instance_uid")
    exclude = ("file",)


@admin.register(ResultDelivery)
class ResultDeliveryAdmin(RoleModelAdmin):
    list_display = (
        "id",
        "study_link",
        "kind",
        "status",
        "attempts",
        "destination",
        "last_error",
        "created_at",
        "sent_at",
    )
    list_filter = ("status", "kind", "created_at")
    search_fields = ("study__accession_number", "last_error")
    list_select_related = ("study",)
    actions = ("retry_failed",)

    @admin.display(description="study", ordering="study__accession_number")
    def study_link(self, item: ResultDelivery) -> str:
        return _study_link(item.study)

    @admin.action(description="Send the selected failed deliveries to the PACS again")
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[ResultDelivery]) -> None:
        sent = 0
        for item in queryset.filter(status=ResultDelivery.Status.FAILED):
            delivery.result_delivery_retry(delivery_id=item.pk)
            sent += 1
        self.message_user(
            request,
            f"{sent} delivery(ies) sent again; {queryset.count() - sent} were not failed and were left "
            "alone.",
            messages.SUCCESS if sent else messages.WARNING,
        )
