"""Export reviewed radiographs with their reference labels in classifier.train's manifest layout."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from radiology.governance.training_export import training_set_export


class Command(BaseCommand):
    help = "Write DIR/manifest.csv + DIR/images/ for the reviewed radiographs received since DATE."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=dt.date.fromisoformat, required=True, help="YYYY-MM-DD")
        parser.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
        parser.add_argument("--val-fraction", type=float, default=0.2)

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0.0 <= options["val_fraction"] < 1.0:
            raise CommandError("--val-fraction must be in [0, 1)")
        try:
            result = training_set_export(
                since=options["since"], out=options["out"], val_fraction=options["val_fraction"]
            )
        except FileExistsError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"{result.images} radiographs ({result.fractured} fractured; {result.train} train, "
            f"{result.val} val) in {result.manifest}; train with: "
            f"python -m classifier.train --data {result.manifest.parent} --out RUN"
        )
