"""IdsFirstPaginator: the same pages as Django's Paginator, with the offset read on ids alone."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.paginator import Paginator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from radiology import selectors
from radiology.paging import IdsFirstPaginator
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db


def test_pages_are_those_of_the_plain_paginator_in_queue_order_through_ties(clinician: Any) -> None:
    for probability in [0.9, 0.5, 0.5, 0.5, None, 0.1, 0.5, None, 0.9]:
        StudyFactory.create(max_probability=probability, state="awaiting_review")
    queue = selectors.study_queue_with_results(selectors.study_queue(user=clinician))
    plain, ids_first = Paginator(queue, 2, orphans=1), IdsFirstPaginator(queue, 2, orphans=1)
    assert ids_first.num_pages == plain.num_pages == 4
    for number in plain.page_range:
        assert [s.pk for s in ids_first.page(number)] == [s.pk for s in plain.page(number)]
    assert ids_first.page(4).has_next() is False


def test_the_offset_is_read_on_ids_alone(clinician: Any) -> None:
    for _ in range(5):
        StudyFactory.create(state="awaiting_review")
    queue = selectors.study_queue(user=clinician)  # joins the patient and the reader
    with CaptureQueriesContext(connection) as queries:
        page = IdsFirstPaginator(queue, 2).page(3)
    offset = next(q["sql"] for q in queries.captured_queries if "OFFSET" in q["sql"].upper())
    assert "JOIN" not in offset.upper()
    assert page[0].patient.name  # the page's own rows come with their joins
