"""Sign-in throttling in two layers.

1. django-axes locks a *username + address pair* after LOGIN_FAILURE_LIMIT failures, for
   LOGIN_COOLOFF_HOURS. A pair, not either: five typos by one clinician behind the hospital's proxy must
   not lock out everyone behind it, and nobody can lock a named colleague out by guessing at their account.
2. A per-account back-off for guessing spread over many addresses: once an account has had
   LOGIN_ACCOUNT_BACKOFF_AFTER failures (from any address) within the cool-off window, each further
   attempt waits a pause that doubles per failure, capped at LOGIN_ACCOUNT_BACKOFF_MAX_SECONDS. The cap
   keeps it from becoming a lockout: the account's owner waits a minute at most, and a correct sign-in
   clears it. Attempts during the pause are answered without checking the password and are not counted
   (so the owner's own tries cannot push them into a pair lockout).

Failures are counted in the default cache, which every web process shares (settings.CACHES). Every
failure is also an AuditEvent (radiology/signals.py), kept after the counters are cleared.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import cache


def _key(username: str) -> str:
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]  # no name in the cache
    return f"login-failures:{digest}"


def _now() -> float:
    return time.time()


def _window_seconds() -> float:
    return max(60.0, float(settings.AXES_COOLOFF_TIME or 0) * 3600)


def _recent_failures(username: str) -> list[float]:
    horizon = _now() - _window_seconds()
    return [t for t in cache.get(_key(username), []) if t > horizon]


def login_failure_record(*, username: str) -> None:
    failures = [*_recent_failures(username), _now()][-100:]
    cache.set(_key(username), failures, timeout=int(_window_seconds()) + 1)


def login_success_record(*, username: str) -> None:
    cache.delete(_key(username))


def login_backoff_remaining(*, username: str) -> float:
    """Seconds this account must wait before its next sign-in attempt is checked (0: none)."""
    if not username:
        return 0.0
    failures = _recent_failures(username)
    excess = len(failures) - settings.LOGIN_ACCOUNT_BACKOFF_AFTER
    if excess < 0:
        return 0.0
    pause = min(float(settings.LOGIN_ACCOUNT_BACKOFF_MAX_SECONDS), 2.0**excess)
    return max(0.0, failures[-1] + pause - _now())
