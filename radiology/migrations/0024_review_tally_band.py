"""The audit dashboard's standing reviews counted per band of the prediction too (the dashboard's "By band"
table): the column is added, then every ReviewTally row is recomputed from the records."""

from django.db import migrations, models


def rebuild(apps, schema_editor):
    from radiology.services.tallies import tallies_rebuild

    tallies_rebuild(apps=apps)


class Migration(migrations.Migration):

    dependencies = [
        ('radiology', '0023_study_tally_summed_per_transaction'),
    ]

    operations = [
        migrations.RemoveConstraint(model_name='reviewtally', name='review_tally_unique'),
        migrations.AddField(
            model_name='reviewtally',
            name='model_band',
            field=models.CharField(default='', max_length=12),
            preserve_default=False,
        ),
        migrations.AddConstraint(
            model_name='reviewtally',
            constraint=models.UniqueConstraint(
                fields=(
                    'model_version', 'prediction_day', 'review_day', 'model_label', 'model_band', 'final_label',
                    'decision', 'reason_code', 'unaided_label', 'reference_label',
                ),
                name='review_tally_unique',
            ),
        ),
        migrations.RunPython(rebuild, migrations.RunPython.noop),
    ]
