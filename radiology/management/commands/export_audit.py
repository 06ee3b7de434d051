"""Export the audit events of a period with the chain's links, so a third party can re-verify it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder

from radiology.governance.audit_chain import AuditChainHead
from radiology.models import AuditEvent
from radiology.services.audit import audit_record


class Command(BaseCommand):
    help = (
        "Write the audit events created in [--start, --end) as JSON lines, each with its sequence, "
        "predecessor hash and hash, followed by a trailer with the chain head at export time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--start", type=dt.date.fromisoformat, required=True)
        parser.add_argument("--end", type=dt.date.fromisoformat, required=True)
        parser.add_argument("--out", type=Path, required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        start, end = options["start"], options["end"]
        if end <= start:
            raise CommandError("--end must be after --start")
        head = AuditChainHead.objects.first()
        events = AuditEvent.objects.filter(created_at__date__gte=start, created_at__date__lt=end).order_by(
            "sequence"
        )
        count = 0
        with options["out"].open("w") as out:
            for event in events.iterator(chunk_size=5000):
                record = {
                    "sequence": event.sequence,
                    "created_at": event.created_at,
                    "actor_id": event.actor_id,
                    "actor_name": event.actor_name,
                    "action": event.action,
                    "target_type": event.target_type,
                    "target_id": event.target_id,
                    "details": event.details,
                    "client_ip": event.client_ip,
                    "prev_hash": event.prev_hash,
                    "hash": event.hash,
                }
                out.write(json.dumps(record, cls=DjangoJSONEncoder, sort_keys=True) + "\n")
                count += 1
            trailer = {
                "chain_head": {"sequence": head.sequence if head else 0, "hash": head.hash if head else ""},
                "period": [start.isoformat(), end.isoformat()],
                "events": count,
            }
            out.write(json.dumps(trailer, sort_keys=True) + "\n")
        audit_record(
            action=AuditEvent.Action.EXPORT,
            details={
                "what": "audit trail",
                "start": start.isoformat(),
                "end": end.isoformat(),
                "events": count,
            },
        )
        self.stdout.write(f"{count} events written to {options['out']}; chain head {trailer['chain_head']}")
