"""The audit dashboard's running totals (radiology.tallies), filled in from the records already there."""

from django.db import migrations, models


def rebuild(apps, schema_editor):
    from radiology.services.tallies import tallies_rebuild

    tallies_rebuild(apps=apps)


class Migration(migrations.Migration):

    dependencies = [
        ('radiology', '0016_current_label_band_and_study_verdict'),
    ]

    operations = [
        migrations.CreateModel(
            name='PredictionTally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('model_version', models.CharField(max_length=100)),
                ('day', models.DateField()),
                ('predictions', models.IntegerField(default=0)),
                ('first_at', models.DateTimeField()),
                ('last_at', models.DateTimeField()),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('model_version', 'day'), name='prediction_tally_unique')],
            },
        ),
        migrations.CreateModel(
            name='ReviewTally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('model_version', models.CharField(max_length=100)),
                ('prediction_day', models.DateField()),
                ('review_day', models.DateField()),
                ('model_label', models.CharField(max_length=16)),
                ('final_label', models.CharField(max_length=16)),
                ('decision', models.CharField(max_length=8)),
                ('reason_code', models.CharField(blank=True, max_length=20)),
                ('unaided_label', models.CharField(blank=True, max_length=16)),
                ('reference_label', models.CharField(blank=True, max_length=16)),
                ('reviews', models.IntegerField(default=0)),
            ],
            options={
                'indexes': [models.Index(fields=['prediction_day'], name='review_tally_day_idx')],
                'constraints': [models.UniqueConstraint(fields=('model_version', 'prediction_day', 'review_day', 'model_label', 'final_label', 'decision', 'reason_code', 'unaided_label', 'reference_label'), name='review_tally_unique')],
            },
        ),
        migrations.RunPython(rebuild, migrations.RunPython.noop),
    ]
