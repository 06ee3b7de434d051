from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from radiology import services


class Command(BaseCommand):
    help = (
        "Send again radiographs left QUEUED (broker down at upload) or RUNNING too long (worker died); "
        "with --reconcile, also remove files no row points at and idempotency keys left in progress."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reconcile", action="store_true", help="also run the reconciling sweep")

    def handle(self, *args: Any, **options: Any) -> None:
        resent = services.radiographs_resend_stale()
        self.stdout.write(f"Re-sent {len(resent)} radiograph(s).")
        if options["reconcile"]:
            result = services.storage_reconcile()
            self.stdout.write(
                f"Removed {result.orphan_files_removed} orphan file(s); "
                f"expired {result.idempotency_records_expired} idempotency key(s)."
            )
