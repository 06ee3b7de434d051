"""Typed readers for settings that come from the environment.

Each raises ImproperlyConfigured naming the variable, so a bad deployment fails at start-up
with a message an operator can act on (healthchecks' hc/settings.py does the same).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def installation_secret_key(path: Path) -> str:
    """This installation's secret key, kept in ``path`` (created on first use, readable by its owner only).

    For the embedded default, which runs on one machine: no key in the source, none to configure, and the
    same key across restarts (sessions and signed links survive them). Created atomically, so a web and a
    worker process starting together agree on one key.
    """
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(64) + "\n")
        try:
            os.link(scratch, path)  # fails if another process created it first: theirs wins
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
        key = path.read_text().strip()
    if path.stat().st_mode & 0o077:
        raise ImproperlyConfigured(
            f"{path} holds the secret key and must be readable by its owner only (chmod 600)"
        )
    if weak_secret_key_reason(key):
        raise ImproperlyConfigured(
            f"{path} does not hold a usable secret key; delete it to have a new one made"
        )
    return key


_KNOWN_WEAK_KEYS = {"changeme", "secret", "password", "insecure-development-key-never-use-in-production"}


def weak_secret_key_reason(key: str) -> str | None:
    """Why ``key`` is not fit to sign sessions in production, or None (Django's own check, security.W009,
    uses the same length and variety bounds but only warns, and only under ``check --deploy``)."""
    if key.lower() in _KNOWN_WEAK_KEYS or key.startswith("django-insecure-"):
        return "it is a published placeholder"
    if len(key) < 50:
        return f"it has {len(key)} characters; at least 50 are needed"
    if len(set(key)) < 5:
        return "it has fewer than 5 different characters"
    return None
