"""API throttles count in a cache every process shares: two processes, one budget."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Two processes (a fork after set-up, as gunicorn's workers are) each make 2 requests against a 3/minute
# throttle for one user. A shared cache lets 3 of the 4 through; a per-process one lets all 4.
SCRIPT = textwrap.dedent(
    """
    import os, django
    django.setup()
    from django.core.management import call_command
    from django.db import connections
    from rest_framework.throttling import SimpleRateThrottle

    call_command("migrate", verbosity=0)  # makes the cache table, as on any installation

    class Submit(SimpleRateThrottle):
        rate = "3/min"
        def get_cache_key(self, request, view):
            return "throttle_submit_1"

    connections.close_all()
    child = os.fork()
    if child == 0:
        allowed = [Submit().allow_request(None, None) for _ in range(2)]
        connections.close_all()
        os._exit(0 if allowed == [True, True] else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    print([Submit().allow_request(None, None) for _ in range(2)])
    """
)


def test_two_web_processes_share_one_throttle_budget(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CACHE_URL", "SECRET_KEY", "DJANGO_DEBUG"}
    }
    env.update(DJANGO_SETTINGS_MODULE="config.settings", FRACTURE_REVIEW_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[True, False]"
