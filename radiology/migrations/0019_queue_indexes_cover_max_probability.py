"""The queue indexes INCLUDE max_probability (PostgreSQL; SQLite ignores it): with every column their
expression reads in the index, a deep page's ids are an index-only scan (radiology.paging)."""

import django.db.models.functions.comparison
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('radiology', '0018_study_tally'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='study',
            name='study_queue_idx',
        ),
        migrations.RemoveIndex(
            model_name='study',
            name='study_queue_all_idx',
        ),
        migrations.RemoveIndex(
            model_name='study',
            name='study_verdict_idx',
        ),
        migrations.AddIndex(
            model_name='study',
            index=models.Index(models.F('state'), models.OrderBy(django.db.models.functions.comparison.Coalesce('max_probability', models.Value(-1.0)), descending=True), models.F('created_at'), models.F('id'), include=('max_probability',), name='study_queue_idx'),
        ),
        migrations.AddIndex(
            model_name='study',
            index=models.Index(models.OrderBy(django.db.models.functions.comparison.Coalesce('max_probability', models.Value(-1.0)), descending=True), models.F('created_at'), models.F('id'), include=('max_probability',), name='study_queue_all_idx'),
        ),
        migrations.AddIndex(
            model_name='study',
            index=models.Index(models.F('verdict'), models.OrderBy(django.db.models.functions.comparison.Coalesce('max_probability', models.Value(-1.0)), descending=True), models.F('created_at'), models.F('id'), include=('max_probability',), name='study_verdict_idx'),
        ),
    ]
