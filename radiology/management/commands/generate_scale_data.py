"""Fill the database with a realistic, synthetic clinical workload, fast, for performance measurements.

    python manage.py generate_scale_data --studies 10000 --radiographs-per-study 3

Patients with one or more studies spread over the past year; studies in every state (mostly reviewed,
a working backlog awaiting review, a few processing or failed); predictions by several model versions
(older studies read by older models, some re-read by a newer one); confirmations and overrides with
reasons by a handful of reviewers. Every study's triage summary is what services.study_refresh_triage
would compute. Rows go in with bulk_create (tens of thousands a second); a few synthetic images and one
heatmap are stored once and shared, since the pages measured never read them.

Everything is marked synthetic (patients "Synthetic ...", accession numbers with the prefix), so it can
never be mistaken for real patients. It adds to what is there; run it on a benchmark database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import random
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction
from django.utils import timezone

from classifier.explain import heatmap_to_stored_png
from radiology import services
from radiology.models import Band, BodyRegion, Label, Patient, Prediction, Radiograph, Review, Study
from radiology.roles import CLINICIAN_GROUP, ensure_role_groups

CHUNK = 2000
THRESHOLD = 0.5
# The two operating points that draw the bands (Fracture / Doubt / No fracture).
SENSITIVE, SPECIFIC = 0.3, 0.7


def _band(probability: float) -> str:
    if probability >= SPECIFIC:
        return Band.FRACTURE
    return Band.DOUBT if probability >= SENSITIVE else Band.NO_FRACTURE
# Share of studies in each state: most work is done, a backlog waits, a little is in flight or failed.
STATE_WEIGHTS = {
    Study.State.REVIEWED: 0.70,
    Study.State.AWAITING_REVIEW: 0.22,
    Study.State.PROCESSING: 0.05,
    Study.State.FAILED: 0.03,
}
REGION_WEIGHTS = {
    BodyRegion.WRIST: 0.22,
    BodyRegion.HAND: 0.15,
    BodyRegion.ANKLE: 0.14,
    BodyRegion.FOOT: 0.10,
    BodyRegion.ELBOW: 0.07,
    BodyRegion.SHOULDER: 0.07,
    BodyRegion.KNEE: 0.07,
    BodyRegion.HIP: 0.06,
    BodyRegion.FOREARM: 0.05,
    BodyRegion.LEG: 0.03,
    BodyRegion.SPINE: 0.02,
    BodyRegion.OTHER: 0.02,
}
OVERRIDE_REASONS = [
    Review.Reason.FALSE_ALARM,
    Review.Reason.MISSED_FRACTURE,
    Review.Reason.OLD_FRACTURE,
    Review.Reason.HARDWARE,
    Review.Reason.IMAGE_QUALITY,
]


@contextlib.contextmanager
def explicit_timestamps(*model_classes: type[models.Model]) -> Iterator[None]:
    """Let bulk_create keep the created_at/updated_at values given (auto_now* would overwrite them)."""
    fields = [
        f
        for model in model_classes
        for f in model._meta.concrete_fields
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
    ]
    saved = [(f, f.auto_now, f.auto_now_add) for f in fields]  # type: ignore[attr-defined]
    for f in fields:
        f.auto_now = f.auto_now_add = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for f, auto_now, auto_now_add in saved:
            f.auto_now, f.auto_now_add = auto_now, auto_now_add  # type: ignore[attr-defined]


class Command(BaseCommand):
    help = "Add a synthetic clinical workload (studies, radiographs, predictions, reviews) for benchmarks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--studies", type=int, default=10_000)
        parser.add_argument("--radiographs-per-study", type=int, default=3)
        parser.add_argument("--model-versions", type=int, default=3, help="model versions over the year")
        parser.add_argument("--reviewers", type=int, default=6)
        parser.add_argument("--days", type=int, default=365, help="spread studies over this many days")
        parser.add_argument("--prefix", default="SYN", help="prefix of accession numbers and MRNs")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        studies, per_study = options["studies"], options["radiographs_per_study"]
        if studies < 1 or not 1 <= per_study <= 20:
            raise CommandError("--studies must be positive and --radiographs-per-study 1..20")
        prefix = options["prefix"]
        if Study.objects.filter(accession_number__startswith=f"{prefix}-").exists():
            raise CommandError(f"studies with the prefix {prefix!r} exist already; choose another --prefix")
        started = timezone.now()
        generator = _Generator(
            rng=random.Random(options["seed"]),  # noqa: S311 - synthetic data, not secrets
            prefix=prefix,
            now=started,
            days=options["days"],
            versions=[f"lite0-cam-v{i + 1}" for i in range(max(1, options["model_versions"]))],
        )
        with transaction.atomic(), explicit_timestamps(Patient, Study, Radiograph, Prediction, Review):
            counts = generator.run(
                studies=studies, per_study=per_study, reviewers=_reviewers(options["reviewers"], prefix)
            )
        seconds = (timezone.now() - started).total_seconds()
        summary = ", ".join(f"{n:,} {name}" for name, n in counts.items())
        self.stdout.write(self.style.SUCCESS(f"Created {summary} in {seconds:.1f} s."))


def _reviewers(count: int, prefix: str) -> list[Any]:
    ensure_role_groups()
    group = Group.objects.get(name=CLINICIAN_GROUP)
    users = []
    for i in range(max(1, count)):
        user, created = get_user_model().objects.get_or_create(username=f"{prefix.lower()}-reviewer-{i + 1}")
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        user.groups.add(group)
        users.append(user)
    return users


def _synthetic_png(seed: int, width: int, height: int) -> bytes:
    """A radiograph-sized grey image (smooth noise): something real to store, never a real patient."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16, width // 16), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return bytes(cv2.imencode(".png", image)[1].tobytes())


def _stored(name: str, content: bytes) -> str:
    if not default_storage.exists(name):
        return str(default_storage.save(name, ContentFile(content)))
    return name


class _Generator:
    def __init__(self, *, rng: random.Random, prefix: str, now: dt.datetime, days: int, versions: list[str]):
        self.rng = rng
        self.prefix = prefix
        self.now = now
        self.days = days
        self.versions = versions

    def _images(self, count: int) -> list[tuple[str, str, int, int, int]]:
        """(storage name, sha256, size, width, height) of a few stored synthetic images."""
        images = []
        for i in range(count):
            width, height = (1152, 1440) if i % 2 else (1440, 1152)
            content = _synthetic_png(i, width, height)
            sha = hashlib.sha256(content).hexdigest()
            name = _stored(f"radiographs/synthetic-{sha[:16]}.png", content)
            images.append((name, sha, len(content), width, height))
        return images

    def _heatmap(self) -> str:
        y, x = np.mgrid[0:64, 0:64]
        blob = np.exp(-((x - 40.0) ** 2 + (y - 24.0) ** 2) / 120.0).astype(np.float32)
        return _stored("heatmaps/synthetic-heatmap.png", heatmap_to_stored_png(blob))

    def _version_at(self, when: dt.datetime) -> int:
        """Model versions were released at equal intervals over the period; the newest reads today."""
        age = (self.now - when).total_seconds() / (self.days * 86400)
        return min(len(self.versions) - 1, int((1 - age) * len(self.versions)))

    def _probability(self) -> float:
        # Most radiographs are clearly negative, a minority clearly positive, some in between.
        if self.rng.random() < 0.3:
            return round(self.rng.betavariate(5, 1.5), 4)
        return round(self.rng.betavariate(1.2, 6), 4)

    def run(self, *, studies: int, per_study: int, reviewers: list[Any]) -> dict[str, int]:
        rng, prefix = self.rng, self.prefix
        images = self._images(max(per_study, 6))
        heatmap = self._heatmap()
        states, state_weights = zip(*STATE_WEIGHTS.items(), strict=True)
        regions, region_weights = zip(*REGION_WEIGHTS.items(), strict=True)

        # Patients: about two studies for every three patients; the MRN says it is synthetic.
        patient_count = max(1, round(studies / 1.5))
        patients = Patient.objects.bulk_create(
            [
                Patient(
                    mrn=f"{prefix}-{i:07d}",
                    name=f"Synthetic Patient {i:07d}",
                    date_of_birth=dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(90 * 365)),
                    sex=rng.choice(["F", "M", "M", "F", "U"]),
                    created_at=self.now - dt.timedelta(days=self.days),
                )
                for i in range(patient_count)
            ],
            batch_size=CHUNK,
        )

        # Studies, oldest first; the ones still in flight or waiting are the newest.
        plans = []
        for _ in range(studies):
            state = rng.choices(states, state_weights)[0]
            recent_days = {Study.State.PROCESSING: 0.02, Study.State.AWAITING_REVIEW: 14}.get(state)
            age_days = rng.uniform(0, recent_days if recent_days is not None else self.days)
            created = self.now - dt.timedelta(days=age_days, seconds=rng.randrange(60))
            plans.append((created, state))
        plans.sort(key=lambda plan: plan[0])
        study_rows = Study.objects.bulk_create(
            [
                Study(
                    patient=patients[rng.randrange(patient_count)],
                    accession_number=f"{prefix}-{i:08d}",
                    body_region=rng.choices(regions, region_weights)[0],
                    clinical_notes=rng.choice(["", "", "Fall on outstretched hand.", "Pain after twisting."]),
                    study_date=created.date(),
                    uploaded_by=reviewers[i % len(reviewers)],
                    created_at=created,
                    state=Study.State.PROCESSING,
                    radiograph_count=per_study,
                )
                for i, (created, _) in enumerate(plans)
            ],
            batch_size=CHUNK,
        )

        radiographs: list[Radiograph] = []
        outcome: list[tuple[Study, str, dt.datetime]] = []
        for study, (created, state) in zip(study_rows, plans, strict=True):
            chosen = rng.sample(images, per_study)
            for position, (name, sha, size, width, height) in enumerate(chosen):
                if state == Study.State.PROCESSING:
                    status = Radiograph.Status.QUEUED if position else Radiograph.Status.RUNNING
                elif state == Study.State.FAILED:
                    status = Radiograph.Status.FAILED
                else:
                    status = Radiograph.Status.PREDICTED
                radiographs.append(
                    Radiograph(
                        study=study,
                        position=position,
                        image=name,
                        original_filename=f"image{position + 1}.png",
                        format=Radiograph.Format.PNG,
                        sha256=sha,
                        byte_size=size,
                        width=width,
                        height=height,
                        status=status,
                        failure_message="The image data is truncated or corrupt."
                        if status == Radiograph.Status.FAILED
                        else "",
                        attempts=0 if status == Radiograph.Status.QUEUED else 1,
                        dispatched_at=created,
                        claimed_at=created if status != Radiograph.Status.QUEUED else None,
                        created_at=created,
                        updated_at=created,
                    )
                )
            outcome.append((study, state, created))
        radiographs = Radiograph.objects.bulk_create(radiographs, batch_size=CHUNK)

        predictions: list[Prediction] = []
        for radiograph in radiographs:
            if radiograph.status != Radiograph.Status.PREDICTED:
                continue
            created = radiograph.created_at
            version = self._version_at(created)
            read_by = [version]
            if version < len(self.versions) - 1 and rng.random() < 0.1:
                read_by.append(len(self.versions) - 1)  # re-read when a newer model shipped
            for number, index in enumerate(read_by):
                probability = self._probability()
                predictions.append(
                    Prediction(
                        radiograph=radiograph,
                        model_version=self.versions[index],
                        probability=probability,
                        label=Label.FRACTURED if probability >= THRESHOLD else Label.NOT_FRACTURED,
                        band=_band(probability),
                        threshold=THRESHOLD,
                        threshold_sensitive=SENSITIVE,
                        threshold_specific=SPECIFIC,
                        heatmap=heatmap,
                        inference_ms=round(rng.uniform(30, 60), 1),
                        created_at=created + dt.timedelta(seconds=2 + number * 86400),
                    )
                )
        predictions = Prediction.objects.bulk_create(predictions, batch_size=CHUNK)
        # The current prediction and each study's triage summary come from the services that keep them.
        radiograph_ids = [r.pk for r in radiographs]
        for start in range(0, len(radiograph_ids), CHUNK):
            services.radiographs_set_current_prediction(radiograph_ids=radiograph_ids[start : start + CHUNK])
        by_id = {p.pk: p for p in predictions}
        current = {
            pk: by_id[prediction_id]
            for pk, prediction_id in Radiograph.objects.filter(current_prediction__isnull=False)
            .filter(study__accession_number__startswith=f"{prefix}-")
            .values_list("pk", "current_prediction_id")
        }

        by_study: dict[int, list[Radiograph]] = {}
        for radiograph in radiographs:
            by_study.setdefault(radiograph.study_id, []).append(radiograph)
        reviews: list[Review] = []
        reviewed_studies: list[Study] = []
        for study, state, created in outcome:
            if state != Study.State.REVIEWED:
                continue
            members = by_study[study.pk]
            reviewed = created + dt.timedelta(hours=rng.uniform(0.2, 48))
            reviewer = rng.choice(reviewers)
            for radiograph in members:
                prediction = current[radiograph.pk]
                overridden = rng.random() < 0.12
                final = Label.opposite(prediction.label) if overridden else prediction.label
                reviews.append(
                    Review(
                        radiograph=radiograph,
                        prediction=prediction,
                        reviewer=reviewer,
                        decision=Review.Decision.OVERRIDE if overridden else Review.Decision.CONFIRM,
                        final_label=final,
                        reason_code=rng.choice(OVERRIDE_REASONS) if overridden else "",
                        created_at=max(reviewed, prediction.created_at + dt.timedelta(minutes=5)),
                    )
                )
            study.reviewed_at = max(r.created_at for r in reviews[-len(members) :])
            reviewed_studies.append(study)
        Review.objects.bulk_create(reviews, batch_size=CHUNK)
        study_ids = [study.pk for study in study_rows]
        for start in range(0, len(study_ids), CHUNK):
            services.studies_refresh_triage(study_ids=study_ids[start : start + CHUNK])
        # The triage stamps "reviewed now"; these were reviewed in the past.
        Study.objects.bulk_update(reviewed_studies, ["reviewed_at"], batch_size=CHUNK)
        return {
            "patients": len(patients),
            "studies": len(study_rows),
            "radiographs": len(radiographs),
            "predictions": len(predictions),
            "reviews": len(reviews),
        }
