# Joins the two leaves written at the same time: 0008 (DICOM integration) and 0009 (current prediction).

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("radiology", "0008_dicom_integration"),
        ("radiology", "0009_radiograph_current_prediction"),
    ]

    operations = []
