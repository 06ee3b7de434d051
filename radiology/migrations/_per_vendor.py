"""SQL a migration runs per database vendor (triggers and functions differ between PostgreSQL and SQLite).

The leading underscore keeps Django's migration loader from taking this module for a migration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_per_vendor(statements: dict[str, list[str]]) -> Callable[[Any, Any], None]:
    """A RunPython function that executes the statements listed for the connection's vendor, in order."""

    def run(apps: Any, schema_editor: Any) -> None:
        for sql in statements.get(schema_editor.connection.vendor, ()):
            schema_editor.execute(sql)

    return run
