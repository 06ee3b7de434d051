"""Each operation's schema lives on its view (api/schema.operation): its one request example parses with
its input serializer, its one response example has exactly the fields of its output serializer, every
example in the document matches the JSON schema drf-spectacular derives, and the problem responses are
exactly the codes the view declares."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from rest_framework import serializers

from radiology import exports
from radiology.api import urls
from radiology.api.exports import ExportRowOut
from radiology.api.problems import CATALOGUE
from radiology.api.schema import declared_problems
from radiology.api.views import ApiView, ProblemTypeApi
from tests.api.conftest import png_bytes

pytestmark = pytest.mark.django_db


def operations() -> Iterator[tuple[str, str, Any]]:
    """(route, method, view class) for every documented API operation."""
    for pattern in urls.urlpatterns:
        view = getattr(pattern.callback, "cls", None)
        if view is None or not (issubclass(view, ApiView) or view is ProblemTypeApi):
            continue
        for method in ("get", "post"):
            if hasattr(view, method):
                yield str(pattern.pattern), method, view


OPERATIONS = list(operations())


def _ids(operation: tuple[str, str, Any]) -> str:
    return f"{operation[1].upper()} {operation[0]}"


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any) -> dict[str, Any]:
    path = Path(tmp_path_factory.mktemp("schema")) / "schema.yaml"
    with django_db_blocker.unblock():
        call_command("spectacular", "--file", str(path))
    return yaml.safe_load(path.read_text())


def test_every_documented_operation_is_found() -> None:
    assert len(OPERATIONS) == 22


# --- Request examples: parsed by the input serializer ----------------------------------------------------


def _with_uploads(example: dict[str, Any]) -> dict[str, Any]:
    """A multipart example names its files; the serializer gets one small PNG per name."""
    data = dict(example)
    if "files" in data:
        data["files"] = [
            SimpleUploadedFile(name, png_bytes(), content_type="image/png") for name in data["files"]
        ]
    return data


@pytest.mark.parametrize("operation", OPERATIONS, ids=_ids)
def test_the_request_example_parses_with_the_input_serializer(operation: tuple[str, str, Any]) -> None:
    _route, method, view = operation
    serializer_class, example = getattr(view, method).schema_examples["request"]
    if serializer_class is None:
        assert example is None
        return
    assert example is not None, "an operation that takes a body shows one request example"
    serializer = serializer_class(data=_with_uploads(example))
    assert serializer.is_valid(), serializer.errors


# --- Response examples: the output serializer's fields, no more, no fewer ---------------------------------


def _shape_errors(field: Any, value: Any, where: str) -> list[str]:
    if value is None:  # a leaf's nullability is checked against the derived JSON schema below
        nested = isinstance(field, serializers.BaseSerializer)
        return [f"{where}: null"] if nested and not field.allow_null else []
    if isinstance(field, serializers.ListSerializer):
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        return [e for i, item in enumerate(value) for e in _shape_errors(field.child, item, f"{where}[{i}]")]
    if isinstance(field, serializers.Serializer):
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        readable = {name: f for name, f in field.fields.items() if not f.write_only}
        errors = [f"{where}: missing {name}" for name in readable if name not in value]
        errors += [f"{where}: no field {name}" for name in value if name not in readable]
        for name, child in readable.items():
            if name in value:
                errors += _shape_errors(child, value[name], f"{where}.{name}")
        return errors
    return []  # a leaf: its type is checked against the derived JSON schema below


@pytest.mark.parametrize("operation", OPERATIONS, ids=_ids)
def test_the_response_example_has_the_output_serializers_fields(operation: tuple[str, str, Any]) -> None:
    _route, method, view = operation
    response, example = getattr(view, method).schema_examples["response"]
    if response is None:
        return  # images, CSV and FHIR: documented by media type (their examples, if any, are below)
    assert example is not None, "a JSON operation shows one response example"
    serializer = response() if isinstance(response, type) else response
    if isinstance(serializer, serializers.ListSerializer):
        serializer = serializer.child  # a list shows one item
    assert not _shape_errors(serializer, example, "example")


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
    for path, operations_ in schema["paths"].items():
        for method, operation in operations_.items():
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


def test_every_example_in_the_document_matches_its_schema(schema: dict[str, Any]) -> None:
    components = _json_schema(copy.deepcopy(schema["components"]))
    examples = _examples(schema)
    assert len(examples) >= 22
    failures = []
    for where, body_schema, value in examples:
        document = {**_json_schema(body_schema), "components": components}
        errors = list(jsonschema.Draft202012Validator(document).iter_errors(value))
        failures += [f"{where}: {error.json_path}: {error.message}" for error in errors]
    assert not failures, "\n".join(failures)


def test_the_export_serializer_lists_the_export_columns_in_order() -> None:
    assert tuple(ExportRowOut().fields) == exports.COLUMNS


# --- Problem responses: exactly what each view declares ---------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS, ids=_ids)
def test_declared_problem_codes_are_catalogued(operation: tuple[str, str, Any]) -> None:
    _route, method, view = operation
    codes = declared_problems(view, method)
    assert codes, "every operation declares its problems"
    assert [code for code in codes if code not in CATALOGUE] == []


def test_the_document_lists_exactly_the_declared_problems(schema: dict[str, Any]) -> None:
    documented = {
        operation["operationId"]: {
            code: int(status)
            for status, response in operation["responses"].items()
            for code in response.get("content", {}).get("application/problem+json", {}).get("examples", {})
        }
        for operations_ in schema["paths"].values()
        for operation in operations_.values()
    }
    assert len(documented) == len(OPERATIONS)
    for _route, method, view in OPERATIONS:
        declared = declared_problems(view, method)
        expected = {code: CATALOGUE[code].status for code in declared}
        assert documented[getattr(view, method).operation_id] == expected, (view.__name__, method)


def _503_codes(operation: dict[str, Any]) -> set[str]:
    response = operation.get("responses", {}).get("503", {})
    return set(response.get("content", {}).get("application/problem+json", {}).get("examples", {}))


def test_storage_unavailable_is_declared_only_by_the_uploading_operations(schema: dict[str, Any]) -> None:
    with_storage = {
        (method.upper(), path)
        for path, operations_ in schema["paths"].items()
        for method, operation in operations_.items()
        if "storage_unavailable" in _503_codes(operation)
    }
    assert with_storage == {("POST", "/api/v1/studies"), ("POST", "/api/v1/batches")}


def test_every_operation_declares_the_database_being_out_of_reach(schema: dict[str, Any]) -> None:
    """A database restart is answered 503 database_unavailable (with Retry-After) by every operation."""
    for path, operations_ in schema["paths"].items():
        for method, operation in operations_.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                assert "database_unavailable" in _503_codes(operation), (method, path)
