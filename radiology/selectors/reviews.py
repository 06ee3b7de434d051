"""What the model and the clinicians concluded for a radiograph or a study."""

from __future__ import annotations

from dataclasses import dataclass

from radiology.models import BAND_ORDER, Band, Label, Prediction, Review, Study, band_rank
from radiology.selectors.radiographs import radiograph_current_prediction, radiograph_latest_review


@dataclass(frozen=True)
class Verdict:
    """The model's answer for a radiograph: its band (from the model card's two operating points) and the
    calibrated probability. The words a clinician reads ("Fracture · 93 %") are the template filters'
    (radiology.templatetags.radiology_ui.verdict_text), never more than the number says."""

    band: str
    label: str
    probability: float
    threshold: float
    model_version: str
    threshold_sensitive: float | None = None
    threshold_specific: float | None = None

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
    counts: tuple[tuple[str, int], ...]  # (band, count) for bands with at least one image, most severe first
    images: int

    @property
    def band(self) -> str:
        return self.top.band

    @property
    def probability(self) -> float:
        return self.top.probability

    @property
    def fracture_likely(self) -> bool:
        return self.top.fracture_likely

    @property
    def model_version(self) -> str:
        return self.top.model_version


def study_verdict(study: Study) -> StudyVerdict | None:
    """The study's highest band (the most suspicious image within it) and the count per band (uses
    study_queue_with_results' or study_get's prefetch)."""
    predictions = [p for r in study.radiographs.all() if (p := radiograph_current_prediction(r)) is not None]
    if not predictions:
        return None
    top = min(predictions, key=lambda p: (band_rank(p.band), -p.probability))
    counts = tuple((band, n) for band in BAND_ORDER if (n := sum(p.band == band for p in predictions)))
    return StudyVerdict(top=Verdict.of(top), counts=counts, images=len(predictions))


@dataclass(frozen=True)
class StudyOutcome:
    """What the clinicians decided for a study, without ambiguity: the study is fractured when any image's
    standing review says so, with how many images were reviewed, fractured and overridden (the words are
    the outcome_text template filter's)."""

    final_label: str
    fractured_images: int
    reviewed_images: int
    total_images: int
    overrides: int
    reviewers: tuple[str, ...]

    @property
    def overridden(self) -> bool:
        return self.overrides > 0


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
