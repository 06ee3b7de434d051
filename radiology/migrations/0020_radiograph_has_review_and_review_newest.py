"""Radiograph.has_review (the API's `reviewed` filter without an anti-join against 700,000 reviews), filled
in from the reviews there, and the newest-reviews index of the audit dashboard."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('radiology', '0019_queue_indexes_cover_max_probability'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='radiograph',
            name='has_review',
            field=models.BooleanField(default=False),
        ),
        migrations.RunSQL(
            "UPDATE radiology_radiograph SET has_review = TRUE "
            "WHERE id IN (SELECT radiograph_id FROM radiology_review)",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AddIndex(
            model_name='radiograph',
            index=models.Index(fields=['has_review', 'current_label'], name='radiograph_reviewed_idx'),
        ),
        migrations.AddIndex(
            model_name='review',
            index=models.Index(fields=['-created_at', '-id'], name='review_newest_idx'),
        ),
    ]
