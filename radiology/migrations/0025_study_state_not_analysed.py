"""A study whose every image the model declined (none failed) is stored as "not_analysed", no longer as
"failed": it needs reading without the model, not an administrator. Existing such studies are moved; the
triggers of migration 0018 move their StudyTally counts with them."""

from django.db import migrations, models

DECLINED_ONLY = {'state': 'failed', 'failed_count': 0, 'radiograph_count__gt': 0}


def move_declined_studies(apps, schema_editor):
    apps.get_model('radiology', 'Study').objects.filter(**DECLINED_ONLY).update(state='not_analysed')


def move_them_back(apps, schema_editor):
    apps.get_model('radiology', 'Study').objects.filter(state='not_analysed').update(state='failed')


class Migration(migrations.Migration):

    dependencies = [
        ('radiology', '0024_review_tally_band'),
    ]

    operations = [
        migrations.AlterField(
            model_name='study',
            name='state',
            field=models.CharField(
                choices=[
                    ('processing', 'Processing'),
                    ('awaiting_review', 'Awaiting review'),
                    ('reviewed', 'Reviewed'),
                    ('failed', 'Failed'),
                    ('not_analysed', 'Not analysed'),
                ],
                default='processing',
                max_length=16,
            ),
        ),
        migrations.RunPython(move_declined_studies, move_them_back),
    ]
