"""Reads for the reading workflow: acquisition order, the reader's unaided calls, adjudications, what the
model card says the viewer may show by default, and the dashboard's reader / model / final figures."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet, Sum
from django.utils import timezone

from radiology.models import (
    Adjudication,
    Label,
    Radiograph,
    ReaderProfile,
    Review,
    ReviewTally,
    Study,
    UnaidedRead,
)
from radiology.selectors.audit import Proportion
from radiology.selectors.scoping import require_admin, require_clinical


def acquisition_key(radiograph: Radiograph) -> tuple[int, int, int, int]:
    """Acquisition order: DICOM SeriesNumber and InstanceNumber when the file has them, then upload order."""
    attributes = radiograph.dicom_attributes or {}

    def number(keyword: str) -> int | None:
        try:
            return int(str(attributes.get(keyword, "")).strip())
        except ValueError:
            return None

    instance = number("InstanceNumber")
    if instance is None:
        return (1, 0, radiograph.position, radiograph.pk)
    return (0, number("SeriesNumber") or 0, instance, radiograph.position)


def in_acquisition_order(radiographs: Iterable[Radiograph]) -> list[Radiograph]:
    return sorted(radiographs, key=acquisition_key)


def unaided_reads_of(*, reader: Any, radiograph_ids: Sequence[int]) -> dict[int, str]:
    """The reader's own unaided calls on these radiographs: {radiograph id: label}."""
    rows = UnaidedRead.objects.filter(reader=reader, radiograph_id__in=radiograph_ids)
    return dict(rows.values_list("radiograph_id", "label"))


def adjudications_of(*, radiograph_ids: Sequence[int]) -> dict[int, Adjudication]:
    """Each radiograph's latest adjudication (open or decided)."""
    latest: dict[int, Adjudication] = {}
    rows = Adjudication.objects.filter(radiograph_id__in=radiograph_ids).select_related("adjudicator")
    for adjudication in rows.order_by("created_at", "pk"):
        latest[adjudication.radiograph_id] = adjudication
    return latest


def readers_with_own_blinded_choice() -> int:
    """How many readers chose blinded reading on or off themselves (the site default does not reach them)."""
    return ReaderProfile.objects.filter(blinded__isnull=False).count()


def study_reading_marker(*, study: Study, user: Any, now: dt.datetime | None = None) -> str | None:
    """The colleague reading the study now (their username), or None when nobody else is."""
    now = now or timezone.now()
    if study.reading_by_id is None or study.reading_by_id == user.pk:
        return None
    if study.reading_until is None or study.reading_until < now:
        return None
    return str(study.reading_by.get_username()) if study.reading_by else None


# --- What the model card lets the viewer show ---------------------------------------------------------


@dataclass(frozen=True)
class DisplayPolicy:
    """From the model's card: boxes on by default only when its localisation is validated; the heatmap
    offered only when the card validates it."""

    boxes_validated: bool = False
    boxes_caption: str = ""
    heatmap_validated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "boxes_default": self.boxes_validated,
            "boxes_caption": self.boxes_caption,
            "heatmap_validated": self.heatmap_validated,
        }


def _policy_from_card(card: dict[str, Any]) -> DisplayPolicy:
    boxes: dict[str, Any] = card["boxes"] if isinstance(card.get("boxes"), dict) else {}
    heatmap: dict[str, Any] = card["heatmap"] if isinstance(card.get("heatmap"), dict) else {}
    return DisplayPolicy(
        boxes_validated=bool(boxes.get("validated", False)),
        boxes_caption=str(boxes.get("validation", "")),
        heatmap_validated=bool(heatmap.get("validated", False)),
    )


def display_policies(versions: Iterable[str]) -> dict[str, DisplayPolicy]:
    """Per model version, what its card lets the viewer show: the governance registry's copy of the card,
    else the configured model's card when it is that version; an unknown card validates nothing."""
    wanted = {v for v in versions if v}
    policies: dict[str, DisplayPolicy] = {}
    if not wanted:
        return policies
    from radiology.governance.models import ModelVersion

    for version, card in ModelVersion.objects.filter(version__in=wanted).values_list("version", "card"):
        if isinstance(card, dict):
            policies[version] = _policy_from_card(card)
    missing = wanted - set(policies)
    if missing:
        card = _configured_card()
        if card is not None and str(card.get("version")) in missing:
            policies[str(card["version"])] = _policy_from_card(card)
    return {v: policies.get(v, DisplayPolicy()) for v in wanted}


def _configured_card() -> dict[str, Any] | None:
    from radiology.model_artifact import configured_model_path

    path = configured_model_path()
    card_file = path / "card.json" if path.is_dir() else path.with_name("card.json")
    try:
        card = json.loads(card_file.read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


# --- Adjudication queue ---------------------------------------------------------------------------------


def adjudication_queue(*, user: Any) -> QuerySet[Adjudication]:
    """Open adjudications, oldest first, with what the queue shows."""
    adjudications = (
        Adjudication.objects.filter(state=Adjudication.State.OPEN)
        .select_related(
            "review__reviewer",
            "review__prediction",
            "radiograph__study__patient",
        )
        .order_by("created_at", "pk")
    )
    return require_clinical(user, adjudications)


def adjudication_get(*, user: Any, pk: int) -> Adjudication:
    return require_clinical(
        user, Adjudication.objects.select_related("review__reviewer", "radiograph__study")
    ).get(pk=pk)


def adjudication_reviewers(*, radiograph_ids: Sequence[int]) -> dict[int, set[int]]:
    """Who reviewed each radiograph (they may not adjudicate it)."""
    reviewers: dict[int, set[int]] = {}
    for radiograph_id, reviewer_id in Review.objects.filter(radiograph_id__in=radiograph_ids).values_list(
        "radiograph_id", "reviewer_id"
    ):
        reviewers.setdefault(radiograph_id, set()).add(reviewer_id)
    return reviewers


# --- The dashboard's reader / model / final figures ------------------------------------------------------


@dataclass
class ReadingAudit:
    """Per model version, against the reference standard (the adjudicated label where there is one, else
    the standing final call): the unaided reader, the model and the final call, and how often the model
    changed the reader's mind, for the better and for the worse (blinded reads only)."""

    model_version: str
    reviewed: int = 0
    adjudicated: int = 0
    blinded: int = 0
    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: {
            who: {"tp": 0, "fn": 0, "tn": 0, "fp": 0} for who in ("unaided", "model", "final")
        }
    )
    changed: int = 0
    changed_better: int = 0
    changed_worse: int = 0

    def _add(self, who: str, call: str, truth: str, n: int = 1) -> None:
        key = (
            ("tp" if call == Label.FRACTURED else "fn")
            if truth == Label.FRACTURED
            else ("fp" if call == Label.FRACTURED else "tn")
        )
        self.counts[who][key] += n

    def sensitivity(self, who: str) -> Proportion:
        c = self.counts[who]
        return Proportion(c["tp"], c["tp"] + c["fn"])

    def specificity(self, who: str) -> Proportion:
        c = self.counts[who]
        return Proportion(c["tn"], c["tn"] + c["fp"])

    @property
    def rows(self) -> list[tuple[str, str, Proportion, Proportion]]:
        names = {"unaided": "Reader, unaided", "model": "Model", "final": "Final call"}
        return [(who, names[who], self.sensitivity(who), self.specificity(who)) for who in names]


def audit_reading(
    *, user: Any, date_from: dt.date | None = None, date_to: dt.date | None = None
) -> list[ReadingAudit]:
    """Reader / model / final figures per model version (standing reviews, counted in the running totals
    radiology.tallies.ReviewTally: one query whatever the number of reviews)."""
    tallies: QuerySet[ReviewTally] = ReviewTally.objects.all()
    if date_from:
        tallies = tallies.filter(prediction_day__gte=date_from)
    if date_to:
        tallies = tallies.filter(prediction_day__lte=date_to)
    rows = (
        require_admin(user, tallies)
        .order_by()
        .values_list("model_version", "model_label", "final_label", "unaided_label", "reference_label")
        .annotate(n=Sum("reviews"))
    )
    audits: dict[str, ReadingAudit] = {}
    for version, model_label, final_label, unaided_label, reference_label, n in rows:
        if not n:
            continue
        audit = audits.setdefault(version, ReadingAudit(version))
        truth = reference_label or final_label
        audit.reviewed += n
        audit.adjudicated += n if reference_label else 0
        audit._add("model", model_label, truth, n)
        audit._add("final", final_label, truth, n)
        if unaided_label:
            audit.blinded += n
            audit._add("unaided", unaided_label, truth, n)
            if unaided_label != final_label:
                audit.changed += n
                if final_label == truth:
                    audit.changed_better += n
                elif unaided_label == truth:
                    audit.changed_worse += n
    return sorted(audits.values(), key=lambda a: a.model_version, reverse=True)
