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
    threshold_percents,
    verdict_percent,
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


def _banded(band: str, probability: float) -> Verdict:
    """Banded by lite0-det-v2.4's two operating points (sensitive 0.0696, specific 0.5829)."""
    return Verdict(band=band, label="fractured", probability=probability, threshold=0.0696, model_version="v2",
                   threshold_sensitive=0.06957, threshold_specific=0.58287)  # fmt: skip


def test_a_probability_next_to_a_threshold_reads_on_its_own_side_of_it() -> None:
    # Whole percent would write 0.06507 (No fracture, a fixture's probability) as "7 %", the sensitive
    # threshold's own "7 %" ("No fracture below 7 %"): it reads "6.5 %", the thresholds "7.0 %" and "58.3 %".
    assert verdict_text(_banded("no_fracture", 0.06507)) == "No fracture · 6.5 %"
    assert threshold_percents(_banded("no_fracture", 0.06507)) == ("7.0 %", "58.3 %")
    # At or above a threshold "7 %" reads right already: 7 is not below 7.
    assert verdict_text(_banded("doubt", 0.0698)) == "Doubt · 7 %"
    assert verdict_text(_banded("fracture", 0.5831)) == "Fracture · 58 %"
    # Just under the specific threshold it takes two decimals to stay under it.
    assert verdict_text(_banded("doubt", 0.5826)) == "Doubt · 58.26 %"
    assert threshold_percents(_banded("doubt", 0.5826)) == ("6.96 %", "58.29 %")
    # Away from both, whole percent as before, and the thresholds as whole percent beside it.
    assert verdict_text(_banded("doubt", 0.28)) == "Doubt · 28 %"
    assert verdict_text(_banded("no_fracture", 0.004)) == "No fracture · <1 %"
    assert threshold_percents(_banded("doubt", 0.28)) == ("7 %", "58 %")
    assert verdict_text(_banded("no_fracture", 0.061)) == "No fracture · 6 %"
    # A study's verdict reads its top image's thresholds; a verdict without thresholds stays whole.
    study = StudyVerdict(top=_banded("no_fracture", 0.06507), counts=(("no_fracture", 1),), images=1)
    assert verdict_percent(study) == "6.5 %"
    assert threshold_percents(_verdict("no_fracture", 0.06507)) is None
    assert verdict_percent(_verdict("no_fracture", 0.06507)) == "7 %"
    assert probability_percent(0.06507, (0.06957, None)) == "6.5 %"


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
