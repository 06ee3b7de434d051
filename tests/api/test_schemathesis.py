"""Schemathesis against the live schema of a running server: no 5xx, and every response conforms to the
schema (status code, content type, headers, body), for every operation.

Runs the schemathesis CLI (examples, coverage, fuzzing and stateful phases, a bounded number of cases per
operation) as an admin, who may call every operation. Real ids of seeded studies, radiographs,
predictions and batches are mixed into the generated path parameters so the detail endpoints are exercised
with data, not only with 404s. Not checked: whether random-but-schema-valid bytes are accepted as
radiographs (they are not images) and whether lenient query parsing (an empty date is "no filter") rejects.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from rest_framework.authtoken.models import Token

from radiology.models import Batch, BatchItem
from radiology.roles import ensure_role_groups
from tests.api.conftest import png_bytes
from tests.factories import AdminFactory, PredictionFactory, RadiographFactory, ReviewFactory

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "ignored_auth",
        "missing_required_header",
        "unsupported_method",
        "use_after_free",
        "ensure_resource_availability",
    ]
)
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"))


def _seed(admin: Any) -> dict[str, list[Any]]:
    predictions = [PredictionFactory.create(heatmap=ContentFile(png_bytes(), name="h.png")) for _ in range(3)]
    ReviewFactory.create(prediction=predictions[0], reviewer=admin)
    queued = RadiographFactory.create()
    batch = Batch.objects.create(submitted_by=admin, reference="seed")
    BatchItem.objects.create(batch=batch, index=0, outcome="created", study=queued.study)
    radiographs = [p.radiograph for p in predictions] + [queued]
    return {
        "study": [r.study_id for r in radiographs],
        "radiograph": [r.pk for r in radiographs],
        "prediction": [p.pk for p in predictions],
        "batch": [str(batch.pk)],
    }


def _config(ids: dict[str, list[Any]]) -> str:
    lines = ["[generation]", 'database = "none"', ""]
    for name, values in ids.items():
        rendered = ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values)
        lines += [f"[dictionaries.{name}]", f"values = [{rendered}]", ""]
    for pattern, name in (
        (r"^/api/v1/studies/\\{id\\}", "study"),
        (r"^/api/v1/radiographs/\\{id\\}", "radiograph"),
        (r"^/api/v1/predictions/\\{id\\}", "prediction"),
        (r"^/api/v1/batches/\\{id\\}", "batch"),
    ):
        lines += [
            "[[operations]]",
            f'include-path-regex = "{pattern}"',
            f'parameters = {{ "path.id" = {{ dictionary = "{name}", probability = 0.5 }} }}',
            "",
        ]
    return "\n".join(lines)


def test_the_api_conforms_to_its_schema(
    live_server: Any, transactional_db: None, settings: Any, tmp_path: Path
) -> None:
    # Throttles would turn most of the run into documented-but-useless 429s.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "100000/minute", "submit": "100000/minute"},
    }
    ensure_role_groups()
    admin = AdminFactory.create(username="schemathesis.admin")
    token = Token.objects.create(user=admin).key
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(_seed(admin)))

    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{live_server.url}/api/schema/",
        "--header",
        f"Authorization: Token {token}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--seed",
        "20250602",
        "--request-timeout",
        "30",
        "--no-color",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=420, cwd=tmp_path)
    output = result.stdout + result.stderr
    print(output[-6000:])  # shown by pytest on failure (and with -s)
    assert "Selected: 22/22" in output and "Tested: 22" in output, output[-3000:]
    assert result.returncode == 0, output[-6000:]
