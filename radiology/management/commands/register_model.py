"""Register a model artifact (directory with model.keras + card.json) in the model registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from radiology.governance.models import ModelVersion
from radiology.governance.registry import RegistryError, model_version_register


class Command(BaseCommand):
    help = "Validate a model artifact and its card, and register it (candidate, shadow, or the first active)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="model directory, or a .keras file beside its card.json")
        parser.add_argument(
            "--status",
            choices=[ModelVersion.Status.CANDIDATE, ModelVersion.Status.SHADOW, ModelVersion.Status.ACTIVE],
            default=ModelVersion.Status.CANDIDATE,
            help="shadow: predict every new radiograph without showing it; active: only when none is active",
        )
        parser.add_argument("--reason", default="", help="why it is registered (kept in the audit trail)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            version = model_version_register(
                path=options["path"], status=options["status"], reason=options["reason"]
            )
        except RegistryError as exc:
            raise CommandError(f"{options['path']}: {exc.message}") from None
        self.stdout.write(
            f"{version.version}: {version.get_status_display().lower()}, sha256 {version.artifact_sha256}, "
            f"{version.artifact_path}"
        )
