# Hospital integration: DICOM arrivals and instances, result deliveries to the PACS (issue 14).
# Depends on both 0006 (issue 13) and 0007 (issue 15), which makes it their merge as well.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import radiology.dicomnet.models


class Migration(migrations.Migration):
    dependencies = [
        ("radiology", "0006_reading_workflow"),
        ("radiology", "0007_model_governance"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="DicomArrival",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("study_instance_uid", models.CharField(max_length=64, unique=True, verbose_name="Study Instance UID")),
                (
                    "state",
                    models.CharField(
                        choices=[("open", "Receiving"), ("filed", "Filed"), ("failed", "Failed")],
                        default="open",
                        max_length=8,
                    ),
                ),
                ("failure_message", models.TextField(blank=True)),
                ("last_received_at", models.DateTimeField()),
                ("filed_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "study",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="dicom_arrivals",
                        to="radiology.study",
                    ),
                ),
            ],
            options={
                "ordering": ["-last_received_at"],
                "indexes": [models.Index(fields=["state", "last_received_at"], name="dicom_arrival_due_idx")],
            },
        ),
        migrations.CreateModel(
            name="DicomInstance",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("sop_instance_uid", models.CharField(max_length=64, unique=True, verbose_name="SOP Instance UID")),
                ("sop_class_uid", models.CharField(max_length=64)),
                ("series_instance_uid", models.CharField(blank=True, max_length=64)),
                ("transfer_syntax_uid", models.CharField(blank=True, max_length=64)),
                (
                    "file",
                    models.FileField(
                        blank=True, max_length=200, upload_to=radiology.dicomnet.models.dicom_instance_storage_name
                    ),
                ),
                ("sha256", models.CharField(max_length=64)),
                ("byte_size", models.PositiveBigIntegerField()),
                (
                    "source",
                    models.CharField(
                        choices=[("c-store", "DICOM C-STORE"), ("stow-rs", "DICOMweb STOW-RS")], max_length=8
                    ),
                ),
                ("calling_ae_title", models.CharField(blank=True, max_length=16)),
                (
                    "state",
                    models.CharField(
                        choices=[("received", "Received"), ("filed", "Filed"), ("refused", "Refused when filed")],
                        default="received",
                        max_length=8,
                    ),
                ),
                ("failure_message", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "arrival",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="instances",
                        to="radiology.dicomarrival",
                    ),
                ),
                (
                    "radiograph",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="dicom_instance",
                        to="radiology.radiograph",
                    ),
                ),
                (
                    "received_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["arrival", "created_at", "id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("radiograph__isnull", False), ("state", "filed")),
                            models.Q(("state", "filed"), _negated=True),
                            _connector="OR",
                        ),
                        name="dicom_instance_filed_has_radiograph",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="ResultDelivery",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("model_result", "Model result (SR + Secondary Capture)"),
                            ("final_call", "Clinician's final call (SR)"),
                        ],
                        max_length=16,
                    ),
                ),
                ("key", models.CharField(max_length=64)),
                ("destination", models.CharField(max_length=300)),
                (
                    "status",
                    models.CharField(
                        choices=[("pending", "Pending"), ("sent", "Sent"), ("failed", "Failed")],
                        default="pending",
                        max_length=8,
                    ),
                ),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("last_error", models.TextField(blank=True)),
                ("documents", models.JSONField(blank=True, default=list)),
                ("dispatched_at", models.DateTimeField(blank=True, null=True)),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "study",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="result_deliveries",
                        to="radiology.study",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "result deliveries",
                "ordering": ["-created_at", "-id"],
                "indexes": [models.Index(fields=["status", "updated_at"], name="result_delivery_due_idx")],
                "constraints": [
                    models.UniqueConstraint(fields=("study", "kind", "key"), name="result_delivery_unique_content"),
                    models.CheckConstraint(
                        condition=models.Q(("status", "failed"), ("status", "sent"), ("status", "pending"), _connector="OR"),
                        name="result_delivery_status_valid",
                    ),
                ],
            },
        ),
    ]
