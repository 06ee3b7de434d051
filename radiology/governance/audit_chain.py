"""The tamper-evident audit trail: every AuditEvent carries its predecessor's hash and its own.

    hash(n) = SHA-256(hash(n-1) + "\\n" + canonical content of event n)

The content covers every stored field (sequence, time, actor, action, target, details, client IP), so an
edit made behind the application's back (raw SQL, a database console) changes an event's hash, and a
deleted event leaves a gap in the sequence and a predecessor hash that no longer matches. The chain's
head (last sequence and hash) is kept in one row that every append locks, so two writers can never
both extend the same link.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from radiology.governance.models import AuditChainHead

if TYPE_CHECKING:
    from radiology.models import AuditEvent

GENESIS = "0" * 64
_HEAD_PK = 1


def canonical_details(details: Any) -> Any:
    """What the database will give back: JSON round trip (dates as text, tuples as lists)."""
    return json.loads(json.dumps(details or {}, cls=DjangoJSONEncoder))


def event_content(
    *,
    sequence: int,
    created_at: dt.datetime,
    actor_id: int | None,
    actor_name: str,
    action: str,
    target_type: str,
    target_id: str,
    details: Any,
    client_ip: str | None,
) -> bytes:
    record = [
        sequence,
        created_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        actor_id,
        actor_name,
        action,
        target_type,
        target_id,
        details,
        client_ip or "",
    ]
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link_hash(prev_hash: str, content: bytes) -> str:
    digest = hashlib.sha256(prev_hash.encode())
    digest.update(b"\n")
    digest.update(content)
    return digest.hexdigest()


def seal(events: Sequence[AuditEvent]) -> None:
    """Give unsaved events their place in the chain. Call inside the transaction that inserts them:
    the head row stays locked until it commits, so appends are serialised."""
    if not events:
        return
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit events must be sealed inside a transaction")
    head = AuditChainHead.objects.select_for_update().filter(pk=_HEAD_PK).first()
    if head is None:
        head, _ = AuditChainHead.objects.get_or_create(pk=_HEAD_PK)
        head = AuditChainHead.objects.select_for_update().get(pk=_HEAD_PK)
    sequence, prev = head.sequence, head.hash
    now = timezone.now()
    for event in events:
        sequence += 1
        if event.created_at is None:
            event.created_at = now
        event.details = canonical_details(event.details)
        event.sequence = sequence
        event.prev_hash = prev
        event.hash = link_hash(
            prev,
            event_content(
                sequence=sequence,
                created_at=event.created_at,
                actor_id=event.actor_id,
                actor_name=event.actor_name,
                action=event.action,
                target_type=event.target_type,
                target_id=event.target_id,
                details=event.details,
                client_ip=event.client_ip,
            ),
        )
        prev = event.hash
    AuditChainHead.objects.filter(pk=_HEAD_PK).update(sequence=sequence, hash=prev)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    head_sequence: int
    head_hash: str
    broken_sequence: int | None = None
    broken_event_id: int | None = None
    problem: str = ""


_COLUMNS = (
    "id",
    "sequence",
    "created_at",
    "actor_id",
    "actor_name",
    "action",
    "target_type",
    "target_id",
    "details",
    "client_ip",
    "prev_hash",
    "hash",
)


def _rows(chunk: int) -> Iterator[tuple[Any, ...]]:
    """Every event in chain order (unsequenced ones, inserted behind the chain's back, first)."""
    from radiology.models import AuditEvent

    queryset = AuditEvent.objects.order_by("sequence", "id").values_list(*_COLUMNS)
    yield from queryset.iterator(chunk_size=chunk)


def verify_chain(*, chunk: int = 20_000) -> ChainReport:
    """Recompute the whole chain; report the first broken link (edited, deleted or inserted event)."""
    head = AuditChainHead.objects.filter(pk=_HEAD_PK).first()
    head_sequence, head_hash = (head.sequence, head.hash) if head else (0, GENESIS)
    expected_sequence, prev = 1, GENESIS
    checked = 0
    for row in _rows(chunk):
        (
            pk,
            sequence,
            created_at,
            actor_id,
            actor_name,
            action,
            target_type,
            target_id,
            details,
            client_ip,
            prev_hash,
            stored_hash,
        ) = row
        if sequence is None:
            return ChainReport(
                False,
                checked,
                head_sequence,
                head_hash,
                None,
                pk,
                f"event {pk} is not part of the chain (inserted behind the application's back)",
            )
        if sequence != expected_sequence:
            return ChainReport(
                False,
                checked,
                head_sequence,
                head_hash,
                expected_sequence,
                pk,
                f"events {expected_sequence}..{sequence - 1} are missing (deleted)",
            )
        if prev_hash != prev:
            return ChainReport(
                False,
                checked,
                head_sequence,
                head_hash,
                sequence,
                pk,
                f"event {sequence} does not point at its predecessor's hash",
            )
        if isinstance(details, str):  # some backends hand JSON back as text in values_list
            details = json.loads(details)
        content = event_content(
            sequence=sequence,
            created_at=created_at,
            actor_id=actor_id,
            actor_name=actor_name,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details,
            client_ip=client_ip,
        )
        if link_hash(prev, content) != stored_hash:
            return ChainReport(
                False,
                checked,
                head_sequence,
                head_hash,
                sequence,
                pk,
                f"event {sequence} was changed after it was written",
            )
        prev = stored_hash
        expected_sequence += 1
        checked += 1
    if checked != head_sequence or prev != head_hash:
        return ChainReport(
            False,
            checked,
            head_sequence,
            head_hash,
            checked + 1,
            None,
            f"the chain ends at event {checked} but its head says {head_sequence}: "
            "the last events were deleted",
        )
    return ChainReport(True, checked, head_sequence, head_hash)


def backfill(rows: Iterable[dict[str, Any]]) -> Iterator[tuple[int, int, str, str]]:
    """(id, sequence, prev_hash, hash) for events written before the chain existed, in id order."""
    prev = GENESIS
    for sequence, row in enumerate(rows, start=1):
        details = canonical_details(row["details"])
        content = event_content(
            sequence=sequence,
            created_at=row["created_at"],
            actor_id=row["actor_id"],
            actor_name=row["actor_name"],
            action=row["action"],
            target_type=row["target_type"],
            target_id=row["target_id"],
            details=details,
            client_ip=row["client_ip"],
        )
        new = link_hash(prev, content)
        yield row["id"], sequence, prev, new
        prev = new
