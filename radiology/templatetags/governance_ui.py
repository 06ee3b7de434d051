"""Template helpers of model governance."""

from __future__ import annotations

from django import template

from radiology.governance.models import GuardrailRefusal
from radiology.models import Radiograph

register = template.Library()


@register.simple_tag
def not_analysed_reason(radiograph: Radiograph) -> str:
    """Why the active model did not analyse this radiograph: its guardrail refusal, which is written
    before any shadow version reads the radiograph (shadow work is sent after the active result)."""
    refusal = GuardrailRefusal.objects.filter(radiograph=radiograph).order_by("created_at", "id").first()
    return refusal.reason if refusal else "Outside the model's intended use."
