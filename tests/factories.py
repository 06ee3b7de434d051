"""factory_boy factories for the clinical records (they bypass services: for arranging state in tests)."""

from __future__ import annotations

import hashlib
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from django.db import transaction

from radiology.models import AuditEvent, BodyRegion, Label, Patient, Prediction, Radiograph, Review, Study
from radiology.roles import ADMIN_GROUP, CLINICIAN_GROUP
from radiology.services.tallies import standing_reviews_change, tally_predictions
from radiology.services.triage import study_verdict_of


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True  # the hooks only add groups, which need no save

    username = factory.Sequence(lambda n: f"user{n}")
    # types-factory-boy 0.4 lacks django.Password (factory_boy 3.3's hashed-password declaration).
    password = factory.django.Password("correct-horse-battery")  # type: ignore[attr-defined]

    @factory.post_generation
    def groups(user: User, create: bool, extracted: list[str] | None, **kwargs: object) -> None:
        for name in extracted or []:
            user.groups.add(Group.objects.get_or_create(name=name)[0])


class ClinicianFactory(UserFactory):
    @factory.post_generation
    def clinician_role(user: User, create: bool, extracted: object, **kwargs: object) -> None:
        user.groups.add(Group.objects.get_or_create(name=CLINICIAN_GROUP)[0])


class AdminFactory(UserFactory):
    is_staff = True

    @factory.post_generation
    def admin_role(user: User, create: bool, extracted: object, **kwargs: object) -> None:
        user.groups.add(Group.objects.get_or_create(name=ADMIN_GROUP)[0])


class PatientFactory(factory.django.DjangoModelFactory[Patient]):
    class Meta:
        model = Patient

    mrn = factory.Sequence(lambda n: f"MRN{n:06d}")
    name: factory.Faker[Patient, str] = factory.Faker("name")


class StudyFactory(factory.django.DjangoModelFactory[Study]):
    class Meta:
        model = Study

    patient: factory.SubFactory[Study, Patient] = factory.SubFactory(PatientFactory)
    accession_number = factory.Sequence(lambda n: f"ACC{n:07d}")
    body_region = BodyRegion.WRIST
    uploaded_by: factory.SubFactory[Study, User] = factory.SubFactory(ClinicianFactory)
    radiograph_count = 1


class RadiographFactory(factory.django.DjangoModelFactory[Radiograph]):
    class Meta:
        model = Radiograph

    study: factory.SubFactory[Radiograph, Study] = factory.SubFactory(StudyFactory)
    original_filename = factory.Sequence(lambda n: f"image{n}.png")
    format = Radiograph.Format.PNG
    sha256 = factory.Sequence(lambda n: hashlib.sha256(str(n).encode()).hexdigest())
    byte_size = 100
    width = 224
    height = 224
    image = factory.LazyFunction(lambda: ContentFile(b"not-read-in-this-test", name="image.png"))


class PredictionFactory(factory.django.DjangoModelFactory[Prediction]):
    class Meta:
        model = Prediction
        skip_postgeneration_save = True

    radiograph: factory.SubFactory[Prediction, Radiograph] = factory.SubFactory(
        RadiographFactory, status=Radiograph.Status.PREDICTED
    )
    model_version = "test-model-1"
    probability = 0.9
    label = Label.FRACTURED
    threshold = 0.5
    # The band the fake predictor's operating points (0.3, 0.7) give the probability.
    band: factory.LazyAttribute[Prediction, str] = factory.LazyAttribute(
        lambda p: "fracture" if p.probability >= 0.7 else "doubt" if p.probability >= 0.3 else "no_fracture"
    )
    threshold_sensitive = 0.3
    threshold_specific = 0.7
    inference_ms = 12.0

    @factory.post_generation
    def current(obj: Prediction, create: bool, extracted: Any, **kwargs: Any) -> None:
        """The radiograph's newest prediction becomes its current one, as services.prediction_store_batch
        keeps it (a test may back-date created_at, so "newest" is by time, not by creation order)."""
        if not create:
            return
        newest = (
            Prediction.objects.filter(radiograph_id=obj.radiograph_id).order_by("-created_at", "-pk").first()
        )
        tally_predictions([obj])  # the audit dashboard's counts, as prediction_store_batch keeps them
        obj.radiograph.set_current_prediction(newest)
        obj.radiograph.save(update_fields=list(Radiograph.CURRENT_FIELDS))
        # The study's verdict follows its radiographs' current labels (as studies_refresh_triage keeps it).
        labels = list(
            Radiograph.objects.filter(study_id=obj.radiograph.study_id).values_list(
                "current_label", flat=True
            )
        )
        Study.objects.filter(pk=obj.radiograph.study_id).update(verdict=study_verdict_of(labels))


class ReviewFactory(factory.django.DjangoModelFactory[Review]):
    class Meta:
        model = Review

    prediction: factory.SubFactory[Review, Prediction] = factory.SubFactory(PredictionFactory)
    radiograph: factory.SelfAttribute[Review, Radiograph] = factory.SelfAttribute("prediction.radiograph")
    reviewer: factory.SubFactory[Review, User] = factory.SubFactory(ClinicianFactory)
    decision = Review.Decision.CONFIRM
    final_label: factory.SelfAttribute[Review, str] = factory.SelfAttribute("prediction.label")

    @classmethod
    def _create(cls, model_class: type[Review], *args: Any, **kwargs: Any) -> Review:
        # The audit dashboard's counts follow the prediction's standing review, as review_submit keeps them.
        with transaction.atomic(), standing_reviews_change([kwargs["prediction"].pk]):
            review = super()._create(model_class, *args, **kwargs)
            Radiograph.objects.filter(pk=review.radiograph_id).update(has_review=True)
            return review


class AuditEventFactory(factory.django.DjangoModelFactory[AuditEvent]):
    class Meta:
        model = AuditEvent

    action = AuditEvent.Action.STUDY_UPLOADED
    target_type = "study"
    target_id = "1"


def decline(
    radiograph: Radiograph,
    *,
    code: str = "out_of_distribution",
    reason: str = "This image is unlike the radiographs the model was trained on.",
    model_version: str = "test-model-1",
) -> None:
    """The worker's guardrail path: the radiograph (claimed, so RUNNING) is marked not analysed, with a
    reason, and its study's triage follows."""
    from radiology.governance.guardrails import Refusal
    from radiology.governance.services import radiograph_mark_not_analysed

    Radiograph.objects.filter(pk=radiograph.pk).update(status=Radiograph.Status.RUNNING)
    assert radiograph_mark_not_analysed(
        radiograph_id=radiograph.pk, model_version=model_version, refusal=Refusal(code, reason)
    )
