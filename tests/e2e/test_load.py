"""The load benchmark at a small size: concurrent uploads against gunicorn with two real workers on
PostgreSQL + Redis. The script checks its own invariants (no 5xx, every upload accepted or refused with a
reason, every accepted radiograph predicted exactly once) and exits non-zero if one fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_concurrent_uploads_are_each_accepted_or_refused_and_predicted_once(tmp_path: Path) -> None:
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
            "--json",
            str(tmp_path / "load.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads((tmp_path / "load.json").read_text())
    summary, counts = figures["summary"], figures["counts"]
    assert (summary["uploads"], summary["clients"], summary["workers"]) == (40, 8, 2)
    assert summary["backend"] == "services"
    # 1 upload in 20 is corrupt (--bad-fraction 0.05): 2 refused with their reason, 38 accepted.
    assert (summary["accepted"], summary["refused with reason"]) == (38, 2)
    assert summary["5xx"] == 0 and summary["unexplained"] == 0
    assert counts["radiographs"] == counts["predicted"] == counts["predictions"] == 38
    assert counts["max_predictions_per_radiograph"] == 1
