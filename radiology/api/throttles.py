"""Per-user rate limits, with rates read at request time from REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].

DRF's throttles copy the rates once at import; reading them per request lets a deployment (or a test)
change them through settings alone.
"""

from __future__ import annotations

from typing import Any, cast

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle


class _SettingsRateThrottle(UserRateThrottle):
    def get_rate(self) -> str | None:
        rates = cast(dict[str, str | None], api_settings.DEFAULT_THROTTLE_RATES)
        return rates.get(self.scope or "")


class UserThrottle(_SettingsRateThrottle):
    """Every API request, per user."""

    scope = "user"


class SubmitThrottle(_SettingsRateThrottle):
    """Requests that create work (uploads, batches, reviews), per user: tighter, and only unsafe methods."""

    scope = "submit"

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        return super().allow_request(request, view)
