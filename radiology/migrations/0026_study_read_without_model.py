"""Who read a study the model declined entirely without it, and when (it then leaves the Not analysed
worklist); and the audit action that records it."""

import importlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

STUDY_TALLY = importlib.import_module("radiology.migrations.0018_study_tally")


def reinstall_sqlite_study_tally_triggers(apps, schema_editor):
    """SQLite loses a table's triggers when Django rebuilds the table, as removing a foreign key does: going
    back past this migration, the study tally triggers of 0018 are made again."""
    if schema_editor.connection.vendor != "sqlite":
        return
    for sql in STUDY_TALLY.SQLITE_REVERSE:
        schema_editor.execute(sql.replace("DROP TRIGGER", "DROP TRIGGER IF EXISTS"))
    for sql in STUDY_TALLY.SQLITE:
        schema_editor.execute(sql)


class Migration(migrations.Migration):

    dependencies = [
        ('radiology', '0025_study_state_not_analysed'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Runs last on the way back, after the rebuild.
        migrations.RunPython(migrations.RunPython.noop, reinstall_sqlite_study_tally_triggers),
        migrations.AddField(
            model_name='study',
            name='read_without_model_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='study',
            name='read_without_model_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='action',
            field=models.CharField(choices=[('study.uploaded', 'Study uploaded'), ('file.rejected', 'File rejected'), ('prediction.stored', 'Prediction stored'), ('radiograph.failed', 'Radiograph failed'), ('radiograph.resent', 'Radiograph sent again'), ('review.submitted', 'Review submitted'), ('read.unaided', 'Unaided read recorded'), ('adjudication.opened', 'Sent to a second reader'), ('adjudication.decided', 'Adjudicated'), ('patient.details_differ', 'Typed patient details differ from DICOM'), ('reader.setting', 'Reading preference changed'), ('site.setting', 'Site setting changed'), ('export', 'Export'), ('access.denied', 'Access denied'), ('login.failed', 'Login failed'), ('record.edited', 'Record edited in the admin'), ('token.created', 'API token created'), ('batch.submitted', 'Batch submitted'), ('model.registered', 'Model version registered'), ('model.status_changed', 'Model version status changed'), ('model.promotion_refused', 'Model promotion refused'), ('radiograph.not_analysed', 'Radiograph not analysed'), ('study.read_without_model', 'Study read without the model'), ('drift.alert', 'Drift alert raised'), ('audit.verified', 'Audit trail verified')], db_index=True, max_length=32),
        ),
    ]
