"""The study list's count from the running totals (radiology.tallies) when it is filtered only by state and
body region, and the radiograph list's when it is filtered by nothing: the same count, page numbers and
pages, without a COUNT over the studies or the radiographs."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from radiology import selectors
from radiology.models import Radiograph, RadiographTally
from tests.factories import RadiographFactory, StudyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def studies() -> None:
    for state, region in [("reviewed", "wrist")] * 3 + [("reviewed", "hand"), ("awaiting_review", "wrist")]:
        StudyFactory.create(state=state, body_region=region)


def _counts_of(table: str, queries: CaptureQueriesContext) -> list[str]:
    """The captured queries that count rows of `table`."""
    return [
        q["sql"]
        for q in queries.captured_queries
        if "COUNT(" in q["sql"].upper() and f'"{table}"' in q["sql"]
    ]


def _counted_studies(queries: CaptureQueriesContext) -> list[str]:
    return _counts_of("radiology_study", queries)


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


# --- The radiograph list ------------------------------------------------------------------------------------


@pytest.fixture
def radiographs() -> None:
    for study in (StudyFactory.create(), StudyFactory.create()):
        for position in range(3):
            RadiographFactory.create(study=study, position=position, status=Radiograph.Status.FAILED)
    Radiograph.objects.filter(pk=Radiograph.objects.order_by("pk").values("pk")[:1]).delete()


def _counted_radiographs(queries: CaptureQueriesContext) -> list[str]:
    return _counts_of("radiology_radiograph", queries)


def test_the_unfiltered_radiograph_list_counts_from_the_tally(clinician_api: Any, radiographs: None) -> None:
    with CaptureQueriesContext(connection) as queries:
        first = clinician_api.get("/api/v1/radiographs?page_size=2").json()
    assert _counted_radiographs(queries) == []
    assert first["count"] == 5 == RadiographTally.objects.get().radiographs
    last = clinician_api.get("/api/v1/radiographs?page_size=2&page=3").json()
    assert len(last["results"]) == 1 and last["next"] is None
    seen = [
        r["id"]
        for page in (1, 2, 3)
        for r in clinician_api.get(f"/api/v1/radiographs?page_size=2&page={page}").json()["results"]
    ]
    assert seen == list(Radiograph.objects.order_by("-created_at", "-pk").values_list("pk", flat=True))
    assert clinician_api.get("/api/v1/radiographs?page_size=2&page=4").status_code == 404


def test_a_filtered_radiograph_list_still_counts(clinician_api: Any, radiographs: None) -> None:
    RadiographFactory.create(status=Radiograph.Status.QUEUED)
    with CaptureQueriesContext(connection) as queries:
        body = clinician_api.get("/api/v1/radiographs?status=failed").json()
    assert body["count"] == 5
    assert len(_counted_radiographs(queries)) == 1


def test_the_tallied_count_is_what_the_user_may_see(clinician: Any, outsider: Any, radiographs: None) -> None:
    assert selectors.radiograph_tallied_count(user=clinician) == 5
    assert selectors.radiograph_tallied_count(user=outsider) == 0
