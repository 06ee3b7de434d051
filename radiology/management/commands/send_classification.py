"""Send classification messages for radiographs already stored (benchmarks time the sending; operators can
re-send a list after fixing something). Prints the Unix time at which sending started, as JSON."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from radiology import dispatch


class Command(BaseCommand):
    help = "Send one classification message per radiograph id (a JSON list, or ids as arguments)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", type=int, help="radiograph ids")
        parser.add_argument("--ids-json", default="", help="the ids as a JSON list instead")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            ids = [int(i) for i in json.loads(options["ids_json"])] if options["ids_json"] else options["ids"]
        except (ValueError, TypeError) as exc:
            raise CommandError(f"--ids-json must be a JSON list of ids: {exc}") from None
        started = time.time()
        sent = dispatch.send_classification(ids)
        if len(sent) != len(ids):
            raise CommandError(f"the broker took {len(sent)} of {len(ids)} messages")
        self.stdout.write(json.dumps(started))
