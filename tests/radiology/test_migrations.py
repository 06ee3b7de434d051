"""Data migrations, run forwards and back on a real schema (MigrationExecutor), not assumed."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("radiology", "0024_review_tally_band")]
AFTER = [("radiology", "0025_study_state_not_analysed")]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _migrate_to_latest() -> None:
    """Leave the schema as the other tests expect it."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _check_0025_moves_declined_only_studies_to_not_analysed_and_back() -> None:
    apps = _migrate(BEFORE)
    Study = apps.get_model("radiology", "Study")
    Patient = apps.get_model("radiology", "Patient")
    User = apps.get_model("auth", "User")
    uploader = User.objects.create(username="migration-uploader")
    patient = Patient.objects.create(mrn="MIG-1", name="Migration Patient")

    def study(accession: str, state: str, radiographs: int, failed: int) -> int:
        return Study.objects.create(
            patient=patient,
            accession_number=accession,
            body_region="wrist",
            uploaded_by=uploader,
            state=state,
            radiograph_count=radiographs,
            failed_count=failed,
        ).pk

    declined = study("DECLINED", "failed", radiographs=2, failed=0)
    one_failed = study("ONE-FAILED", "failed", radiographs=2, failed=1)
    empty = study("EMPTY", "failed", radiographs=0, failed=0)
    reviewed = study("REVIEWED", "reviewed", radiographs=1, failed=0)

    def states(apps: Any) -> dict[int, str]:
        return dict(apps.get_model("radiology", "Study").objects.values_list("pk", "state"))

    def tally(apps: Any) -> dict[str, int]:
        rows = apps.get_model("radiology", "StudyTally").objects.values_list("state", "studies")
        return {state: count for state, count in rows if count}

    assert tally(apps) == {"failed": 3, "reviewed": 1}
    after = _migrate(AFTER)
    assert states(after) == {
        declined: "not_analysed",
        one_failed: "failed",
        empty: "failed",
        reviewed: "reviewed",
    }
    assert tally(after) == {"failed": 2, "not_analysed": 1, "reviewed": 1}  # the triggers moved the count

    back = _migrate(BEFORE)
    assert set(states(back).values()) == {"failed", "reviewed"}
    assert tally(back) == {"failed": 3, "reviewed": 1}
    _migrate_to_latest()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_0025_moves_studies_whose_every_image_was_declined_to_not_analysed_and_back() -> None:
    _check_0025_moves_declined_only_studies_to_not_analysed_and_back()


@pytest.mark.e2e  # the PostgreSQL pass: its tally triggers are deferred to the commit (migration 0023)
@pytest.mark.django_db(transaction=True)
def test_0025_on_postgresql() -> None:
    _check_0025_moves_declined_only_studies_to_not_analysed_and_back()


def _check_0026_keeps_the_study_tally_counting_both_ways() -> None:
    _migrate_to_latest()
    apps = _migrate([("radiology", "0025_study_state_not_analysed")])
    Study = apps.get_model("radiology", "Study")
    User = apps.get_model("auth", "User")
    uploader = User.objects.create(username="migration-uploader-26")
    patient = apps.get_model("radiology", "Patient").objects.create(mrn="MIG-26", name="Migration Patient")
    study = Study.objects.create(
        patient=patient, accession_number="MIG-26", body_region="wrist", uploaded_by=uploader, state="failed"
    )

    def tally() -> dict[str, int]:
        rows = apps.get_model("radiology", "StudyTally").objects.values_list("state", "studies")
        return {state: count for state, count in rows if count}

    assert tally() == {"failed": 1}
    _migrate([("radiology", "0026_study_read_without_model")])
    Study.objects.filter(pk=study.pk).update(state="not_analysed")
    assert tally() == {"not_analysed": 1}
    # Back past 0026 (SQLite rebuilds the study table, and a rebuilt table has lost its triggers)...
    _migrate([("radiology", "0025_study_state_not_analysed")])
    Study.objects.filter(pk=study.pk).update(state="reviewed")
    assert tally() == {"reviewed": 1}  # ...the counts still move.
    _migrate_to_latest()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_0026_keeps_the_study_tally_counting_both_ways() -> None:
    _check_0026_keeps_the_study_tally_counting_both_ways()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_0026_on_postgresql() -> None:
    _check_0026_keeps_the_study_tally_counting_both_ways()
