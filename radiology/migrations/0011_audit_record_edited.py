"""Admin edits of patients and studies are audited: AuditEvent.Action gains RECORD_EDITED."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("radiology", "0010_merge_dicom_current_prediction")]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="action",
            field=models.CharField(
                choices=[
                    ("study.uploaded", "Study uploaded"),
                    ("file.rejected", "File rejected"),
                    ("prediction.stored", "Prediction stored"),
                    ("radiograph.failed", "Radiograph failed"),
                    ("radiograph.resent", "Radiograph sent again"),
                    ("review.submitted", "Review submitted"),
                    ("read.unaided", "Unaided read recorded"),
                    ("adjudication.opened", "Sent to a second reader"),
                    ("adjudication.decided", "Adjudicated"),
                    ("patient.details_differ", "Typed patient details differ from DICOM"),
                    ("reader.setting", "Reading preference changed"),
                    ("export", "Export"),
                    ("access.denied", "Access denied"),
                    ("login.failed", "Login failed"),
                    ("record.edited", "Record edited in the admin"),
                    ("token.created", "API token created"),
                    ("batch.submitted", "Batch submitted"),
                    ("model.registered", "Model version registered"),
                    ("model.status_changed", "Model version status changed"),
                    ("model.promotion_refused", "Model promotion refused"),
                    ("radiograph.not_analysed", "Radiograph not analysed"),
                    ("drift.alert", "Drift alert raised"),
                    ("audit.verified", "Audit trail verified"),
                ],
                db_index=True,
                max_length=32,
            ),
        ),
    ]
