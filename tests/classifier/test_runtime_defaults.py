"""What importing the classifier package sets up for TensorFlow before it loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHOW = "import os, classifier; print(os.environ['TF_CPU_ALLOCATOR_USE_BFC'])"


def _allocator_setting(environment: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", SHOW], cwd=ROOT, env=environment, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_the_pooling_cpu_allocator_is_the_default_and_an_explicit_setting_wins() -> None:
    unset = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    assert _allocator_setting(unset) == "true"
    assert _allocator_setting(unset | {"TF_CPU_ALLOCATOR_USE_BFC": "false"}) == "false"
