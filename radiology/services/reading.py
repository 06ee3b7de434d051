"""The reading workflow around reviews: blinded first reads, the reader's preference, the second reader's
adjudication, and the "being read by" marker on a study."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from radiology.models import (
    Adjudication,
    AuditEvent,
    Band,
    Label,
    Prediction,
    Radiograph,
    ReaderProfile,
    Review,
    SiteSettings,
    Study,
    UnaidedRead,
)
from radiology.services.audit import audit_record
from radiology.services.errors import ServiceError
from radiology.services.tallies import standing_reviews_change

# --- Blinded reading --------------------------------------------------------------------------------------


def site_settings_get() -> SiteSettings:
    """The site's settings; the first call creates them from the environment's initial values."""
    site, _ = SiteSettings.objects.get_or_create(
        pk=SiteSettings.SINGLETON_PK,
        defaults={"blinded_read_default": bool(settings.BLINDED_READ_DEFAULT)},
    )
    return site


def site_blinded_default_update(*, actor: Any, blinded: bool, client_ip: str | None = None) -> SiteSettings:
    """An administrator chooses whether readers who never chose read blinded (audited: who, old, new)."""
    site_settings_get()
    with transaction.atomic():
        site = SiteSettings.objects.select_for_update().get(pk=SiteSettings.SINGLETON_PK)
        before = site.blinded_read_default
        site.blinded_read_default = bool(blinded)
        site.updated_by = actor
        site.save(update_fields=["blinded_read_default", "updated_by", "updated_at"])
        audit_record(
            action=AuditEvent.Action.SITE_SETTING,
            actor=actor,
            target=site,
            details={"setting": "blinded_read_default", "before": before, "after": site.blinded_read_default},
            client_ip=client_ip,
        )
    return site


def reader_blinding(user: Any) -> tuple[bool, str]:
    """Whether the reader reads blinded, and whose choice that is: "reader" (their own) or "site" (the
    default an administrator chose, SiteSettings)."""
    choice = ReaderProfile.objects.filter(user=user).values_list("blinded", flat=True).first()
    if choice is None:
        return site_settings_get().blinded_read_default, "site"
    return bool(choice), "reader"


def reader_is_blinded(user: Any) -> bool:
    """The reader's own choice, else the site default an administrator chose."""
    return reader_blinding(user)[0]


def reader_setting_update(*, user: Any, blinded: bool | None, client_ip: str | None = None) -> ReaderProfile:
    """Set (or, with None, clear back to the site default) the reader's blinded-reading preference."""
    with transaction.atomic():
        profile, _ = ReaderProfile.objects.select_for_update().get_or_create(user=user)
        before = profile.blinded
        profile.blinded = blinded
        profile.save(update_fields=["blinded"])
        audit_record(
            action=AuditEvent.Action.READER_SETTING,
            actor=user,
            target=profile,
            details={"blinded": blinded, "before": before},
            client_ip=client_ip,
        )
    return profile


def unaided_read_record(
    *, radiograph_ids: Sequence[int], reader: Any, label: str, client_ip: str | None = None
) -> list[UnaidedRead]:
    """The reader's own call on each image, made before the model's answer is shown to them.

    For a whole study pass all its images. Refused (nothing recorded) for an image the reader has already
    reviewed (they have seen the model) or already called: an unaided call is never changed.
    """
    if label not in Label.values:
        raise ServiceError("invalid_label", "Choose fractured or not fractured.", field="label")
    ids = sorted(set(radiograph_ids))
    if not ids:
        raise ServiceError("no_radiographs", "Choose at least one image.", field="radiographs")
    with transaction.atomic():
        radiographs = list(Radiograph.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
        if len(radiographs) != len(ids):
            raise ServiceError("not_found", "No such radiograph.")
        if any(r.status != Radiograph.Status.PREDICTED for r in radiographs):
            raise ServiceError("not_ready", "An image has no prediction to read against yet.")
        if Review.objects.filter(radiograph__in=radiographs, reviewer=reader).exists():
            raise ServiceError(
                "already_seen",
                "You have already reviewed this image with the model's answer; an unaided call is no "
                "longer possible.",
            )
        if UnaidedRead.objects.filter(radiograph__in=radiographs, reader=reader).exists():
            raise ServiceError("already_recorded", "Your unaided call on this image is already recorded.")
        try:
            with transaction.atomic():
                reads = UnaidedRead.objects.bulk_create(
                    [UnaidedRead(radiograph=r, reader=reader, label=label) for r in radiographs]
                )
        except IntegrityError:
            raise ServiceError(
                "already_recorded", "Your unaided call on this image is already recorded."
            ) from None
        audit_record(
            action=AuditEvent.Action.UNAIDED_READ,
            actor=reader,
            target=radiographs[0].study,
            details={"radiographs": ids, "label": label},
            client_ip=client_ip,
        )
    return reads


# --- Second reader ----------------------------------------------------------------------------------------


def adjudication_trigger(*, review: Review, prediction: Prediction) -> str | None:
    """Why this review needs a second reader, or None.

    A final call against a *confident* band (Fracture vs No fracture; Doubt is not confident), or a
    final call that differs from the reader's own unaided one.
    """
    confident_labels: dict[str, str] = {Band.FRACTURE: Label.FRACTURED, Band.NO_FRACTURE: Label.NOT_FRACTURED}
    confident = confident_labels.get(prediction.band)
    if confident is not None and review.final_label != confident:
        return Adjudication.Trigger.MODEL_DISAGREES
    if review.unaided_label and review.unaided_label != review.final_label:
        return Adjudication.Trigger.READER_CHANGED
    return None


def adjudication_open_if_needed(*, review: Review, prediction: Prediction) -> Adjudication | None:
    """Open an adjudication for the review's radiograph when the review calls for one and none is open."""
    trigger = adjudication_trigger(review=review, prediction=prediction)
    if trigger is None:
        return None
    if Adjudication.objects.filter(
        radiograph_id=review.radiograph_id, state=Adjudication.State.OPEN
    ).exists():
        return None
    adjudication = Adjudication.objects.create(
        radiograph_id=review.radiograph_id, review=review, trigger=trigger
    )
    audit_record(
        action=AuditEvent.Action.ADJUDICATION_OPENED,
        actor=review.reviewer,
        target=adjudication,
        details={
            "radiograph": review.radiograph_id,
            "review": review.pk,
            "trigger": trigger,
            "model_band": prediction.band,
            "unaided_label": review.unaided_label,
            "final_label": review.final_label,
        },
    )
    return adjudication


def adjudication_decide(
    *, adjudication_id: int, adjudicator: Any, label: str, notes: str = "", client_ip: str | None = None
) -> Adjudication:
    """The second reader's label, locked once recorded: it becomes the reference standard.

    The clinicians who reviewed the image cannot adjudicate it: the point is a second pair of eyes.
    """
    if label not in Label.values:
        raise ServiceError("invalid_label", "Choose fractured or not fractured.", field="label")
    with transaction.atomic():
        adjudication = Adjudication.objects.select_for_update().get(pk=adjudication_id)
        if adjudication.state != Adjudication.State.OPEN:
            raise ServiceError("already_adjudicated", "This case has been adjudicated; its label is locked.")
        if Review.objects.filter(radiograph_id=adjudication.radiograph_id, reviewer=adjudicator).exists():
            raise ServiceError(
                "own_case",
                "You reviewed this image yourself; a different clinician must adjudicate it.",
            )
        # The label becomes the reference for the standing reviews of the radiograph's predictions.
        reviewed = Review.objects.filter(radiograph_id=adjudication.radiograph_id).values_list(
            "prediction_id", flat=True
        )
        with standing_reviews_change(reviewed):
            adjudication.state = Adjudication.State.DECIDED
            adjudication.adjudicator = adjudicator
            adjudication.label = label
            adjudication.notes = notes.strip()
            adjudication.decided_at = timezone.now()
            adjudication.save(update_fields=["state", "adjudicator", "label", "notes", "decided_at"])
            audit_record(
                action=AuditEvent.Action.ADJUDICATION_DECIDED,
                actor=adjudicator,
                target=adjudication,
                details={
                    "radiograph": adjudication.radiograph_id,
                    "review": adjudication.review_id,
                    "trigger": adjudication.trigger,
                    "label": label,
                },
                client_ip=client_ip,
            )
    return adjudication


# --- "Being read by" --------------------------------------------------------------------------------------


def study_mark_reading(*, study_id: int, reader: Any, now: dt.datetime | None = None) -> bool:
    """Mark the study as being read by `reader` for READING_MARKER_SECONDS, unless a colleague's marker
    still holds. One conditional UPDATE; True when the marker is now the reader's."""
    now = now or timezone.now()
    until = now + dt.timedelta(seconds=settings.READING_MARKER_SECONDS)
    free = Q(reading_by__isnull=True) | Q(reading_until__lt=now) | Q(reading_by=reader)
    return Study.objects.filter(free, pk=study_id).update(reading_by=reader, reading_until=until) == 1


def study_release_reading(*, study_id: int, reader: Any) -> None:
    """The reader left the study: clear their marker (a colleague's is left alone)."""
    Study.objects.filter(pk=study_id, reading_by=reader).update(reading_by=None, reading_until=None)
