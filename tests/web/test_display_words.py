"""The words a clinician reads are the template filters' (the selectors return data): band names, the
calibrated percentage (never "likely"), a study's breakdown per band and its outcome."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from radiology.selectors import StudyOutcome, StudyVerdict, Verdict
from radiology.templatetags.radiology_ui import (
    ago,
    band_breakdown,
    band_name,
    outcome_text,
    probability_percent,
    verdict_text,
)


def _verdict(band: str, probability: float) -> Verdict:
    return Verdict(band=band, label="fractured", probability=probability, threshold=0.5, model_version="v2")


def test_band_and_percentage() -> None:
    assert [band_name(b) for b in ("fracture", "doubt", "no_fracture", "")] == [
        "Fracture",
        "Doubt",
        "No fracture",
        "",
    ]
    assert [probability_percent(p) for p in (0.0, 0.004, 0.28, 0.995, 1.0, None)] == [
        "0 %",
        "<1 %",
        "28 %",
        ">99 %",
        "100 %",
        "—",
    ]
    assert verdict_text(_verdict("doubt", 0.28)) == "Doubt · 28 %"
    assert verdict_text(None) == ""


def test_a_studys_breakdown_and_outcome() -> None:
    study = StudyVerdict(
        top=_verdict("fracture", 0.93), counts=(("fracture", 1), ("no_fracture", 3)), images=4
    )
    assert verdict_text(study) == "Fracture · 93 %"
    assert band_breakdown(study) == "1 Fracture · 3 No fracture"
    assert band_breakdown(_verdict("fracture", 0.93)) == ""
    outcome = StudyOutcome(
        final_label="not_fractured",
        fractured_images=0,
        reviewed_images=4,
        total_images=5,
        overrides=1,
        reviewers=("dr.ada",),
    )
    assert outcome_text(outcome) == "Not fractured: 0 of 4 images fractured (1 not reviewed yet) · 1 override"
    assert outcome_text(None) == ""


def test_how_long_ago_reads_as_a_phrase() -> None:
    now = timezone.now()
    assert ago(now - dt.timedelta(seconds=20)) == "just now"  # not "just now ago"
    assert ago(now - dt.timedelta(minutes=45)) == "45 min ago"
    assert ago(now - dt.timedelta(hours=3)) == "3 h ago"
    assert ago(None) == ""
