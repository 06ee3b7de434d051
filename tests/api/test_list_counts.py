"""The study list's count from the running totals (radiology.tallies) when it is filtered only by state and
body region: the same count, page numbers and pages, without a COUNT over the studies."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def studies() -> None:
    for state, region in [("reviewed", "wrist")] * 3 + [("reviewed", "hand"), ("awaiting_review", "wrist")]:
        StudyFactory(state=state, body_region=region)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # the tally's triggers are deferred to commit
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def _counted_studies(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper() and "radiology_study" in q["sql"]]


@pytest.mark.parametrize(
    ("query", "count"),
    [("", 5), ("state=reviewed", 4), ("state=reviewed&body_region=wrist", 3), ("body_region=hand", 1)],
)
def test_the_count_comes_from_the_tally(clinician_api: Any, studies: None, query: str, count: int) -> None:
    with CaptureQueriesContext(connection) as queries:
        body = clinician_api.get(f"/api/v1/studies?page_size=2&{query}").json()
    assert body["count"] == count and len(body["results"]) == min(2, count)
    assert _counted_studies(queries) == []


def test_other_filters_still_count_the_studies(clinician_api: Any, studies: None) -> None:
    with CaptureQueriesContext(connection) as queries:
        body = clinician_api.get("/api/v1/studies?state=reviewed&reviewed=true").json()
    assert body["count"] == 4
    assert len(_counted_studies(queries)) == 1


def test_the_last_page_and_past_it(clinician_api: Any, studies: None) -> None:
    last = clinician_api.get("/api/v1/studies?state=reviewed&page_size=3&page=2").json()
    assert last["count"] == 4 and len(last["results"]) == 1 and last["next"] is None
    assert clinician_api.get("/api/v1/studies?state=reviewed&page_size=3&page=3").status_code == 404
    assert clinician_api.get("/api/v1/studies?state=lost").status_code == 400
