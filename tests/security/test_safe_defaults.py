"""Safe by default: the embedded default makes its own secret key; weak keys and ALLOWED_HOSTS=* are refused."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "SECURE_"))
        and k not in {"SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS"}
    }
    env.update(DJANGO_SETTINGS_MODULE="config.settings", FRACTURE_REVIEW_VAR_DIR=str(var_dir))
    env.update(extra)
    return env


def _setting(env: dict[str, str], expression: str) -> subprocess.CompletedProcess[str]:
    code = f"import django; django.setup(); from django.conf import settings; print({expression})"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_embedded_default_runs_without_debug_on_a_key_made_for_this_installation(tmp_path: Path) -> None:
    first = _setting(_env(tmp_path), "settings.DEBUG, settings.SECRET_KEY")
    assert first.returncode == 0, first.stderr
    debug, key = first.stdout.split()
    key_file = tmp_path / "secret_key"
    assert debug == "False"
    assert key == key_file.read_text().strip()
    assert len(key_file.read_text().strip()) >= 64
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = _setting(_env(tmp_path), "settings.SECRET_KEY")
    assert again.stdout.strip() == key  # the same key after a restart
    other = _setting(_env(tmp_path / "elsewhere"), "settings.SECRET_KEY")
    assert other.stdout.strip() != key  # and another for another installation


def test_a_secret_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    assert _setting(_env(tmp_path), "1").returncode == 0
    (tmp_path / "secret_key").chmod(0o644)
    result = _setting(_env(tmp_path), "1")
    assert result.returncode != 0
    assert "chmod 600" in result.stderr


@pytest.mark.parametrize("key", ["changeme", "ab" * 30])
def test_a_weak_secret_key_is_refused_without_debug(tmp_path: Path, key: str) -> None:
    result = _setting(_env(tmp_path, SECRET_KEY=key, DJANGO_DEBUG="0"), "1")
    assert result.returncode != 0
    assert "SECRET_KEY is too weak" in result.stderr


def test_a_weak_secret_key_is_tolerated_with_debug_on(tmp_path: Path) -> None:
    result = _setting(_env(tmp_path, SECRET_KEY="changeme", DJANGO_DEBUG="1"), "settings.DEBUG")
    assert result.returncode == 0, result.stderr


def test_allowed_hosts_star_is_refused_without_debug(tmp_path: Path) -> None:
    result = _setting(_env(tmp_path, ALLOWED_HOSTS="*", DJANGO_DEBUG="0"), "1")
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must list this server's names" in result.stderr


def test_make_run_does_not_turn_debug_on() -> None:
    makefile = (ROOT / "Makefile").read_text()
    run_recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "DJANGO_DEBUG" not in run_recipe
