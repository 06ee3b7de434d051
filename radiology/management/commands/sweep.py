from typing import Any

from django.core.management.base import BaseCommand

from radiology import services


class Command(BaseCommand):
    help = "Send again radiographs left QUEUED (broker down at upload) or RUNNING too long (worker died)."

    def handle(self, *args: Any, **options: Any) -> None:
        resent = services.radiographs_resend_stale()
        self.stdout.write(f"Re-sent {len(resent)} radiograph(s).")
