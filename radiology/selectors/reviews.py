"""What the model and the clinicians concluded for a radiograph or a study."""

from __future__ import annotations

from dataclasses import dataclass

from radiology.models import Label, Prediction, Review, Study
from radiology.selectors.radiographs import radiograph_current_prediction, radiograph_latest_review


@dataclass(frozen=True)
class Verdict:
    """The model's answer for a radiograph or a study, as a clinician reads it ("Fracture likely — 0.93")."""

    label: str
    probability: float
    threshold: float
    model_version: str

    @property
    def fracture_likely(self) -> bool:
        return self.label == Label.FRACTURED

    @property
    def headline(self) -> str:
        return "Fracture likely" if self.fracture_likely else "Fracture unlikely"

    @property
    def text(self) -> str:
        return f"{self.headline} — {self.probability:.2f}"

    @classmethod
    def of(cls, prediction: Prediction) -> Verdict:
        return cls(prediction.label, prediction.probability, prediction.threshold, prediction.model_version)


def study_verdict(study: Study) -> Verdict | None:
    """The study's most suspicious current prediction (uses study_queue_with_results' or study_get's
    prefetch)."""
    predictions = [p for r in study.radiographs.all() if (p := radiograph_current_prediction(r)) is not None]
    if not predictions:
        return None
    return Verdict.of(max(predictions, key=lambda p: p.probability))


@dataclass(frozen=True)
class StudyOutcome:
    """What the clinicians decided for a study: its final label and whether anyone overrode the model."""

    final_label: str
    overridden: bool
    reviewers: tuple[str, ...]

    @property
    def final_label_display(self) -> str:
        return Label(self.final_label).label


def study_outcome(study: Study) -> StudyOutcome | None:
    """Fractured if any radiograph's standing review says so; None until a radiograph has been reviewed."""
    reviews = [r for g in study.radiographs.all() if (r := radiograph_latest_review(g)) is not None]
    if not reviews:
        return None
    fractured = any(r.final_label == Label.FRACTURED for r in reviews)
    return StudyOutcome(
        final_label=Label.FRACTURED if fractured else Label.NOT_FRACTURED,
        overridden=any(r.decision == Review.Decision.OVERRIDE for r in reviews),
        reviewers=tuple(sorted({r.reviewer.get_username() for r in reviews})),
    )
