"""The review page's previous / next study: the awaiting-review queue's order, ties included."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from radiology import selectors
from radiology.models import Study
from tests.factories import ClinicianFactory, StudyFactory

pytestmark = pytest.mark.django_db


def _awaiting(probability: float, minutes_ago: int) -> Study:
    study = StudyFactory.create()
    Study.objects.filter(pk=study.pk).update(
        state=Study.State.AWAITING_REVIEW,
        max_probability=probability,
        created_at=timezone.now() - dt.timedelta(minutes=minutes_ago),
    )
    return Study.objects.get(pk=study.pk)


def test_neighbours_follow_the_queue_order_through_ties() -> None:
    user = ClinicianFactory.create()
    # Queue order: highest probability first, then oldest, then id.
    order = [
        _awaiting(0.9, 5),
        _awaiting(0.7, 30),
        _awaiting(0.7, 10),
        _awaiting(0.7, 10),  # same probability and time: by id
        _awaiting(0.2, 60),
    ]
    Study.objects.filter(pk=order[3].pk).update(created_at=order[2].created_at)
    order = [Study.objects.get(pk=s.pk) for s in order]
    assert list(selectors.study_queue(user=user, state=Study.State.AWAITING_REVIEW)) == order
    for index, study in enumerate(order):
        previous, following = selectors.study_queue_neighbours(user=user, study=study)
        assert previous == (order[index - 1] if index else None)
        assert following == (order[index + 1] if index + 1 < len(order) else None)
