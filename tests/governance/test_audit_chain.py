"""The hash-chained audit trail: intact chains verify; edits, deletions and insertions behind the
application's back (raw SQL) are found and the first broken link is named."""

from __future__ import annotations

import itertools
import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from radiology import services
from radiology.governance.audit_chain import GENESIS, verify_chain
from radiology.governance.models import AuditChainHead
from radiology.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


def _events(n: int) -> list[AuditEvent]:
    events = [
        services.audit_record(action=AuditEvent.Action.EXPORT, details={"i": i, "p": 0.1 * i})
        for i in range(n)
    ]
    AuditEvent.objects.bulk_create(
        [services.audit_event(action=AuditEvent.Action.LOGIN_FAILED, details={"bulk": j}) for j in range(3)]
    )
    return events


def _raw(sql: str, params: list[Any]) -> None:
    """Behind the application's back: the append-only trigger is dropped first, as a DBA could."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE radiology_auditevent DISABLE TRIGGER radiology_auditevent_no_update")
        else:
            cursor.execute("DROP TRIGGER IF EXISTS radiology_auditevent_no_update")
        cursor.execute(sql, params)


def test_events_are_chained_in_order() -> None:
    _events(4)
    events = list(AuditEvent.objects.order_by("sequence"))
    assert [e.sequence for e in events] == list(range(1, 8))
    assert events[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    head = AuditChainHead.objects.get()
    assert (head.sequence, head.hash) == (7, events[-1].hash)
    report = verify_chain()
    assert report.ok and report.checked == 7


def test_an_edit_made_with_raw_sql_is_found() -> None:
    events = _events(5)
    _raw(
        "UPDATE radiology_auditevent SET details = %s WHERE id = %s",
        [json.dumps({"i": 99, "p": 0.2}), events[2].pk],
    )
    report = verify_chain()
    assert not report.ok
    assert report.broken_sequence == 3 and report.broken_event_id == events[2].pk
    assert "changed" in report.problem


def test_a_deletion_made_with_raw_sql_is_found() -> None:
    events = _events(5)
    _raw("DELETE FROM radiology_auditevent WHERE id = %s", [events[1].pk])
    report = verify_chain()
    assert not report.ok and report.broken_sequence == 2
    assert "missing" in report.problem


def test_deleting_the_last_events_is_found_from_the_head() -> None:
    _events(2)
    last = AuditEvent.objects.order_by("-sequence").first()
    assert last is not None
    _raw("DELETE FROM radiology_auditevent WHERE id = %s", [last.pk])
    report = verify_chain()
    assert not report.ok and "deleted" in report.problem


def test_an_event_inserted_behind_the_chain_is_found() -> None:
    _events(1)
    _raw(
        "INSERT INTO radiology_auditevent (actor_name, action, target_type, target_id, details, created_at, prev_hash, hash)"
        " VALUES ('', 'export', '', '', '{}', '2026-01-01 00:00:00', '', '')",
        [],
    )
    report = verify_chain()
    assert not report.ok and "not part of the chain" in report.problem


def test_verify_audit_names_the_first_broken_link() -> None:
    events = _events(3)
    out = StringIO()
    call_command("verify_audit", stdout=out)
    assert "intact: 6 events" in out.getvalue()
    _raw("UPDATE radiology_auditevent SET actor_name = 'mallory' WHERE id = %s", [events[1].pk])
    with pytest.raises(CommandError, match=r"BROKEN at sequence 2, event id"):
        call_command("verify_audit")


def test_export_writes_the_period_with_the_chain_head(tmp_path: Path) -> None:
    _events(2)
    out = tmp_path / "audit.jsonl"
    call_command(
        "export_audit", "--start", "2000-01-01", "--end", "2100-01-01", "--out", str(out), stdout=StringIO()
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    *records, trailer = lines
    assert [r["sequence"] for r in records] == [1, 2, 3, 4, 5]
    assert trailer["chain_head"]["hash"] == records[-1]["hash"] and trailer["events"] == 5
    # The export itself is audited, after the trailer was written.
    assert AuditEvent.objects.latest("sequence").details["what"] == "audit trail"
