"""Every example in the OpenAPI schema matches the schema drf-spectacular derives from its serializer, so a
hand-written example cannot drift from what the endpoint returns; the export's columns are declared once."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from django.core.management import call_command

from radiology import exports
from radiology.api import serializers as s

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any) -> dict[str, Any]:
    path = Path(tmp_path_factory.mktemp("schema")) / "schema.yaml"
    with django_db_blocker.unblock():
        call_command("spectacular", "--file", str(path))
    return yaml.safe_load(path.read_text())


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 to JSON Schema: `nullable: true` becomes "or null"."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def _examples(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any], Any]]:
    """(where, JSON schema, example value) for every JSON example of a request or response body."""
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            bodies = [("request", operation.get("requestBody", {}))]
            bodies += [(f"response {code}", r) for code, r in operation.get("responses", {}).items()]
            for what, body in bodies:
                for media_type, content in body.get("content", {}).items():
                    if "json" not in media_type or "schema" not in content:
                        continue
                    for name, example in content.get("examples", {}).items():
                        found.append(
                            (f"{method.upper()} {path} {what} {name}", content["schema"], example["value"])
                        )
    return found


def test_the_schema_has_examples_to_check(schema: dict[str, Any]) -> None:
    assert len(_examples(schema)) >= 10


def test_every_example_matches_its_schema(schema: dict[str, Any]) -> None:
    components = _json_schema(copy.deepcopy(schema["components"]))
    failures = []
    for where, body_schema, value in _examples(schema):
        document = {**_json_schema(body_schema), "components": components}
        errors = list(jsonschema.Draft202012Validator(document).iter_errors(value))
        failures += [f"{where}: {error.json_path}: {error.message}" for error in errors]
    assert not failures, "\n".join(failures)


def test_the_export_serializer_lists_the_export_columns_in_order() -> None:
    assert tuple(s.ExportRowOut().fields) == exports.RESULT_COLUMNS


def test_problem_responses_come_from_what_each_view_declares(schema: dict[str, Any]) -> None:
    """503 (the image store refused a write) only where a view declares it: the two uploading operations."""
    with_503 = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "503" in operation.get("responses", {})
    }
    assert ("POST", "/api/v1/studies") in with_503
    assert ("POST", "/api/v1/batches") in with_503
    assert ("GET", "/api/v1/studies") not in with_503
    assert all(method == "POST" for method, _ in with_503)
