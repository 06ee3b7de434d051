"""Small presentation helpers: verdict badges, compact ages, percentages and interval text."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.utils import timezone

from radiology.selectors import Proportion, Verdict

register = template.Library()


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
