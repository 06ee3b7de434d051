"""The OpenAPI schema validates, documents every problem response and has examples; the docs page
works under the site's Content-Security-Policy (no inline script or style)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any) -> dict[str, Any]:
    path = Path(tmp_path_factory.mktemp("schema")) / "schema.yaml"
    with django_db_blocker.unblock():
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if method in ("get", "post")
    ]


def test_it_validates_and_covers_the_api(schema: dict[str, Any]) -> None:
    paths = set(schema["paths"])
    assert {
        "/api/v1/studies",
        "/api/v1/batches",
        "/api/v1/batches/{id}",
        "/api/v1/exports/results.csv",
    } <= paths
    # 15, the reading workflow's 4 (unaided read, study confirm, adjudications, decision), FHIR and deliveries.
    assert len(_operations(schema)) == 22


def test_every_tag_is_described_in_the_order_an_integration_meets_them(schema: dict[str, Any]) -> None:
    declared = [tag["name"] for tag in schema["tags"]]
    used = {tag for _, _, op in _operations(schema) for tag in op["tags"]}

    assert used == set(declared)
    assert declared[:2] == ["batches", "studies"] and declared[-1] == "problems"
    assert all(tag["description"] for tag in schema["tags"])


def test_every_operation_documents_its_problems(schema: dict[str, Any]) -> None:
    for path, method, op in _operations(schema):
        responses = op["responses"]
        problems = {
            code for code, r in responses.items() if "application/problem+json" in r.get("content", {})
        }
        expected = {"429", "500"} if path.startswith("/api/problems") else {"401", "403", "429", "500"}
        assert expected <= problems, (path, method)
        if "{" in path:
            assert "404" in problems, (path, method)
        if "requestBody" in op:
            assert {"400", "413", "415", "422"} <= problems, (path, method)
        for response in responses.values():
            problem = response.get("content", {}).get("application/problem+json")
            if problem:
                assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}


def test_every_operation_has_an_example(schema: dict[str, Any]) -> None:
    binary = {"/api/v1/radiographs/{id}/image", "/api/v1/predictions/{id}/heatmap"}
    for path, method, op in _operations(schema):
        contents = [c for r in op["responses"].values() for c in r.get("content", {}).values()]
        success = [
            c
            for code, r in op["responses"].items()
            if code.startswith("2")
            for c in r.get("content", {}).values()
        ]
        if path not in binary:
            assert any("examples" in c for c in success), (path, method, "no success example")
        assert any("examples" in c for c in contents), (path, method)
        if "requestBody" in op:
            assert any("examples" in c for c in op["requestBody"]["content"].values()), (path, method)


def test_creating_operations_accept_an_idempotency_key(schema: dict[str, Any]) -> None:
    for path, method, op in _operations(schema):
        if method == "post":
            assert "Idempotency-Key" in [p["name"] for p in op.get("parameters", [])], path


def test_the_schema_is_served(client: Any) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "Fracture Review API"


def test_the_docs_page_has_no_inline_script_or_style(client: Any) -> None:
    response = client.get("/api/docs/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "<style" not in html and " style=" not in html
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts)
    for src in re.findall(r'src="([^"]+)"', html):
        assert src.startswith("/"), "every script is served by the site (sidecar), never a CDN"
        served = client.get(src.replace("&amp;", "&"))
        assert served.status_code == 200, src
    init = client.get("/api/docs/?script=")
    assert init["Content-Type"].startswith("application/javascript")
    assert b"/api/schema/" in init.content
