"""Small presentation helpers: the words of a verdict and of a study's outcome, verdict badges, compact ages,
percentages and interval text.

The selectors return data (a band, a probability, counts); the words a clinician reads are made here, for
the templates and, through the review page's presenter (radiology.presenters.review), for its script.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django import template
from django.utils import timezone

from radiology.models import Band, Label
from radiology.selectors import Proportion, StudyOutcome, StudyVerdict, Verdict

register = template.Library()


@register.filter
def band_name(band: str) -> str:
    """ "Fracture", "Doubt", "No fracture" """
    return str(Band(band).label) if band in Band.values else ""


def percent_digits(probability: float, thresholds: Iterable[float | None] = ()) -> int:
    """Decimals a probability needs to read on the same side of each band threshold as it lies: whole
    percent unless rounding would put it on or across one (0.065 is "7 %", yet below a 0.0696 threshold
    that reads "7 %" too: it then reads "6.5 %")."""

    def same_side(threshold: float, digits: int) -> bool:
        shown, limit = round(probability * 100, digits), round(threshold * 100, digits)
        return (probability < threshold) == (shown < limit)

    points = [t for t in thresholds if t is not None]
    return next((d for d in (0, 1, 2) if all(same_side(t, d) for t in points)), 3)


@register.filter
def probability_percent(probability: float | None, thresholds: Iterable[float | None] = ()) -> str:
    """The calibrated probability as a reader says it: "93 %", "<1 %", ">99 %"; with a decimal or more
    where whole percent would blur it into one of ``thresholds`` (see percent_digits)."""
    if probability is None:
        return "—"
    value = probability * 100
    digits = percent_digits(probability, thresholds)
    if digits == 0 and 0 < value < 1:
        return "<1 %"
    if digits == 0 and 99 < value < 100:
        return ">99 %"
    return percent(probability, digits)


def band_thresholds(verdict: Any) -> tuple[float | None, float | None]:
    """The two operating points a verdict, a study's verdict or a prediction was banded with."""
    top = getattr(verdict, "top", verdict)
    return getattr(top, "threshold_sensitive", None), getattr(top, "threshold_specific", None)


@register.filter
def verdict_percent(verdict: Any) -> str:
    """A verdict's (or a prediction's) probability, never reading across its own band thresholds."""
    return probability_percent(getattr(verdict, "probability", None), band_thresholds(verdict))


def threshold_percents(verdict: Any) -> tuple[str, str] | None:
    """The band thresholds as the probability beside them is written (the same decimals), or None."""
    sensitive, specific = band_thresholds(verdict)
    probability = getattr(verdict, "probability", None)
    if sensitive is None or specific is None or probability is None:
        return None
    digits = percent_digits(probability, (sensitive, specific))
    return percent(sensitive, digits), percent(specific, digits)


@register.filter
def verdict_text(verdict: Verdict | StudyVerdict | None) -> str:
    """ "Fracture · 93 %", "Doubt · 28 %": the band and the number, never "likely" below 50 %."""
    if verdict is None:
        return ""
    return f"{band_name(verdict.band)} · {verdict_percent(verdict)}"


@register.filter
def band_breakdown(verdict: Verdict | StudyVerdict | None) -> str:
    """A study's images per band: "1 Fracture · 1 Doubt · 3 No fracture" ("" for one image's verdict)."""
    counts = getattr(verdict, "counts", ())
    return " · ".join(f"{count} {band_name(band)}" for band, count in counts)


@register.filter
def outcome_text(outcome: StudyOutcome | None) -> str:
    """ "Fractured: 2 of 5 images fractured · 1 override", "Not fractured: 0 of 5 … · all confirmed" """
    if outcome is None:
        return ""
    plural = "s" if outcome.reviewed_images != 1 else ""
    images = f"{outcome.fractured_images} of {outcome.reviewed_images} image{plural} fractured"
    if outcome.reviewed_images < outcome.total_images:
        images += f" ({outcome.total_images - outcome.reviewed_images} not reviewed yet)"
    if outcome.overrides:
        changes = f"{outcome.overrides} override{'s' if outcome.overrides != 1 else ''}"
    else:
        changes = "all confirmed"
    return f"{Label(outcome.final_label).label}: {images} · {changes}"


@register.inclusion_tag("radiology/includes/verdict_badge.html")
def verdict_badge(verdict: Verdict | None, size: str = "") -> dict[str, Any]:
    return {"verdict": verdict, "size": size}


@register.filter
def age(value: dt.datetime | None) -> str:
    """How long ago, in the one unit a busy reader needs: "45 min", "3 h", "2 d"."""
    if value is None:
        return ""
    seconds = max(0, int((timezone.now() - value).total_seconds()))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


@register.filter
def ago(value: dt.datetime | None) -> str:
    """``age`` as a phrase: "45 min ago", but "just now" (never "just now ago")."""
    elapsed = age(value)
    return elapsed if elapsed in ("", "just now") else f"{elapsed} ago"


@register.filter
def years_old(born: dt.date | None) -> str:
    """Age in whole years today ("47 y"); months under two ("18 mo")."""
    if born is None:
        return ""
    today = timezone.localdate()
    months = (today.year - born.year) * 12 + today.month - born.month - (today.day < born.day)
    if months < 0:
        return ""
    return f"{months} mo" if months < 24 else f"{months // 12} y"


@register.filter
def percent(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.{int(digits)}f} %"


@register.filter
def proportion_interval(proportion: Proportion) -> str:
    interval = proportion.interval
    if interval is None:
        return ""
    low, high = interval
    return f"95 % CI {low * 100:.0f}–{high * 100:.0f} %"


@register.filter
def shade(count: int, total: int) -> str:
    """A CSS class from 0 to 5 for a count's share of a total (no inline styles under our CSP)."""
    if not total or not count:
        return "shade-0"
    return f"shade-{min(5, 1 + int(5 * count / total))}"
