"""A visit to an address that only takes a form's submission gets a page that says so, not a blank one."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpResponseNotAllowed

from config.middleware import MethodNotAllowedPageMiddleware


@pytest.mark.parametrize("path", ["/audit/settings/", "/audit/models/promote/", "/reader/settings/"])
def test_a_get_on_a_form_target_is_a_readable_405_page(admin_client_: Any, path: str) -> None:
    response = admin_client_.get(path)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Not available this way" in page
    assert 'href="/queue/"' in page


def test_an_api_405_is_left_to_the_api(rf: Any) -> None:
    # The API answers problem details itself; the page is for people's browsers only.
    middleware = MethodNotAllowedPageMiddleware(lambda request: HttpResponseNotAllowed(["POST"]))

    assert middleware(rf.get("/api/v1/anything")).content == b""
    assert b"Not available this way" in middleware(rf.get("/audit/anything/")).content
