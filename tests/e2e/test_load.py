"""The load benchmark at a small size: concurrent uploads against gunicorn with two real workers on
PostgreSQL + Redis. The script checks its own invariants (no 5xx, every upload accepted or refused with a
reason, every accepted radiograph predicted exactly once) and exits non-zero if one fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_concurrent_uploads_are_each_accepted_or_refused_and_predicted_once() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    result = subprocess.run(
        [
            sys.executable,
            "bench/load.py",
            "--uploads",
            "40",
            "--clients",
            "8",
            "--workers",
            "2",
            "--timeout",
            "600",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| 40 | 8 | 2 | services |" in result.stdout
