"""What the model and the clinicians concluded for a radiograph or a study."""

from __future__ import annotations

from dataclasses import dataclass

from radiology.models import BAND_ORDER, Band, Label, Prediction, Review, Study, band_rank
from radiology.selectors.radiographs import radiograph_current_prediction, radiograph_latest_review


@dataclass(frozen=True)
class Verdict:
    """The model's answer for a radiograph, as a clinician reads it: its band and the calibrated
    probability ("Fracture · 93 %", "Doubt · 28 %", "No fracture · 4 %").

    The band comes from the model card's two operating points; the words never say more than the
    number does (no "likely" for a 28 % probability).
    """

    band: str
    label: str
    probability: float
    threshold: float
    model_version: str
    threshold_sensitive: float | None = None
    threshold_specific: float | None = None

    @property
    def headline(self) -> str:
        return Band(self.band).label

    @property
    def percent(self) -> str:
        value = self.probability * 100
        if 0 < value < 1:
            return "<1 %"
        if 99 < value < 100:
            return ">99 %"
        return f"{value:.0f} %"

    @property
    def text(self) -> str:
        return f"{self.headline} · {self.percent}"

    @property
    def fracture_likely(self) -> bool:
        """The band says Fracture (kept for templates that colour by it)."""
        return self.band == Band.FRACTURE

    @classmethod
    def of(cls, prediction: Prediction) -> Verdict:
        return cls(
            band=prediction.band,
            label=prediction.label,
            probability=prediction.probability,
            threshold=prediction.threshold,
            model_version=prediction.model_version,
            threshold_sensitive=prediction.threshold_sensitive,
            threshold_specific=prediction.threshold_specific,
        )


@dataclass(frozen=True)
class StudyVerdict:
    """A study's model summary: the highest band among its images and how many images fall in each band."""

    top: Verdict
    counts: tuple[tuple[str, str, int], ...]  # (band, label, count) for bands with at least one image
    images: int

    @property
    def band(self) -> str:
        return self.top.band

    @property
    def headline(self) -> str:
        return self.top.headline

    @property
    def text(self) -> str:
        return self.top.text

    @property
    def percent(self) -> str:
        return self.top.percent

    @property
    def probability(self) -> float:
        return self.top.probability

    @property
    def fracture_likely(self) -> bool:
        return self.top.fracture_likely

    @property
    def model_version(self) -> str:
        return self.top.model_version

    @property
    def breakdown(self) -> str:
        """ "1 Fracture · 1 Doubt · 3 No fracture" """
        return " · ".join(f"{count} {label}" for _, label, count in self.counts)


def study_verdict(study: Study) -> StudyVerdict | None:
    """The study's highest band (the most suspicious image within it) and the count per band (uses
    study_queue_with_results' or study_get's prefetch)."""
    predictions = [p for r in study.radiographs.all() if (p := radiograph_current_prediction(r)) is not None]
    if not predictions:
        return None
    top = min(predictions, key=lambda p: (band_rank(p.band), -p.probability))
    counts = tuple(
        (band, Band(band).label, n)
        for band in BAND_ORDER
        if (n := sum(p.band == band for p in predictions))
    )
    return StudyVerdict(top=Verdict.of(top), counts=counts, images=len(predictions))


@dataclass(frozen=True)
class StudyOutcome:
    """What the clinicians decided for a study, without ambiguity: the study is fractured when any image's
    standing review says so, and the summary says how many images, and how many were overridden."""

    final_label: str
    fractured_images: int
    reviewed_images: int
    total_images: int
    overrides: int
    reviewers: tuple[str, ...]

    @property
    def overridden(self) -> bool:
        return self.overrides > 0

    @property
    def final_label_display(self) -> str:
        return Label(self.final_label).label

    @property
    def text(self) -> str:
        """ "Fractured: 2 of 5 images fractured · 1 override", "Not fractured: 0 of 5 … · all confirmed" """
        plural = "s" if self.reviewed_images != 1 else ""
        images = f"{self.fractured_images} of {self.reviewed_images} image{plural} fractured"
        if self.reviewed_images < self.total_images:
            images += f" ({self.total_images - self.reviewed_images} not reviewed yet)"
        if self.overrides:
            changes = f"{self.overrides} override{'s' if self.overrides != 1 else ''}"
        else:
            changes = "all confirmed"
        return f"{self.final_label_display}: {images} · {changes}"


def study_outcome(study: Study) -> StudyOutcome | None:
    """Fractured if any radiograph's standing review says so; None until a radiograph has been reviewed."""
    radiographs = list(study.radiographs.all())
    reviews = [r for g in radiographs if (r := radiograph_latest_review(g)) is not None]
    if not reviews:
        return None
    fractured = sum(r.final_label == Label.FRACTURED for r in reviews)
    return StudyOutcome(
        final_label=Label.FRACTURED if fractured else Label.NOT_FRACTURED,
        fractured_images=fractured,
        reviewed_images=len(reviews),
        total_images=len(radiographs),
        overrides=sum(r.decision == Review.Decision.OVERRIDE for r in reviews),
        reviewers=tuple(sorted({r.reviewer.get_username() for r in reviews})),
    )
