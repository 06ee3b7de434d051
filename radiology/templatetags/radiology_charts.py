"""Charts drawn on the server as SVG: no JavaScript chart library, nothing to load from elsewhere, and
they print. Geometry is computed here; the templates only place it. Colours come from CSS classes
(the Content-Security-Policy allows no inline style)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template

from radiology.selectors import AgreementPoint

register = template.Library()

MAX_SERIES_CLASSES = 4


@register.inclusion_tag("radiology/includes/agreement_chart.html")
def agreement_chart(points: list[AgreementPoint], width: int = 1120, height: int = 240) -> dict[str, Any]:
    """Agreement rate per day, one line per model version; each point's tooltip gives k of n."""
    left, right, top, bottom = 46, 16, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    days = sorted({p.day for p in points})
    if not days:
        return {"empty": True, "width": width, "height": height}
    first, last = days[0], days[-1]
    span = max(1, (last - first).days)

    def x(day: dt.date) -> float:
        if first == last:
            return left + plot_w / 2
        return left + plot_w * (day - first).days / span

    def y(rate: float) -> float:
        return top + plot_h * (1 - rate)

    versions: list[str] = []
    for point in points:
        if point.model_version not in versions:
            versions.append(point.model_version)
    series = []
    for index, version in enumerate(versions):
        mine = sorted((p for p in points if p.model_version == version), key=lambda p: p.day)
        dots = [
            {
                "x": round(x(p.day), 1),
                "y": round(y(p.rate), 1),
                "title": f"{version}, {p.day:%Y-%m-%d}: "
                f"{p.agreed} of {p.reviewed} agree ({p.rate * 100:.0f} %)",
            }
            for p in mine
        ]
        series.append(
            {
                "version": version,
                "css": f"series-{index % MAX_SERIES_CLASSES}",
                "points": " ".join(f"{d['x']},{d['y']}" for d in dots),
                "dots": dots,
                "reviewed": sum(p.reviewed for p in mine),
            }
        )
    ticks = [{"y": round(y(v / 100), 1), "label": f"{v} %"} for v in (0, 25, 50, 75, 100)]
    label_days = days if len(days) <= 7 else [days[round(i * (len(days) - 1) / 6)] for i in range(7)]
    x_labels = [{"x": round(x(d), 1), "label": f"{d:%d %b}"} for d in dict.fromkeys(label_days)]
    return {
        "empty": False,
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "top": top,
        "bottom": top + plot_h,
        "label_y": top + plot_h + 20,
        "ticks": ticks,
        "x_labels": x_labels,
        "series": series,
        "single_day": first == last,
    }


@register.inclusion_tag("radiology/includes/reason_bars.html")
def reason_bars(reasons: list[tuple[str, str, int]], width: int = 520) -> dict[str, Any]:
    """Horizontal bars: how often each override reason was given."""
    row, label_w, count_w = 24, 250, 44
    bar_w = width - label_w - count_w
    most = max((count for _, _, count in reasons), default=0)
    bars = [
        {
            "y": i * row,
            "text_y": i * row + 16,
            "label": label,
            "count": count,
            "width": round(bar_w * count / most, 1) if most else 0,
        }
        for i, (_, label, count) in enumerate(reasons)
    ]
    return {
        "bars": bars,
        "width": width,
        "height": max(row, row * len(bars)),
        "label_w": label_w,
        "bar_w": bar_w,
        "count_x": label_w + bar_w + 6,
        "bar_h": row - 8,
    }
