"""Benchmark seeding: one queued study per image through the normal upload service, held back from the
workers until the benchmark sends the messages itself (`manage.py send_classification`).

Prints the new radiographs' ids as one JSON line. With --total, the uploaded radiographs are repeated
(same stored file, new rows) until there are that many, for benchmarks that need many rows quickly.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from radiology import services
from radiology.models import BodyRegion, Patient, Radiograph, Study


class Command(BaseCommand):
    help = "Create queued studies from a JSON list of image paths, without sending them to the workers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("listing", type=Path, help="a JSON file holding a list of image paths")
        parser.add_argument("--prefix", required=True, help="MRN and accession numbers start with it")
        parser.add_argument("--uploader", default="clinician", help="the uploading user (default clinician)")
        parser.add_argument("--total", type=int, default=0, help="repeat the images up to this many rows")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = options["prefix"]
        try:
            user = get_user_model().objects.get(username=options["uploader"])
            paths = [Path(p) for p in json.loads(options["listing"].read_text())]
        except (OSError, ValueError, get_user_model().DoesNotExist) as exc:
            raise CommandError(f"cannot seed: {exc}") from None
        uploaded: list[Radiograph] = []
        for index, path in enumerate(paths):
            result = services.study_create(
                uploaded_by=user,
                details=services.StudyDetails(
                    mrn=f"{prefix}-{index}",
                    patient_name=f"Bench {prefix} {index}",
                    accession_number=f"{prefix}-ACC-{index}",
                    body_region=BodyRegion.WRIST,
                ),
                files=[services.UploadedImage(path.name, path.read_bytes())],
                classify=False,
            )
            uploaded += result.accepted
        copies = self._copies(uploaded, options["total"] - len(uploaded), user, prefix)
        # Marked as sent now, so that the sweep leaves them alone until the benchmark sends them itself.
        ids = [r.pk for r in uploaded] + [r.pk for r in copies]
        Radiograph.objects.filter(pk__in=[r.pk for r in uploaded]).update(dispatched_at=timezone.now())
        self.stdout.write(json.dumps(ids))

    def _copies(self, templates: list[Radiograph], count: int, user: Any, prefix: str) -> list[Radiograph]:
        if count <= 0 or not templates:
            return []
        patient = Patient.objects.create(mrn=f"{prefix}-MANY", name=f"Bench {prefix}")
        studies = Study.objects.bulk_create(
            [
                Study(
                    patient=patient,
                    accession_number=f"{prefix}-X-{i}",
                    body_region=BodyRegion.WRIST,
                    uploaded_by=user,
                    radiograph_count=1,
                )
                for i in range(count)
            ],
            batch_size=2000,
        )
        now = timezone.now()
        return Radiograph.objects.bulk_create(
            [
                Radiograph(
                    study=study,
                    position=0,
                    image=template.image.name,
                    original_filename=template.original_filename,
                    format=template.format,
                    sha256=template.sha256,
                    byte_size=template.byte_size,
                    width=template.width,
                    height=template.height,
                    dispatched_at=now,
                )
                for study, template in zip(studies, itertools.cycle(templates), strict=False)
            ],
            batch_size=2000,
        )
