"""Indexes for the audit dashboard and the queue's tab counts at 1,000,000 radiographs (bench/scale.py)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("radiology", "0014_patient_name_trigram")]

    operations = [
        migrations.AddIndex(
            model_name="review",
            index=models.Index(
                fields=["prediction", "-created_at", "-id"], name="review_prediction_latest_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="study",
            index=models.Index(fields=["state"], name="study_state_idx"),
        ),
    ]
