"""Radiograph.current_prediction: the prediction clinicians see, kept by the service that stores predictions
(it was recomputed as "the newest prediction" by three different queries). Backfilled in one UPDATE."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def backfill(apps, schema_editor):
    Radiograph = apps.get_model("radiology", "Radiograph")
    Prediction = apps.get_model("radiology", "Prediction")
    newest = Prediction.objects.filter(radiograph=OuterRef("pk")).order_by("-created_at", "-pk").values("pk")
    Radiograph.objects.update(current_prediction=Subquery(newest[:1]))


class Migration(migrations.Migration):
    dependencies = [
        ("radiology", "0007_model_governance"),
    ]

    operations = [
        migrations.AddField(
            model_name="radiograph",
            name="current_prediction",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="radiology.prediction",
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
