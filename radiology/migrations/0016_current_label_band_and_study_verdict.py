"""The current prediction's label and band copied onto the radiograph, and the study's verdict, with their
indexes: the API's verdict and band filters at 1,000,000 radiographs (bench/scale.py). The rows there
already are filled in from their current predictions before the indexes are built."""

import django.db.models.functions.comparison
from django.db import migrations, models

BACKFILL = [
    # Correlated subqueries rather than UPDATE ... FROM: the same statement on SQLite and PostgreSQL.
    """
    UPDATE radiology_radiograph SET
        current_label = (SELECT p.label FROM radiology_prediction p
                         WHERE p.id = radiology_radiograph.current_prediction_id),
        current_band = (SELECT p.band FROM radiology_prediction p
                        WHERE p.id = radiology_radiograph.current_prediction_id)
    WHERE current_prediction_id IS NOT NULL
    """,
    """
    UPDATE radiology_study SET verdict = CASE
        WHEN EXISTS (SELECT 1 FROM radiology_radiograph r
                     WHERE r.study_id = radiology_study.id AND r.current_label = 'fractured')
        THEN 'fractured'
        ELSE 'not_fractured' END
    WHERE EXISTS (SELECT 1 FROM radiology_radiograph r
                  WHERE r.study_id = radiology_study.id AND r.current_label <> '')
    """,
]
LABELS = [("fractured", "Fractured"), ("not_fractured", "Not fractured")]


class Migration(migrations.Migration):
    dependencies = [("radiology", "0015_audit_and_tab_indexes")]

    operations = [
        migrations.AddField(
            model_name="radiograph",
            name="current_band",
            field=models.CharField(
                blank=True,
                choices=[("fracture", "Fracture"), ("doubt", "Doubt"), ("no_fracture", "No fracture")],
                default="",
                max_length=12,
            ),
        ),
        migrations.AddField(
            model_name="radiograph",
            name="current_label",
            field=models.CharField(blank=True, choices=LABELS, default="", max_length=16),
        ),
        migrations.AddField(
            model_name="study",
            name="verdict",
            field=models.CharField(blank=True, choices=LABELS, default="", max_length=16),
        ),
        migrations.RunSQL(BACKFILL, reverse_sql=migrations.RunSQL.noop),
        migrations.AddIndex(
            model_name="radiograph",
            index=models.Index(fields=["current_label", "created_at", "id"], name="radiograph_label_idx"),
        ),
        migrations.AddIndex(
            model_name="radiograph",
            index=models.Index(fields=["current_band", "created_at", "id"], name="radiograph_band_idx"),
        ),
        migrations.AddIndex(
            model_name="study",
            index=models.Index(
                models.F("verdict"),
                models.OrderBy(
                    django.db.models.functions.comparison.Coalesce("max_probability", models.Value(-1.0)),
                    descending=True,
                ),
                models.F("created_at"),
                models.F("id"),
                name="study_verdict_idx",
            ),
        ),
    ]
