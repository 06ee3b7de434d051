"""Fill the database with a realistic, synthetic clinical workload, fast, for performance measurements.

    python manage.py generate_scale_data --studies 10000 --radiographs-per-study 3

Patients with one or more studies spread over the past year; studies in every state (mostly reviewed,
a working backlog awaiting review, a few processing, failed or declined by the guardrails, each declined
image with its refusal); predictions by several model versions (older studies read by older models, some
re-read by a newer one); confirmations and overrides with reasons by a handful of reviewers. Every study's
triage summary is what services.study_refresh_triage would compute, and each radiograph points at its
newest prediction. Rows are streamed in chunks with COPY on PostgreSQL (radiology.management.bulk;
1,000,000 radiographs in minutes, memory bounded by one chunk); a few synthetic images and one heatmap are
stored once and shared, since the pages measured never read them.

Everything is marked synthetic (patients "Synthetic ...", accession numbers with the prefix), so it can
never be mistaken for real patients. It adds to what is there; run it on a benchmark database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from typing import Any

import cv2
import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from classifier.explain import heatmap_to_stored_png
from radiology.governance.models import GuardrailRefusal
from radiology.management.bulk import BulkWriter
from radiology.models import (
    Band,
    BodyRegion,
    Label,
    Patient,
    Prediction,
    Radiograph,
    Review,
    Study,
    band_rank,
)
from radiology.roles import CLINICIAN_GROUP, ensure_role_groups
from radiology.services import study_verdict_of, tallies_rebuild

CHUNK = 5000  # studies (or patients) written per COPY round
GENERATED = {
    "Patient": "patients",
    "Study": "studies",
    "Radiograph": "radiographs",
    "Prediction": "predictions",
    "Review": "reviews",
}
THRESHOLD = 0.5
# The two operating points that draw the bands (Fracture / Doubt / No fracture).
SENSITIVE, SPECIFIC = 0.3, 0.7


def _band(probability: float) -> str:
    if probability >= SPECIFIC:
        return Band.FRACTURE
    return Band.DOUBT if probability >= SENSITIVE else Band.NO_FRACTURE


# Share of studies in each state: most work is done, a backlog waits, a little is in flight, failed, or
# declined by the guardrails (outside the model's intended use).
STATE_WEIGHTS = {
    Study.State.REVIEWED: 0.68,
    Study.State.AWAITING_REVIEW: 0.22,
    Study.State.PROCESSING: 0.05,
    Study.State.FAILED: 0.03,
    Study.State.NOT_ANALYSED: 0.02,
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
        with transaction.atomic():
            counts = generator.run(
                studies=studies, per_study=per_study, reviewers=_reviewers(options["reviewers"], prefix)
            )
            # The rows went around the services: the audit dashboard's tallies are counted afresh.
            tallies_rebuild()
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
        writer = BulkWriter()

        # Patients: about two studies for every three patients; the MRN says it is synthetic.
        patient_count = max(1, round(studies / 1.5))
        first_patient = writer.reserve(Patient, patient_count)
        for start in range(0, patient_count, CHUNK):
            writer.write(
                Patient,
                (
                    Patient(
                        id=first_patient + i,
                        mrn=f"{prefix}-{i:07d}",
                        name=f"Synthetic Patient {i:07d}",
                        date_of_birth=dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(90 * 365)),
                        sex=rng.choice(["F", "M", "M", "F", "U"]),
                        created_at=self.now - dt.timedelta(days=self.days),
                    )
                    for i in range(start, min(patient_count, start + CHUNK))
                ),
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
        for start in range(0, studies, CHUNK):
            self._chunk(
                writer,
                plans=plans[start : start + CHUNK],
                number=start,
                per_study=per_study,
                patients=(first_patient, patient_count),
                reviewers=reviewers,
                images=images,
                heatmap=heatmap,
            )
        return {plural: writer.written.get(name, 0) for name, plural in GENERATED.items()}

    def _chunk(
        self,
        writer: BulkWriter,
        *,
        plans: list[tuple[dt.datetime, str]],
        number: int,
        per_study: int,
        patients: tuple[int, int],
        reviewers: list[Any],
        images: list[tuple[str, str, int, int, int]],
        heatmap: str,
    ) -> None:
        """Write the studies of ``plans`` with their radiographs, predictions and reviews, and give each
        radiograph its current prediction and each study the triage summary the services would keep."""
        rng = self.rng
        regions, region_weights = zip(*REGION_WEIGHTS.items(), strict=True)
        study_id = writer.reserve(Study, len(plans))
        radiograph_id = writer.reserve(Radiograph, len(plans) * per_study)
        # At most two predictions per predicted radiograph (one re-read by a newer model).
        prediction_id = writer.reserve(Prediction, 2 * len(plans) * per_study)
        study_rows: list[Study] = []
        radiographs: list[Radiograph] = []
        predictions: list[Prediction] = []
        reviews: list[Review] = []
        refusals: list[GuardrailRefusal] = []
        for offset, (created, state) in enumerate(plans):
            i = number + offset
            study = Study(
                id=study_id + offset,
                patient_id=patients[0] + rng.randrange(patients[1]),
                accession_number=f"{self.prefix}-{i:08d}",
                body_region=rng.choices(regions, region_weights)[0],
                clinical_notes=rng.choice(["", "", "Fall on outstretched hand.", "Pain after twisting."]),
                study_date=created.date(),
                uploaded_by_id=reviewers[i % len(reviewers)].pk,
                created_at=created,
                state=state,
                radiograph_count=per_study,
                failed_count=per_study if state == Study.State.FAILED else 0,
            )
            study_rows.append(study)
            members = []
            for position, (name, sha, size, width, height) in enumerate(rng.sample(images, per_study)):
                if state == Study.State.PROCESSING:
                    status = Radiograph.Status.QUEUED if position else Radiograph.Status.RUNNING
                elif state == Study.State.FAILED:
                    status = Radiograph.Status.FAILED
                elif state == Study.State.NOT_ANALYSED:
                    status = Radiograph.Status.NOT_ANALYSED
                else:
                    status = Radiograph.Status.PREDICTED
                radiograph = Radiograph(
                    id=radiograph_id + len(radiographs),
                    study_id=study.pk,
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
                radiographs.append(radiograph)
                if status == Radiograph.Status.NOT_ANALYSED:
                    # The refusal that declined it, as the worker's guardrail path writes it.
                    refusals.append(
                        GuardrailRefusal(
                            radiograph_id=radiograph.pk,
                            model_version=self.versions[self._version_at(created)],
                            code=GuardrailRefusal.Code.BODY_REGION,
                            reason="The model was not validated on this body region.",
                            created_at=created + dt.timedelta(seconds=2),
                        )
                    )
                if status == Radiograph.Status.PREDICTED:
                    current = self._predictions(radiograph, predictions, prediction_id, heatmap)
                    radiograph.current_prediction_id = current.pk
                    radiograph.current_label, radiograph.current_band = current.label, current.band
                    members.append((radiograph, current))
            if members:
                # The summary studies_refresh_triage computes: the most suspicious current prediction.
                study.max_probability = max(p.probability for _, p in members)
                study.band = min((p.band for _, p in members), key=band_rank)
                study.verdict = study_verdict_of([p.label for _, p in members])
            if state == Study.State.REVIEWED:
                study.reviewed_at = self._reviews(members, reviews, created, rng.choice(reviewers))
        writer.write(Study, study_rows)
        writer.write(Radiograph, radiographs)
        writer.write(Prediction, predictions)
        _write_numbered(writer, GuardrailRefusal, refusals)
        _write_numbered(writer, Review, reviews)

    def _predictions(
        self, radiograph: Radiograph, predictions: list[Prediction], first_id: int, heatmap: str
    ) -> Prediction:
        """Store the radiograph's predictions (older models first); return the newest, its current one."""
        created = radiograph.created_at
        version = self._version_at(created)
        read_by = [version]
        if version < len(self.versions) - 1 and self.rng.random() < 0.1:
            read_by.append(len(self.versions) - 1)  # re-read when a newer model shipped
        for number, index in enumerate(read_by):
            probability = self._probability()
            predictions.append(
                Prediction(
                    id=first_id + len(predictions),
                    radiograph_id=radiograph.pk,
                    model_version=self.versions[index],
                    probability=probability,
                    label=Label.FRACTURED if probability >= THRESHOLD else Label.NOT_FRACTURED,
                    band=_band(probability),
                    threshold=THRESHOLD,
                    threshold_sensitive=SENSITIVE,
                    threshold_specific=SPECIFIC,
                    heatmap=heatmap,
                    inference_ms=round(self.rng.uniform(30, 60), 1),
                    created_at=created + dt.timedelta(seconds=2 + number * 86400),
                )
            )
        return predictions[-1]

    def _reviews(
        self,
        members: list[tuple[Radiograph, Prediction]],
        reviews: list[Review],
        created: dt.datetime,
        reviewer: Any,
    ) -> dt.datetime:
        """One reviewer reads the whole study, confirming or overriding each current prediction; returns
        when the last radiograph was reviewed (the study's reviewed_at)."""
        rng = self.rng
        reviewed = created + dt.timedelta(hours=rng.uniform(0.2, 48))
        times = []
        for radiograph, prediction in members:
            radiograph.has_review = True
            overridden = rng.random() < 0.12
            at = max(reviewed, prediction.created_at + dt.timedelta(minutes=5))
            times.append(at)
            reviews.append(
                Review(
                    radiograph_id=radiograph.pk,
                    prediction_id=prediction.pk,
                    reviewer_id=reviewer.pk,
                    decision=Review.Decision.OVERRIDE if overridden else Review.Decision.CONFIRM,
                    final_label=Label.opposite(prediction.label) if overridden else prediction.label,
                    reason_code=rng.choice(OVERRIDE_REASONS) if overridden else "",
                    created_at=at,
                )
            )
        return max(times)


def _write_numbered(writer: BulkWriter, model: type[Any], rows: list[Any]) -> None:
    """Write rows whose count is known only once the chunk is built: their ids reserved as one block."""
    if not rows:
        return
    first = writer.reserve(model, len(rows))
    for index, row in enumerate(rows):
        row.pk = first + index
    writer.write(model, rows)
