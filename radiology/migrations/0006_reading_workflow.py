"""Reading workflow v2: blinded first reads, the second reader's adjudication, reading preferences and the
"being read by" marker on a study."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

LABELS = [("fractured", "Fractured"), ("not_fractured", "Not fractured")]


class Migration(migrations.Migration):
    dependencies = [
        ("radiology", "0005_prediction_band_boxes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="review",
            name="unaided_label",
            field=models.CharField(blank=True, choices=LABELS, max_length=16),
        ),
        migrations.AddField(
            model_name="study",
            name="reading_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="reading_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="ReaderProfile",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("blinded", models.BooleanField(blank=True, null=True)),
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="reader_profile",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="UnaidedRead",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("label", models.CharField(choices=LABELS, max_length=16)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "radiograph",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="unaided_reads",
                        to="radiology.radiograph",
                    ),
                ),
                (
                    "reader",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("radiograph", "reader"), name="unaided_read_one_per_reader"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="Adjudication",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "trigger",
                    models.CharField(
                        choices=[
                            ("model_disagrees", "Final call against a confident model band"),
                            ("reader_changed", "Final call differs from the unaided read"),
                        ],
                        max_length=20,
                    ),
                ),
                (
                    "state",
                    models.CharField(
                        choices=[("open", "Awaiting a second reader"), ("decided", "Decided")],
                        default="open",
                        max_length=8,
                    ),
                ),
                ("label", models.CharField(blank=True, choices=LABELS, max_length=16)),
                ("notes", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("decided_at", models.DateTimeField(blank=True, null=True)),
                (
                    "adjudicator",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "radiograph",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="adjudications",
                        to="radiology.radiograph",
                    ),
                ),
                (
                    "review",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="adjudications",
                        to="radiology.review",
                    ),
                ),
            ],
            options={
                "ordering": ["created_at", "id"],
                "indexes": [models.Index(fields=["state", "created_at"], name="adjudication_queue_idx")],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("state", "open")),
                        fields=("radiograph",),
                        name="adjudication_one_open_per_radiograph",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(
                                ("adjudicator__isnull", True),
                                ("decided_at__isnull", True),
                                ("label", ""),
                                ("state", "open"),
                            ),
                            models.Q(
                                ("adjudicator__isnull", False),
                                ("decided_at__isnull", False),
                                ("state", "decided"),
                                models.Q(("label", ""), _negated=True),
                            ),
                            _connector="OR",
                        ),
                        name="adjudication_decided_has_label",
                    ),
                ],
            },
        ),
    ]
