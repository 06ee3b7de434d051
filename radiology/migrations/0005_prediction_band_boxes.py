"""The model's band (Fracture / Doubt / No fracture), its boxes and its two operating points.

Predictions stored before bands existed get the band their label implies (fractured -> fracture, else
no_fracture: they had one threshold, so no doubt band), no boxes and no operating points; each study's
band is then the highest of its radiographs' current predictions.
"""

from django.db import migrations, models

BAND_CHOICES = [("fracture", "Fracture"), ("doubt", "Doubt"), ("no_fracture", "No fracture")]
ORDER = ("fracture", "doubt", "no_fracture")


def bands_from_labels(apps, schema_editor):
    Prediction = apps.get_model("radiology", "Prediction")
    Study = apps.get_model("radiology", "Study")
    Prediction.objects.filter(label="fractured").update(band="fracture")
    Prediction.objects.exclude(label="fractured").update(band="no_fracture")
    current = {}
    for prediction in Prediction.objects.order_by("created_at", "id").values(
        "radiograph_id", "radiograph__study_id", "band"
    ):
        current[prediction["radiograph_id"]] = (prediction["radiograph__study_id"], prediction["band"])
    by_study = {}
    for study_id, band in current.values():
        best = by_study.get(study_id)
        if best is None or ORDER.index(band) < ORDER.index(best):
            by_study[study_id] = band
    for band in ORDER:
        ids = [pk for pk, value in by_study.items() if value == band]
        for start in range(0, len(ids), 500):
            Study.objects.filter(pk__in=ids[start : start + 500]).update(band=band)


class Migration(migrations.Migration):
    dependencies = [
        ("radiology", "0004_queue_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="prediction",
            name="band",
            field=models.CharField(choices=BAND_CHOICES, default="no_fracture", max_length=12),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="prediction",
            name="boxes",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="prediction",
            name="threshold_sensitive",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="prediction",
            name="threshold_specific",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="study",
            name="band",
            field=models.CharField(blank=True, choices=BAND_CHOICES, default="", max_length=12),
        ),
        migrations.RunPython(bands_from_labels, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="prediction",
            constraint=models.CheckConstraint(
                condition=models.Q(("band__in", ["fracture", "doubt", "no_fracture"])),
                name="prediction_band_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="prediction",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("threshold_sensitive__isnull", True),
                    ("threshold_specific__isnull", True),
                    ("threshold_sensitive__lte", models.F("threshold_specific")),
                    _connector="OR",
                ),
                name="prediction_operating_points_ordered",
            ),
        ),
    ]
